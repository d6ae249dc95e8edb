"""Inputs the tool refuses, drops or warns about, and full disks: real files made with ffmpeg."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from anonymize import InputError
from anonymize.cli import main as cli_main

from .conftest import ff


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
