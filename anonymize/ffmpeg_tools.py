"""Finding ffmpeg and probing media with it.

We prefer the system ``ffmpeg``/``ffprobe`` (``$ANONYMIZE_FFMPEG`` overrides), else the static
ffmpeg inside the ``imageio-ffmpeg`` wheel, so ``pip install`` alone gives a working tool. That
wheel has no ffprobe, so :func:`probe` can also read what it needs from ``ffmpeg -i``'s report.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from .errors import DecodeError, FFmpegNotFound, InputError
from .paths import require_regular_input, shown


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary to use."""
    env = os.environ.get("ANONYMIZE_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise FFmpegNotFound("ffmpeg not found: install ffmpeg or `pip install imageio-ffmpeg`") from exc


@lru_cache(maxsize=1)
def ffprobe_exe() -> str | None:
    """Path of ffprobe beside the chosen ffmpeg, or on PATH; None when there is none."""
    beside = Path(ffmpeg_exe()).with_name("ffprobe")
    if beside.is_file():
        return str(beside)
    return shutil.which("ffprobe")


@dataclass
class StreamInfo:
    index: int
    kind: str  # video, audio, subtitle, data, attachment
    codec: str
    tags: dict[str, str] = field(default_factory=dict)
    attached_pic: bool = False
    width: int = 0
    height: int = 0
    pix_fmt: str = ""
    color: dict[str, str] = field(default_factory=dict)  # color_primaries/color_trc/colorspace/color_range
    rotation: float = 0.0
    fps: Fraction | None = None


@dataclass
class Probe:
    """What we need to know about a media file before processing it."""

    format_tags: dict[str, str]
    duration: float | None
    streams: list[StreamInfo]
    chapters: int = 0

    @property
    def video(self) -> StreamInfo | None:
        """The main video stream (cover pictures are not video)."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    @property
    def audio(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "audio"]

    def estimated_frames(self) -> int | None:
        v = self.video
        if v is None or not v.fps or not self.duration:
            return None
        return max(1, round(self.duration * float(v.fps)))


def probe(path: Path) -> Probe:
    """Describe ``path`` with ffprobe when there is one, else by parsing ``ffmpeg -i``."""
    path = Path(path)
    require_regular_input(path)  # stat only: ffprobe would block on a FIFO
    if ffprobe_exe():
        return _probe_ffprobe(path)
    return _probe_ffmpeg(path)


def _probe_ffprobe(path: Path) -> Probe:
    cmd = [ffprobe_exe(), "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
           "-show_chapters", str(path)]
    # ffprobe prints the file name; one that is not UTF-8 must not make decoding fail
    res = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if res.returncode != 0:
        raise InputError(f"{shown(path)}: not a readable media file ({res.stderr.strip()[-300:]})")
    data = json.loads(res.stdout)
    streams = []
    for s in data.get("streams", []):
        rot = 0.0
        for sd in s.get("side_data_list", []):
            if "rotation" in sd:
                rot = float(sd["rotation"])
        rate = s.get("avg_frame_rate") or s.get("r_frame_rate") or "0/1"
        num, _, den = rate.partition("/")
        fps = Fraction(int(num), int(den or 1)) if den and int(den or 0) and int(num) else None
        streams.append(StreamInfo(
            index=s["index"], kind=s.get("codec_type", ""), codec=s.get("codec_name", ""),
            tags=s.get("tags", {}), attached_pic=bool(s.get("disposition", {}).get("attached_pic")),
            width=s.get("width", 0), height=s.get("height", 0), pix_fmt=s.get("pix_fmt", ""),
            color={k: s[k] for k in ("color_primaries", "color_transfer", "color_space", "color_range") if k in s},
            rotation=rot, fps=fps,
        ))
    fmt = data.get("format", {})
    dur = fmt.get("duration")
    return Probe(fmt.get("tags", {}), float(dur) if dur else None, streams, len(data.get("chapters", [])))


_STREAM_RE = re.compile(r"^\s*Stream #\d+:(\d+)(?:\[\w+\])?(?:\([^)]*\))?: (\w+): (\w+)(.*)$")
_META_RE = re.compile(r"^\s+(\S[^:]*?)\s*: (.*)$")


def _probe_ffmpeg(path: Path) -> Probe:
    """Parse the human-readable report of ``ffmpeg -i`` (no ffprobe in the imageio wheel)."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                         errors="replace")
    text = res.stderr
    if "Input #0" not in text:
        raise InputError(f"{shown(path)}: not a readable media file ({text.strip()[-300:]})")
    fmt_tags: dict[str, str] = {}
    streams: list[StreamInfo] = []
    duration = None
    chapters = 0
    target: dict | None = None  # which tag dict "Metadata:" lines go to
    section = ""
    for line in text.splitlines():
        if line.startswith("Input #0"):
            target, section = fmt_tags, "format"
            continue
        if line.startswith(("Output", "At least one output")):
            break
        m = _STREAM_RE.match(line)
        if m:
            idx, kind, codec, rest = int(m[1]), m[2].lower(), m[3], m[4]
            s = StreamInfo(idx, kind, codec, attached_pic="attached pic" in rest)
            if kind == "video":
                dims = re.search(r", (\d{1,5})x(\d{1,5})", rest)
                if dims:
                    s.width, s.height = int(dims[1]), int(dims[2])
                pf = re.match(r"\s*(?:\([^)]*\)\s*)*(?:\([^)]*\))?,?\s*(\w+)(\(([^)]*)\))?", rest.split(", ", 1)[-1])
                if pf:
                    s.pix_fmt = pf[1]
                    s.color = _color_from_paren(pf[3] or "")
                fps = re.search(r", ([\d.]+) fps", rest)
                if fps:
                    s.fps = Fraction(fps[1]).limit_denominator(1001)
            streams.append(s)
            target, section = s.tags, "stream"
            continue
        if line.strip().startswith("Chapter #"):
            chapters += 1
            target, section = None, "chapter"
            continue
        d = re.match(r"\s+Duration: (\d+):(\d+):([\d.]+)", line)
        if d:
            duration = int(d[1]) * 3600 + int(d[2]) * 60 + float(d[3])
            continue
        r = re.search(r"rotation of (-?[\d.]+) degrees", line)
        if r and streams:
            streams[-1].rotation = float(r[1])
            continue
        if line.strip() in ("Metadata:", "Side data:"):
            continue
        m = _META_RE.match(line)
        if m and target is not None and section in ("format", "stream"):
            target.setdefault(m[1], m[2])
    return Probe(fmt_tags, duration, streams, chapters)


_COLOR_NAMES = {
    "primaries": {"bt709", "bt2020", "bt470bg", "smpte170m", "smpte432", "smpte431"},
    "transfer": {"bt709", "arib-std-b67", "smpte2084", "bt2020-10", "smpte170m", "iec61966-2-1"},
    "space": {"bt709", "bt2020nc", "bt2020c", "bt470bg", "smpte170m"},
}


def _color_from_paren(text: str) -> dict[str, str]:
    """Read "tv, bt2020nc/bt2020/arib-std-b67" style colour info from ffmpeg's stream line."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if part in ("tv", "pc"):
            out["color_range"] = part
        elif "/" in part:
            space, prim, trc = (part.split("/") + ["", ""])[:3]
            out.update(color_space=space, color_primaries=prim, color_transfer=trc)
        elif part in _COLOR_NAMES["space"]:
            out.update(color_space=part, color_primaries=part, color_transfer=part)
    return {k: v for k, v in out.items() if v and v != "unknown"}


def run_ffmpeg_checked(args: list[str], error: type = DecodeError) -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args``; raise ``error`` with the tail of its log on failure."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, text=True,
                         errors="replace")
    if res.returncode != 0:
        raise error(f"ffmpeg failed: {res.stderr.strip()[-500:]}")
    return res
