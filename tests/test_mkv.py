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


def test_yuv420p_round_trip_through_ffmpeg_both_ways():
    """yuv420p frames (V_UNCOMPRESSED, ColourSpace I420): what we write ffmpeg reads byte for
    byte at our timestamps, and what ffmpeg writes we read."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, 32 * 16 * 3 // 2, np.uint8) for _ in range(3)]
    buf = io.BytesIO()
    writer = MkvFrameWriter(buf, 32, 16, "yuv420p")
    for t, f in zip([0.0, 0.04, 0.3], frames):
        writer.write(t, f.tobytes())
    got = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "matroska", "-i", "-", "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-"], input=buf.getvalue(), capture_output=True, check=True).stdout
    assert got == b"".join(f.tobytes() for f in frames)
    back = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "matroska", "-i", "-", "-c:v", "rawvideo",
                           "-fps_mode", "passthrough", "-f", "matroska", "-write_crc32", "0", "-"],
                          input=buf.getvalue(), capture_output=True, check=True).stdout
    reader = MkvFrameReader(io.BytesIO(back))
    read = list(reader)
    assert [round(t, 3) for t, _ in read] == [0.0, 0.04, 0.3]
    assert [bytes(d) for _, d in read] == [f.tobytes() for f in frames]
    h = reader.header
    assert (h.pixel_format, h.width, h.height, h.frame_bytes) == ("yuv420p", 32, 16, 768)


def test_raw_frames_in_another_colour_space_are_refused():
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x16:rate=5", "-frames:v", "1",
                          "-pix_fmt", "yuv422p", "-c:v", "rawvideo", "-f", "matroska", "-"],
                         capture_output=True, check=True).stdout
    with pytest.raises(MkvError):
        list(MkvFrameReader(io.BytesIO(out)))
