"""Video through the real pipeline: real ffmpeg, real model, files made here with ffmpeg."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from anonymize import Anonymizer, DecodeError, InputError
from anonymize.cli import main as cli_main
from anonymize.ffmpeg_tools import ffmpeg_exe, probe

from .conftest import decode_frames, face_clip, ff, ffmpeg_info, packet_crcs, packet_times


def _frames_of(report) -> list[dict]:
    return list(report.frames())


def test_face_is_masked_in_every_frame(tmp_path, anonymizer):
    src = face_clip(tmp_path)
    out = tmp_path / "out.mp4"
    rep = anonymizer.file(src, out)
    frames = _frames_of(rep)
    assert rep.frame_count == len(packet_times(src)) == len(packet_times(out)) == 30
    assert all(any(r["kind"] == "face" for r in f["regions"]) for f in frames)
    # the masked area really changed: compare input and output pixels inside the first region
    a, b = decode_frames(src)[0].astype(int), decode_frames(out)[0].astype(int)
    r = frames[0]["regions"][0]
    x, y, w, h = (int(r[k]) for k in "xywh")
    inner = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 3, x + 2 * w // 3))
    assert np.abs(a[inner] - b[inner]).mean() > 20
    outside = (slice(0, 40), slice(a.shape[1] - 40, a.shape[1]))  # a corner far from the face
    assert np.abs(a[outside] - b[outside]).mean() < 6


def test_video_masks_get_the_margin_photos_do_not(tmp_path, anonymizer):
    # video_margin widens each face mask by a share of the frame's shorter side (360 px here);
    # the detections are the same, so the regions differ by exactly that margin on every side
    src = face_clip(tmp_path)
    plain = Anonymizer(seed=0, marks="faces", video_margin=0).file(src, tmp_path / "plain.mp4")
    wide = Anonymizer(seed=0, marks="faces", video_margin=0.02).file(src, tmp_path / "wide.mp4")
    a = [r for f in _frames_of(plain) for r in f["regions"]]
    b = [r for f in _frames_of(wide) for r in f["regions"]]
    assert len(a) == len(b) >= 30
    for r, s in zip(a, b):
        assert s["x"] == pytest.approx(r["x"] - 7.2, abs=0.6) and s["w"] == pytest.approx(r["w"] + 14.4, abs=1.2)
    # a photo is one frame: no margin, whatever the option says
    png = tmp_path / "astro.png"
    p0 = Anonymizer(seed=0, marks="faces", video_margin=0).file(png, tmp_path / "p0.png")
    p1 = Anonymizer(seed=0, marks="faces", video_margin=0.02).file(png, tmp_path / "p1.png")
    assert list(p0.frames())[0]["regions"] == list(p1.frames())[0]["regions"]


def test_variable_frame_rate_keeps_timestamps(tmp_path, anonymizer):
    # irregular frame times like a phone under load: gaps of 33, 33, 66, 20, ... ms
    src = tmp_path / "vfr.mp4"
    ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", "60",
       "-vf", "settb=1/1000,setpts='(N*33+if(gt(N,20),300,0)+if(gt(N,40),700,0)+mod(N,3)*9)/1000/TB'",
       "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", str(src))
    t_in = packet_times(src)
    assert max(np.diff(t_in)) > 0.2  # the source really is VFR
    out = tmp_path / "vfr.out.mp4"
    anonymizer.file(src, out)
    t_out = packet_times(out)
    assert len(t_out) == len(t_in) == 60
    t_in, t_out = np.array(t_in) - t_in[0], np.array(t_out) - t_out[0]
    assert np.abs(t_in - t_out).max() <= 0.0011  # Matroska pipes carry milliseconds
    assert abs(probe(out).duration - probe(src).duration) < 0.05


def test_rotated_phone_clip_comes_out_upright_and_detected(tmp_path, anonymizer, astronaut_bgr):
    import cv2

    # store the face lying on its side and tag the stream "display rotated by 90 degrees",
    # as phones do; the upright picture is what must be detected and written
    sideways = cv2.rotate(astronaut_bgr, cv2.ROTATE_90_CLOCKWISE)
    png = tmp_path / "side.png"
    cv2.imwrite(str(png), sideways)
    plain = tmp_path / "plain.mp4"
    ff("-loop", "1", "-framerate", "30", "-t", "0.5", "-i", str(png), "-pix_fmt", "yuv420p", "-c:v", "libx264",
       "-preset", "ultrafast", str(plain))
    src = tmp_path / "rotated.mp4"
    ff("-display_rotation:v:0", "90", "-i", str(plain), "-c", "copy", str(src))
    assert "rotation of 90" in ffmpeg_info(src)
    out = tmp_path / "rotated.out.mp4"
    rep = anonymizer.file(src, out)
    frames = _frames_of(rep)
    assert all(f["regions"] for f in frames), "face not found in the upright frames"
    info = ffmpeg_info(out)
    assert "rotation" not in info.lower()
    assert probe(out).video.width == 512 and probe(out).video.height == 512
    # the output shows the face upright: it matches the upright original more than the sideways one
    first = decode_frames(out)[0][..., ::-1].astype(int)
    up = astronaut_bgr.astype(int)
    assert np.abs(first[300:] - up[300:]).mean() < np.abs(first[300:] - sideways[300:].astype(int)).mean()


def test_10bit_hevc_decodes_with_true_colours(tmp_path, anonymizer):
    src = tmp_path / "hdr.mp4"
    ff("-f", "lavfi", "-i", "smptebars=size=320x240:rate=25", "-frames:v", "10", "-c:v", "libx265",
       "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error", "-color_primaries", "bt709",
       "-color_trc", "bt709", "-colorspace", "bt709", "-tag:v", "hvc1", str(src))
    assert "yuv420p10le" in ffmpeg_info(src)
    out = tmp_path / "hdr.out.mp4"
    rep = anonymizer.file(src, out)
    assert rep.frame_count == 10
    a, b = decode_frames(src).astype(int), decode_frames(out).astype(int)
    assert a.shape == b.shape
    assert np.abs(a.mean(axis=(0, 1, 2)) - b.mean(axis=(0, 1, 2))).max() < 3  # no washed-out colours
    assert np.abs(a - b).mean() < 6


@pytest.mark.parametrize("case", ["no_audio", "audio_first", "odd_size", "one_frame"])
def test_awkward_inputs(tmp_path, anonymizer, case):
    if case == "no_audio":
        src = face_clip(tmp_path, "na.mp4", audio=False)
    elif case == "audio_first":
        v = face_clip(tmp_path, "v.mp4")
        src = tmp_path / "af.mkv"
        ff("-i", str(v), "-map", "0:a", "-map", "0:v", "-c", "copy", str(src))
        assert "Stream #0:0: Audio" in ffmpeg_info(src) or "Stream #0:0(und): Audio" in ffmpeg_info(src)
    elif case == "odd_size":
        src = tmp_path / "odd.mkv"  # 4:4:4 allows odd sizes in H.264
        ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", "15", "-vf", "scale=321:241",
           "-c:v", "libx264",
           "-pix_fmt", "yuv444p", str(src))
    else:
        src = tmp_path / "one.mp4"
        ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(src))
    out = tmp_path / f"out{src.suffix}"
    rep = anonymizer.file(src, out)
    assert rep.frame_count == len(packet_times(src)) == len(packet_times(out))
    assert probe(out).audio == []
    if case == "odd_size":
        assert (probe(out).video.width, probe(out).video.height) == (322, 242)  # padded to even


def test_audio_dropped_by_default_and_kept_unchanged_on_request(tmp_path):
    src = face_clip(tmp_path)
    out = tmp_path / "out.mp4"
    rep = Anonymizer(seed=0).file(src, out)
    assert probe(out).audio == [] and rep.audio == "dropped"
    kept = tmp_path / "kept.mp4"
    rep = Anonymizer(seed=0, keep_audio=True).file(src, kept)
    assert rep.audio == "kept"
    assert packet_crcs(kept, "a:0") == packet_crcs(src, "a:0")


SECRETS = ["+48.8582+002.2945", "48.8582", "ExampleMake", "PhoneModelX", "2024-05-01", "Secret Title",
           "chapter one", "subtitle secret", "Lavf6", "Lavc6", "x264", "Apple"]  # unversioned "Lavf" is all mkv keeps


def _phone_files(tmp_path: Path) -> list[tuple[Path, list[str]]]:
    """Two phone-like files: a .mov with Apple-style tags, an .mp4 with subtitles, chapters and
    a cover picture (ffmpeg's mov muxer cannot hold both kinds at once). Each with what the report
    must say was removed."""
    v = face_clip(tmp_path, "v.mp4")
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,900\nsubtitle secret\n")
    meta = tmp_path / "meta.txt"
    meta.write_text(";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=chapter one\n")
    tags = ["-metadata", "location=+48.8582+002.2945/", "-metadata", "creation_time=2024-05-01T10:00:00Z",
            "-metadata", "title=Secret Title", "-metadata:s:v:0", "creation_time=2024-05-01T10:00:00Z"]
    mov = tmp_path / "phone.mov"
    ff("-i", str(v), "-map", "0", "-c", "copy", *tags, "-metadata", "make=ExampleMake",
       "-metadata", "model=PhoneModelX", "-movflags", "use_metadata_tags", str(mov))
    mp4 = tmp_path / "phone.mp4"
    ff("-i", str(v), "-i", str(srt), "-i", str(meta), "-i", str(tmp_path / "astro.png"),
       "-map", "0:v", "-map", "0:a", "-map", "1:s", "-map", "3:v", "-map_chapters", "2",
       "-c:v:0", "copy", "-c:a", "copy", "-c:s", "mov_text", "-c:v:1", "mjpeg", "-disposition:v:1", "attached_pic",
       *tags, str(mp4))
    before = ffmpeg_info(mov) + ffmpeg_info(mp4)
    assert "ExampleMake" in before and "chapter" in before.lower() and "Subtitle" in before
    assert "attached pic" in before and "48.8582" in before
    return [(mov, ["location", "make", "model", "creation_time", "title", "audio"]),
            (mp4, ["location", "creation_time", "subtitle", "cover picture", "chapters", "audio"])]


def test_metadata_removed_from_video(tmp_path, anonymizer):
    for src, expected in _phone_files(tmp_path):
        for out_name in ("clean.mp4", "clean.mkv"):
            out = tmp_path / out_name
            rep = anonymizer.file(src, out)
            info = ffmpeg_info(out)
            data = out.read_bytes()
            for s in SECRETS:
                assert s not in info, (src.name, out_name, s)
                assert s.encode() not in data, (src.name, out_name, s)
            p = probe(out)
            assert [s.kind for s in p.streams] == ["video"]
            assert p.chapters == 0
            assert not any(k in p.format_tags for k in ("location", "make", "model", "creation_time", "title"))
            removed = " ".join(rep.removed)
            for kind in expected:
                assert kind in removed, (src.name, kind)


def test_corrupt_and_missing_inputs_fail_closed(tmp_path, anonymizer):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 1000)
    with pytest.raises((InputError, DecodeError)):
        anonymizer.file(bad, tmp_path / "bad.out.mp4")
    with pytest.raises(InputError):
        anonymizer.file(tmp_path / "missing.mp4", tmp_path / "x.mp4")
    good = face_clip(tmp_path)
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises((InputError, DecodeError)):
        anonymizer.file(truncated, tmp_path / "trunc.out.mp4")
    with pytest.raises(InputError):
        anonymizer.file(good, good)  # never overwrite the input
    leftovers = sorted(p.name for p in tmp_path.iterdir() if "out" in p.name or p.name.startswith("."))
    assert leftovers == [], leftovers


class _Exploding:
    """A detector that works for a few frames, then crashes: the run must stop, not hang."""

    name, kinds = "exploding", ("face",)

    def __init__(self, inner, after: int):
        self.inner, self.after, self.calls = inner, after, 0

    def detect(self, frame):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return self.inner.detect(frame)

    def models(self):
        return []


def test_crashing_detector_stops_cleanly_and_writes_nothing(tmp_path):
    from anonymize import DetectError

    runner = Anonymizer(seed=0)
    runner.engine.detector = _Exploding(runner.engine.detector, after=5)
    src = face_clip(tmp_path, seconds=2)
    out = tmp_path / "out.mp4"
    with pytest.raises(DetectError):
        runner.file(src, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_mask_drawing_failure_stops_cleanly_and_writes_nothing(tmp_path):
    """Masks are drawn in the encoder's thread: a failure there must fail the file closed too."""
    runner = Anonymizer(seed=0)
    draw, calls = runner.engine.mask.apply, []

    def flaky(frame, regions, shape="ellipse", **kw):
        calls.append(1)
        if len(calls) > 8:
            raise RuntimeError("boom")
        return draw(frame, regions, shape, **kw)

    runner.engine.mask.apply = flaky
    src = face_clip(tmp_path, seconds=2)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        runner.file(src, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_on_error_mask_frame_masks_whole_frames(tmp_path):
    runner = Anonymizer(seed=0, on_error="mask-frame")
    runner.engine.detector = _Exploding(runner.engine.detector, after=5)
    src = face_clip(tmp_path)
    out = tmp_path / "out.mp4"
    rep = runner.file(src, out)
    frames = list(rep.frames())
    assert all(any(r["kind"] == "frame" for r in f["regions"]) for f in frames[5:])
    a, b = decode_frames(src)[-1].astype(int), decode_frames(out)[-1].astype(int)
    assert np.abs(a - b).mean() > 20  # nothing of the frame survives


def test_cli_and_report(tmp_path):
    src = face_clip(tmp_path)
    out, rep = tmp_path / "cli.mp4", tmp_path / "r.json"
    assert cli_main([str(src), "-o", str(out), "--report", str(rep), "--quiet", "--mask", "solid"]) == 0
    data = json.loads(rep.read_text())
    assert data["schema"] == 2 and data["settings"]["mask"] == "solid"
    assert data["models"][0]["name"] == "centerface" and len(data["models"][0]["sha256"]) == 64
    f = data["files"][0]
    assert f["status"] == "ok" and f["kind"] == "video" and f["audio"] == "dropped"
    assert len(f["frames"]) == 30 and f["frames"][0]["index"] == 0
    region = f["frames"][0]["regions"][0]
    assert set(region) == {"x", "y", "w", "h", "shape", "kind", "score", "source", "track"}
    assert cli_main([str(tmp_path / "nope.mp4"), "--quiet"]) == 2
    assert cli_main([str(src), "-o", str(src), "--quiet"]) == 2


@pytest.mark.parametrize("between_scale", [0.0, 0.5])
def test_sparse_detection_still_masks_every_frame(tmp_path, between_scale):
    src = face_clip(tmp_path, seconds=2)
    rep = Anonymizer(seed=0, detect_every=4, between_scale=between_scale).file(src, tmp_path / "out.mp4")
    frames = list(rep.frames())
    assert len(frames) == 60
    assert all(f["regions"] for f in frames)
    sources = {r["source"] for f in frames for r in f["regions"]}
    if between_scale == 0:  # nothing runs between full detections: the tracker fills the gaps
        assert "detected" in sources and "tracked" in sources
    else:  # the large face is found by the cheap pass on every frame
        assert all(any(r["source"] == "detected" for r in f["regions"]) for f in frames)


def _dominant_hz(path: Path) -> tuple[float, float]:
    """(dominant frequency, duration in seconds) of a file's first audio track, decoded by ffmpeg."""
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "48000",
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw, np.float32)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 48000)[spectrum.argmax()]), len(pcm) / 48000


def test_audio_disguise_shifts_the_voice_and_keeps_duration(tmp_path):
    src = face_clip(tmp_path, seconds=2.0)  # 440 Hz tone
    out = tmp_path / "disguised.mp4"
    rep = Anonymizer(seed=3, audio="disguise").file(src, out)
    assert rep.audio == "disguised"
    assert any("voices" in r for r in rep.removed)
    hz_in, dur_in = _dominant_hz(src)
    hz_out, dur_out = _dominant_hz(out)
    assert abs(hz_in - 440) < 5
    ratio = hz_out / hz_in
    assert 0.72 < ratio < 0.86 or 1.17 < ratio < 1.36, ratio  # shifted by one of the disguise factors
    assert abs(dur_out - dur_in) < 0.15  # tempo restored, still in sync with the video
    assert abs(packet_times(out, "a:0")[0] - packet_times(out, "v:0")[0]) < 0.1
    # the factor is drawn per file: two seeds give two different voices
    other = tmp_path / "other.mp4"
    Anonymizer(seed=4, audio="disguise").file(src, other)
    assert abs(_dominant_hz(other)[0] - hz_out) > 3


def test_audio_policy_options():
    from anonymize.config import Options

    assert Options().audio == "drop" and not Options().keep_audio
    assert Options(keep_audio=True).audio == "keep"
    assert Options(keep_audio=True).updated(audio="disguise").audio == "disguise"
    assert Options(audio="keep").updated(audio="drop").audio == "drop"
    with pytest.raises(ValueError):
        Options(audio="mute")


def test_decoder_threads_go_before_the_input_and_hwaccel_falls_back(tmp_path):
    """``ffmpeg_threads`` sets the decoder's threads (an option before -i; after it, it only set
    the rawvideo output's), and ``--hwaccel auto`` decodes exactly the software frames where
    ffmpeg finds no hardware decoder (as on CI: this machine's static ffmpeg then aborts, and the
    decoder runs again in software) and frames of the same size where it finds one."""
    from anonymize.video import VideoDecoder

    src = face_clip(tmp_path)
    info = probe(src)
    plain = VideoDecoder(src, info)
    threaded = VideoDecoder(src, info, threads=2, hwaccel="auto")
    assert "-threads" not in plain.cmd and "-hwaccel" not in plain.cmd
    i = threaded.cmd.index("-i")
    assert threaded.cmd[threaded.cmd.index("-threads") + 1] == "2" and threaded.cmd.index("-threads") < i
    assert threaded.cmd[threaded.cmd.index("-hwaccel") + 1] == "auto" and threaded.cmd.index("-hwaccel") < i
    soft = [f.image for f in plain.frames()]
    hard = [f.image for f in threaded.frames()]
    assert len(soft) == len(hard) == 30
    if not _has_hw_decoder():
        assert all(np.array_equal(a, b) for a, b in zip(soft, hard))
    assert all(a.shape == b.shape for a, b in zip(soft, hard))


def _has_hw_decoder() -> bool:
    """Whether this machine has a device ffmpeg's hardware decoders use (render node or NVIDIA)."""
    return Path("/dev/dri").exists() or Path("/dev/nvidia0").exists()
