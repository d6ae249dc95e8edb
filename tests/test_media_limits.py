"""Inputs the tool refuses, drops or warns about, and full disks: real files made with ffmpeg."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest

from anonymize import EncodeError, InputError
from anonymize.cli import main as cli_main
from anonymize.errors import DiskFull
from anonymize.regions import Regions
from anonymize.report import FileReport

from .conftest import decode_frames, face_clip, ff


def _no_video_inputs(tmp_path: Path, astronaut_bgr) -> dict[str, Path]:
    """Files named .mp4 with no real video stream, each made by ffmpeg."""
    jpg = tmp_path / "cover.jpg"
    cv2.imwrite(str(jpg), astronaut_bgr)
    files = {}
    files["audio-only"] = tmp_path / "audio.mp4"
    ff("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(files["audio-only"]))
    files["cover and audio"] = tmp_path / "song.mp4"
    ff("-f", "lavfi", "-i", "sine=duration=1", "-i", str(jpg), "-map", "0:a", "-map", "1:v", "-c:a", "aac",
       "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", str(files["cover and audio"]))
    files["cover only"] = tmp_path / "cover.mp4"
    ff("-i", str(jpg), "-map", "0:v", "-c:v", "mjpeg", "-disposition:v:0", "attached_pic", str(files["cover only"]))
    files["no streams"] = tmp_path / "empty.mp4"  # a valid MP4 holding no stream at all
    ff("-f", "lavfi", "-i", "sine=duration=0.1", "-t", "0", "-c:a", "aac", "-f", "mp4", str(files["no streams"]))
    return files


EXPECTED = {"audio-only": "audio-only file", "cover and audio": "only a cover picture and audio",
            "cover only": "only a cover picture", "no streams": "the file has no streams at all"}


def test_no_video_stream_is_bad_input(tmp_path, astronaut_bgr, anonymizer):
    files = _no_video_inputs(tmp_path, astronaut_bgr)
    for name, src in files.items():
        out = tmp_path / f"out-{src.name}"
        with pytest.raises(InputError, match=f"no video stream: {EXPECTED[name]}") as err:
            anonymizer.file(src, out)
        assert err.value.exit_code == 2
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_cli_exits_2_for_audio_only_and_empty(tmp_path, astronaut_bgr, capsys):
    files = _no_video_inputs(tmp_path, astronaut_bgr)
    assert cli_main([str(files["audio-only"]), "-o", str(tmp_path / "o.mp4"), "-q"]) == 2
    assert cli_main([str(files["no streams"]), "-o", str(tmp_path / "o.mp4"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no video stream: audio-only file" in err and "no streams at all" in err
    assert not (tmp_path / "o.mp4").exists()


# ---------------------------------------------------------------------------------------------
# full disks: a real, small tmpfs (needs root and permission to mount; skipped otherwise)


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of ``size`` bytes at a fresh folder; ``fill=True`` fills it to the last byte."""
    mounted: list[Path] = []

    def make(size: int = 64 << 10, fill: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(where)
        if fill:
            _fill(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> None:
    """Fill the (tmpfs) ``disk`` to its last page with ``.filler``."""
    fd = os.open(disk / ".filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _left(folder: Path) -> list[str]:
    """Everything in ``folder`` (recursively) but the filler."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != ".filler")


def test_video_onto_a_full_disk_exits_5_and_leaves_nothing(tmp_path, small_disk, capsys):
    src = tmp_path / "noisy.mp4"  # noise does not compress: ~ 1 MB once encoded
    ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1,noise=alls=60:allf=t", "-c:v", "libx264",
       "-preset", "ultrafast", "-qp", "0", str(src))
    disk = small_disk(64 << 10)
    out = disk / "out.mp4"
    assert cli_main([str(src), "-o", str(out), "-q"]) == 5
    assert not out.exists() and _left(disk) == []  # no output, no temporary file
    assert "no space left on the disk" in capsys.readouterr().err


def test_photo_onto_a_full_disk_raises_disk_full(tmp_path, small_disk, face_png, anonymizer):
    disk = small_disk(64 << 10)  # the 512x512 PNG is ~ 500 kB
    with pytest.raises(DiskFull, match="no space left") as err:
        anonymizer.file(face_png, disk / "out.png")
    assert err.value.exit_code == 5 and isinstance(err.value, EncodeError)
    assert _left(disk) == []


def test_batch_stops_at_the_first_full_disk(tmp_path, small_disk, astronaut_bgr, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"p{i}.png"), np.roll(astronaut_bgr, 40 * i, axis=1))
    disk = small_disk(128 << 10)
    out = disk / "out"
    # a folder batch whose failures would make exit code 8 stops with 5: every later file would fail too
    assert cli_main([str(src), "-o", str(out), "-q"]) == 5
    err = capsys.readouterr().err
    assert "0 done, 0 skipped as already done, 1 failed" in err
    assert "stopped:" in err and "no space left on the disk" in err
    assert [n for n in _left(disk) if n.startswith("out/")] == []  # nothing under a final name, no temporary


def test_manifest_on_a_full_disk_stops_the_batch_with_the_summary(tmp_path, small_disk, astronaut_bgr, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"p{i}.jpg"), np.roll(astronaut_bgr, 40 * i, axis=1))
    disk = small_disk(64 << 10, fill=True)
    manifest = disk / "m.jsonl"
    assert cli_main([str(src), "-o", str(out), "-q", "--manifest", str(manifest)]) == 5
    err = capsys.readouterr().err
    # the driver records each file as started (fsync'd) before a worker may write its output, so a
    # full disk stops the batch before the first file: no output exists that the manifest does not know
    assert "0 done" in err and f"stopped: {manifest}: no space left on the disk for the manifest" in err
    assert "run the same command again" in err
    assert not out.exists() or list(out.iterdir()) == []
    assert manifest.read_bytes() == b""  # no half record


def test_a_disk_that_fills_between_the_start_and_the_done_record(tmp_path, small_disk, astronaut_bgr, capsys):
    """The manifest's disk fills after a file's start record and before its done record (the file's
    output, on another disk, is written in between): exit 5 with the summary, the started record and
    no half record in the manifest; the output is complete and known as started, so the same command
    run again (space freed) redoes it without -y and records it done."""
    from anonymize.batch import STARTED, read_manifest

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "p0.jpg"), astronaut_bgr)
    disk = small_disk(64 << 10)
    manifest = disk / "m.jsonl"
    # tmpfs allocates whole pages: an earlier record pads the manifest so that the start record
    # still fits in its last page and the done record (~300 bytes) needs a new one, which the
    # filler below has taken
    start = (json.dumps({"input": "p0.jpg", "status": STARTED}, separators=(",", ":")) + "\n").encode()
    page = os.sysconf("SC_PAGE_SIZE")
    pad = (json.dumps({"input": "earlier.jpg", "status": "failed", "error": ""}, separators=(",", ":"))).encode()
    earlier = pad[:-2] + b"x" * (page - len(start) - 8 - len(pad) - 1) + b'"}\n'
    manifest.write_bytes(earlier)
    _fill(disk)
    cmd = [str(src), "-o", str(out), "-q", "--manifest", str(manifest)]
    assert cli_main(cmd) == 5
    err = capsys.readouterr().err
    assert f"stopped: {manifest}: no space left on the disk for the manifest" in err, err
    assert "1 done" in err and "run the same command again" in err  # done (complete), but not recorded
    assert manifest.read_bytes() == earlier + start  # the start record, no half done record
    assert cv2.imread(str(out / "p0.jpg")) is not None  # complete (written atomically), and not recorded done
    (disk / ".filler").unlink()
    assert cli_main(cmd) == 0  # without -y: the manifest knows the output as started, so it is ours to redo
    assert "1 done" in capsys.readouterr().err
    assert [r["status"] for r in read_manifest(manifest) if r["input"] == "p0.jpg"] == ["done"]
    assert cv2.imread(str(out / "p0.jpg")) is not None


def test_report_onto_a_full_disk_exits_5(tmp_path, small_disk, face_png, capsys):
    disk = small_disk(64 << 10, fill=True)
    report = disk / "r.json"
    assert cli_main([str(face_png), "-o", str(tmp_path / "o.png"), "-q", "--report", str(report)]) == 5
    assert "could not write the report" in capsys.readouterr().err
    assert _left(disk) == []


def test_full_temporary_folder_while_spooling_the_report(small_disk, monkeypatch):
    # a long video's report frames spill from memory into the temporary folder after 4 MB
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk(256 << 10, fill=True)))
    report = FileReport("in.mp4", "out.mp4", "video")
    many = Regions(np.tile(np.array([[10, 10, 50, 60]], np.float32), (500, 1)))
    with pytest.raises(DiskFull, match="cannot spool the report's frames: no space left"):
        for i in range(200):  # ~ 100 kB a frame
            report.add_frame(i, i / 30, many, "ellipse")


# ---------------------------------------------------------------------------------------------
# what would otherwise be dropped without a word


def test_two_video_streams_are_refused(tmp_path, anonymizer):
    src = tmp_path / "two.mkv"
    ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=0.5",
       "-f", "lavfi", "-i", "testsrc=size=160x120:rate=30:duration=0.5",
       "-map", "0:v", "-map", "1:v", "-c:v", "libx264", "-preset", "ultrafast", str(src))
    out = tmp_path / "out.mkv"
    with pytest.raises(InputError, match="has 2 video streams; only single-video files are supported") as err:
        anonymizer.file(src, out)
    assert "-map 0:v:N" in str(err.value) and err.value.exit_code == 2
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_animated_images_are_refused(tmp_path, astronaut_bgr, suffix, capsys):
    rgb = astronaut_bgr[:, :, ::-1]
    src = tmp_path / f"anim{suffix}"
    first, second = Image.fromarray(rgb.copy()), Image.fromarray(np.roll(rgb, 100, axis=1).copy())
    first.save(src, save_all=True, append_images=[second], duration=100)
    with Image.open(src) as im:
        assert im.n_frames == 2
    assert cli_main([str(src), "-o", str(tmp_path / f"out{suffix}"), "-q"]) == 2
    assert "animated images are not supported (2 frames); convert to a video" in capsys.readouterr().err
    assert not (tmp_path / f"out{suffix}").exists()


def test_mpo_keeps_the_masked_primary_and_names_the_dropped_pictures(tmp_path, astronaut_bgr, anonymizer):
    rgb = astronaut_bgr[:, :, ::-1]
    src = tmp_path / "stereo.jpg"
    extra = [Image.fromarray(np.roll(rgb, 8 * i, axis=1).copy()) for i in (1, 2)]  # the same scene again
    Image.fromarray(rgb.copy()).save(src, format="MPO", save_all=True, append_images=extra)
    out = tmp_path / "out.jpg"
    report = anonymizer.file(src, out)
    assert "mpo: 2 extra pictures" in report.removed and "extra-images" not in report.removed
    assert report.region_count >= 1
    data = out.read_bytes()
    assert data.count(b"\xff\xd8\xff") == 1 and b"MPF" not in data  # one picture, no index of others
    with Image.open(out) as im:
        assert im.format == "JPEG" and getattr(im, "n_frames", 1) == 1


def _damaged(src: Path, dst: Path) -> None:
    """``src`` with 3000 random bytes written over the middle of its media data (the index at the end stays)."""
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def test_damaged_video_is_processed_with_a_warning(tmp_path, anonymizer, caplog):
    clean = face_clip(tmp_path, seconds=2.0, audio=False)
    assert anonymizer.file(clean, tmp_path / "clean-out.mp4").warnings == []  # no false alarm
    src = tmp_path / "damaged.mp4"
    _damaged(clean, src)
    out = tmp_path / "out.mp4"
    with caplog.at_level("WARNING", logger="anonymize"):
        report = anonymizer.file(src, out)
    assert len(report.warnings) == 1 and "the input is damaged: ffmpeg reported" in report.warnings[0]
    assert "decoding error" in caplog.text and str(src) in caplog.text
    # every frame ffmpeg itself can decode is in the output, and each one is masked
    frames = list(report.frames())
    assert len(frames) == report.frame_count == len(decode_frames(src)) == len(decode_frames(out))
    assert all(f["regions"] for f in frames)
    assert report.summary()["warnings"] == report.warnings  # what the JSON report carries


def test_damaged_video_warning_in_the_json_report(tmp_path, capsys):
    src = tmp_path / "damaged.mp4"
    _damaged(face_clip(tmp_path, seconds=1.0, audio=False), src)
    rep = tmp_path / "r.json"
    assert cli_main([str(src), "-o", str(tmp_path / "o.mp4"), "-q", "--marks", "faces", "--report", str(rep)]) == 0
    files = json.loads(rep.read_text())["files"]
    assert len(files[0]["warnings"]) == 1 and "damaged" in files[0]["warnings"][0]
    assert "the input is damaged" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# memory per photo: big frames are detected in tiles


def test_big_frame_tiles_cover_the_frame_with_the_overlap():
    from anonymize.detectors.tta import big_frame_tiles

    for h, w in [(2448, 3672), (4000, 6000), (3024, 4032), (100, 30000)]:
        tiles = big_frame_tiles(h, w, 2_200_000, 384)
        assert all((x1 - x0) * (y1 - y0) <= 2_200_000 for x0, y0, x1, y1 in tiles)
        covered = np.zeros((h, w), np.uint8)
        for x0, y0, x1, y1 in tiles:
            covered[y0:y1, x0:x1] += 1
        assert covered.min() >= 1
        xs = sorted({(x0, x1) for x0, _, x1, _ in tiles})
        assert all(a[1] - b[0] >= 384 for a, b in zip(xs, xs[1:]))  # neighbours share >= the overlap


def test_tiled_detection_finds_big_and_small_faces(astronaut_bgr):
    from anonymize.detectors.tta import PHOTO, CenterFaceTTA

    canvas = np.full((960, 1280, 3), 90, np.uint8)
    canvas[0:512, 0:512] = astronaut_bgr  # face ~ 180 px: found in the tiles or the overview
    canvas[700:828, 1000:1128] = cv2.resize(astronaut_bgr, (128, 128), interpolation=cv2.INTER_AREA)
    plain = CenterFaceTTA(**dict(PHOTO, max_pixels=None)).detect(canvas)
    tiled_det = CenterFaceTTA(**dict(PHOTO, max_pixels=600_000))
    tiled = tiled_det.detect(canvas)
    # every face the one-piece pass finds lies inside a tiled region
    from anonymize.detectors.fusion import contained

    assert len(plain) >= 2
    assert contained(plain.boxes.astype(np.float64), tiled.boxes.astype(np.float64), 0.8).all()
    # at the limit (1000 x 600 = 600,000 pixels), nothing changes
    small = np.ascontiguousarray(canvas[:600, :1000])
    one_piece = CenterFaceTTA(**dict(PHOTO, max_pixels=None)).detect(small)
    assert len(one_piece) >= 1 and np.array_equal(tiled_det.detect(small).boxes, one_piece.boxes)
