"""Matroska pipe format: what we write, ffmpeg reads with the same timestamps, and vice versa."""
from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest

from anonymize.ffmpeg_tools import ffmpeg_exe
from anonymize.mkv import MkvError, MkvFrameReader, MkvFrameWriter


def _frames(n: int, w: int = 32, h: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), np.uint8) for _ in range(n)]


def test_writer_reader_round_trip():
    buf = io.BytesIO()
    frames = _frames(5)
    times = [0.0, 0.033, 0.1, 0.5, 0.517]
    writer = MkvFrameWriter(buf, 32, 16)
    for t, f in zip(times, frames):
        writer.write(t, f.tobytes())
    buf.seek(0)
    reader = MkvFrameReader(buf)
    got = list(reader)
    assert [round(t, 3) for t, _ in got] == times
    assert all(bytes(d) == f.tobytes() for (_, d), f in zip(got, frames))
    assert (reader.header.width, reader.header.height, reader.header.top_down) == (32, 16, True)


def test_ffmpeg_reads_what_we_write_with_our_timestamps():
    buf = io.BytesIO()
    writer = MkvFrameWriter(buf, 32, 16)
    times = [0.0, 0.04, 0.3, 0.31]
    for t, f in zip(times, _frames(4)):
        writer.write(t, f.tobytes())
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "matroska", "-i", "-", "-c", "copy", "-f", "framecrc", "-"],
                         input=buf.getvalue(), capture_output=True, check=True).stdout.decode()
    pts = [int(line.split(",")[2]) for line in out.splitlines() if line and not line.startswith("#")]
    assert pts == [0, 40, 300, 310]  # milliseconds


def test_truncated_stream_is_an_error_not_a_short_video():
    buf = io.BytesIO()
    writer = MkvFrameWriter(buf, 32, 16)
    writer.write(0.0, _frames(1)[0].tobytes())
    data = buf.getvalue()[:-100]
    with pytest.raises(MkvError):
        list(MkvFrameReader(io.BytesIO(data)))
