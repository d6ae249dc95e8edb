"""A hostile corpus, built at test time, and the checker that runs ``python -m anonymize`` on it.

Nothing here is a binary fixture: :func:`build_base` makes a handful of small real files from a
real face (scikit-image's astronaut) with Pillow, pillow_heif and the project's ffmpeg, and every
:class:`Case` derives its inputs from them (truncations, byte flips, zeroed regions, wrong
extensions, huge declared sizes, orientations, colour formats, hostile file names, bad options,
path collisions, special files, odd stream layouts, folder batches, a full disk, signals).

:func:`run_case` runs one case in its own folder (cwd, HOME and TMPDIR inside it) as a
subprocess, inside a fresh network namespace where one is available, and checks the invariants
the project promises for every input, whatever it is:

=========== ==================================================================================
exit        the exit code is one of the case's documented, accepted codes
traceback   no Python traceback on stderr
hang        the run ends before the case's timeout
input       every file that existed before the run is byte-for-byte unchanged (and still there)
incomplete  every output under its final name decodes to the end (photo: Pillow loads it;
            video: ffmpeg decodes every frame without an error); a report is valid JSON
unmasked    under valid options, no face is visible in any output (an independent detector,
            RetinaFace from ``anonymize.audit``, run on the output at 4 rotations; a box that
            ``looks_masked`` is fine)
missing     exit 0 but an expected output is not there
leftover    nothing else appears: no ``.partial`` temporaries, nothing in TMPDIR, no output on
            failure (the tool fails closed), nothing outside the expected names
home        nothing is left in HOME or TMPDIR (onnxruntime >= 1.2x writes a device id to
            ~/.cache/Microsoft/DeveloperTools and a session id to $TMPDIR/.ses on import)
packets     the run sends no network packet (counted on a veth default route in the namespace)
=========== ==================================================================================
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
INVARIANTS = ("exit", "traceback", "hang", "input", "incomplete", "unmasked", "missing", "leftover", "home",
              "packets")
PHOTO_EXT = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")
VIDEO_EXT = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
#: Flags every run gets: only the face detector is loaded (the corpus is about robustness, and
#: faces are what the mask check looks for), no progress bars.
COMMON = ["--marks", "faces", "-q"]
CORRUPT = frozenset({0, 2, 3})  # damaged media: refused, failed mid-file, or the decodable part masked
SEED = 15


def ffmpeg() -> str:
    from anonymize.ffmpeg_tools import ffmpeg_exe

    return ffmpeg_exe()


def ff(*args: str) -> None:
    res = subprocess.run([ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)}: {res.stderr[-1500:]}")


# --- base media ------------------------------------------------------------------------------------


@dataclass
class Base:
    """The unmutated media every case starts from (all contain the astronaut's face)."""

    dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Path:
        return self.files[key]

    def bytes(self, key: str) -> bytes:
        return self.files[key].read_bytes()


def astronaut_rgb() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()  # 512 x 512 RGB, public domain


def build_base(folder: Path) -> Base:
    """Photos (JPEG/PNG/WebP/HEIC, 512 px) and 1 s 320x240 clips (MP4/MOV/MKV/WebM/AVI) of a face."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    folder.mkdir(parents=True, exist_ok=True)
    base = Base(folder)
    rgb = astronaut_rgb()
    im = Image.fromarray(rgb)
    for key, kw in {"jpg": dict(quality=90), "png": {}, "webp": dict(quality=85), "heic": dict(quality=80)}.items():
        p = folder / f"photo.{key}"
        im.save(p, **kw)
        base.files[key] = p
    # the clip's frame: the face 220 px tall on a grey 320x240 background
    frame = np.full((240, 320, 3), 128, np.uint8)
    frame[10:230, 50:270] = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (220, 220), interpolation=cv2.INTER_AREA)
    still = folder / "frame.png"
    cv2.imwrite(str(still), frame)
    base.files["frame"] = still
    vin = ["-loop", "1", "-framerate", "15", "-t", "1", "-i", str(still)]
    ain = ["-f", "lavfi", "-t", "1", "-i", "sine=frequency=440:sample_rate=48000"]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "5", "-pix_fmt", "yuv420p"]
    clips = {
        "mp4": (vin + ain, h264 + ["-c:a", "aac", "-shortest"]),
        "mp4-silent": (vin, h264),
        "mov": (vin + ain, h264 + ["-c:a", "aac", "-shortest"]),
        "mkv": (vin + ain, h264 + ["-c:a", "libopus", "-shortest"]),
        "webm": (vin + ain, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "5",
                             "-b:v", "300k", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-shortest"]),
        "avi": (vin + ain, ["-c:v", "mpeg4", "-q:v", "4", "-g", "5", "-c:a", "pcm_s16le", "-shortest"]),
    }
    for key, (inp, out) in clips.items():
        ext = key.split("-")[0]
        p = folder / f"clip{'-silent' if 'silent' in key else ''}.{ext}"
        ff(*inp, *out, str(p))
        base.files[key] = p
    long_clip = folder / "long.mp4"  # long enough to be interrupted while it is processed
    ff("-loop", "1", "-framerate", "15", "-t", "20", "-i", str(still), *h264, str(long_clip))
    base.files["long"] = long_clip
    return base


# --- byte-level mutations ----------------------------------------------------------------------------


def truncated(data: bytes, where: str) -> bytes:
    n = len(data)
    cut = {"8B": 8, "100B": 100, "25%": n // 4, "50%": n // 2, "90%": n * 9 // 10, "-16B": n - 16, "-1B": n - 1}[where]
    return data[:cut]


def flipped(data: bytes, seed: int, count: int) -> bytes:
    """``count`` bytes XOR-ed with a random non-zero value at seeded offsets past the first 32."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(count):
        i = rng.randrange(min(32, len(buf) - 1), len(buf))
        buf[i] ^= rng.randrange(1, 256)
    return bytes(buf)


def zeroed(data: bytes, where: str) -> bytes:
    buf = bytearray(data)
    n = len(buf)
    a, b = {"head64": (0, 64), "mid10%": (n * 45 // 100, n * 55 // 100), "tail10%": (n * 9 // 10, n)}[where]
    buf[a:b] = bytes(b - a)
    return bytes(buf)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares ``width`` x ``height`` RGB, with a few rows of data."""
    rows = b"".join(b"\0" + bytes(3 * min(width, 4096)) for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline or progressive JPEG) with its SOF segment's size rewritten."""
    buf = bytearray(data)
    i = 2
    while i < len(buf) - 9:
        if buf[i] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = buf[i + 1]
        length = struct.unpack(">H", buf[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            buf[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(buf)
        i += 2 + length
    raise ValueError("no SOF segment")


# --- cases -------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile input and the behaviour the project documents for it.

    ``build(dir, base)`` writes the inputs into ``dir`` (the run's cwd) and returns the arguments
    after ``python -m anonymize``. ``outputs`` are glob patterns (relative to ``dir``) of what the
    run may write; with exit 0, ``required`` of them must be there. ``extras`` may also appear
    (report, manifest). ``masked``: the options are valid, so every face in an output must be
    masked. ``on_failure``: outputs may stay after a failure (a folder batch's good files).
    """

    name: str
    family: str
    build: Callable[[Path, Base], list[str]]
    accept: frozenset[int]
    outputs: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    masked: bool = True
    on_failure: bool = False
    timeout: float = 240.0
    fast: bool = False  # in the unit test's subset (set from FAST)
    signal: tuple[int, float] | None = None  # (signal, at most this many seconds after the start:
    # sent as soon as a ``.partial`` temporary appears in the run's folder)
    tiny: str | None = None  # a folder (relative) that is a full 8 KiB tmpfs during the run


def _write(name: str, data: bytes | Callable[[Base], bytes]):
    """A ``build`` that writes one input file ``name`` (bytes, or made from the base)."""
    def put(d: Path, base: Base) -> Path:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data(base) if callable(data) else data)
        return p
    return put


def _one(name: str, data, out: str | None = "out", extra: list[str] = ()):
    """A case build: one input file, ``-o out.EXT`` (``out=None``: the default output name)."""
    put = _write(name, data)
    ext = Path(name).suffix

    def build(d: Path, base: Base) -> list[str]:
        p = put(d, base)
        argv = [f"./{p.relative_to(d)}"]
        if out is not None:
            argv += ["-o", f"{out}{ext}"]
        return argv + COMMON + list(extra)  # extra last: an option under test overrides COMMON (--marks)
    return build


def _media_keys() -> dict[str, str]:
    """Base key -> the extension its mutations are named with."""
    return {"jpg": ".jpg", "png": ".png", "webp": ".webp", "heic": ".heic", "mp4": ".mp4", "mov": ".mov",
            "mkv": ".mkv", "webm": ".webm", "avi": ".avi"}


def _default_out(name: str) -> str:
    p = Path(name)
    return str(p.with_name(f"{p.stem}.anonymized{p.suffix}"))


def corruption_cases() -> list[Case]:
    cases = []
    for key, ext in _media_keys().items():
        for where in ("8B", "100B", "25%", "50%", "90%", "-16B", "-1B"):
            cases.append(Case(f"truncate/{key}@{where}", "truncate",
                              _one(f"in{ext}", lambda b, k=key, w=where: truncated(b.bytes(k), w)),
                              CORRUPT, (f"out{ext}",)))
        for seed, count in ((1, 1), (2, 4), (3, 16), (4, 64)):
            cases.append(Case(f"flip/{key}:seed{seed}x{count}", "flip",
                              _one(f"in{ext}", lambda b, k=key, s=seed, c=count: flipped(b.bytes(k), s * 1000 + SEED, c)),
                              CORRUPT, (f"out{ext}",)))
        for where in ("head64", "mid10%", "tail10%"):
            cases.append(Case(f"zero/{key}:{where}", "zero",
                              _one(f"in{ext}", lambda b, k=key, w=where: zeroed(b.bytes(k), w)),
                              CORRUPT, (f"out{ext}",)))
    return cases


def extension_cases() -> list[Case]:
    text = b"these are my notes, not a photo\n" * 20
    rnd = random.Random(SEED).randbytes(4000)
    html = b"<!doctype html><html><body>hello</body></html>\n"
    specs = [  # (name, content, accepted): content of one type under another type's extension
        ("jpeg-as.mp4", "jpg", frozenset({0, 2})), ("png-as.mov", "png", frozenset({0, 2})),
        ("mp4-as.jpg", "mp4", frozenset({2})), ("mkv-as.png", "mkv", frozenset({2})),
        ("png-as.jpg", "png", frozenset({0, 2})), ("jpeg-as.webp", "jpg", frozenset({0, 2})),
        ("webm-as.mp4", "webm", frozenset({0, 2})), ("avi-as.mkv", "avi", frozenset({0, 2})),
        ("heic-as.jpg", "heic", frozenset({0, 2})),
        ("text.jpg", text, frozenset({2})), ("text.mp4", text, frozenset({2})), ("random.png", rnd, frozenset({2})),
        ("random.mov", rnd, frozenset({2})), ("html.heic", html, frozenset({2})), ("random.webm", rnd, frozenset({2})),
        ("photo.JPG", "jpg", frozenset({0})), ("clip.MP4", "mp4", frozenset({0})),
        ("noext", "jpg", frozenset({2})), ("photo.jpg.txt", "jpg", frozenset({2})),
    ]
    cases = []
    for name, content, accept in specs:
        data = (lambda b, k=content: b.bytes(k)) if isinstance(content, str) else content
        ext = Path(name).suffix
        cases.append(Case(f"ext/{name}", "ext", _one(name, data), accept, (f"out{ext}",),
                          required=(f"out{ext}",) if accept == {0} else ()))
    return cases


def empty_cases() -> list[Case]:
    return [Case(f"empty/{ext}", "empty", _one(f"empty{ext}", b""), frozenset({2}), (f"out{ext}",), timeout=90)
            for ext in PHOTO_EXT + VIDEO_EXT]


def huge_cases() -> list[Case]:
    return [
        Case("huge/png-60000x60000", "huge", _one("big.png", png_declaring(60000, 60000)), frozenset({2}),
             ("out.png",), timeout=90),
        Case("huge/png-65535x65535", "huge", _one("big.png", png_declaring(65535, 65535)), frozenset({2}),
             ("out.png",), timeout=90),
        Case("huge/png-60000x4", "huge", _one("wide.png", png_declaring(60000, 4)), CORRUPT, ("out.png",), timeout=90),
        Case("huge/jpeg-65500x65500", "huge", _one("big.jpg", lambda b: jpeg_declaring(b.bytes("jpg"), 65500, 65500)),
             frozenset({2}), ("out.jpg",), timeout=90),
        Case("huge/jpeg-65500x16", "huge", _one("wide.jpg", lambda b: jpeg_declaring(b.bytes("jpg"), 65500, 16)),
             CORRUPT, ("out.jpg",), timeout=90),
        Case("huge/jpeg-0x0", "huge", _one("zero.jpg", lambda b: jpeg_declaring(b.bytes("jpg"), 0, 0)),
             frozenset({2}), ("out.jpg",), timeout=90),
    ]


def _pil(fmt_ext: str, make: Callable[["object"], tuple["object", dict]]):
    """Bytes of the astronaut photo after ``make(image) -> (image, save options)``."""
    def data(base: Base) -> bytes:
        import pillow_heif
        from PIL import Image

        pillow_heif.register_heif_opener()
        im, kw = make(Image.fromarray(astronaut_rgb()))
        buf = io.BytesIO()
        im.save(buf, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF"}[fmt_ext], **kw)
        return buf.getvalue()
    return data


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _video(ext: str, *args: str, key: str = "frame", size: str | None = None, seconds: float = 1.0):
    """Bytes of a clip ffmpeg makes from the base's still frame (or another base file)."""
    def data(base: Base) -> bytes:
        with tempfile.TemporaryDirectory(dir=base.dir) as t:
            out = Path(t) / f"v{ext}"
            src = ["-loop", "1", "-framerate", "15", "-t", str(seconds), "-i", str(base[key])]
            vf = ["-vf", f"scale={size}"] if size else []
            ff(*src, *vf, *args, str(out))
            return out.read_bytes()
    return data


def _remux(key: str, ext: str, *args: str):
    """Bytes of a base clip rewritten by ffmpeg (stream copy plus ``args``, e.g. a display rotation)."""
    def data(base: Base) -> bytes:
        with tempfile.TemporaryDirectory(dir=base.dir) as t:
            out = Path(t) / f"v{ext}"
            ff(*args, "-i", str(base[key]), "-c", "copy", str(out))
            return out.read_bytes()
    return data


def orientation_cases() -> list[Case]:
    cases = []
    for o in range(1, 9):
        cases.append(Case(f"orient/jpeg-exif-{o}", "orient", _one(f"o{o}.jpg", _pil("jpg", lambda im, o=o: (im, {"exif": _exif(o)}))),
                          frozenset({0}), ("out.jpg",), ("out.jpg",)))
    for o in (0, 9, 65535):
        cases.append(Case(f"orient/jpeg-exif-bogus-{o}", "orient",
                          _one(f"b{o}.jpg", _pil("jpg", lambda im, o=o: (im, {"exif": _exif(o)}))),
                          frozenset({0}), ("out.jpg",), ("out.jpg",)))
    cases.append(Case("orient/png-exif-6", "orient", _one("o6.png", _pil("png", lambda im: (im, {"exif": _exif(6)}))),
                      frozenset({0}), ("out.png",), ("out.png",)))
    cases.append(Case("orient/webp-exif-3", "orient", _one("o3.webp", _pil("webp", lambda im: (im, {"exif": _exif(3)}))),
                      frozenset({0}), ("out.webp",), ("out.webp",)))
    for key, ext in (("mp4", ".mp4"), ("mov", ".mov")):
        for angle in (90, 180, 270):
            cases.append(Case(f"orient/{key}-rotate-{angle}", "orient",
                              _one(f"r{angle}{ext}", _remux(key, ext, "-display_rotation", str(angle))),
                              frozenset({0}), (f"out{ext}",), (f"out{ext}",)))
    cases.append(Case("orient/mp4-rotate-45", "orient", _one("r45.mp4", _remux("mp4", ".mp4", "-display_rotation", "45")),
                      frozenset({0, 2}), ("out.mp4",)))
    cases.append(Case("orient/mp4-hflip", "orient", _one("hf.mp4", _remux("mp4", ".mp4", "-display_hflip")),
                      frozenset({0}), ("out.mp4",), ("out.mp4",)))
    return cases


def colour_cases() -> list[Case]:
    from PIL import ImageCms

    def gray16(im):
        from PIL import Image
        return Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)), {}

    def rgb16_png(base: Base) -> bytes:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(astronaut_rgb(), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        return buf.tobytes()

    def rgba(im):
        a = im.convert("RGBA")
        px = np.asarray(a).copy()
        px[:64, :, 3] = 0  # a transparent band above the face
        from PIL import Image
        return Image.fromarray(px), {}

    def sized(w, h):
        return lambda im: (im.resize((w, h)), {})

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photos = [  # (name, data, accepted, fast)
        ("gray.jpg", _pil("jpg", lambda im: (im.convert("L"), {})), {0}, True),
        ("gray.png", _pil("png", lambda im: (im.convert("L"), {})), {0}, False),
        ("gray-alpha.png", _pil("png", lambda im: (im.convert("LA"), {})), {0}, False),
        ("gray16.png", _pil("png", gray16), {0}, False),
        ("rgb16.png", rgb16_png, {0}, True),
        ("cmyk.jpg", _pil("jpg", lambda im: (im.convert("CMYK"), {})), {0}, True),
        ("palette.png", _pil("png", lambda im: (im.quantize(64), {})), {0}, False),
        ("palette-transparent.png", _pil("png", lambda im: (im.quantize(64), {"transparency": 0})), {0}, False),
        ("bilevel.png", _pil("png", lambda im: (im.convert("1"), {})), {0}, False),
        ("rgba.png", _pil("png", rgba), {0}, False),
        ("rgba.webp", _pil("webp", rgba), {0}, True),
        ("lossless.webp", _pil("webp", lambda im: (im, {"lossless": True})), {0}, False),
        ("progressive.jpg", _pil("jpg", lambda im: (im, {"progressive": True})), {0}, False),
        ("yuv444.jpg", _pil("jpg", lambda im: (im, {"subsampling": 0})), {0}, False),
        ("icc-srgb.jpg", _pil("jpg", lambda im: (im, {"icc_profile": srgb})), {0}, False),
        ("gray.heic", _pil("heic", lambda im: (im.convert("L"), {})), {0}, False),
        ("rgba.heic", _pil("heic", rgba), {0}, False),
        ("odd-321x241.jpg", _pil("jpg", sized(321, 241)), {0}, False),
        ("odd-321x241.png", _pil("png", sized(321, 241)), {0}, False),
        ("odd-321x241.heic", _pil("heic", sized(321, 241)), {0}, False),
        ("tiny-1x1.jpg", _pil("jpg", sized(1, 1)), {0, 2}, True),
        ("tiny-1x1.png", _pil("png", sized(1, 1)), {0, 2}, False),
        ("tiny-1x1.webp", _pil("webp", sized(1, 1)), {0, 2}, False),
        ("tiny-2x2.png", _pil("png", sized(2, 2)), {0, 2}, False),
        ("strip-4000x8.png", _pil("png", sized(4000, 8)), {0}, False),
    ]
    h264 = ["-c:v", "libx264", "-preset", "ultrafast"]
    videos = [
        ("yuv444.mp4", _video(".mp4", *h264, "-pix_fmt", "yuv444p"), {0}, True),
        ("yuv422.mkv", _video(".mkv", *h264, "-pix_fmt", "yuv422p"), {0}, False),
        ("10bit.mp4", _video(".mp4", *h264, "-pix_fmt", "yuv420p10le"), {0}, True),
        ("gray.mkv", _video(".mkv", *h264, "-pix_fmt", "gray"), {0}, False),
        ("rgb.mkv", _video(".mkv", "-c:v", "libx264rgb", "-preset", "ultrafast"), {0}, False),
        ("hevc.mp4", _video(".mp4", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                            "-tag:v", "hvc1"), {0}, False),
        ("hevc-10bit.mkv", _video(".mkv", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                                  "-pix_fmt", "yuv420p10le"), {0}, False),
        ("vp9-yuv444.webm", _video(".webm", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                                   "-pix_fmt", "yuv444p"), {0}, False),
        ("vp9-gbrp.webm", _video(".webm", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                                 "-pix_fmt", "gbrp"), {0}, False),
        ("vp8.webm", _video(".webm", "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k"), {0}, False),
        ("mjpeg.avi", _video(".avi", "-c:v", "mjpeg", "-q:v", "3"), {0}, False),
        ("full-range.mp4", _video(".mp4", *h264, "-pix_fmt", "yuvj420p"), {0}, False),
        ("odd-321x241.mp4", _video(".mp4", *h264, "-pix_fmt", "yuv444p", size="321:241"), {0}, False),
        ("odd-321x241.mkv", _video(".mkv", "-c:v", "ffv1", size="321:241"), {0}, False),
        ("tiny-2x2.mp4", _video(".mp4", *h264, "-pix_fmt", "yuv444p", size="2:2"), {0, 2}, False),
        ("tiny-16x16.mkv", _video(".mkv", *h264, size="16:16"), {0}, False),
        ("one-frame.mp4", _video(".mp4", *h264, "-pix_fmt", "yuv420p", "-frames:v", "1"), {0}, False),
        ("vfr.mkv", _video(".mkv", *h264, "-pix_fmt", "yuv420p", "-vf", "setpts='PTS+if(gt(N,7),0.5/TB,0)'",
                           "-fps_mode", "vfr"), {0}, False),
    ]
    cases = []
    for name, data, accept, fast in photos + videos:
        ext = Path(name).suffix
        cases.append(Case(f"colour/{name}", "colour", _one(name, data), frozenset(accept), (f"out{ext}",),
                          (f"out{ext}",) if accept == {0} else ()))
    return cases


HOSTILE_STEMS = {
    "space": "my photo  2",
    "single-quote": "it's",
    "double-quote": 'say "cheese"',
    "semicolon": "a;rm -rf x;b",
    "subshell": "$(touch PWNED)",
    "backtick": "`touch PWNED2`",
    "glob": "star*?[x]",
    "percent": "100%s%n%d",
    "backslash": "back\\slash",
    "tab": "tab\there",
    "newline": "new\nline",
    "unicode": "unicodé ñ 漢字 🙂",
    "rtl-override": "rtl\u202egpj.exe",
    "bad-utf8": os.fsdecode(b"bad\xff\xfename"),
    "hidden": ".hidden",
    "already-anonymized": "x.anonymized",
    "trailing-dot": "dot.",
    "long-200": "L" * 200,
}


def name_cases() -> list[Case]:
    cases = []
    for label, stem in HOSTILE_STEMS.items():
        for key, ext in (("jpg", ".jpg"), ("mp4", ".mp4")):
            if key == "mp4" and label not in {"space", "subshell", "unicode", "newline", "bad-utf8", "long-200"}:
                continue
            name = stem + ext
            cases.append(Case(f"names/{key}:{label}", "names", _one(name, lambda b, k=key: b.bytes(k), out=None),
                              frozenset({0}), (_default_out(name),), (_default_out(name),)))
        # the same names as an explicit output
    for label in ("subshell", "newline", "leading-dash"):
        out = {"subshell": "$(touch PWNED).jpg", "newline": "o\nut.jpg", "leading-dash": "-o.jpg"}[label]
        cases.append(Case(f"names/output:{label}", "names",
                          (lambda o: lambda d, b: [_write("in.jpg", b.bytes("jpg"))(d, b).name, "-o", f"./{o}"] + COMMON)(out),
                          frozenset({0}), (out,), (out,)))
    # leading dash: reached as ./-x.jpg and after --
    cases.append(Case("names/jpg:leading-dash", "names",
                      lambda d, b: [f"./{_write('-x.jpg', b.bytes('jpg'))(d, b).name}"] + COMMON,
                      frozenset({0}), ("-x.anonymized.jpg",), ("-x.anonymized.jpg",)))
    cases.append(Case("names/jpg:leading-dashes-after--", "names",
                      lambda d, b: COMMON + ["--", _write("--x.jpg", b.bytes("jpg"))(d, b).name],
                      frozenset({0}), ("--x.anonymized.jpg",), ("--x.anonymized.jpg",)))
    # names near the 255-byte limit: the output (or its temporary) name no longer fits
    for n, accept in ((230, frozenset({0, 2, 5})), (250, frozenset({2, 5}))):
        name = "N" * n + ".jpg"
        cases.append(Case(f"names/jpg:long-{n}", "names", _one(name, lambda b: b.bytes("jpg"), out=None),
                          accept, (_default_out(name),)))
    return cases


FLOAT_OPTIONS = ["--mask-scale", "--edge-reach", "--video-margin", "--edge-detect", "--photo-threshold", "--threshold",
                 "--pad", "--detect-scale", "--between-scale", "--hold-before", "--hold-after"]
INT_OPTIONS = ["--detect-every", "--marks-every", "--crf", "--threads", "--jobs"]
VIDEO_ONLY = {"--video-margin", "--between-scale", "--hold-before", "--hold-after", "--detect-every",
              "--marks-every", "--crf"}


def option_cases() -> list[Case]:
    cases = []
    for opt in FLOAT_OPTIONS + INT_OPTIONS:
        for value in ("nan", "inf", "-inf", "-1", "1e-9"):
            if value == "-inf" and opt not in {"--threshold", "--pad", "--crf"}:
                continue
            # 1e-9 is a legal-looking number: refused, or the faces still masked. The others: refused.
            accept = frozenset({0, 2}) if value == "1e-9" else frozenset({2})
            key = "mp4-silent" if (opt in VIDEO_ONLY and value == "1e-9") else "jpg"
            ext = ".mp4" if key == "mp4-silent" else ".jpg"
            cases.append(Case(f"options/{opt}={value}", "options",
                              _one(f"in{ext}", lambda b, k=key: b.bytes(k), extra=[f"{opt}={value}"]), accept,
                              (f"out{ext}",), timeout=240 if value == "1e-9" else 90))
    out_of_range = [("--threshold", "1.5"), ("--photo-threshold", "2"), ("--threshold", "0"), ("--detect-scale", "0"),
                    ("--mask-scale", "0"), ("--detect-every", "0"), ("--marks-every", "0"), ("--crf", "99"),
                    ("--detect-scale", "1e9"), ("--edge-detect", "1e9"), ("--pad", "1e12"), ("--jobs", "99999999999"),
                    ("--threads", "99999999999")]
    for opt, value in out_of_range:
        cases.append(Case(f"options/{opt}={value}", "options",
                          _one("in.jpg", lambda b: b.bytes("jpg"), extra=[f"{opt}={value}"]), frozenset({2}),
                          ("out.jpg",), timeout=90))
    choices = [("--mask", "xyz"), ("--mask-shape", "star"), ("--audio", "loud"), ("--quality", "best"),
               ("--on-error", "ignore"), ("--marks", "xyz"), ("--marks", ""), ("--marks", "faces,,"),
               ("--detector", "yolo"), ("--photo-detector", "../../etc/passwd"), ("--preset", "warp9"),
               ("--preset", "-x"), ("--no-such-option", "1")]
    for opt, value in choices:
        key, ext = ("mp4-silent", ".mp4") if opt == "--preset" else ("jpg", ".jpg")
        cases.append(Case(f"options/{opt}={value!r}", "options",
                          _one(f"in{ext}", lambda b, k=key: b.bytes(k), extra=[f"{opt}={value}"]),
                          frozenset({2}), (f"out{ext}",), timeout=90 if opt != "--preset" else 240))
    return cases


def _collide(inputs: dict[str, str], argv: Callable[[Path], list[str]]):
    def build(d: Path, base: Base) -> list[str]:
        for name, key in inputs.items():
            _write(name, lambda b, k=key: b.bytes(k))(d, base)
        return argv(d) + COMMON
    return build


def collision_cases() -> list[Case]:
    two = frozenset({2})

    def link(d: Path, base: Base, kind: str) -> list[str]:
        _write("photo.jpg", base.bytes("jpg"))(d, base)
        (os.link if kind == "hard" else os.symlink)("photo.jpg" if kind == "soft" else d / "photo.jpg", d / "link.jpg")
        return ["photo.jpg", "-o", "link.jpg"] + COMMON

    def folder(d: Path, base: Base, *argv: str) -> list[str]:
        _write("in/photo.jpg", base.bytes("jpg"))(d, base)
        _write("in/sub/clip.mp4", base.bytes("mp4-silent"))(d, base)
        return ["in", *argv] + COMMON

    return [
        Case("collide/output=input", "collide", _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "photo.jpg"]),
             two, timeout=90),
        Case("collide/output=./input", "collide", _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "./x/../photo.jpg"]),
             two, timeout=90),
        Case("collide/output=abs-input", "collide",
             _collide({"clip.mp4": "mp4"}, lambda d: ["clip.mp4", "-o", str(d / "clip.mp4")]), two, timeout=90),
        Case("collide/output=symlink-to-input", "collide", lambda d, b: link(d, b, "soft"), two, timeout=90),
        Case("collide/output=hardlink-of-input", "collide", lambda d, b: link(d, b, "hard"), two, timeout=90),
        Case("collide/report=input", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "out.jpg", "--report", "photo.jpg"]), two,
             ("out.jpg",), timeout=90),
        Case("collide/report=output", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "out.jpg", "--report", "out.jpg"]), two,
             ("out.jpg",), timeout=90),
        Case("collide/report=video-input", "collide",
             _collide({"clip.mp4": "mp4"}, lambda d: ["clip.mp4", "-o", "out.mp4", "--report", "clip.mp4"]), two,
             ("out.mp4",), timeout=90),
        Case("collide/report=default-output", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "--report", "photo.anonymized.jpg"]), two,
             ("photo.anonymized.jpg",), timeout=90),
        Case("collide/report=folder", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: (d / "rep").mkdir() or ["photo.jpg", "-o", "out.jpg", "--report", "rep"]),
             frozenset({2, 5}), ("out.jpg",), timeout=90),
        Case("collide/manifest=input", "collide", lambda d, b: folder(d, b, "-o", "out", "--manifest", "in/photo.jpg"),
             two, ("out/**",), timeout=90),
        Case("collide/manifest=report", "collide",
             lambda d, b: folder(d, b, "-o", "out", "--manifest", "r.json", "--report", "r.json"), two,
             ("out/**", "r.json"), timeout=90),
        Case("collide/output-folder=input-folder", "collide", lambda d, b: folder(d, b, "-o", "in"), two,
             (".in.anonymize-manifest.jsonl",), timeout=90),
        Case("collide/same-output-twice", "collide",
             _collide({"a/photo.jpg": "jpg", "b/photo.jpg": "png"}, lambda d: ["a/photo.jpg", "b/photo.jpg", "-o", "out"]),
             frozenset({0, 2, 8}), ("out/**", ".out.anonymize-manifest.jsonl"), on_failure=True),
        Case("collide/same-input-twice", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "./photo.jpg", "-o", "out"]),
             frozenset({0, 2}), ("out/**", ".out.anonymize-manifest.jsonl")),
        Case("collide/output-in-new-folders", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "new/deep/out.jpg"]),
             frozenset({0}), ("new/deep/out.jpg",), ("new/deep/out.jpg",)),
        Case("collide/output-under-a-file", "collide",
             _collide({"photo.jpg": "jpg", "afile": "png"}, lambda d: ["photo.jpg", "-o", "afile/out.jpg"]),
             frozenset({2, 5}), timeout=90),
        Case("collide/photo-to-video-name", "collide",
             _collide({"photo.jpg": "jpg"}, lambda d: ["photo.jpg", "-o", "out.mp4"]), frozenset({0, 2}), ("out.mp4",)),
        Case("collide/video-to-photo-name", "collide",
             _collide({"clip.mp4": "mp4"}, lambda d: ["clip.mp4", "-o", "out.jpg"]), frozenset({0, 2}), ("out.jpg",)),
    ]


def special_cases() -> list[Case]:
    def fifo(name):
        def build(d: Path, base: Base) -> list[str]:
            os.mkfifo(d / name)
            return [name, "-o", f"out{Path(name).suffix}"] + COMMON
        return build

    def symlink(name, target):
        def build(d: Path, base: Base) -> list[str]:
            os.symlink(target, d / name)
            return [name, "-o", f"out{Path(name).suffix}"] + COMMON
        return build

    def sock(d: Path, base: Base) -> list[str]:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / "sock.jpg"))
        s.close()
        return ["sock.jpg", "-o", "out.jpg"] + COMMON

    def folder_with_fifo(d: Path, base: Base) -> list[str]:
        _write("in/photo.jpg", base.bytes("jpg"))(d, base)
        os.mkfifo(d / "in" / "pipe.jpg")
        os.symlink("/dev/zero", d / "in" / "zero.mp4")
        return ["in", "-o", "out"] + COMMON

    def empty_dir(d: Path, base: Base) -> list[str]:
        (d / "dir.jpg").mkdir()
        return ["dir.jpg"] + COMMON

    def loop(d: Path, base: Base) -> list[str]:
        os.symlink("b.jpg", d / "a.jpg")
        os.symlink("a.jpg", d / "b.jpg")
        return ["a.jpg", "-o", "out.jpg"] + COMMON

    quick = dict(timeout=60)
    return [
        Case("special/fifo.jpg", "special", fifo("pipe.jpg"), frozenset({2}), ("out.jpg",), **quick),
        Case("special/fifo.mp4", "special", fifo("pipe.mp4"), frozenset({2}), ("out.mp4",), **quick),
        Case("special/fifo.heic", "special", fifo("pipe.heic"), frozenset({2}), ("out.heic",), **quick),
        Case("special/dev-zero.jpg", "special", symlink("zero.jpg", "/dev/zero"), frozenset({2}), ("out.jpg",), **quick),
        Case("special/dev-zero.mp4", "special", symlink("zero.mp4", "/dev/zero"), frozenset({2}), ("out.mp4",), **quick),
        Case("special/dev-urandom.mkv", "special", symlink("rand.mkv", "/dev/urandom"), frozenset({2}), ("out.mkv",), **quick),
        Case("special/dev-null.png", "special", symlink("null.png", "/dev/null"), frozenset({2}), ("out.png",), **quick),
        Case("special/proc-file.jpg", "special", symlink("proc.jpg", "/proc/self/status"), frozenset({2}), ("out.jpg",), **quick),
        Case("special/socket.jpg", "special", sock, frozenset({2}), ("out.jpg",), **quick),
        Case("special/dangling-symlink.jpg", "special", symlink("gone.jpg", "nowhere.jpg"), frozenset({2}), ("out.jpg",), **quick),
        Case("special/symlink-loop.jpg", "special", loop, frozenset({2}), ("out.jpg",), **quick),
        Case("special/missing.mp4", "special", lambda d, b: ["missing.mp4", "-o", "out.mp4"] + COMMON, frozenset({2}),
             ("out.mp4",), **quick),
        Case("special/empty-folder-named.jpg", "special", empty_dir, frozenset({2}), **quick),
        Case("special/folder-with-fifo-and-dev-zero", "special", folder_with_fifo, frozenset({0, 8}),
             ("out/photo.jpg", ".out.anonymize-manifest.jsonl"), ("out/photo.jpg",), on_failure=True),
    ]


def stream_cases() -> list[Case]:
    sine = ["-f", "lavfi", "-t", "1", "-i", "sine=frequency=300:sample_rate=44100"]

    def made(ext: str, *args: str):
        def data(base: Base) -> bytes:
            with tempfile.TemporaryDirectory(dir=base.dir) as t:
                out = Path(t) / f"v{ext}"
                ff(*[a.replace("{jpg}", str(base["jpg"])).replace("{mp4}", str(base["mp4-silent"]))
                     .replace("{frame}", str(base["frame"])) for a in args], str(out))
                return out.read_bytes()
        return data

    def animated(fmt: str):
        def data(base: Base) -> bytes:
            from PIL import Image
            im = Image.fromarray(astronaut_rgb())
            frames = [im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), im.rotate(10)]
            buf = io.BytesIO()
            frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
            return buf.getvalue()
        return data

    specs = [  # (name, data, accepted, fast)
        ("audio-only.mp4", made(".mp4", *sine, "-c:a", "aac"), {2}, True),
        ("audio-only.mkv", made(".mkv", *sine, "-c:a", "libopus"), {2}, False),
        ("audio-only.webm", made(".webm", *sine, "-c:a", "libopus"), {2}, False),
        ("audio-only.avi", made(".avi", *sine, "-c:a", "pcm_s16le"), {2}, False),
        ("cover-only.mp4", made(".mp4", *sine, "-i", "{jpg}", "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "mjpeg",
                                "-disposition:v", "attached_pic"), {2}, True),
        ("cover-only.mkv", made(".mkv", *sine, "-attach", "{jpg}", "-metadata:s:t", "mimetype=image/jpeg",
                                "-metadata:s:t", "filename=cover.jpg", "-c:a", "libopus"), {2}, False),
        ("two-videos.mkv", made(".mkv", "-i", "{mp4}", "-i", "{mp4}", "-map", "0:v", "-map", "1:v", "-c", "copy"), {2}, True),
        ("two-videos.mp4", made(".mp4", "-i", "{mp4}", "-i", "{mp4}", "-map", "0:v", "-map", "1:v", "-c", "copy"), {2}, False),
        ("video-and-cover.mp4", made(".mp4", "-i", "{mp4}", "-i", "{jpg}", "-map", "0:v", "-map", "1:v", "-c:v:0", "copy",
                                     "-c:v:1", "mjpeg", "-disposition:v:1", "attached_pic"), {0, 2}, False),
        ("animated.webp", animated("WEBP"), {2}, True),
        ("animated.png", animated("PNG"), {2}, True),
        ("gif-as.webp", animated("GIF"), {2}, False),
        ("with-subtitles.mkv", made(".mkv", "-i", "{mp4}", "-f", "lavfi", "-i", "anullsrc", "-t", "1", "-map", "0:v",
                                    "-c:v", "copy", "-map", "1:a", "-c:a", "libopus"), {0}, False),
        ("two-audio.mp4", made(".mp4", "-i", "{mp4}", *sine, *sine, "-map", "0:v", "-map", "1:a", "-map", "2:a",
                               "-c:v", "copy", "-c:a", "aac"), {0}, False),
        ("attachment.mkv", made(".mkv", "-i", "{mp4}", "-attach", "{jpg}", "-metadata:s:t", "mimetype=image/jpeg",
                                "-c", "copy"), {0}, False),
        ("no-frames.mp4", made(".mp4", "-i", "{mp4}", "-c", "copy", "-t", "0"), {2}, False),
        ("audio-longer.mp4", made(".mp4", "-i", "{mp4}", "-f", "lavfi", "-t", "3", "-i", "sine", "-c:v", "copy",
                                  "-c:a", "aac"), {0}, False),
    ]
    cases = []
    for name, data, accept, fast in specs:
        ext = Path(name).suffix
        cases.append(Case(f"streams/{name}", "streams", _one(name, data, extra=["--audio", "keep"]), frozenset(accept),
                          (f"out{ext}",), (f"out{ext}",) if accept == {0} else ()))
    return cases


def batch_cases() -> list[Case]:
    def mixed(d: Path, base: Base) -> list[str]:
        _write("in/good.jpg", base.bytes("jpg"))(d, base)
        _write("in/a b/good.mp4", base.bytes("mp4"))(d, base)
        _write("in/bad.mp4", truncated(base.bytes("mp4"), "8B"))(d, base)
        _write("in/notes.jpg", b"not a photo\n")(d, base)
        _write("in/empty.png", b"")(d, base)
        return ["in", "-o", "out", "--report", "report.json"] + COMMON

    def good(d: Path, base: Base) -> list[str]:
        _write("in/.hidden/skip.jpg", base.bytes("jpg"))(d, base)
        _write("in/$(x)/g.png", base.bytes("png"))(d, base)
        _write("in/ü n i/g.webm", base.bytes("webm"))(d, base)
        _write("in/readme.txt", b"hello\n")(d, base)
        return ["in", "-o", "out"] + COMMON

    def bad(d: Path, base: Base) -> list[str]:
        _write("in/a.jpg", b"")(d, base)
        _write("in/b.mp4", b"\0" * 100)(d, base)
        return ["in", "-o", "out"] + COMMON

    def files(d: Path, base: Base) -> list[str]:
        _write("good.jpg", base.bytes("jpg"))(d, base)
        _write("bad.jpg", b"junk")(d, base)
        return ["bad.jpg", "good.jpg", "-o", "out"] + COMMON

    manifest = ".out.anonymize-manifest.jsonl"
    return [
        Case("batch/mixed-folder", "batch", mixed, frozenset({8}),
             ("out/good.jpg", "out/a b/good.mp4", manifest), ("out/good.jpg", "out/a b/good.mp4"),
             ("report.json",), on_failure=True, timeout=400),
        Case("batch/hostile-names-folder", "batch", good, frozenset({0}),
             ("out/$(x)/g.png", "out/ü n i/g.webm", manifest), ("out/$(x)/g.png", "out/ü n i/g.webm"), on_failure=True,
             timeout=400),
        Case("batch/all-bad-folder", "batch", bad, frozenset({2, 8}), (manifest,), on_failure=True, timeout=90),
        Case("batch/file-list-one-bad", "batch", files, frozenset({2, 8}), ("out/good.jpg", manifest), on_failure=True),
    ]


def disk_cases() -> list[Case]:
    def into(key: str, ext: str, out: str):
        def build(d: Path, base: Base) -> list[str]:
            _write(f"in{ext}", base.bytes(key))(d, base)
            (d / "full").mkdir(exist_ok=True)
            return [f"in{ext}", "-o", out] + COMMON
        return build

    def folder(d: Path, base: Base) -> list[str]:
        _write("in/photo.png", base.bytes("png"))(d, base)
        _write("in/clip.mp4", base.bytes("mp4"))(d, base)
        (d / "full" / "out").mkdir(parents=True)
        return ["in", "-o", "full/out"] + COMMON

    return [
        Case("disk/full-video", "disk", into("mp4", ".mp4", "full/out.mp4"), frozenset({5}), tiny="full"),
        Case("disk/full-photo", "disk", into("png", ".png", "full/out.png"), frozenset({5}), tiny="full"),
        Case("disk/full-heic", "disk", into("heic", ".heic", "full/out.heic"), frozenset({5}), tiny="full"),
        Case("disk/full-folder", "disk", folder, frozenset({5, 8}), tiny="full"),
        Case("disk/unwritable-proc", "disk", into("jpg", ".jpg", "/proc/out.jpg"), frozenset({5})),
        Case("disk/unwritable-sys", "disk", into("mp4", ".mp4", "/sys/out.mp4"), frozenset({5})),
    ]


def signal_cases() -> list[Case]:
    cases = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        # the signal comes once the output's temporary file exists (the run is writing), or at
        # the delay: on a fast machine a fixed delay came after the run had ended
        for key, ext, delay in (("long", ".mp4", 20.0), ("jpg", ".jpg", 1.5)):
            cases.append(Case(f"signal/{sig.name}-{key}", "signal", _one(f"in{ext}", lambda b, k=key: b.bytes(k)),
                              frozenset({0, code}), (f"out{ext}",), signal=(int(sig), delay), on_failure=True))
    return cases


#: The subset tests/test_hostile.py runs: every family, few model loads (each run that gets as far
#: as processing loads the face model, several seconds on 2 cores), the cheap refusals otherwise.
FAST = {
    "truncate/mp4@90%", "flip/png:seed3x16", "zero/jpg:mid10%", "ext/text.mp4", "empty/.jpg",
    "huge/png-60000x60000", "orient/jpeg-exif-6", "orient/mp4-rotate-180", "orient/mov-rotate-180", "colour/cmyk.jpg", "names/jpg:subshell",
    "options/--threshold=nan", "options/--detect-scale=inf", "options/--mask-scale=-1", "options/--crf=nan",
    "options/--detect-every=0", "options/--mask='xyz'", "options/--marks=''", "options/--marks='faces,,'",
    "options/--photo-threshold=1e-9", "colour/vp9-gbrp.webm",
    "collide/output=input", "collide/report=input", "collide/report=output", "collide/manifest=input",
    "special/fifo.jpg", "special/dev-zero.mp4", "special/missing.mp4",
    "streams/two-videos.mkv", "streams/animated.webp", "batch/mixed-folder", "disk/full-video",
    "signal/SIGTERM-long",
}


def all_cases() -> list[Case]:
    cases = (corruption_cases() + extension_cases() + empty_cases() + huge_cases() + orientation_cases()
             + colour_cases() + name_cases() + option_cases() + collision_cases() + special_cases()
             + stream_cases() + batch_cases() + disk_cases() + signal_cases())
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    assert FAST <= set(names), FAST - set(names)
    for c in cases:
        c.fast = c.name in FAST
    return cases


def families(cases: list[Case]) -> list[str]:
    return list(dict.fromkeys(c.family for c in cases))


def spread(cases: list[Case], n: int) -> list[Case]:
    """``n`` cases taken round-robin over the families (deterministic), in corpus order."""
    by: dict[str, list[Case]] = {}
    for c in cases:
        by.setdefault(c.family, []).append(c)
    picked: list[Case] = []
    rng = random.Random(SEED)
    pools = {f: rng.sample(v, len(v)) for f, v in by.items()}
    while len(picked) < min(n, len(cases)):
        for f in by:
            if pools[f] and len(picked) < n:
                picked.append(pools[f].pop())
    order = {c.name: i for i, c in enumerate(cases)}
    return sorted(picked, key=lambda c: order[c.name])


# --- the sandbox: network namespace, packet count, a full disk -----------------------------------------

WRAPPER = r"""#!/bin/bash
# usage: wrapper PKT_FILE PID_FILE TINY_DIR LIST_FILE cmd...   (run inside unshare -n [-m])
set -m  # job control: the command keeps default SIGINT handling and its own process group
pkt=$1 pidf=$2 tiny=$3 list=$4; shift 4
ip link set lo up 2>/dev/null
if ip link add hz0 type veth peer name hz1 2>/dev/null; then
  sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
  ip link set hz1 up && ip link set hz0 up && ip addr add 10.9.0.1/8 dev hz0 \
    && ip route add default via 10.9.0.2 dev hz0 onlink
fi
tx() { awk '$1=="hz0:"{print $11}' /proc/net/dev; }
if [ -n "$tiny" ]; then mount -t tmpfs -o size=8k,mode=0755 hostile "$tiny" || exit 99; fi
before=$(tx)
"$@" </dev/null &
child=$!
echo "$child" > "$pidf"
wait "$child"; rc=$?
after=$(tx)
[ -n "$before" ] && [ -n "$after" ] && echo $((after - before)) > "$pkt"
[ -n "$tiny" ] && (cd "$tiny" && find . -mindepth 1 ! -type d -printf '%P\n' > "$list")
exit $rc
"""


@dataclass
class Sandbox:
    netns: bool  # unshare -n works: each run in a fresh, empty network namespace
    packets: bool  # and a veth default route there counts what would leave
    mount: bool  # unshare -m works: a tmpfs can stand in for a full disk
    wrapper: Path | None = None


def probe_sandbox(folder: Path) -> Sandbox:
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "wrapper.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    if not shutil.which("unshare"):
        return Sandbox(False, False, False)
    pkt = folder / "probe.pkt"

    def ok(*flags: str, tiny: str = "") -> bool:
        try:
            return subprocess.run(["unshare", *flags, str(wrapper), str(pkt), str(folder / "probe.pid"), tiny,
                                   str(folder / "probe.list"), "true"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    netns = ok("-n")
    packets = netns and pkt.exists() and pkt.read_text().strip() == "0"
    (folder / "probe-mnt").mkdir(exist_ok=True)
    mount = ok("-n", "-m", tiny=str(folder / "probe-mnt"))
    return Sandbox(netns, packets, mount, wrapper)


# --- running and checking one case ----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    family: str
    rc: int | None
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: str = ""
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (not following links): regular files by sha256, others by kind."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.fsdecode(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(rel == p or fnmatch.fnmatchcase(rel, p) or (p.endswith("/**") and rel.startswith(p[:-2]))
               for p in patterns)


_DETECTORS: dict[float, object] = {}


def audit_detector(scale: float = 1.0):
    """The audit's RetinaFace (independent of the CenterFace the tool masks with), loaded once
    per upscaling factor."""
    if scale not in _DETECTORS:
        from anonymize.audit import RetinaFaceAudit

        _DETECTORS[scale] = RetinaFaceAudit(threshold=0.85, scale=scale, flip=False, threads=1)
    return _DETECTORS[scale]


def visible_faces(frame_bgr: np.ndarray) -> list[tuple[int, list[int], float]]:
    """Unmasked faces in a frame, tried at 0/90/180/270 degrees (rotated inputs may come out
    either way): (rotation, box, score) for each detection that does not look masked.

    Small frames (the clips) are upscaled 2x for the detector, whose threshold is 0.85: the
    corpus's unmasked face scores 0.94-1.0 at every rotation, while a blurred head with its
    surroundings can score 0.6-0.8 as one big face. For the same reason boxes wider or taller
    than 40 % of the frame's shorter side are ignored: the corpus's face is under a quarter of it.
    A box whose middle (the eyes, nose and mouth of a face) is masked shows no face either: a
    masked dark object (the astronaut's helmet, which the turned passes mask too) with its light
    rim around it scores up to 0.9 as a face, although every pixel of its middle is a mask cell.
    """
    from anonymize.audit import looks_masked

    h, w = frame_bgr.shape[:2]
    if min(h, w) < 24:
        return []
    detector = audit_detector(2.0 if max(h, w) < 700 else 1.0)
    found = []
    for k in range(4):
        img = np.ascontiguousarray(np.rot90(frame_bgr, k))
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
        regions = detector.detect(img)
        for box, score in zip(regions.boxes, regions.scores):
            if max(box[2] - box[0], box[3] - box[1]) > 0.4 * min(h, w):
                continue
            if not (looks_masked(gray, box) or looks_masked(gray, _middle(box))):
                found.append((90 * k, [int(v) for v in box], round(float(score), 2)))
    return found


def _middle(box) -> np.ndarray:
    """The middle of ``box``: what :func:`~anonymize.audit.looks_masked` (which looks at the inner
    70 % of the box it is given) then sees is the inner 50 % of ``box``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    f = 0.5 / 0.7
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * f, (y2 - y1) * f
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def read_photo_fully(path: Path) -> np.ndarray:
    """Pillow decodes every byte (a truncated file raises); returns BGR pixels."""
    import pillow_heif
    from PIL import Image, ImageFile

    pillow_heif.register_heif_opener()
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(path) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def video_decodes(path: Path) -> str:
    """'' when ffmpeg decodes every frame of ``path`` without an error, else why not."""
    res = subprocess.run([ffmpeg(), "-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i", str(path),
                          "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or res.stderr.strip():
        return (res.stderr.strip() or f"ffmpeg exit {res.returncode}")[-300:]
    return ""


def video_frames(path: Path, every: int = 5) -> list[np.ndarray]:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # OpenCV's VideoCapture crashes (SIGSEGV) on a name that is not UTF-8
        with tempfile.TemporaryDirectory() as t:
            alias = Path(t) / f"alias{path.suffix}"
            os.symlink(os.path.abspath(path), alias)
            return video_frames(alias, every)
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                frames.append(frame)
            last = frame
            i += 1
    finally:
        cap.release()
    if i and (i - 1) % every:
        frames.append(last)
    return frames


def check_output(path: Path, masked: bool) -> list[tuple[str, str]]:
    """The 'incomplete' and 'unmasked' invariants for one output file."""
    ext = path.suffix.lower()
    head = path.read_bytes()[:16]
    is_video = ext in VIDEO_EXT or (ext not in PHOTO_EXT and head[4:8] in (b"ftyp",))
    if ext == ".json":
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            return [("incomplete", f"{path.name!r}: report is not JSON ({exc})")]
        return []
    frames: list[np.ndarray]
    if is_video:
        why = video_decodes(path)
        if why:
            return [("incomplete", f"{path.name!r}: {why}")]
        frames = video_frames(path)
        if not frames:
            return [("incomplete", f"{path.name!r}: no frames")]
    else:
        try:
            frames = [read_photo_fully(path)]
        except Exception as exc:  # anything Pillow raises means it is not a whole photo
            why = video_decodes(path)  # a photo written under a video name, or the reverse
            if why:
                return [("incomplete", f"{path.name!r}: {type(exc).__name__}: {str(exc)[:200]}")]
            frames = video_frames(path)
    if not masked:
        return []
    for i, frame in enumerate(frames):
        faces = visible_faces(frame)
        if faces:
            return [("unmasked", f"{path.name!r}: sampled frame {i}: {faces[:3]}")]
    return []


def run_case(case: Case, base: Base, root: Path, sandbox: Sandbox, python: str = sys.executable,
             keep: bool = False) -> Result:
    """Build ``case`` in a fresh folder under ``root``, run it, check every invariant."""
    case_dir = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    work, home, tmp, meta = case_dir / "w", case_dir / "home", case_dir / "tmp", case_dir / "meta"
    for p in (work, home, tmp, meta):
        p.mkdir()
    result = Result(case.name, case.family, None, 0.0)
    if case.tiny and not sandbox.mount:
        result.skipped = "no mount namespace for a full disk"
        shutil.rmtree(case_dir, ignore_errors=True)
        return result
    try:
        argv = case.build(work, base)
    except Exception as exc:  # a case that cannot be made here (codec missing...) is skipped, loudly
        result.skipped = f"cannot build: {type(exc).__name__}: {str(exc)[:200]}"
        shutil.rmtree(case_dir, ignore_errors=True)
        return result
    before = _snapshot(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OMP_", "ANONYMIZE"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1",
               LC_ALL="C.UTF-8")
    cmd = [python, "-m", "anonymize", *argv]
    pkt, pidf, listf = meta / "packets", meta / "pid", meta / "tiny-list"
    if sandbox.netns:
        flags = ["-n", "-m"] if case.tiny else ["-n"]
        cmd = ["unshare", *flags, str(sandbox.wrapper), str(pkt), str(pidf), str(work / case.tiny) if case.tiny else "",
               str(listf), *cmd]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)

    def child_pid() -> int | None:
        if not sandbox.netns:
            return proc.pid
        with contextlib.suppress(OSError, ValueError):
            return int(pidf.read_text())
        return None

    timed_out = False
    if case.signal:
        sig, delay = case.signal
        while time.monotonic() < start + delay and proc.poll() is None:
            if any(".partial" in n for n in os.listdir(work)):
                time.sleep(0.3)  # a few frames into the output
                break
            time.sleep(0.05)
        pid = child_pid()
        if proc.poll() is None and pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    try:
        out, err = proc.communicate(timeout=max(case.timeout - (time.monotonic() - start), 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        pid = child_pid()
        for group in {pid, proc.pid} - {None}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        out, err = proc.communicate()
    result.seconds = round(time.monotonic() - start, 1)
    rc = proc.returncode
    if rc is not None and rc < 0:
        rc = 128 - rc  # killed by a signal, as a shell reports it
    result.rc = None if timed_out else rc
    stderr = err.decode("utf-8", "replace")
    result.stderr_tail = stderr[-600:]
    fail = result.failures.append
    if timed_out:
        fail(("hang", f"no exit within {case.timeout:.0f} s"))
    elif rc == 99 and case.tiny:
        result.skipped = "could not mount the full disk"
    elif rc not in case.accept:
        last = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
        fail(("exit", f"exit {rc}, expected {sorted(case.accept)}: {last}"))
    if "Traceback (most recent call last)" in stderr:
        fail(("traceback", stderr.split("Traceback (most recent call last)")[-1].strip().splitlines()[-1][:200]))
    if sandbox.packets:
        sent = pkt.read_text().strip() if pkt.exists() else ""
        if sent and sent != "0":
            fail(("packets", f"{sent} packet(s) sent"))
    after = _snapshot(work)
    for rel, sig in before.items():
        if after.get(rel) != sig:
            fail(("input", f"{rel!r} {'removed' if rel not in after else 'changed'}"))
    new = [rel for rel, sig in after.items() if before.get(rel) != sig and rel in after]
    succeeded = rc == 0 and not timed_out
    for rel in sorted(new):
        p = work / rel
        kind = after[rel][0]
        if kind == "dir":
            continue
        if _matches(rel, case.extras) or rel.endswith(".anonymize-manifest.jsonl") and _matches(rel, case.outputs):
            if kind == "file" and rel.endswith(".json"):
                result.failures.extend(check_output(p, False))
            continue
        if not _matches(rel, case.outputs):
            fail(("leftover", f"{rel!r}"))
            continue
        if not (succeeded or case.on_failure):
            fail(("leftover", f"{rel!r} written though the run failed (exit {rc})"))
        if kind != "file":
            fail(("leftover", f"{rel!r} is a {kind}, not a file"))
            continue
        result.failures.extend(check_output(p, case.masked))
    if succeeded:
        for rel in case.required:
            if rel not in after:
                fail(("missing", f"{rel!r} not written"))
    # outputs of a successful run whose directory does not exist yet are caught above; the
    # tool's own temporaries elsewhere:
    for sub, label in ((tmp, "TMPDIR"), (home, "HOME")):
        for p in sub.rglob("*"):
            if not p.is_dir():
                fail(("home", f"{label}/{os.fsdecode(p.relative_to(sub))!r}"))
    if case.tiny and listf.exists():
        for rel in listf.read_text().splitlines():
            if rel.endswith(".anonymize-manifest.jsonl"):
                continue  # the batch's record of what it finished (nothing, here)
            if rel and not ((succeeded or case.on_failure) and _matches(f"{case.tiny}/{rel}", case.outputs)):
                fail(("leftover", f"{case.tiny}/{rel!r} on the full disk"))
    if not keep:
        shutil.rmtree(case_dir, ignore_errors=True)
    return result


# --- a corpus run and its summary ------------------------------------------------------------------------


def summary_table(results: list[Result], sandbox: Sandbox) -> str:
    """Markdown: cases per family and the failures by invariant; exit codes seen."""
    fams = list(dict.fromkeys(r.family for r in results))
    cols = INVARIANTS
    lines = ["| family | cases | pass | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
    tot = {c: 0 for c in cols}
    n_all = n_pass = 0
    for f in fams + ["**all**"]:
        rs = [r for r in results if (f == "**all**" or r.family == f) and not r.skipped]
        counts = {c: sum(any(inv == c for inv, _ in r.failures) for r in rs) for c in cols}
        passed = sum(r.ok for r in rs)
        lines.append(f"| {f} | {len(rs)} | {passed} | " + " | ".join(str(counts[c]) for c in cols) + " |")
    skipped = [r for r in results if r.skipped]
    codes: dict[int | None, list[str]] = {}
    for r in results:
        if not r.skipped:
            codes.setdefault(r.rc, []).append(r.family)
    lines += ["", "| exit code | cases | families |", "|---|---|---|"]
    for code in sorted(codes, key=lambda c: (c is None, c or 0)):
        fam = ", ".join(f"{f} {n}" for f, n in sorted({f: codes[code].count(f) for f in codes[code]}.items()))
        lines.append(f"| {'hang' if code is None else code} | {len(codes[code])} | {fam} |")
    notes = []
    if not sandbox.netns:
        notes.append("packets: NOT checked (no `unshare -n` here)")
    elif not sandbox.packets:
        notes.append("packets: runs were in an empty network namespace, but not counted (no veth)")
    if skipped:
        notes.append(f"{len(skipped)} case(s) skipped: " + "; ".join(f"{r.name} ({r.skipped})" for r in skipped[:10]))
    return "\n".join(lines + ([""] + notes if notes else []))


def failure_list(results: list[Result]) -> str:
    out = []
    for r in results:
        for inv, why in r.failures:
            out.append(f"- `{r.name}` [{inv}] rc={r.rc}: {why}")
    return "\n".join(out)


def prepare(root: Path) -> tuple[Base, Sandbox]:
    root.mkdir(parents=True, exist_ok=True)
    return build_base(root / "base"), probe_sandbox(root / "sandbox")
