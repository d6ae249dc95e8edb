"""Receive a ``multipart/form-data`` upload as a stream: the file part goes straight to disk and
the upload is refused as soon as it passes the size limit; its type is then read from its first
bytes (magic numbers), never from the name the client gave it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

#: Text fields (options, callback_url) are small; anything larger is refused.
MAX_FIELD_BYTES = 64 << 10
FILE_FIELD = "file"
TEXT_FIELDS = ("options", "callback_url")


class UploadError(Exception):
    """A refused upload: ``status`` is the HTTP status to answer (400, 413, 415)."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


@dataclass
class Upload:
    """What :func:`receive` read: the text fields, and the file (its size and first bytes)."""

    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    size: int = 0
    head: bytes = b""


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, extension) of a photo or video from its first bytes, or None for anything else.

    Only the formats the pipeline anonymizes: JPEG, PNG, WebP, HEIC/HEIF, MP4/M4V/MOV (ISO base
    media), Matroska/WebM, AVI. 3GP is refused like the CLI refuses it."""
    if head.startswith(b"\xff\xd8\xff"):
        return "photo", ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "photo", ".png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "photo", ".webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, or WebM by its DocType
        return "video", ".webm" if b"webm" in head[:64] else ".mkv"
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"):
            return ("photo", ".heic") if brand != b"avif" else None
        if brand.startswith(b"3g"):
            return None
        if brand == b"qt  ":
            return "video", ".mov"
        return "video", ".mp4"
    if box in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # old QuickTime files open with these
        return "video", ".mov"
    return None


async def receive(request, folder: Path, max_bytes: int) -> Upload:
    """Parse the request's multipart body as it arrives: the ``file`` part is written to
    ``folder/upload.part`` (created 0600), the text fields are kept. Raises UploadError (413 as
    soon as the file passes ``max_bytes``); on any error the partial file is removed."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(415, "the body must be multipart/form-data with a 'file' part")
    up = Upload()
    part: dict = {}
    out = {"fh": None}
    target = folder / "upload.part"

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, name=None, buf=bytearray(), hf=b"", hv=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["hf"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["hv"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["hf"].lower()] = part["hv"]
        part["hf"], part["hv"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        part["name"] = name
        if name == FILE_FIELD:
            if out["fh"] is not None or up.path is not None:
                raise UploadError(400, "only one 'file' part is accepted")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            out["fh"] = os.fdopen(fd, "wb")
        elif name not in TEXT_FIELDS:
            raise UploadError(400, f"unknown form field {name[:40]!r} (expected file, options, callback_url)")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if part["name"] == FILE_FIELD:
            up.size += len(chunk)
            if up.size > max_bytes:
                raise UploadError(413, f"the upload is larger than the limit of {max_bytes} bytes")
            if len(up.head) < 64:
                up.head += chunk[:64 - len(up.head)]
            out["fh"].write(chunk)
        else:
            part["buf"] += chunk
            if len(part["buf"]) > MAX_FIELD_BYTES:
                raise UploadError(413, f"form field {part['name']!r} is too large")

    def on_part_end() -> None:
        if part["name"] == FILE_FIELD:
            out["fh"].close()
            out["fh"] = None
            up.path = target
        else:
            if part["name"] in up.fields:
                raise UploadError(400, f"form field {part['name']!r} given twice")
            try:
                up.fields[part["name"]] = part["buf"].decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(400, f"form field {part['name']!r} is not UTF-8 text") from None

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        if up.path is None:
            raise UploadError(400, "no 'file' part in the form")
    except UploadError:
        _discard(out, target)
        raise
    except Exception as exc:  # a malformed body, a client that went away
        _discard(out, target)
        raise UploadError(400, f"malformed multipart body ({type(exc).__name__})") from None
    return up


#: The answer to an upload :func:`sniff` does not recognise (the service and the page).
UNSUPPORTED = "the file is not a supported photo (JPEG, PNG, WebP, HEIC) or video (MP4, MOV, MKV, WebM, AVI)"


async def receive_media(request, folder: Path, max_bytes: int) -> tuple[Upload, str, str]:
    """:func:`receive`, then :func:`sniff` of what arrived: ``(upload, kind, ext)``. Raises
    UploadError (415 :data:`UNSUPPORTED`) when the file is neither a photo nor a video we read."""
    up = await receive(request, folder, max_bytes)
    found = sniff(up.head)
    if found is None:
        raise UploadError(415, UNSUPPORTED)
    return up, *found


def _discard(out: dict, target: Path) -> None:
    if out["fh"] is not None:
        out["fh"].close()
    try:
        target.unlink()
    except FileNotFoundError:
        pass
