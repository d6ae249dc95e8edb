"""Video decode and encode through ffmpeg subprocesses (command lines built with ffmpeg-python).

Frames travel as raw pixels inside Matroska on both pipes (see :mod:`anonymize.mkv`) so every
frame keeps its exact timestamp: variable-frame-rate phone video comes out with the same frames at
the same times. ffmpeg applies the rotation tag while decoding (frames are upright for detection and
for the output); odd sizes are padded by one black row/column because 4:2:0 H.264 needs even sizes.

Two layouts: BGR (``bgr24``, what the detectors take; ffmpeg converts from and back to YUV with
the source's matrix) and, for ``render`` of the usual 8-bit 4:2:0 limited-range source
(:func:`yuv_ready`), the source's own planes (``yuv420p``: half the bytes on each pipe and no
colour conversion on either side; masks are drawn on the planes, :mod:`anonymize.masks_yuv`).
"""
from __future__ import annotations

import collections
import fcntl
import logging
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ffmpeg
import numpy as np

from .errors import DecodeError, DiskFull, EncodeError
from .ffmpeg_tools import Probe, ffmpeg_exe
from .mkv import PIXEL_FORMATS, MkvError, MkvFrameReader, MkvFrameWriter

log = logging.getLogger("anonymize")

#: Encoder presets: name -> (x264 preset, CRF). "balanced" keeps quality close to phone sources.
QUALITY = {"fast": ("ultrafast", 23), "balanced": ("veryfast", 21), "archive": ("slow", 17)}

#: Video codec and extra options per output container.
_CONTAINERS = {
    ".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "h264", ".webm": "vp9",
}
VIDEO_EXTENSIONS = tuple(_CONTAINERS)


@dataclass
class Frame:
    """One decoded frame: index in decode order, presentation time in seconds, and its pixels:
    ``image`` (BGR, h x w x 3) or, from a yuv420p decoder, ``yuv`` (I420 as OpenCV lays it out:
    an (h * 3 / 2, w) array, the Y plane then the U and V planes; w and h even) with ``image`` None."""

    index: int
    pts: float
    image: np.ndarray | None
    yuv: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        if self.image is not None:
            return self.image.shape[1], self.image.shape[0]
        return self.yuv.shape[1], self.yuv.shape[0] * 2 // 3


def yuv_ready(probe: Probe) -> bool:
    """Whether the video can travel as its own yuv420p planes: 8-bit 4:2:0, limited range, a YUV
    matrix we know (or none). Anything else (10-bit, 4:2:2/4:4:4, full range, RGB) takes the BGR
    path, which converts with the source's matrix and range."""
    v = probe.video
    if v is None or v.pix_fmt != "yuv420p":
        return False
    space = v.color.get("color_space", "")
    return v.color.get("color_range", "tv") in ("tv", "unknown") and space in ("", "unknown", *_YUV_MATRICES)


#: Pipe buffer asked for on the raw-frame pipes (Linux's default is 64 KiB: a 1080p frame would
#: cross it in ~100 writes and as many wake-ups of the reader; 1 MiB is the unprivileged maximum).
PIPE_BYTES = 1 << 20


def widen_pipe(stream) -> None:
    """Ask for a :data:`PIPE_BYTES` buffer on a pipe (a hint: where the system refuses, the
    pipe keeps its size; only speed depends on it)."""
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ValueError, AttributeError):
        pass


class _StderrTail:
    """Drain a subprocess's stderr in a thread (a full pipe would block ffmpeg), keep the tail,
    the first lines and how many lines there were (ffmpeg runs with ``-loglevel error``: every
    line is an error, e.g. one per damaged frame it concealed)."""

    def __init__(self, stream):
        self._lines: collections.deque[str] = collections.deque(maxlen=40)
        self.first: list[str] = []
        self.count = 0
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if not line.strip():
                continue
            self._lines.append(line)
            self.count += 1
            if len(self.first) < 3:
                self.first.append(line)

    def text(self) -> str:
        self._thread.join(timeout=2)
        return "\n".join(self._lines)


class VideoDecoder:
    """Decode the main video stream of a file to upright frames with timestamps: BGR, or with
    ``pixel_format="yuv420p"`` the source's own I420 planes (only for a :func:`yuv_ready` source)."""

    def __init__(self, path: Path, probe: Probe, threads: int = 0, pixel_format: str = "bgr24",
                 hwaccel: str = "none"):
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}")
        if pixel_format == "yuv420p" and not yuv_ready(probe):
            raise ValueError(f"{path}: a {probe.video.pix_fmt if probe.video else 'missing'} video cannot be "
                             "decoded as its own yuv420p planes (see yuv_ready)")
        self.path = Path(path)
        self.probe = probe
        self.pixel_format = pixel_format
        self.cmd = self._command(threads, hwaccel)
        #: the software command, for when ``-hwaccel`` fails before the first frame
        self._software = self._command(threads, "none") if hwaccel != "none" else None
        self.width = self.height = 0
        #: error lines ffmpeg printed while decoding (a damaged input decodes with errors, rc 0)
        self.error_count = 0
        self.first_errors: list[str] = []

    def _command(self, threads: int, hwaccel: str) -> list[str]:
        names = _Names()
        # Input options, placed before -i: ``-threads`` there sets the *decoder's* threads (after
        # -i it would only set the rawvideo output's). ``-hwaccel auto`` decodes on the GPU/media
        # engine ffmpeg finds (frames are downloaded, so the filters below see the same pixel
        # format); where it finds none it may still fail outright (a static ffmpeg without libva
        # aborts), so :meth:`frames` then decodes in software.
        inopts: dict = {}
        if threads:
            inopts["threads"] = int(threads)
        if hwaccel != "none":
            inopts["hwaccel"] = hwaccel
        src = ffmpeg.input(names.arg(self.path), **inopts)
        video = src["V:0"].filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
        if self.pixel_format == "yuv420p":
            # the source's planes as they are (the format filter is a no-op on a yuv420p stream, and
            # converts any frame that changes format mid-stream rather than mislabel it)
            video = video.filter("format", "yuv420p")
        else:
            # YUV -> BGR with the source's own matrix; the encoder converts back with the same one,
            # so 10-bit, full-range and BT.2020 sources keep their colours (no washed-out output).
            video = video.filter("scale", in_color_matrix=color_matrix(self.probe)).filter("format", "bgr24")
        out = ffmpeg.output(video, "pipe:", format="matroska", vcodec="rawvideo", fps_mode="passthrough",
                            write_crc32=0, allow_raw_vfw=1)
        return names.real(_command(out))

    def frames(self) -> Iterator[Frame]:
        """Yield frames in presentation order; raise DecodeError if ffmpeg fails at any point.

        With ``hwaccel``, a decoder that fails before its first frame is run again in software
        (nothing was handed on yet); a failure after that is a DecodeError like any other."""
        yielded = False
        try:
            for frame in self._frames(self.cmd):
                yielded = True
                yield frame
        except DecodeError as exc:
            if yielded or self._software is None:
                raise
            log.warning("%s: hardware decoding failed (%s); decoding in software", self.path,
                        str(exc).splitlines()[-1][-200:])
            self.cmd, self._software = self._software, None
            yield from self._frames(self.cmd)

    def _frames(self, cmd: list[str]) -> Iterator[Frame]:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                bufsize=1 << 20)
        widen_pipe(proc.stdout)
        err = _StderrTail(proc.stderr)
        reader = MkvFrameReader(proc.stdout)
        index = 0
        completed = False
        try:
            for pts, data in reader:
                h = reader.header
                if h.pixel_format != self.pixel_format or not h.top_down or h.width % 2 or h.height % 2:
                    raise DecodeError(f"{self.path}: unexpected raw frame layout {h}")
                self.width, self.height = h.width, h.height
                if len(data) != h.frame_bytes:
                    raise DecodeError(f"{self.path}: frame {index} has {len(data)} bytes, expected {h.frame_bytes}")
                # the reader hands us a fresh writable buffer: masks draw on it directly
                pixels = np.frombuffer(data, np.uint8)
                if self.pixel_format == "yuv420p":
                    yield Frame(index, pts, None, pixels.reshape(h.height * 3 // 2, h.width))
                else:
                    yield Frame(index, pts, pixels.reshape(h.height, h.width, 3))
                index += 1
            completed = True
        except MkvError as exc:
            raise DecodeError(f"{self.path}: broken decoder stream ({exc}); ffmpeg said: {err.text()[-400:]}") from exc
        finally:
            if not completed:
                proc.kill()  # stopped early (error, or the consumer closed us): don't wait for ffmpeg
            proc.stdout.close()
            rc = proc.wait()
            err.text()  # waits for the stderr reader, so the counts are complete
            self.error_count, self.first_errors = err.count, [_plain(line) for line in err.first]
        if rc != 0:
            raise DecodeError(f"{self.path}: ffmpeg could not decode the video: {err.text()[-500:]}")
        if index == 0:
            raise DecodeError(f"{self.path}: no video frames could be decoded: {err.text()[-500:]}")


def damage_warning(decoder: VideoDecoder) -> str | None:
    """A warning for the report when ffmpeg reported errors decoding the input, else None."""
    if not decoder.error_count:
        return None
    return (f"the input is damaged: ffmpeg reported {decoder.error_count} decoding error(s), e.g. "
            f"{decoder.first_errors[0]!r}; the frames it could decode were processed (and masked), "
            "but damaged parts may look broken and frames may be missing")


def _plain(line: str) -> str:
    """ffmpeg's log line without the object address: "[h264 @ 0x55d0...] msg" -> "h264: msg"."""
    return re.sub(r"^\[([^\]@]+?) @ 0x[0-9a-f]+\] ", r"\1: ", line)


#: Source matrices the output keeps as its tag (each is what :func:`color_matrix` converts with).
_YUV_MATRICES = ("bt709", "smpte170m", "bt470bg", "bt601", "bt2020nc", "bt2020c")


#: The stream tag of each matrix :func:`color_matrix` names.
_MATRIX_TAGS = {"bt709": "bt709", "bt601": "smpte170m", "bt2020": "bt2020nc"}


def color_matrix(probe: Probe) -> str:
    """swscale's name for the source's YUV matrix (BT.709 when untagged: what players assume for HD)."""
    space = probe.video.color.get("color_space", "") if probe.video else ""
    if space.startswith("bt2020"):
        return "bt2020"
    if space in ("smpte170m", "bt470bg", "bt601"):
        return "bt601"
    return "bt709"


class _Names:
    """File names for ffmpeg-python, which cannot take names that are not UTF-8 (it hashes their
    UTF-8 form). Such a name goes into the graph as a placeholder, and :meth:`real` puts the
    name back into the finished command line, where subprocess passes its original bytes."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def arg(self, path: Path | str) -> str:
        name = str(path)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            key = f"anonymize-name-{len(self._names)}-{id(self)}"
            self._names[key] = name
            return key
        return name

    def real(self, cmd: list[str]) -> list[str]:
        return [self._names.get(a, a) for a in cmd]


def _command(out, *extra: str) -> list[str]:
    """Full ffmpeg command line; global options go first (ffmpeg may ignore trailing ones).

    ``-copyts`` on both sides keeps source timestamps, so kept audio stays in sync with video.
    """
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", *extra, *ffmpeg.get_args(out)]


@dataclass
class EncodeSettings:
    quality: str = "balanced"
    crf: int | None = None
    preset: str | None = None
    #: "drop", "keep" (copied unchanged) or "disguise" (see :func:`disguise_voice`).
    audio: str = "drop"
    threads: int = 0
    #: Seed of the disguise's random pitch factor (None: fresh each file).
    seed: int | None = None


#: Pitch/formant factors of the voice disguise are drawn from these ranges (down or up by
#: roughly 3-5 semitones): far enough to change how a voice sounds, close enough to stay intelligible.
DISGUISE_FACTORS = ((0.74, 0.84), (1.19, 1.34))


def disguise_voice(audio, seed: int | None = None):
    """ffmpeg filter chain that disguises voices in an audio stream (ffmpeg-python node in, node out).

    Resampling at a changed rate (``asetrate``) moves pitch *and* formants (the vocal tract's
    resonances, which carry much of a voice's identity) by one factor; ``atempo`` restores the
    duration. The factor is drawn at random per file, so it is not a known constant to invert,
    and a slow vibrato makes the shift vary in time. A band-pass to the telephone band drops
    the lowest and highest parts of the spectrum. This *reduces* the chance that a listener or a
    speaker-recognition system identifies a voice; it does not remove it (words, accent, rhythm
    and background sounds survive): drop the audio when in doubt.
    """
    rng = np.random.default_rng(seed)
    low, high = DISGUISE_FACTORS[int(rng.integers(2))]
    factor = float(rng.uniform(low, high))
    rate = 48000
    return (audio.filter("aresample", rate)
            .filter("asetrate", round(rate * factor))
            .filter("aresample", rate)
            .filter("atempo", round(1 / factor, 6))
            .filter("vibrato", f=round(float(rng.uniform(4, 7)), 2), d=0.15)
            .filter("highpass", f=250).filter("lowpass", f=3800))


class VideoEncoder:
    """Encode frames (BGR, or with ``pixel_format="yuv420p"`` I420 as :class:`Frame` holds it) with
    their timestamps to ``out_path``, with no metadata.

    Everything identifying is dropped: container and stream tags, chapters, data and subtitle
    tracks, cover pictures, encoder strings and x264's settings SEI. Audio is dropped unless
    ``settings.audio`` is "keep" (copied unchanged from ``source``) or "disguise" (re-encoded
    through :func:`disguise_voice`).
    """

    def __init__(self, out_path: Path, source: Path, probe: Probe, width: int, height: int,
                 settings: EncodeSettings, pixel_format: str = "bgr24"):
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}")
        self.out_path = Path(out_path)
        self.width, self.height = width, height
        self.pixel_format = pixel_format
        self._shape = (height * 3 // 2, width) if pixel_format == "yuv420p" else (height, width, 3)
        codec = _CONTAINERS.get(self.out_path.suffix.lower(), "h264")
        preset, crf = QUALITY[settings.quality]
        preset, crf = settings.preset or preset, settings.crf if settings.crf is not None else crf
        names = _Names()
        frames = ffmpeg.input("pipe:", format="matroska")
        streams = [frames["v:0"]]
        opts: dict = dict(fps_mode="passthrough", map_metadata=-1, map_chapters=-1,
                          threads=settings.threads or 0)
        if codec == "h264":
            opts.update({"c:v": "libx264", "preset": preset, "crf": crf,
                         "bsf:v": "filter_units=remove_types=6"})  # SEI: x264 writes its version there
        else:
            opts.update({"c:v": "libvpx-vp9", "crf": crf + 10, "b:v": 0, "deadline": "realtime",
                         "cpu-used": 8, "row-mt": 1})
        # Tag our frames with the source's colour description. Tagging the *frames* (setparams)
        # rather than the output stops ffmpeg from "converting" untagged input to the output's
        # colour space, which shifts colours.
        color = probe.video.color if probe.video else {}
        params = {"range": "tv"}
        for key, name in (("color_primaries", "color_primaries"), ("color_transfer", "color_trc"),
                          ("color_space", "colorspace")):
            if color.get(key):
                params[name] = color[key]
        if params.get("colorspace") not in (None, *_YUV_MATRICES):
            # an RGB source ("gbr", e.g. VP9 or x264rgb 4:4:4) is written as YUV with the BT.709
            # matrix: tagging it "gbr" is false, and libvpx-vp9 refuses to open (an encode error)
            params["colorspace"] = "bt709"
        if pixel_format == "bgr24":
            streams[0] = (streams[0].filter("scale", out_color_matrix=color_matrix(probe), out_range="tv")
                          .filter("format", "yuv420p"))
        else:
            # the source's own planes, limited range: nothing to convert. An untagged source gets
            # the tag of the matrix the BGR path assumes for it (its scale filter tags its output
            # so), so render's and the one-shot run's outputs look the same in every player.
            params.setdefault("colorspace", _MATRIX_TAGS[color_matrix(probe)])
        streams[0] = streams[0].filter("setparams", **params)
        if settings.audio == "keep" and probe.audio:
            streams.append(ffmpeg.input(names.arg(source))["a"])
            opts["c:a"] = "libopus" if codec == "vp9" else "copy"
            opts["flags:a"] = "+bitexact"
        elif settings.audio == "disguise" and probe.audio:  # the first audio track only
            streams.append(disguise_voice(ffmpeg.input(names.arg(source))["a:0"], settings.seed))
            opts["c:a"] = "libopus" if codec == "vp9" else "aac"
            opts["b:a"] = "128k"
            opts["flags:a"] = "+bitexact"
        if self.out_path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            opts["movflags"] = "+faststart"
        out = ffmpeg.output(*streams, names.arg(self.out_path), **opts, **{"flags:v": "+bitexact", "fflags": "+bitexact",
                                                                       "metadata:s:v:0": "encoder="})
        self.cmd = names.real(_command(out, "-y"))
        self._proc: subprocess.Popen | None = None
        self._err: _StderrTail | None = None
        self._writer: MkvFrameWriter | None = None
        self._last_pts = -1.0

    def __enter__(self) -> "VideoEncoder":
        self._proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, bufsize=1 << 20)
        widen_pipe(self._proc.stdin)
        self._err = _StderrTail(self._proc.stderr)
        try:
            self._writer = MkvFrameWriter(self._proc.stdin, self.width, self.height, self.pixel_format)
        except (BrokenPipeError, OSError) as exc:
            raise self._failure("could not start the encoder") from exc
        return self

    def write(self, pts: float, image: np.ndarray) -> None:
        """Write one fully processed frame (BGR, or I420 for a yuv420p encoder)."""
        if image.shape != self._shape or image.dtype != np.uint8:
            raise EncodeError(f"frame of shape {image.shape} ({image.dtype}), expected {self._shape} for "
                              f"{self.width}x{self.height} {self.pixel_format}")
        # Matroska keeps milliseconds; never hand the encoder two frames with the same time.
        pts = max(pts, self._last_pts + 0.001)
        self._last_pts = pts
        try:
            self._writer.write(pts, memoryview(np.ascontiguousarray(image)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            raise self._failure("the encoder stopped") from exc

    def __exit__(self, exc_type, exc, tb) -> None:
        proc = self._proc
        if exc_type is not None:
            proc.kill()
            proc.wait()
            return
        try:
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if proc.wait() != 0:
            raise self._failure("encoding failed")

    def _failure(self, what: str) -> EncodeError:
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = self._err.text() if self._err else ""
        if "No space left" in text or "quota exceeded" in text.lower():
            return DiskFull(f"{self.out_path.parent}: no space left on the disk while writing the video")
        return EncodeError(f"{what} ({self.out_path.name}): {text[-500:]}")
