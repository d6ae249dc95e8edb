"""Fuzzing (hypothesis): the readers of untrusted bytes fail cleanly on anything.

Targets: the container walkers and the audit's byte scan (:mod:`anonymize.containers`), the Matroska
frame reader (:mod:`anonymize.mkv`), the photo reader (:func:`anonymize.photo.read_photo`), the
batch manifest reader and the JSON report (written by :func:`anonymize.report.write_report`; there
is no report reader yet, so the round trip goes through ``json``). Inputs are random bytes and real
files made here (Pillow, pillow-heif, ffmpeg) with truncations, byte flips, inserted and deleted
runs and extreme size fields written over them. Properties: only the documented exception types;
no hang (hypothesis's deadline); every part a walker yields lies inside the file, and what they
return is bounded by the file's size.

The CI run is short and deterministic (``derandomize``); ``bench/fuzz.py --examples N`` runs the
same properties long and random (``FUZZ_EXAMPLES``, ``FUZZ_RANDOM``).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tracemalloc
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from anonymize import containers
from anonymize.audit import LONG_PATTERNS, SHORT_PATTERNS, scan_bytes
from anonymize.batch import read_manifest
from anonymize.containers import (bmff_boxes, ebml_elements, file_size, jpeg_segments, metadata_bytes,
                                  png_chunks, riff_chunks)
from anonymize.errors import InputError
from anonymize.ffmpeg_tools import ffmpeg_exe
from anonymize.mkv import MkvError, MkvFrameReader
from anonymize.photo import read_photo
from anonymize.regions import Regions
from anonymize.report import FileReport, write_report

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
#: Per example: hypothesis's deadline (generous: CI machines are shared; a typical example takes
#: 1-10 ms) and a hard limit that interrupts a loop that would never end (the deadline alone only
#: judges examples that finish).
DEADLINE_MS, HANG_S = int(os.environ.get("FUZZ_DEADLINE_MS", "2000")), 20.0
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(milliseconds=DEADLINE_MS),
                derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: The costlier properties get fewer examples, so the CI run stays well under 30 s (one test per
#: format of the mutated-file walks; photos are decoded; reports are written to disk).
HALF = settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
QUARTER = settings(FUZZ, max_examples=max(EXAMPLES // 4, 1))

MAGICS = [b"\xff\xd8\xff\xe1", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b"\0\0\0\x18ftypheic", b"\0\0\0\x01mdat",
          containers.EBML_MAGIC, b""]
#: Values written over 1, 2, 4 or 8 bytes to hit size fields: empty, tiny, "to the end", 64-bit, huge.
EXTREMES = [0, 1, 2, 7, 8, 15, 16, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1, (1 << 64) - 1]


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with a few edits: byte flips, a cut, inserted or deleted runs, extreme size fields."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "flip", "cut", "insert", "delete", "size", "size"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "size":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(EXTREMES)) % (1 << (8 * width))
            data[pos:pos + width] = value.to_bytes(width, draw(st.sampled_from(["big", "little"])))
    return bytes(data)


class Hang(BaseException):
    """An example ran past :data:`HANG_S` (a BaseException: code under test cannot swallow it)."""


@contextmanager
def bounded(memory: int | None = None):
    """Fail when the block runs past :data:`HANG_S` or, with ``memory``, when the Python heap
    (bytes, bytearrays, numpy arrays: what tracemalloc sees) grows by more than ``memory`` bytes."""
    def fire(*_):
        raise Hang(f"no result after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    if memory is not None:
        tracemalloc.start()
    try:
        yield
        if memory is not None:
            current, peak = tracemalloc.get_traced_memory()
            assert peak <= memory, f"peak {peak} bytes allocated, bound {memory}"
    finally:
        if memory is not None:
            tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _memory_bound(data: bytes) -> int:
    """What reading ``data`` may allocate: a few copies of it (the JPEG walk holds the file and
    its pieces), and 8 MB for buffers and one-off caches (a first call once took 1.9 MB). A read
    sized by a corrupt field instead of the file (64 MB pieces, gigabyte frames) goes far past it."""
    return 4 * len(data) + (8 << 20)


random_files = st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=2048))


# --- real files ----------------------------------------------------------------------------------


def _ff(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_real_files(root: Path) -> dict[str, bytes]:
    """Small real files, by kind: photos with metadata, videos, and the raw Matroska stream our
    decoder reads from ffmpeg (``rawmkv``). Also the seeds of ``bench/fuzz.py --atheris``."""
    import pillow_heif
    from PIL.PngImagePlugin import PngInfo

    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # make
    exif[0x0110] = "Model 1"
    text = PngInfo()
    text.add_text("Author", "someone")
    pixels.save(root / "a.jpg", exif=exif, comment=b"a comment")
    pixels.save(root / "a.png", pnginfo=text)
    pixels.save(root / "a.webp", quality=80, exif=exif)
    pixels.save(root / "lossless.webp", lossless=True)
    pixels.save(root / "a.heic", quality=50, exif=exif)
    src = ["-f", "lavfi", "-i", "testsrc=size=32x24:rate=5", "-frames:v", "3"]
    _ff(*src, "-pix_fmt", "yuv420p", "-metadata", "title=clip", root.joinpath("a.mp4").as_posix())
    _ff(*src, "-c:v", "ffv1", "-metadata", "title=clip", root.joinpath("a.mkv").as_posix())
    # what VideoDecoder reads from ffmpeg's pipe
    _ff(*src, "-pix_fmt", "bgr24", "-c:v", "rawvideo", "-allow_raw_vfw", "1", "-write_crc32", "0",
        "-f", "matroska", root.joinpath("raw.mkv").as_posix())
    names = {"jpg": "a.jpg", "png": "a.png", "webp": "a.webp", "lossless.webp": "lossless.webp", "heic": "a.heic",
             "mp4": "a.mp4", "mkv": "a.mkv", "rawmkv": "raw.mkv"}
    return {kind: (root / name).read_bytes() for kind, name in names.items()}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, bytes]:
    return make_real_files(tmp_path_factory.mktemp("fuzz-real"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- the walkers ---------------------------------------------------------------------------------


def _walk_all(data: bytes) -> dict[str, list]:
    """Every walker over ``data``, each part checked to lie inside the file, in order."""
    f, size = io.BytesIO(data), len(data)
    walks = {"png": list(png_chunks(f, size)), "riff": list(riff_chunks(f, size)),
             "bmff": list(bmff_boxes(f, 0, size)), "ebml": list(ebml_elements(f, 0, size)),
             "jpeg": list(jpeg_segments(data))}
    for name, parts in walks.items():
        last = 0
        for p in parts:
            assert last <= p.start < p.end <= size and p.start <= p.data_start <= p.end, (name, p)
            last = p.start
    # nested BMFF boxes (moov/trak/..., meta/iinf in HEIF) are walked inside their parent's bounds
    for box in walks["bmff"]:
        for child in bmff_boxes(f, box.data_start, box.end):
            assert box.data_start <= child.start < child.end <= box.end
    return walks


def _scan(path: Path, data: bytes) -> bytes:
    path.write_bytes(data)
    meta = metadata_bytes(path)
    # pieces of the file joined by one NUL each, every piece at least 2 bytes (or the whole file twice)
    assert len(meta) <= 2 * len(data) + 2
    findings = scan_bytes(path)
    assert all(f.kind == "bytes" for f in findings)
    return meta


@FUZZ
@given(data=random_files)
@example(data=b"\0\0\0\x18ftypisom\0\0\0\0isomiso2\0\0\0\x01mdat\0\0\0")  # 64-bit size cut short
def test_walkers_on_random_bytes(scratch, data):
    with bounded(_memory_bound(data)):
        _walk_all(data)
        _scan(scratch / "random.bin", data)


@pytest.mark.parametrize("kind", ["jpg", "png", "webp", "lossless.webp", "heic", "mp4", "mkv", "rawmkv"])
def test_walkers_see_the_real_structure(real, scratch, kind):
    data = real[kind]
    walks = _walk_all(data)
    expected = {"jpg": ("jpeg", {b"\xe1", b"\xdb", b"\xda", b"\xd9"}), "png": ("png", {b"IHDR", b"tEXt", b"IDAT", b"IEND"}),
                "webp": ("riff", {b"VP8 ", b"EXIF"}), "lossless.webp": ("riff", {b"VP8L"}),
                "heic": ("bmff", {b"ftyp", b"meta", b"mdat"}), "mp4": ("bmff", {b"ftyp", b"moov", b"mdat"}),
                "mkv": ("ebml", {containers.EBML_MAGIC, b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75", b"\xa3"}),
                "rawmkv": ("ebml", {b"\x16\x54\xae\x6b", b"\xa3"})}[kind]
    walker, kinds = expected
    assert kinds <= {p.kind for p in walks[walker]}
    meta = _scan(scratch / f"real.{kind}", data)
    if kind != "webp":  # lossy WebP: the EXIF chunk is most of this tiny file
        assert len(meta) < len(data) * 0.8  # the picture data is left out


@pytest.mark.parametrize("kind", ["jpg", "png", "webp", "heic", "mp4", "mkv"])
def test_walkers_on_mutated_real_files(real, scratch, kind):
    @HALF
    @given(data=mutated(real[kind]))
    def run(data):
        with bounded(_memory_bound(data)):
            _walk_all(data)
            _scan(scratch / f"mutated.{kind}", data)

    run()


def test_box_and_element_sizes_that_do_not_fit(scratch):
    ftyp = b"\0\0\0\x10ftypisom\0\0\0\0"
    cases = {
        "64-bit size cut short": (ftyp + b"\0\0\0\x01mdat\0\0", [b"ftyp"]),
        "size 0: to the end of the file": (ftyp + b"\0\0\0\0free" + b"x" * 20, [b"ftyp", b"free"]),
        "larger than the file": (ftyp + b"\0\0\0\x01mdat" + (1 << 62).to_bytes(8, "big") + b"y" * 9, [b"ftyp", b"mdat"]),
        "smaller than its header": (ftyp + b"\0\0\0\x04moov" + b"z" * 8, [b"ftyp"]),
    }
    for name, (data, kinds) in cases.items():
        boxes = list(bmff_boxes(io.BytesIO(data), 0, len(data)))
        assert [b.kind for b in boxes] == kinds, name
        assert boxes[-1].end <= len(data)
        path = scratch / "case.mp4"
        path.write_bytes(data)
        assert scan_bytes(path) == [] and metadata_bytes(path)
    # EBML: a huge size is clipped to the file; an unknown size on a master runs to the end
    huge = containers.EBML_MAGIC + b"\x01" + b"\xff" * 7  # 56-bit all-ones: unknown size
    segment = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
    tags = b"\x12\x54\xc3\x67\x08\x7f\xff\xff\xff\xff\xff\xff" + b"GPS data"
    data = containers.EBML_MAGIC + b"\x80" + segment + tags
    parts = list(ebml_elements(io.BytesIO(data), 0, len(data)))
    assert [p.kind for p in parts] == [containers.EBML_MAGIC, b"\x18\x53\x80\x67", b"\x12\x54\xc3\x67"]
    assert parts[1].end == len(data) and not parts[1].sized and parts[2].end == len(data)
    (scratch / "case.mkv").write_bytes(data)
    assert [f.detail for f in scan_bytes(scratch / "case.mkv")] == ["contains 'GPS'"]
    assert list(ebml_elements(io.BytesIO(huge), 0, len(huge))) == []  # unknown size on a non-master


def test_scan_of_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        scan_bytes(tmp_path / "gone.mp4")


def test_tags_are_scanned_outside_the_picture_data(real, scratch):
    # the title tag sits in the MP4's moov and the MKV's Tags: both kept; the encoder's name anywhere
    for kind in ("mp4", "mkv"):
        path = _write(scratch / f"tagged.{kind}", real[kind])
        assert b"clip" in metadata_bytes(path)
        assert "contains 'Lavf6'" in {f.detail for f in scan_bytes(path)} or b"Lavf5" in real[kind]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the Matroska frame reader -------------------------------------------------------------------


def _read_mkv(data: bytes) -> list[tuple[float, bytearray]]:
    reader = MkvFrameReader(io.BytesIO(data))
    frames = []
    try:
        for pts, frame in reader:
            h = reader.header
            assert len(frame) <= h.width * h.height * -(-h.bits_per_pixel // 8)
            frames.append((pts, frame))
    except MkvError:
        pass
    return frames


def test_mkv_reader_reads_ffmpeg_raw_output(real):
    frames = _read_mkv(real["rawmkv"])
    assert [round(t, 3) for t, _ in frames] == [0.0, 0.2, 0.4] and all(len(f) == 32 * 24 * 3 for _, f in frames)


@FUZZ
@given(data=st.data())
def test_mkv_reader_on_mutated_streams(real, data):
    stream = data.draw(mutated(real["rawmkv"]))
    with bounded(_memory_bound(stream)):
        _read_mkv(stream)


@FUZZ
@given(data=st.builds(lambda rest: containers.EBML_MAGIC + rest, st.binary(max_size=512)))
def test_mkv_reader_on_random_bytes(data):
    with bounded(_memory_bound(data)):
        _read_mkv(data)


def test_mkv_reader_refuses_huge_sizes(real):
    data = real["rawmkv"]
    block = next(p for p in ebml_elements(io.BytesIO(data), 0, len(data)) if p.kind == b"\xa3")  # a SimpleBlock
    huge = data[:block.start + 1] + b"\x01" + (1 << 50).to_bytes(7, "big") + data[block.start + block.header:]
    with pytest.raises(MkvError, match="block of"):
        list(MkvFrameReader(io.BytesIO(huge)))


# --- the photo reader ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bomb_limit():
    """Pillow's decompression-bomb limit lowered, so a mutated header cannot make one example
    decode a gigapixel image (a real-size limit is tested by Pillow itself)."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1 << 20
    yield
    Image.MAX_IMAGE_PIXELS = before


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("kind", ["jpg", "png", "webp", "lossless.webp", "heic"])
def test_read_photo_on_mutated_photos(real, scratch, small_bomb_limit, kind):
    path = scratch / f"photo.{kind.split('.')[-1]}"
    image, info = read_photo(_write(path, real[kind]))
    assert image.shape == (24, 32, 3) and info.lossless == (kind == "lossless.webp")

    @QUARTER
    @given(data=mutated(real[kind]))
    def run(data):
        path.write_bytes(data)
        try:
            with bounded():
                image, info = read_photo(path)
        except InputError:
            return
        assert image.dtype == np.uint8 and image.ndim == 3 and (image.shape[1], image.shape[0]) == info.size

    run()


def test_heic_past_libheif_limits_is_an_input_error(real, scratch):
    # found by bench/fuzz.py: pillow-heif raised RuntimeError ("Security limit exceeded") past read_photo
    data = real["heic"]
    at = data.index(b"ispe") + 12  # version/flags, width, then height
    path = _write(scratch / "huge.heic", data[:at] + (1 << 30).to_bytes(4, "big") + data[at + 4:])
    with pytest.raises(InputError, match="limit"):
        read_photo(path)


# --- the manifest and the report -----------------------------------------------------------------

record = st.fixed_dictionaries({"input": st.text(max_size=20), "size": st.integers(0, 1 << 40),
                                "sha256": st.text("0123456789abcdef", min_size=64, max_size=64)})
garbage = st.one_of(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
                    st.integers(1, 20_000).map(lambda n: b"[" * n),  # json.loads: RecursionError past ~1000
                    st.just(b'{"input": "cut sh'), st.just(b"[1, 2]"), st.just(b'{"other": 1}'))


@FUZZ
@given(lines=st.lists(st.one_of(record.map(lambda r: ("ok", r)), garbage.map(lambda g: ("bad", g))), max_size=12))
def test_read_manifest_skips_garbage_lines(scratch, lines):
    path = scratch / "manifest.jsonl"
    path.write_bytes(b"\n".join(json.dumps(x).encode() if kind == "ok" else x for kind, x in lines) + b"\n")
    with bounded():
        got = read_manifest(path)
    assert all(isinstance(r, dict) and "input" in r for r in got)
    kept = iter(got)
    assert all(any(r == want for r in kept) for kind, want in lines if kind == "ok")  # all, in order


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@QUARTER
@given(settings_=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
       names=st.lists(st.text(max_size=16), min_size=0, max_size=3),
       boxes=st.lists(st.tuples(*[st.floats(-1e4, 1e4, width=32)] * 4), max_size=3))
def test_report_round_trips_through_json(scratch, settings_, names, boxes):
    files = []
    for name in names:
        fr = FileReport(name, name + ".out", "video", error=name or None, removed=[name])
        fr.add_frame(0, 0.5, Regions(np.array(boxes, np.float32).reshape(-1, 4)), "ellipse")
        files.append(fr)
    path = scratch / "report.json"
    write_report(path, files, settings_, [{"name": "m"}], "0")
    data = json.loads(path.read_text())
    assert data["settings"] == settings_ and [f["input"] for f in data["files"]] == names
    assert all(f["error"] == (n or None) and len(f["frames"][0]["regions"]) == len(boxes)
               for f, n in zip(data["files"], names))
