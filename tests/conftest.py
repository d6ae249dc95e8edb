"""Shared helpers: real ffmpeg, real files made in tmp_path, one loaded model per session."""
from __future__ import annotations

import re
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from anonymize import Anonymizer
from anonymize.ffmpeg_tools import ffmpeg_exe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def ff(*args: str) -> str:
    """Run ffmpeg; return stderr; fail the test with ffmpeg's message on error."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stderr


def ffmpeg_info(path: Path) -> str:
    """ffmpeg's own report of a file (stream list, tags), as a user would see it."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def packet_times(path: Path, stream: str = "v:0") -> list[float]:
    """Presentation times (seconds) of a stream's packets, read by ffmpeg's framecrc muxer."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    tb = Fraction(re.search(r"#tb \d+: (\d+/\d+)", out)[1])
    pts = [int(line.split(",")[2]) for line in out.splitlines() if line and not line.startswith("#")]
    return sorted(float(p * tb) for p in pts)


def packet_crcs(path: Path, stream: str) -> list[str]:
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    return [line.split(",")[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def decode_frames(path: Path) -> np.ndarray:
    """All frames as RGB arrays (N, H, W, 3), decoded by ffmpeg directly (not by our decoder)."""
    info = ffmpeg_info(path)
    w, h = map(int, re.search(r"Video: .*?, (\d{2,5})x(\d{2,5})", info).groups())
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real face photo (public domain, shipped in scikit-image)."""
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def anonymizer() -> Anonymizer:
    return Anonymizer(seed=0)


@pytest.fixture
def face_png(tmp_path: Path, astronaut_bgr: np.ndarray) -> Path:
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), astronaut_bgr)
    return path


def face_clip(tmp_path: Path, name: str = "face.mp4", *extra_out: str, seconds: float = 1.0,
              size: str = "640x360", audio: bool = True) -> Path:
    """A clip of a real face drifting across a frame, optionally with a sine-tone audio track."""
    png = tmp_path / "astro.png"
    if not png.exists():
        cv2.imwrite(str(png), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    w, h = map(int, size.split("x"))
    out = tmp_path / name
    args = ["-f", "lavfi", "-i", f"color=gray:size={size}:rate=30:duration={seconds}",
            "-loop", "1", "-framerate", "30", "-t", str(seconds), "-i", str(png)]
    if audio:
        args += ["-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=48000"]
    graph = (f"[1:v]scale={h}:{h}[f];[0:v][f]overlay=x='(W-w)*t/{max(seconds, 0.1)}':y=0:shortest=1,"
             "format=yuv420p[v]")
    args += ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast"]
    if audio:
        args += ["-map", "2:a", "-c:a", "aac", "-shortest"]
    ff(*args, *extra_out, str(out))
    return out
