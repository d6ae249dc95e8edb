"""Photos through the public API and the CLI: faces masked, metadata gone, inputs untouched."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anonymize import InputError, anonymize_file, default_output
from anonymize.cli import main as cli_main

GPS_IFD = 0x8825


def _phone_jpeg(path: Path, bgr: np.ndarray) -> None:
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x010F] = "ExampleMake"  # Make
    exif[0x0110] = "PhoneModelX"  # Model
    exif[0x0132] = "2024:05:01 10:00:00"  # DateTime
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.5), 3: "E", 4: (2.0, 17.0, 40.2)})
    img.save(path, "JPEG", exif=exif, quality=95)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_photo_face_masked_and_metadata_removed(tmp_path, astronaut_bgr):
    src = tmp_path / "phone.jpg"
    _phone_jpeg(src, astronaut_bgr)
    before = _sha(src)
    assert Image.open(src).getexif().get_ifd(GPS_IFD)
    rep = anonymize_file(src, report=tmp_path / "r.json", seed=0)
    out = default_output(src)
    assert out.name == "phone.anonymized.jpg" and out.exists()
    assert _sha(src) == before  # the input is never touched
    with Image.open(out) as im:
        assert im.format == "JPEG" and not im.getexif() and "exif" not in im.info
    data = out.read_bytes()
    for secret in (b"ExampleMake", b"PhoneModelX", b"2024:05:01", b"Exif"):
        assert secret not in data
    assert {"exif:gps", "exif:make", "exif:model"} <= set(rep.removed)
    # the face (checked by eye: x 178-272, y 55-182) is changed; a far corner is not
    a = astronaut_bgr.astype(int)
    b = cv2.imread(str(out)).astype(int)
    assert np.abs(a[80:160, 190:260] - b[80:160, 190:260]).mean() > 25
    assert np.abs(a[440:, 440:] - b[440:, 440:]).mean() < 5
    report = json.loads((tmp_path / "r.json").read_text())
    regions = report["files"][0]["frames"][0]["regions"]
    assert regions and regions[0]["kind"] == "face" and regions[0]["shape"] == "ellipse"


def test_png_stays_lossless_png(tmp_path, astronaut_bgr):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), astronaut_bgr)
    out = tmp_path / "b.png"
    report = anonymize_file(src, out, seed=0)
    with Image.open(out) as im:
        assert im.format == "PNG"
    b = cv2.imread(str(out))
    untouched = np.all(b == astronaut_bgr, axis=2)
    # every pixel outside the masked regions (face, and the head/text marks) is bit-exact
    from anonymize.masks import _ellipse_cover  # the same rasterisation the masks use

    masked = np.zeros(untouched.shape, bool)
    for r in next(report.frames())["regions"]:
        box = np.array([r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]])
        x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x1, y1 = min(int(np.ceil(box[2])), 512), min(int(np.ceil(box[3])), 512)
        cover = np.ones((y1 - y0, x1 - x0), bool) if r["shape"] == "box" else _ellipse_cover(box, x0, y0, x1, y1)
        masked[y0:y1, x0:x1] |= cover
    near = cv2.dilate(masked.view(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # report rounds to 0.1 px
    assert untouched[~near].all() and not untouched[masked].all()
    assert untouched.mean() > 0.3


def test_outputs_get_ordinary_permissions(tmp_path, astronaut_bgr):
    # written through a mkstemp file (0600) and renamed: the final file must still be readable
    # as any plainly created file (0666 minus the umask), e.g. by a web server publishing it
    import os

    from anonymize.atomic import _read_umask

    src = tmp_path / "a.png"
    cv2.imwrite(str(src), astronaut_bgr)
    old = os.umask(0o022)
    try:
        assert _read_umask() == 0o022
        anonymize_file(src, tmp_path / "b.png", report=tmp_path / "b.json", seed=0)
    finally:
        os.umask(old)
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("mask", ["solid", "pixelate", "blur"])
def test_each_mask_style_through_the_api(tmp_path, astronaut_bgr, mask):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), astronaut_bgr)
    rep = anonymize_file(src, tmp_path / "o.png", mask=mask, seed=0)
    assert rep.region_count >= 1


def test_bad_requests_are_refused(tmp_path, astronaut_bgr):
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), astronaut_bgr)
    with pytest.raises(InputError):
        anonymize_file(src, src)
    with pytest.raises(InputError):
        anonymize_file(src, tmp_path / "a.mp4")  # photo in, video out
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError):
        anonymize_file(txt, tmp_path / "n.txt")
    with pytest.raises(TypeError):
        anonymize_file(src, tmp_path / "o.png", no_such_option=1)


def test_cli_folder_is_mirrored(tmp_path, astronaut_bgr):
    src = tmp_path / "in"
    (src / "day one" / "ünïcode").mkdir(parents=True)
    cv2.imwrite(str(src / "day one" / "a face.png"), astronaut_bgr)
    cv2.imwrite(str(src / "day one" / "ünïcode" / "b.jpg"), astronaut_bgr)
    (src / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    assert cli_main([str(src), "-o", str(out), "--quiet"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["day one/a face.png", "day one/ünïcode/b.jpg"]


def test_cli_reports_failures_with_exit_code(tmp_path, astronaut_bgr):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), astronaut_bgr)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    rc = cli_main([str(good), str(bad), "-o", str(out), "--quiet", "--report", str(tmp_path / "r.json")])
    assert rc == 2
    assert (out / "good.png").exists() and not (out / "bad.jpg").exists()
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [f["status"] for f in files] == ["ok", "failed"] and files[1]["error"]
