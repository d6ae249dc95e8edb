"""``anonymize audit``: real outputs of the real pipeline, real models, files made here.

A clean output must audit clean (exit 0); each kind of leftover must be caught (exit 10): a face
left unmasked, a face that was only Gaussian-blurred (recognised with ``--against``), GPS in a
JPEG, a location tag in an MP4, and audio (unless ``--keep-audio-ok``).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from anonymize.cli import main as cli_main

from .conftest import face_clip, ff

pytest.importorskip("retinaface.weights", reason='needs the audit extra: pip install "anonymize-protest[audit]"')

from anonymize.audit import EXIT_FOUND, audit, check_video_metadata, main, scan_bytes


@pytest.fixture(scope="module")
def clean(tmp_path_factory, astronaut_bgr) -> tuple[Path, Path]:
    """Inputs (a PNG, a JPEG and a 1 s clip of the astronaut) and their anonymized outputs."""
    from anonymize import Anonymizer

    root = tmp_path_factory.mktemp("audit")
    src, out = root / "in", root / "out"
    (src / "sub").mkdir(parents=True)
    cv2.imwrite(str(src / "face.png"), astronaut_bgr)
    cv2.imwrite(str(src / "sub" / "face.jpg"), astronaut_bgr)
    face_clip(src, "clip.mp4", seconds=1.0, audio=True)
    runner = Anonymizer(seed=0)
    for f in ("face.png", "sub/face.jpg", "clip.mp4"):
        runner.file(src / f, out / f)
    return src, out


def _kinds(report_json: Path) -> dict[str, list[dict]]:
    data = json.loads(report_json.read_text())
    found: dict[str, list[dict]] = {}
    for f in data["files"]:
        for x in f["findings"]:
            found.setdefault(x["kind"], []).append(x)
    return found


def test_clean_outputs_audit_clean(clean, tmp_path, capsys):
    src, out = clean
    report = tmp_path / "audit.json"
    assert cli_main(["audit", str(out), "--json", str(report), "-q"]) == 0  # dispatched by the CLI
    data = json.loads(report.read_text())
    assert data["clean"] and len(data["files"]) == 3
    video = next(f for f in data["files"] if f["kind"] == "video")
    assert video["frames_checked"] == 6  # 30 frames, every 5th
    assert "3 clean" in capsys.readouterr().out
    # Against the originals: no face of theirs is recognisable in the outputs.
    assert main([str(out), "--against", str(src), "--every", "10", "-q"]) == 0
    result = audit(out / "face.png", against=src / "face.png")
    assert result.clean and result.files[0].input == str(src / "face.png")


def test_unmasked_face_is_flagged_with_a_thumbnail(clean, tmp_path, astronaut_bgr):
    src, _ = clean
    leaked = tmp_path / "published"
    leaked.mkdir()
    shutil.copy(src / "face.png", leaked / "face.png")  # the "output" is the original photo
    thumbs, report = tmp_path / "thumbs", tmp_path / "audit.json"
    assert main([str(leaked), "--thumbs", str(thumbs), "--json", str(report), "-q"]) == EXIT_FOUND
    faces = _kinds(report)["face"]
    assert len(faces) == 1
    x, y, w, h = faces[0]["box"]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200 and h > 80  # the astronaut's face
    thumb = Path(faces[0]["thumbnail"])
    assert thumb.parent == thumbs and thumb.name.startswith("face.png_")
    crop = cv2.imread(str(thumb))
    assert crop.shape[0] > h and crop.shape[1] > w  # the face with a margin


def test_against_recognises_a_gaussian_blurred_face(clean, tmp_path):
    src, _ = clean
    blurred = tmp_path / "out"
    blurred.mkdir()
    image = cv2.imread(str(src / "face.png"))
    cv2.imwrite(str(blurred / "face.png"), cv2.GaussianBlur(image, (31, 31), 0))
    report = tmp_path / "audit.json"
    assert main([str(blurred), "--against", str(src), "--json", str(report), "-q"]) == EXIT_FOUND
    leaks = _kinds(report)["leak"]
    assert len(leaks) == 1 and leaks[0]["distance"] < 0.6
    # The input faces that recognition compares are those the detector scores at recognize_threshold
    # or more: with an impossible score none is compared, so the blurred face is no longer a leak.
    strict = audit(blurred / "face.png", against=src / "face.png", recognize_threshold=1.01)
    assert not [f for f in strict.files[0].findings if f.kind == "leak"]
    assert strict.settings["recognize_threshold"] == 1.01


def _no_face_image() -> np.ndarray:
    ramp = np.linspace(40, 200, 320, dtype=np.uint8)
    return np.dstack([np.tile(ramp, (240, 1))] * 3)


def test_gps_in_a_jpeg_is_caught(tmp_path):
    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({1: "N", 2: (52.0, 31.0, 12.34), 3: "E", 4: (13.0, 24.0, 56.78)})
    path = tmp_path / "photo.jpg"
    Image.fromarray(_no_face_image()).save(path, exif=exif)
    result = audit(path)
    details = " ".join(f"{x.kind}:{x.detail}" for x in result.files[0].findings)
    assert "metadata:carries" in details and "exif:gps" in details
    assert "'Exif" in details  # and the byte scan sees it too
    assert not any(x.kind == "face" for x in result.files[0].findings)
    clean = tmp_path / "clean.jpg"
    Image.fromarray(_no_face_image()).save(clean)
    assert audit(clean).clean and scan_bytes(clean) == []


def test_location_tag_in_an_mp4_is_caught(tmp_path):
    path = tmp_path / "clip.mp4"
    ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=1", "-metadata", "location=+52.5200+013.4050/",
       "-c:v", "libx264", "-preset", "ultrafast", str(path))
    details = [x.detail for x in check_video_metadata(path)]
    assert "tag:location" in details
    assert main([str(path), "-q"]) == EXIT_FOUND


def test_audio_is_caught_unless_allowed(clean, tmp_path):
    from anonymize import Anonymizer

    src, _ = clean
    out = tmp_path / "with_audio.mp4"
    Anonymizer(seed=0, keep_audio=True).file(src / "clip.mp4", out)
    result = audit(out)
    assert [x.kind for x in result.files[0].findings] == ["audio"]
    assert main([str(out), "--keep-audio-ok", "-q"]) == 0


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    from anonymize.models import model_path

    monkeypatch.setitem(sys.modules, "retinaface", None)  # import fails as if not installed
    model_path.cache_clear()  # found before, in this session
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), _no_face_image())
    assert main([str(path)]) == 6
    assert 'pip install "anonymize-protest[audit]"' in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["mp4", "heic"])
def test_a_last_box_header_cut_short_is_no_traceback(clean, tmp_path, astronaut_bgr, kind):
    # A 64-bit box header ("largesize") cut short at the end of an otherwise good output: it raised
    # struct.error from the byte scan. Now the scan stops there and keeps the rest for the search.
    src, out = clean
    path = tmp_path / f"cut.{kind}"
    if kind == "mp4":
        shutil.copy(out / "clip.mp4", path)
    else:
        from anonymize import Anonymizer
        from anonymize.photo import write_photo, PhotoInfo

        write_photo(astronaut_bgr, tmp_path / "in.heic", PhotoInfo("HEIF", (512, 512)))
        Anonymizer(seed=0).file(tmp_path / "in.heic", path)
    with open(path, "ab") as f:
        f.write(b"\0\0\0\x01free\0\0\0")
    assert scan_bytes(path) == []
    assert main([str(path), "--every", "1000", "-q"]) == 0  # frame 0 of the clip only


def test_bad_paths_are_input_errors(tmp_path):
    assert main([str(tmp_path / "missing.mp4"), "-q"]) == 2
    assert main([str(tmp_path), "-q"]) == 2  # a folder with nothing to audit


def test_looks_and_their_agreement(astronaut_bgr):
    from anonymize.audit import Auditor, AuditSettings, RetinaFaceAudit

    det = RetinaFaceAudit(threshold=0.3, big_scale=3.0, threads=1)
    looks = det.looks(astronaut_bgr)
    assert len(looks) == 4  # 2x, 2x mirrored, 1x, 3x
    assert len(RetinaFaceAudit(threshold=0.3, threads=1).looks(astronaut_bgr)) == 3
    wide = np.zeros((100, 2000, 3), np.uint8)  # 3x would pass max_side: capped, and no longer "further"
    assert len(det.looks(wide)) == 3
    # The astronaut's face is found by every look, so needs no second look; a masked-looking box is dismissed.
    found, _dismissed = Auditor(AuditSettings(threads=1)).suspects(astronaut_bgr)
    assert len(found) == 1 and 150 < found.boxes[0, [0, 2]].mean() < 300
    flat = astronaut_bgr.copy()
    x1, y1, x2, y2 = found.boxes[0].astype(int)
    flat[y1:y2, x1:x2] = cv2.GaussianBlur(flat[y1:y2, x1:x2], (0, 0), 12)
    assert len(Auditor(AuditSettings(threads=1)).suspects(flat)[0]) == 0


def test_against_flags_a_face_left_unchanged_even_when_recompressed(clean, tmp_path):
    """With the originals at hand, a face whose pixels the output still carries is flagged even
    where the detector's second look or recognition would not be sure (here: JPEG-recompressed)."""
    src, out = clean
    published = tmp_path / "out"
    published.mkdir()
    original = cv2.imread(str(src / "face.png"))
    cv2.imwrite(str(published / "face.jpg"), original, [cv2.IMWRITE_JPEG_QUALITY, 80])
    result = audit(published / "face.jpg", against=src / "face.png")
    unmasked = [f for f in result.files[0].findings if f.kind == "unmasked"]
    assert len(unmasked) >= 1
    x, y, w, h = unmasked[0].box
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200  # the astronaut's face
    # our own masked output of the same photo: its face is changed, nothing is "unmasked"
    masked = audit(out / "face.png", against=src / "face.png")
    assert not [f for f in masked.files[0].findings if f.kind == "unmasked"]


def test_against_second_look_on_low_scored_input_detections(clean):
    """With the originals, input detections are checked for unchanged pixels. On the astronaut photo
    the input detector also fires, at scores 0.15-0.17, on her suit and the flag, which our pipeline
    rightly left unmasked: below the default ``against_threshold`` (0.25) they are not checked; at
    0.1 they are reported as unmasked, unless the second look on the input says they are not faces."""
    from anonymize.audit import Auditor, AuditSettings

    src, out = clean
    ref, image = cv2.imread(str(src / "face.png")), cv2.imread(str(out / "face.png"))
    assert len(Auditor(AuditSettings(threads=1)).unchanged(image, ref)) == 0
    low = Auditor(AuditSettings(threads=1, against_threshold=0.1))
    faces = low.input_faces(image, ref)
    assert len(faces.regions) >= 3 and faces.regions.scores.min() < 0.25
    assert sum(faces.is_face(i) for i in range(len(faces.regions))) == 1  # the face
    flagged = low.unchanged(image, ref, faces)
    assert len(flagged) >= 1 and flagged.scores.max() < 0.25
    second = Auditor(AuditSettings(threads=1, against_threshold=0.1, against_second_look=True))
    assert len(second.unchanged(image, ref)) == 0


def test_audit_detector_weights_come_from_the_registry():
    import hashlib

    from anonymize.detectors import DETECTORS
    from anonymize.detectors.retinaface import RetinaFaceAudit, _retinaface_weights
    from anonymize.models import model_path, registry

    entry = registry()["retinaface"]
    assert DETECTORS["retinaface-audit"] is RetinaFaceAudit
    assert model_path("retinaface").as_posix().endswith("retinaface/weights.py")
    assert hashlib.sha256(_retinaface_weights()).hexdigest() == entry["graph_sha256"]
    assert entry["licence"] == "MIT" and entry["package_version"] == "0.1.0"


def test_audit_detector_builds_from_the_registry_like_the_others(astronaut_bgr):
    from anonymize.detectors import create

    # the options the pipeline passes to a face detector
    det = create("retinaface-audit", threshold=0.5, scale=1.0, threads=1, pad=4.0, edge=0.0)
    plain = create("retinaface-audit", threshold=0.5, scale=1.0, threads=1)
    found, bare = det.detect(astronaut_bgr), plain.detect(astronaut_bgr)
    assert len(found) == len(bare) >= 1 and det.models()[0]["name"] == "retinaface"
    assert np.allclose(found.boxes, bare.boxes + [-4, -4, 4, 4])
