"""A minimal Matroska (EBML) reader and writer for raw frames (BGR or I420) on ffmpeg's pipes.

Why not plain ``-f rawvideo``: a raw pipe loses every timestamp, and phone video is often variable
frame rate; re-timing it at a constant rate is the "4x-10x duration" bug users meet in other
tools. Matroska carries a timestamp per frame and ffmpeg streams it through a pipe, so the
decoder tells us each frame's time and we hand the very same times to the encoder.

Only what ffmpeg writes for one ``rawvideo`` track is understood: bgr24 (``-allow_raw_vfw 1``: a
VFW BITMAPINFOHEADER, top-down rows) or yuv420p (``V_UNCOMPRESSED`` with the ColourSpace FourCC
``I420``: the Y plane, then the half-size U and V planes); EBML header, Segment, Info
(TimestampScale), Tracks (pixel size, codec, codec private), Clusters of SimpleBlocks/BlockGroups.
Everything else is skipped by size. Unknown-size Segment/Cluster (live streams) are handled.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

# Element IDs (with their length-marker bits, as written in files).
EBML, SEGMENT, INFO, TIMESTAMP_SCALE = 0x1A45DFA3, 0x18538067, 0x1549A966, 0x2AD7B1
TRACKS, TRACK_ENTRY, TRACK_NUMBER, TRACK_UID, TRACK_TYPE = 0x1654AE6B, 0xAE, 0xD7, 0x73C5, 0x83
CODEC_ID, CODEC_PRIVATE, VIDEO, PIXEL_WIDTH, PIXEL_HEIGHT = 0x86, 0x63A2, 0xE0, 0xB0, 0xBA
VFW_CODEC, RAW_CODEC = b"V_MS/VFW/FOURCC", b"V_UNCOMPRESSED"
COLOUR_SPACE, I420 = 0x2EB524, b"I420"
CLUSTER, CLUSTER_TIMESTAMP, SIMPLE_BLOCK, BLOCK_GROUP, BLOCK = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1
_MASTERS = {SEGMENT, TRACKS, TRACK_ENTRY, VIDEO, CLUSTER, BLOCK_GROUP, INFO}
_UNKNOWN = -1
#: Limits that keep a corrupt size field from allocating gigabytes before the short read is seen:
#: one raw frame (8K bgr24 is 100 MB), the Tracks element (ffmpeg writes ~100 bytes).
MAX_FRAME_BYTES, MAX_TRACKS_BYTES = 1 << 29, 1 << 20


class MkvError(Exception):
    """The stream is not the Matroska we expect (or ended mid-element)."""


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise MkvError("stream ended inside an element")
    return data


def _skip(f: BinaryIO, n: int) -> None:
    """Read past ``n`` bytes in pieces of at most 1 MB (a pipe cannot seek)."""
    while n > 0:
        got = len(f.read(min(n, 1 << 20)))
        if not got:
            raise MkvError("stream ended inside an element")
        n -= got


def _read_into(f: BinaryIO, n: int) -> bytearray:
    """Read exactly ``n`` bytes into a new writable buffer."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise MkvError("stream ended inside a frame")
        got += k
    return buf


def _read_vint(f: BinaryIO, keep_marker: bool, first: int | None = None) -> int:
    """Read an EBML vint: element IDs keep their marker bit, sizes drop it (all ones = unknown).
    ``first``: its first byte, when the caller has already read it."""
    if first is None:
        first = _read_exact(f, 1)[0]
    if first == 0:
        raise MkvError("invalid EBML variable-length integer")
    length = 9 - first.bit_length()
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in _read_exact(f, length - 1):
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return _UNKNOWN
    return value


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


#: The raw layouts the pipes carry.
PIXEL_FORMATS = ("bgr24", "yuv420p")


def frame_bytes(pixel_format: str, width: int, height: int) -> int:
    """Bytes of one raw frame: 3 a pixel for bgr24; for yuv420p the Y plane and two chroma planes
    of ceil(w/2) x ceil(h/2) (ffmpeg's rounding for odd sizes)."""
    if pixel_format == "yuv420p":
        return width * height + 2 * (-(-width // 2)) * (-(-height // 2))
    return width * height * 3


@dataclass
class TrackHeader:
    width: int
    height: int
    bits_per_pixel: int
    top_down: bool
    timestamp_scale_ns: int
    #: "bgr24" or "yuv420p" (:data:`PIXEL_FORMATS`)
    pixel_format: str = "bgr24"
    #: bytes of one frame (:func:`frame_bytes`)
    frame_bytes: int = 0


def bitmap_info_header(width: int, height: int) -> bytes:
    """VFW BITMAPINFOHEADER for top-down (negative height) uncompressed 24-bit BGR."""
    return struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, width * height * 3, 0, 0, 0, 0)


class MkvFrameReader:
    """Iterate ``(pts_seconds, frame_bytes)`` from ffmpeg's Matroska rawvideo output."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._scale = 1_000_000
        self._cluster_ts = 0
        self.header: TrackHeader | None = None
        self._w = self._h = 0
        self._bmp = b""
        self._codec = b""
        self._fourcc = b""
        self._frame_bytes = 0

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        f = self._f
        while True:
            head = f.read(1)
            if not head:  # a clean end between elements; anywhere else a short read is an error
                return
            eid = _read_vint(f, keep_marker=True, first=head[0])
            size = _read_vint(f, keep_marker=False)
            if eid in _MASTERS:
                if eid == TRACKS and size != _UNKNOWN:
                    if size > MAX_TRACKS_BYTES:
                        raise MkvError(f"Tracks element of {size} bytes")
                    self._parse_tracks(_read_exact(f, size))
                continue  # descend: children follow inline
            if size == _UNKNOWN:
                raise MkvError(f"unknown size on non-master element {eid:#x}")
            if eid in (SIMPLE_BLOCK, BLOCK):
                if self.header is None:
                    raise MkvError("frame before track header")
                if not 4 <= size <= self._frame_bytes + 4:
                    raise MkvError(f"a block of {size} bytes for frames of {self._frame_bytes}")
                # track number (1-byte vint for track 1), int16 relative timestamp, flags
                rel = struct.unpack(">h", _read_exact(f, 4)[1:3])[0]
                pts = (self._cluster_ts + rel) * self._scale / 1e9
                yield pts, _read_into(f, size - 4)  # a writable buffer: no second copy
                continue
            if eid in (TIMESTAMP_SCALE, CLUSTER_TIMESTAMP):
                if size > 8:
                    raise MkvError(f"a {size}-byte integer in element {eid:#x}")
                value = _uint(_read_exact(f, size))
                if eid == TIMESTAMP_SCALE:
                    self._scale = value
                else:
                    self._cluster_ts = value
            else:
                _skip(f, size)  # tags, seek heads, void, ...: not needed, and never held in memory

    def _parse_tracks(self, data: bytes) -> None:
        stream = io.BytesIO(data)
        end = len(data)
        while stream.tell() < end:
            eid = _read_vint(stream, True)
            size = _read_vint(stream, False)
            if eid in (TRACK_ENTRY, VIDEO):
                continue
            value = _read_exact(stream, size)
            if eid == PIXEL_WIDTH:
                self._w = _uint(value)
            elif eid == PIXEL_HEIGHT:
                self._h = _uint(value)
            elif eid == CODEC_PRIVATE:
                self._bmp = value
            elif eid == CODEC_ID:
                self._codec = value
            elif eid == COLOUR_SPACE:
                self._fourcc = value
        if self._codec == RAW_CODEC:
            if self._fourcc != I420:
                raise MkvError(f"raw frames in colour space {self._fourcc!r}: expected I420 (yuv420p)")
            self._frame_bytes = frame_bytes("yuv420p", self._w, self._h)
            if self._frame_bytes > MAX_FRAME_BYTES:
                raise MkvError(f"frames of {self._w}x{self._h} are too large")
            self.header = TrackHeader(self._w, self._h, 12, True, self._scale, "yuv420p", self._frame_bytes)
            return
        if len(self._bmp) < 16:
            raise MkvError("no BITMAPINFOHEADER: expected raw BGR in VFW mode")
        _, _, bmp_height, _, bpp = struct.unpack("<IiiHH", self._bmp[:16])
        self._frame_bytes = self._w * self._h * -(-bpp // 8)
        if self._frame_bytes > MAX_FRAME_BYTES:
            raise MkvError(f"frames of {self._w}x{self._h} at {bpp} bits are too large")
        self.header = TrackHeader(self._w, self._h, bpp, bmp_height < 0, self._scale, "bgr24", self._frame_bytes)


def _vint_size(n: int) -> bytes:
    """Encode a data size as an 8-byte EBML vint (fixed width keeps the writer simple)."""
    return (0x01 << 56 | n).to_bytes(8, "big")


def _element(eid: int, payload: bytes) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + _vint_size(len(payload)) + payload


def _uint_el(eid: int, value: int) -> bytes:
    return _element(eid, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class MkvFrameWriter:
    """Write raw frames (``pixel_format``: bgr24 or yuv420p) with explicit timestamps as a Matroska
    stream ffmpeg can read."""

    #: 1 ms, as ffmpeg's own Matroska output uses; frames keep their decoder timestamps exactly.
    SCALE_NS = 1_000_000

    def __init__(self, f: BinaryIO, width: int, height: int, pixel_format: str = "bgr24"):
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}")
        self._f = f
        header = _element(EBML, _uint_el(0x4286, 1) + _uint_el(0x42F7, 1) + _uint_el(0x42F2, 4)
                          + _uint_el(0x42F3, 8) + _element(0x4282, b"matroska") + _uint_el(0x4287, 4)
                          + _uint_el(0x4285, 2))
        info = _element(INFO, _uint_el(TIMESTAMP_SCALE, self.SCALE_NS))
        dims = _uint_el(PIXEL_WIDTH, width) + _uint_el(PIXEL_HEIGHT, height)
        if pixel_format == "yuv420p":  # what ffmpeg itself writes for rawvideo yuv420p
            codec = _element(CODEC_ID, RAW_CODEC) + _element(VIDEO, dims + _element(COLOUR_SPACE, I420))
        else:
            codec = (_element(CODEC_ID, VFW_CODEC) + _element(CODEC_PRIVATE, bitmap_info_header(width, height))
                     + _element(VIDEO, dims))
        track = _element(TRACK_ENTRY, _uint_el(TRACK_NUMBER, 1) + _uint_el(TRACK_UID, 1)
                         + _uint_el(TRACK_TYPE, 1) + codec)
        segment_start = SEGMENT.to_bytes(4, "big") + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size
        f.write(header + segment_start + info + _element(TRACKS, track))

    def write(self, pts: float, frame: bytes | memoryview) -> None:
        """Write one frame at ``pts`` seconds (one Cluster per frame: no int16 overflow)."""
        ts = round(pts * 1e9 / self.SCALE_NS)
        block_head = b"\x81" + struct.pack(">h", 0) + b"\x80"  # track 1, rel 0, keyframe
        ts_el = _uint_el(CLUSTER_TIMESTAMP, ts) if ts >= 0 else None
        if ts_el is None:
            raise MkvError(f"negative timestamp {pts}")
        size = len(block_head) + len(frame)
        block = SIMPLE_BLOCK.to_bytes(1, "big") + _vint_size(size)
        cluster_payload_len = len(ts_el) + len(block) + size
        self._f.write(CLUSTER.to_bytes(4, "big") + _vint_size(cluster_payload_len) + ts_el + block + block_head)
        self._f.write(frame)
