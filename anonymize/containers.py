"""Walkers over the structure of media files: JPEG segments, PNG and RIFF (WebP, AVI) chunks, ISO
base media (MP4, MOV, HEIF) boxes and EBML (Matroska, WebM) elements, and what the audit builds on
them: a file's bytes less its compressed picture data (:func:`metadata_bytes`).

The files walked are untrusted (a user's outputs, a stranger's photos), so the walkers never raise on
any bytes: a structure that does not fit (a header cut short, a size smaller than its header or past
the end of its parent) ends the walk, and what was read before it is returned. Every part is clipped
to its parent (or the file) and every read is bounded by the file's size and :data:`MAX_PART`, so a
size field of 2**64 costs nothing. Only opening or reading the file can fail (:class:`InputError`).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import InputError

#: The most bytes read from one part (a 64 MB ``moov`` is a very long video's index).
MAX_PART = 64 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
BMFF_FIRST_BOXES = (b"ftyp", b"moov", b"free", b"wide", b"mdat", b"skip", b"styp")

#: Picture data, reduced to its header by :func:`metadata_bytes`.
PNG_PICTURE = frozenset({b"IDAT", b"fdAT"})
RIFF_PICTURE = frozenset({b"VP8 ", b"VP8L", b"ALPH", b"ANMF", b"movi"})  # movi: an AVI's LIST of frames
BMFF_PICTURE = frozenset({b"mdat"})
#: Matroska masters walked into (the ones that hold frames), and the frame elements in them.
EBML_DESCEND = frozenset({b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75", b"\xa0"})  # Segment, Cluster, BlockGroup
EBML_PICTURE = frozenset({b"\xa3", b"\xa1"})  # SimpleBlock, Block


@dataclass(frozen=True)
class Part:
    """One segment, chunk, box or element: ``kind`` (its four-character code, JPEG marker byte or
    EBML ID bytes), where its header starts, the header's length, and where it ends (clipped to its
    parent). ``sized``: False for an EBML element of unknown size (it runs to its parent's end)."""

    kind: bytes
    start: int
    header: int
    end: int
    sized: bool = True

    @property
    def data_start(self) -> int:
        return min(self.start + self.header, self.end)


def _read(f: BinaryIO, start: int, end: int, cap: int = MAX_PART) -> bytes:
    """Bytes ``start:end`` of ``f``, at most ``cap`` of them (``end`` must be within the file)."""
    if end <= start:
        return b""
    f.seek(start)
    return f.read(min(end - start, cap))


def file_size(f: BinaryIO) -> int:
    f.seek(0, 2)
    return f.tell()


def png_chunks(f: BinaryIO, size: int) -> Iterator[Part]:
    """PNG chunks after the signature, up to and including IEND (``end`` includes the CRC)."""
    pos = 8
    while pos + 8 <= size:
        head = _read(f, pos, pos + 8)
        length, kind = struct.unpack(">I4s", head)
        end = pos + 12 + length
        yield Part(kind, pos, 8, min(end, size))
        if kind == b"IEND" or end > size:
            return
        pos = end


def riff_chunks(f: BinaryIO, size: int, pos: int = 12) -> Iterator[Part]:
    """RIFF chunks from ``pos`` (after ``RIFF`` size ``WEBP``/``AVI ``) to the end of the file
    (data appended past the RIFF's own size is walked too); ``end`` includes the pad byte."""
    while pos + 8 <= size:
        head = _read(f, pos, pos + 8)
        kind, length = head[:4], struct.unpack("<I", head[4:])[0]
        end = pos + 8 + length + (length & 1)
        yield Part(kind, pos, 8, min(end, size))
        pos = end


def bmff_boxes(f: BinaryIO, start: int, end: int) -> Iterator[Part]:
    """ISO base media boxes between ``start`` and ``end`` (a file's size, or a box's data): 32-bit
    sizes, 64-bit ``largesize`` ones (size 1) and size 0 (to the end)."""
    pos = start
    while pos + 8 <= end:
        head = _read(f, pos, min(pos + 16, end))
        length, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if length == 1:
            if len(head) < 16:
                return  # the 64-bit size is cut short
            length, header = struct.unpack(">Q", head[8:16])[0], 16
        elif length == 0:
            length = end - pos
        if length < header:
            return  # corrupt: the walk stops here
        yield Part(kind, pos, header, min(pos + length, end))
        pos += length


def _vint(data: bytes, i: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``data[i:]``: (value, its length), value -1 for an
    unknown size (all ones); None when it is invalid or cut short."""
    if i >= len(data) or data[i] == 0:
        return None
    length = 9 - data[i].bit_length()
    if i + length > len(data):
        return None
    value = int.from_bytes(data[i:i + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            return -1, length
    return value, length


def ebml_elements(f: BinaryIO, start: int, end: int, descend: frozenset[bytes] = EBML_DESCEND) -> Iterator[Part]:
    """EBML elements between ``start`` and ``end``, in file order. Masters named in ``descend`` are
    yielded and then walked into inline (their children follow as the next parts), which is also how
    an unknown-size master (a live stream's Segment or Cluster) is read; any other element is
    skipped by its size. An unknown size on any other element ends the walk."""
    pos = start
    while pos < end:
        head = _read(f, pos, min(pos + 12, end))  # ID <= 4 bytes, size <= 8
        eid = _vint(head, 0, keep_marker=True)
        if eid is None or eid[1] > 4:
            return
        size = _vint(head, eid[1], keep_marker=False)
        if size is None:
            return
        kind, header = head[:eid[1]], eid[1] + size[1]
        if kind in descend:
            yield Part(kind, pos, header, end if size[0] < 0 else min(pos + header + size[0], end), size[0] >= 0)
            pos += header
            continue
        if size[0] < 0:
            return
        stop = pos + header + size[0]
        yield Part(kind, pos, header, min(stop, end))
        pos = stop


_STANDALONE = {0x01, 0xD8} | set(range(0xD0, 0xD8))  # TEM, SOI, RSTn: markers without a length


def jpeg_segments(data: bytes) -> Iterator[Part]:
    """JPEG marker segments after SOI, entropy-coded data skipped; the last one yielded is EOI
    (``b"\\xd9"``, when present). ``end`` of a segment includes its 2-byte marker and length."""
    i, n = 2, len(data)
    while i + 1 < n:
        marker = data[i + 1]
        if data[i] != 0xFF or marker == 0xFF or marker in _STANDALONE:
            i += 1  # fill bytes, stray markers and garbage: resynchronise on the next 0xFF
            continue
        if marker == 0xD9:
            yield Part(b"\xd9", i, 2, i + 2)
            return
        length = int.from_bytes(data[i + 2:i + 4], "big")
        end = min(i + 2 + max(length, 2), n)
        yield Part(bytes([marker]), i, 4, end)
        i = end
        if marker == 0xDA:  # scan data runs to the next marker that is not a stuffed 0 or a restart
            while (i := data.find(b"\xff", i)) != -1 and i + 1 < n and (
                    data[i + 1] == 0 or 0xD0 <= data[i + 1] <= 0xD7):
                i += 2
            if i == -1:
                return


def metadata_bytes(path: Path) -> bytes:
    """The file less its compressed picture data (JPEG scans, PNG IDAT, WebP/AVI frames, ``mdat``,
    Matroska blocks), pieces joined by NUL bytes. Data past a structure's end (appended to the
    image, or after the point where the walk stopped) is kept. Any other format: its first and last
    64 KB. Raises :class:`InputError` when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            size = file_size(f)
            start = _read(f, 0, min(16, size))
            if start[:2] == b"\xff\xd8":
                f.seek(0)
                return _jpeg_metadata(f.read())
            if start[:8] == PNG_SIGNATURE:
                return _walked(f, size, png_chunks(f, size), PNG_PICTURE, 8)
            if start[:4] == b"RIFF":
                return _riff_metadata(f, size)
            if start[4:8] in BMFF_FIRST_BOXES:
                return _walked(f, size, bmff_boxes(f, 0, size), BMFF_PICTURE, 0)
            if start[:4] == EBML_MAGIC:
                return _ebml_metadata(f, size)
            return _read(f, 0, size, 1 << 16) + b"\0" + _read(f, max(size - (1 << 16), 0), size)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _walked(f: BinaryIO, size: int, parts: Iterator[Part], picture: frozenset[bytes], pos: int) -> bytes:
    """Each part whole, or its header only when its kind is in ``picture``; then what follows the
    last part to the end of the file."""
    pieces = []
    for part in parts:
        pieces.append(_read(f, part.start, part.data_start if part.kind in picture else part.end))
        pos = part.end
    pieces.append(_read(f, pos, size))
    return b"\0".join(pieces)


def _riff_metadata(f: BinaryIO, size: int) -> bytes:
    pieces, pos = [_read(f, 0, min(12, size))], min(12, size)
    for part in riff_chunks(f, size):
        kind = part.kind
        if kind == b"LIST":  # an AVI's LIST movi holds the frames
            kind = _read(f, part.data_start, min(part.data_start + 4, part.end))
        pieces.append(_read(f, part.start, part.data_start if kind in RIFF_PICTURE else part.end))
        pos = part.end
    pieces.append(_read(f, pos, size))
    return b"\0".join(pieces)


def _ebml_metadata(f: BinaryIO, size: int) -> bytes:
    """Every Matroska element but the frames inside its blocks (their track, time and flags kept)."""
    pieces, pos = [], 0
    for part in ebml_elements(f, 0, size):
        if part.kind in EBML_DESCEND:
            pieces.append(_read(f, part.start, part.data_start))
            pos = part.data_start
            continue
        stop = min(part.data_start + 4, part.end) if part.kind in EBML_PICTURE else part.end
        pieces.append(_read(f, part.start, stop))
        pos = part.end
    pieces.append(_read(f, pos, size))
    return b"\0".join(pieces)


def _jpeg_metadata(data: bytes) -> bytes:
    """Every JPEG segment and whatever follows the end of the image, without entropy-coded data."""
    parts, rest = [], len(data)
    for seg in jpeg_segments(data):
        if seg.kind == b"\xd9":  # end of image: appended data (a second image, a trailer) is scanned
            rest = seg.end
            break
        parts.append(data[seg.start:seg.end])
    parts.append(data[rest:])
    return b"\0".join(parts)


def patterns_in(path: Path, anywhere: tuple[bytes, ...], outside_picture: tuple[bytes, ...]) -> set[bytes]:
    """Which of ``anywhere`` occur anywhere in the file (read in 4 MB pieces), and which of
    ``outside_picture`` occur in :func:`metadata_bytes`. Raises :class:`InputError` when the file
    cannot be read."""
    found: set[bytes] = set()
    overlap, tail = max(map(len, anywhere), default=1) - 1, b""
    try:
        with open(path, "rb") as f:
            left = file_size(f)
            f.seek(0)
            # read(n) allocates n bytes before it reads: never ask for more than the file holds
            while left > 0 and (chunk := f.read(min(1 << 22, left))):
                left -= len(chunk)
                buf = tail + chunk
                found.update(p for p in anywhere if p in buf)
                tail = buf[-overlap:] if overlap else b""
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if outside_picture:
        head = metadata_bytes(path)
        found.update(p for p in outside_picture if p in head)
    return found
