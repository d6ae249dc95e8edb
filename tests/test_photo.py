"""Photo read/write: upright sRGB pixels in, a metadata-free file of the same format out.

Every input is a real file made here, carrying real metadata (hand-built EXIF with GPS, serial
number and an embedded thumbnail; XMP; IPTC; ICC; comments; PNG text and time chunks). The output
is checked with Pillow *and* by scanning its bytes, since a reader can miss what a scan cannot.
"""
from __future__ import annotations

import errno
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from anonymize.errors import EncodeError, InputError
from anonymize.photo import PHOTO_EXTENSIONS, PhotoInfo, read_photo, write_photo

MAKE, MODEL, SERIAL, WHEN = "SecretMake", "SecretModel", "SN-31337-XY", "2021:03:04 05:06:07"
LAT = ((52, 1), (31, 1), (1234, 100))
LON = ((13, 1), (24, 1), (5678, 100))
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Jane Doe"/></rdf:RDF></x:xmpmeta>')
COMMENT = b"Secret comment: shot at the square"
BYLINE, CITY = b"Jane Doe", b"Springfield"
SECRETS = [MAKE.encode(), MODEL.encode(), SERIAL.encode(), WHEN.encode(), b"2021:03:04", b"GPS", b"Exif",
           b"xmp", b"xap", b"Photoshop", b"8BIM", BYLINE, CITY, COMMENT, b"ICC_PROFILE", b"Ducky", b"Jane"]


# --- fixtures: real files with real metadata ------------------------------------------------------


def _rational_bytes(triple, endian: str = "<") -> bytes:
    return b"".join(struct.pack(endian + "II", n, d) for n, d in triple)


def _ifd(entries: list[tuple[int, int, bytes]], start: int, next_ifd: int = 0) -> bytes:
    """One little-endian TIFF IFD at offset ``start``; values over 4 bytes follow it."""
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}
    data_at = start + 2 + 12 * len(entries) + 4
    head, tail = struct.pack("<H", len(entries)), b""
    for tag, typ, payload in sorted(entries):
        count = len(payload) // sizes[typ]
        if len(payload) <= 4:
            head += struct.pack("<HHI", tag, typ, count) + payload.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, typ, count, data_at + len(tail))
            tail += payload + b"\0" * (len(payload) % 2)
    return head + struct.pack("<I", next_ifd) + tail


def _exif_with_thumbnail(thumbnail: bytes, orientation: int) -> bytes:
    """APP1 payload: IFD0 (make, model, orientation) -> Exif IFD (date, serial) and GPS IFD, then
    IFD1 with an embedded JPEG thumbnail. Pillow cannot write IFD1, so it is laid out by hand."""
    asc = lambda s: s.encode() + b"\0"  # noqa: E731
    short, long_ = (lambda v: struct.pack("<H", v)), (lambda v: struct.pack("<I", v))

    def layout(o_exif: int, o_gps: int, o_ifd1: int, o_thumb: int) -> list[bytes]:
        ifd0 = [(0x010F, 2, asc(MAKE)), (0x0110, 2, asc(MODEL)), (0x0112, 3, short(orientation)),
                (0x0132, 2, asc(WHEN)), (0x8769, 4, long_(o_exif)), (0x8825, 4, long_(o_gps))]
        exif = [(0x9003, 2, asc(WHEN)), (0xA431, 2, asc(SERIAL))]
        gps = [(0x0000, 1, b"\2\3\0\0"), (0x0001, 2, b"N\0"), (0x0002, 5, _rational_bytes(LAT)),
               (0x0003, 2, b"E\0"), (0x0004, 5, _rational_bytes(LON))]
        ifd1 = [(0x0103, 3, short(6)), (0x0201, 4, long_(o_thumb)), (0x0202, 4, long_(len(thumbnail)))]
        return [_ifd(ifd0, 8, o_ifd1), _ifd(exif, o_exif), _ifd(gps, o_gps), _ifd(ifd1, o_ifd1)]

    sizes = [len(b) for b in layout(0, 0, 0, 0)]  # pointer values do not change sizes
    offsets = np.cumsum([8] + sizes)  # IFD0, Exif, GPS, IFD1, thumbnail
    blocks = layout(*(int(o) for o in offsets[1:]))
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + b"".join(blocks) + thumbnail


def _app_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _iptc_segment() -> bytes:
    """APP13 Photoshop IRB with an IPTC record: By-line and City."""
    iptc = (b"\x1c\x02\x50" + struct.pack(">H", len(BYLINE)) + BYLINE
            + b"\x1c\x02\x5a" + struct.pack(">H", len(CITY)) + CITY)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    return _app_segment(0xED, b"Photoshop 3.0\0" + resource + b"\0" * (len(iptc) % 2))


def _upright() -> np.ndarray:
    """An asymmetric RGB picture, 120 high x 80 wide: red top-left, green top-right, blue bottom."""
    img = np.full((120, 80, 3), 230, np.uint8)
    img[:40, :40] = (220, 20, 20)
    img[:40, 40:] = (20, 200, 20)
    img[80:] = (20, 20, 220)
    return img


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def tagged_jpeg(tmp_path: Path) -> Path:
    """A JPEG stored sideways with orientation 6, carrying every kind of metadata we strip."""
    thumb_path = tmp_path / "thumb.jpg"
    Image.fromarray(_upright()[::8, ::8]).save(thumb_path, quality=80)
    stored = np.ascontiguousarray(np.rot90(_upright(), 1))  # orientation 6 turns it back upright
    path = tmp_path / "march.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif_with_thumbnail(thumb_path.read_bytes(), 6),
                                 xmp=XMP, comment=COMMENT, icc_profile=_srgb_icc())
    data = path.read_bytes()
    extra = _iptc_segment() + _app_segment(0xEC, b"Ducky\0\1\0\4\0\0\0\x50")  # IPTC + a vendor APP12
    path.write_bytes(data[:2] + extra + data[2:])
    thumb_path.unlink()
    return path


def _quadrants(rgb: np.ndarray) -> list[np.ndarray]:
    return [rgb[5:35, 5:35].mean((0, 1)), rgb[5:35, 45:75].mean((0, 1)), rgb[85:115, 5:75].mean((0, 1))]


def _assert_upright(rgb: np.ndarray) -> None:
    assert rgb.shape[:2] == (120, 80)
    for got, want in zip(_quadrants(rgb), _quadrants(_upright())):
        assert np.abs(got - want).max() < 25, (got, want)


def _assert_no_secrets(data: bytes) -> None:
    low = data.lower()
    for secret in SECRETS:
        assert secret.lower() not in low, secret
    for triple in (LAT, LON):
        for endian in "<>":
            assert _rational_bytes(triple, endian) not in data


def _png_chunks(path: Path) -> list[bytes]:
    data, pos, names = path.read_bytes(), 8, []
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        names.append(name)
        pos += 12 + length
    return names


# --- JPEG ----------------------------------------------------------------------------------------


def test_fixture_really_carries_the_metadata(tagged_jpeg):
    with Image.open(tagged_jpeg) as im:
        exif = im.getexif()
        assert exif[0x010F] == MAKE and exif[0x0112] == 6
        assert exif.get_ifd(0x8825)[2] == (52.0, 31.0, 12.34)
        assert 0x0201 in exif.get_ifd(ExifTags.IFD.IFD1)  # the thumbnail
        assert im.info["xmp"] and im.info["comment"] == COMMENT and im.info["icc_profile"]
        assert 0x0404 in im.info["photoshop"]
    assert tagged_jpeg.read_bytes().count(b"\xff\xd8\xff") == 2  # the photo and its thumbnail


def test_jpeg_read_names_the_metadata_and_is_upright(tagged_jpeg):
    bgr, info = read_photo(tagged_jpeg)
    assert info.format == "JPEG" and info.size == (80, 120) and info.alpha is None
    assert bgr.dtype == np.uint8 and bgr.flags.c_contiguous
    _assert_upright(bgr[:, :, ::-1])
    expected = {"exif", "exif:gps", "exif:make", "exif:model", "exif:datetime", "exif:serial", "xmp", "iptc",
                "icc", "comment", "thumbnail", "jpeg:app12"}
    assert expected <= set(info.removed), set(info.removed)
    assert not {r for r in info.removed if r.startswith("jpeg:")} - {"jpeg:app12"}
    assert info.removed == sorted(set(info.removed))
    joined = " ".join(info.removed).lower()
    assert not any(s.lower().decode() in joined for s in (MAKE.encode(), MODEL.encode(), SERIAL.encode(), b"2021"))


def test_jpeg_write_carries_no_metadata(tagged_jpeg, tmp_path):
    bgr, info = read_photo(tagged_jpeg)
    out = tmp_path / "clean.jpg"
    write_photo(bgr, out, info)
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (80, 120)
        assert not im.getexif()
        for key in ("exif", "xmp", "icc_profile", "comment", "photoshop", "adobe"):
            assert key not in im.info, key
        assert [m for m, d in im.applist if not (m == "APP0" and d.startswith(b"JFIF"))] == []
        _assert_upright(np.asarray(im.convert("RGB")))
    data = out.read_bytes()
    _assert_no_secrets(data)
    assert data.count(b"\xff\xd8\xff") == 1  # no embedded thumbnail JPEG
    assert read_photo(out)[1].removed == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.jpg", "march.jpg"]  # no temp files


def test_mpo_keeps_only_the_main_image(tmp_path):
    """Many cameras write MPO: a JPEG followed by more images (previews, the other stereo eye)."""
    path = tmp_path / "camera.jpg"
    second = Image.fromarray(np.rot90(_upright(), 2).copy())
    Image.fromarray(_upright()).save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
    bgr, info = read_photo(path)
    assert info.format == "JPEG" and "mpo: 1 extra picture" in info.removed and "extra-images" not in info.removed
    _assert_upright(bgr[:, :, ::-1])
    write_photo(bgr, tmp_path / "out.jpg", info)
    data = (tmp_path / "out.jpg").read_bytes()
    assert data.count(b"\xff\xd8\xff") == 1 and b"MPF" not in data
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"


# --- PNG -----------------------------------------------------------------------------------------


def _png_info() -> PngImagePlugin.PngInfo:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Author", "Jane Doe")
    meta.add_text("Comment", "Secret comment: shot at the square", zip=True)
    meta.add_itxt("Location", "Springfield")
    meta.add(b"tIME", struct.pack(">HBBBBB", 2021, 3, 4, 5, 6, 7))
    return meta


def test_png_is_lossless_and_loses_its_text(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    src = tmp_path / "pic.png"
    exif = Image.Exif()
    exif[0x010F] = MAKE
    Image.fromarray(rgb).save(src, pnginfo=_png_info(), exif=exif)
    bgr, info = read_photo(src)
    assert info.format == "PNG" and info.alpha is None
    assert {"png:text", "png:time", "exif", "exif:make", "comment"} <= set(info.removed), info.removed
    np.testing.assert_array_equal(bgr[:, :, ::-1], rgb)
    out = tmp_path / "out.png"
    write_photo(bgr, out, info)
    with Image.open(out) as im:
        assert im.format == "PNG" and not im.text and not im.getexif()
        np.testing.assert_array_equal(np.asarray(im), rgb)  # pixel-identical round trip
    assert set(_png_chunks(out)) == {b"IHDR", b"IDAT", b"IEND"}
    _assert_no_secrets(out.read_bytes())


def test_png_alpha_round_trips(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (40, 30, 4), dtype=np.uint8)
    src = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(src)
    bgr, info = read_photo(src)
    np.testing.assert_array_equal(info.alpha, rgba[:, :, 3])
    write_photo(bgr, tmp_path / "out.png", info)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), rgba)


def test_png_icc_is_converted_and_dropped(tmp_path):
    src = tmp_path / "icc.png"
    Image.fromarray(_upright()).save(src, icc_profile=_srgb_icc())
    bgr, info = read_photo(src)
    assert "icc" in info.removed
    assert np.abs(bgr[:, :, ::-1].astype(int) - _upright()).max() <= 2  # sRGB -> sRGB: unchanged
    write_photo(bgr, tmp_path / "out.png", info)
    assert b"iCCP" not in _png_chunks(tmp_path / "out.png")


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 1000, 32896, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    bgr, _ = read_photo(tmp_path / "g16.png")
    np.testing.assert_array_equal(bgr[0, :, 0], [0, 4, 128, 255])


# --- WebP and HEIC -------------------------------------------------------------------------------


@pytest.mark.parametrize("lossless", [False, True])
def test_webp_round_trip(tmp_path, lossless):
    rgb = _upright()
    src = tmp_path / "pic.webp"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = MAKE, MODEL
    Image.fromarray(rgb).save(src, lossless=lossless, quality=90, exif=exif, xmp=XMP, icc_profile=_srgb_icc())
    bgr, info = read_photo(src)
    assert info.format == "WEBP" and info.lossless == lossless
    assert {"exif", "exif:make", "exif:model", "xmp", "icc"} <= set(info.removed), info.removed
    out = tmp_path / "out.webp"
    write_photo(bgr, out, info)
    with Image.open(out) as im:
        assert im.format == "WEBP" and not im.getexif() and "xmp" not in im.info and "icc_profile" not in im.info
        if lossless:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), bgr[:, :, ::-1])
    _assert_no_secrets(out.read_bytes())


def test_heic_round_trip(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("no HEVC encoder in this pillow_heif build")
    stored = np.ascontiguousarray(np.rot90(_upright(), 1))
    src = tmp_path / "pic.heic"
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = MAKE, 6
    Image.fromarray(stored).save(src, format="HEIF", quality=95, exif=exif.tobytes(), xmp=XMP)
    bgr, info = read_photo(src)
    assert info.format == "HEIF" and {"exif", "exif:make", "xmp"} <= set(info.removed), info.removed
    _assert_upright(bgr[:, :, ::-1])
    out = tmp_path / "out.heic"
    write_photo(bgr, out, info)
    with Image.open(out) as im:
        assert im.format == "HEIF" and not im.info.get("exif") and not im.info.get("xmp")
        _assert_upright(np.asarray(im.convert("RGB")))
    assert MAKE.encode() not in out.read_bytes() and b"Jane" not in out.read_bytes()


# --- failures ------------------------------------------------------------------------------------


def test_extensions():
    assert PHOTO_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_jpeg_is_an_input_error(tagged_jpeg, cut):
    data = tagged_jpeg.read_bytes()
    bad = tagged_jpeg.with_name("bad.jpg")
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError):
        read_photo(bad)


def test_non_images_are_input_errors(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not a picture\n")
    gif = tmp_path / "anim.png"
    Image.new("P", (4, 4)).save(gif, format="GIF")
    for path in (fake, gif, tmp_path / "missing.jpg", tmp_path / "x.gif", tmp_path / "empty.png"):
        if path.name == "empty.png":
            path.write_bytes(b"")
        with pytest.raises(InputError):
            read_photo(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.png", "empty.png", "notes.jpg"]


def test_full_disk_is_an_encode_error_and_leaves_nothing(tmp_path, monkeypatch):
    bgr = np.zeros((10, 10, 3), np.uint8)
    info = PhotoInfo("JPEG", (10, 10), [])

    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\xff\xd8\xff partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(EncodeError, match="no space left"):
        write_photo(bgr, tmp_path / "out.jpg", info)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_target_is_an_encode_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EncodeError):
        write_photo(np.zeros((4, 4, 3), np.uint8), tmp_path / "file" / "out.png", PhotoInfo("PNG", (4, 4), []))
    with pytest.raises(ValueError):
        write_photo(np.zeros((4, 4), np.uint8), tmp_path / "out.png", PhotoInfo("PNG", (4, 4), []))
