"""One table of options: the CLI's flags and help, the Python API's defaults and every check on them.

:data:`TABLE` has one :class:`Option` row per field of :class:`Options`: its type, default, help
text, help group, bounds and choices. :class:`Options` takes its defaults from the table and
checks every value against it in ``__post_init__`` (type, finite, bounds, choices), so a bad value
is refused before any model loads, whoever passes it: the CLI (``anonymize/cli.py`` builds its
flags from the table), the API, or a service (:meth:`Options.from_mapping`).

This module imports nothing heavy: the choices of registries (detectors, masks, encoder
presets) are static tuples here, and tests/test_cli.py checks that they equal the registries.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

ON_ERROR = ("fail", "mask-frame")
#: How faces turned by 90/180/270 degrees are looked for (:data:`anonymize.rotation.MODES`).
ROTATED_FACES = ("auto", "always", "off")
MASK_SHAPES = ("ellipse", "box")
#: What can be masked (``--marks``). faces: CenterFace (or ``detector``); heads: heads of people
#: seen from behind or the side; persons: whole people; plates, text: legible text (plates are
#: found as text: no plate detector with a permissive licence ships its weights).
MARKS = ("faces", "heads", "persons", "plates", "text")
#: Audio policy: voices identify people, so audio is dropped unless asked for.
AUDIO = ("drop", "keep", "disguise")
#: Face detectors of :data:`anonymize.detectors.DETECTORS` (those whose ``kinds`` hold "face";
#: importing the detectors loads onnx, ~2 s, so the names are listed here and a test compares).
FACE_DETECTORS = ("centerface", "centerface-int8", "centerface-int8-qdq", "centerface-tta", "centerface-tta-int8")
#: Mask styles of :data:`anonymize.masks.MASKS`.
MASKS = ("blur", "pixelate", "solid")
#: Encoder presets of :data:`anonymize.video.QUALITY`.
QUALITIES = ("fast", "balanced", "archive")
#: Video decoding (``--hwaccel``): software, or ffmpeg's ``-hwaccel auto`` (falls back to software).
HWACCELS = ("none", "auto")
#: x264's presets (``--preset`` overrides the one ``quality`` picks).
#: Where the models run (``--device``; anonymize/runtime.py): auto picks the fastest installed
#: runtime by a measured table (anonymize.runtime.AUTO_ORDER), falling back to the CPU.
DEVICES = ("auto", "cpu", "cuda", "coreml", "directml", "openvino")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")

#: Help groups, in the order ``anonymize --help`` shows them.
GROUP_IO = "input and output"
GROUP_MASK = "what to mask"
GROUP_DETECT = "detection"
GROUP_VIDEO = "video"
GROUP_AUDIO = "audio and metadata"
GROUP_PERF = "performance"
GROUPS = (GROUP_IO, GROUP_MASK, GROUP_DETECT, GROUP_VIDEO, GROUP_AUDIO, GROUP_PERF)


class OptionError(ValueError):
    """A value an option does not accept. ``name`` is the option's field name, ``rule`` what it
    accepts; ``str()`` reads e.g. "mask_scale must be a finite number >= 1 and <= 4 (got nan)"."""

    def __init__(self, name: str, rule: str, value: Any):
        self.name, self.rule, self.value = name, rule, value
        super().__init__(f"{name} {rule} (got {value!r})")


def _num(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Option:
    """One row of :data:`TABLE`: an option, what it accepts and how the CLI shows it."""

    name: str
    #: float, int, str, bool, or tuple (a subset of ``choices``, given as a tuple or "a,b")
    type: type
    default: Any
    help: str
    group: str
    #: bounds (numbers); ``*_open``: the bound itself is excluded
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    #: one more value accepted outside the bounds, meaning "off" (``between_scale=0``)
    off: float | None = None
    #: accepted strings (str), or the set a tuple option picks from
    choices: tuple[str, ...] = ()
    #: None is accepted (and means "let the program decide")
    nullable: bool = False
    #: shown as a CLI flag (``seed`` is for tests and the API only)
    cli: bool = True
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The CLI flag: ``--mask-scale`` for ``mask_scale``."""
        return "--" + self.name.replace("_", "-")

    def rule(self) -> str:
        """What the option accepts, in words ("must be ...")."""
        if self.type is tuple:
            return f"must be a non-empty subset of {','.join(self.choices)}"
        if self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.type is bool:
            return "must be true or false"
        what = "a finite number" if self.type is float else "an integer"
        bounds = []
        if self.min is not None:
            bounds.append(f"{'>' if self.min_open else '>='} {_num(self.min)}")
        if self.max is not None:
            bounds.append(f"{'<' if self.max_open else '<='} {_num(self.max)}")
        text = f"{what} {' and '.join(bounds)}".strip()
        if self.off is not None:
            text = f"{_num(self.off)} (off) or {text}"
        return f"must be {text}"

    def check(self, value: Any) -> Any:
        """``value`` in its canonical form (float, int, tuple...), or OptionError."""
        if value is None and self.nullable:
            return None
        bad = OptionError(self.name, self.rule(), value)
        if self.type is tuple:
            items = value.split(",") if isinstance(value, str) else value
            try:
                items = [str(i).strip().lower() for i in items]
            except TypeError:
                raise bad from None
            picked = tuple(dict.fromkeys(items))
            if not picked or any(i not in self.choices for i in picked):  # "" too: "faces,," is a typo
                raise bad
            return picked
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad
        if self.type is int:
            if isinstance(value, numbers.Integral):
                value = int(value)
            elif math.isfinite(value) and float(value).is_integer():
                value = int(value)
            else:
                raise bad
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.off is not None and value == self.off:
            return value
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            raise bad
        if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
            raise bad
        return value

    def parse(self, text: Any) -> Any:
        """Convert a string (a form field, an environment variable) to the option's type; other
        values pass unchanged. Does not check: :meth:`check` does."""
        if not isinstance(text, str) or self.type in (str, tuple):
            return text
        s = text.strip()
        if self.nullable and s.lower() in ("", "none", "null"):
            return None
        if self.type is bool:
            low = s.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            return text
        try:
            return int(s) if self.type is int else float(s)
        except ValueError:
            return text


#: Every option, in the order the CLI's help lists them within each group.
TABLE: tuple[Option, ...] = (
    # --- what to mask
    Option("marks", tuple, ("faces", "heads", "plates", "text"),
           "what to mask, comma-separated: faces; heads (people seen from behind or the side); persons (whole "
           "people); plates and text (legible text: signs, badges, plates; found by one text detector)",
           GROUP_MASK, choices=MARKS, metavar="LIST"),
    Option("mask", str, "blur", "mask style; all are irreversible (at most an 8x8 grid of noisy cell colours "
           "survives blur and pixelate, nothing survives solid)", GROUP_MASK, choices=MASKS),
    # >= 1: masks cover the whole head, never less than the face box
    Option("mask_scale", float, 1.5, "head region size relative to the face box", GROUP_MASK, min=1, max=4),
    Option("mask_shape", str, "ellipse", "shape of face masks (text and persons are always boxes)", GROUP_MASK,
           choices=MASK_SHAPES),
    # A face entering the frame is only partly visible and its box lags. It used to grow regions
    # merely *near* an edge (within half their size): that cost 2.1 points of the WIDER photos
    # masked outside faces and 0.9 of the video clips for no measured recall; cut faces only:
    # photos 8.1 % (same as off, vs 10.2 %), video 26.6 % (vs 27.5 %), recall unchanged
    # (bench/recall.py). See anonymize.masks.reach_edges.
    Option("edge_reach", float, 0.5, "grow faces cut by the frame edge past it by this share of their size; "
           "0 = off", GROUP_MASK, min=0, max=2),
    Option("seed", int, None, "seed of the mask noise (None: fresh randomness each run)", GROUP_MASK, min=0,
           nullable=True, cli=False),
    # --- detection
    Option("detector", str, "centerface", "face detector: centerface; centerface-int8 (8-bit model, faster per "
           "frame, use with --threshold 0.08); centerface-int8-qdq (8-bit, for --device openvino); centerface-tta (flip/scale/tile passes fused: slower, for "
           "photos); centerface-tta-int8", GROUP_DETECT, choices=FACE_DETECTORS),
    # A photo is one frame with no tracker to catch a miss, and the time budget allows several
    # passes, so the default fuses flipped/padded passes.
    Option("photo_detector", str, "centerface-tta", "face detector for photos (centerface-tta: flipped and "
           "padded passes fused; centerface-tta-int8: the same on the 8-bit model)", GROUP_DETECT,
           choices=FACE_DETECTORS),
    Option("threshold", float, 0.1, "detection score threshold; lower finds more faces and masks a little "
           "more background", GROUP_DETECT, min=0, max=1, min_open=True, max_open=True),
    # None: centerface-tta uses its measured photo setting (anonymize.detectors.tta.PHOTO, 0.3 with
    # score voting across passes), any other detector `threshold`.
    Option("photo_threshold", float, None, "score threshold of the photo detector (default: its measured "
           "photo setting)", GROUP_DETECT, min=0, max=1, min_open=True, max_open=True, nullable=True),
    # Boxes of small faces come out a few pixels short (the heatmap has a 4 px stride); measured
    # on the video benchmark, 2 px took face-frames >= 32 px from 99.3 % to 99.7 % and halved
    # leaked tracks.
    Option("pad", float, 2.0, "grow every face box by this many detector-input pixels per side", GROUP_DETECT,
           min=0, max=64),
    # below 0.05 a 4K frame is 192 px wide: no face is found, every face stays visible
    Option("detect_scale", float, 1.0, "resize frames by this factor before detection (1 = full resolution)",
           GROUP_DETECT, min=0.05, max=4),
    # Reflect the detector's input outward (rounded up to a multiple of 32; see
    # anonymize.detectors.centerface.CenterFace): a face cut by the frame edge becomes a nearly
    # whole mirror-symmetric face the network can find (the astronaut's face with only its top
    # third in frame: found with 32, missed without). Off by default because the benchmarks do not
    # gain: 32 px changes detections within ~120 px of the edges of crowded frames, video clips
    # 8 -> 12 leaked tracks of 286, WIDER photos 16-32 px 96.8 -> 96.6 %; +4.7 to +9.4 % time
    # per 1080p frame.
    Option("edge_detect", float, 0.0, "reflect the face detector's input by this many pixels per side, so "
           "faces cut by the frame edge look whole (e.g. 32; 0 = off)", GROUP_DETECT, min=0, max=512),
    # Faces turned 90 degrees or more (people lying down, a camera held sideways, a wrong rotation
    # tag) are found only by a pass on the turned frame; "auto" probes for them cheaply (half-size
    # turned views every --hold-before seconds) and runs full turned passes only where the probe
    # found one. Measured with bench/rotation.py (figures in anonymize/rotation.py's docstring).
    Option("rotated_faces", str, "auto", "faces shown sideways or upside down: auto (on video that carries a "
           "display rotation tag: probe turned views every --hold-before seconds, full passes where a face "
           "is found; off for untagged video and photos), always (full passes at 90, 180 and 270 degrees on "
           "every detection, video and photos), off", GROUP_DETECT, choices=ROTATED_FACES),
    Option("on_error", str, "fail", "fail: stop and write nothing; mask-frame: mask whole every frame whose "
           "detection fails", GROUP_DETECT, choices=ON_ERROR),
    # --- video
    Option("detect_every", int, 1, "run the face detector on every N-th video frame and on scene cuts; the "
           "tracker fills the rest", GROUP_VIDEO, min=1, max=30, metavar="N"),
    Option("between_scale", float, 0.5, "with --detect-every > 1: resize factor of a cheap detection pass on "
           "the frames between (finds large faces every frame); 0 = none", GROUP_VIDEO, min=0.05, max=1, off=0),
    Option("marks_every", int, 5, "detect the marks other than faces on every N-th frame and on scene cuts; "
           "their masks are held and interpolated between", GROUP_VIDEO, min=1, max=30, metavar="N"),
    # Between detections a mask follows an interpolated or held box, and the boxes of small faces
    # are a few pixels off, so an absolute margin pays most where the boxes are least precise.
    # Replayed on the six benchmark clips' cached detections: leaked tracks 12 -> 4 of 500,
    # face-frames >= 32 px unmasked 133 -> 37, frame masked outside faces 32.5 -> 40.9 %; growing
    # mask_scale instead pays less (1.8: 6 leaks at 41.7 %), as does a lower threshold (0.08: 10
    # leaks at 36.9 %). Photos: no margin (the photo detector fuses several passes).
    Option("video_margin", float, 0.0085, "grow every face mask by this share of the frame's shorter side per "
           "side (6 px at 720p; boxes jitter between frames); 0 = off", GROUP_VIDEO, min=0, max=0.2),
    # Off: on bench/recall.py video --part tune it found late faces in the frames before them
    # and missed frames, but leaked 7 tracks of 192 instead of 4 (in crowds moving a face width
    # per frame its lower threshold links a track to a neighbour), frame masked outside faces
    # 12.7 -> 13.5 %, and it costs ~60 ms per 720p frame here. See anonymize/relook.py.
    # On the grown tune part (80 clips, 858 tracks, --cache-detections): leaked 26 -> 24,
    # unmasked face-frames in counted tracks 356 -> 320, outside faces 18.4 -> 19.1 %, wall
    # 67 -> 97 ms per frame; its backward half alone (look_missed_hits=100000, the "backward
    # pass": a new track looked for in the buffered frames before it) leaked 28, 350 frames,
    # 18.8 %. Still off: the gain is two tracks in 858 for +45 % time and most of the points
    # left under the issue-21 cost limit (zoom holds, anonymize/track.py, gained as much for less).
    # A face cut by the frame edge that no track knew before (a big face swept in by a pan or a
    # zoom out) is missed by the full-frame pass; one more pass on the frame shrunk by this
    # factor and reflected at its edges finds it whole (anonymize/regions_source.py, EdgePass).
    # bench/recall.py video --part tune (with jitter growth 1): faces cut by the edge 99.6 -> 100 %
    # masked (a 150-185 px face entering at the bottom, 2 % covered, found), face-frames >= 32 px
    # unmasked in counted tracks 22 -> 19, frame masked outside faces 14.2 -> 14.6 %; at the
    # full-frame threshold (0.1) instead of 0.4 it masked 18.2 % (stray boxes at the edges).
    Option("edge_pass", float, 0.25, "video: also detect on the frame resized by this factor and reflected "
           "at its edges, keeping faces it finds cut by the edge (big faces entering); 0 = off",
           GROUP_VIDEO, min=0, max=1, off=0),
    Option("second_look", bool, False, "look again, on a small upscaled window at a lower threshold, for a "
           "face in the frames before its first detection and in a frame where its track was missed",
           GROUP_VIDEO),
    Option("hold_before", float, 0.3, "seconds masked before a face's first detection", GROUP_VIDEO,
           min=0, max=10, metavar="S"),
    Option("hold_after", float, 0.5, "seconds masked after a face's last detection", GROUP_VIDEO,
           min=0, max=10, metavar="S"),
    Option("max_gap", float, 0.5, "longest detection gap (seconds) bridged by interpolation within one track",
           GROUP_VIDEO, min=0, max=10, metavar="S"),
    Option("quality", str, "balanced", "video encoder preset", GROUP_VIDEO, choices=QUALITIES),
    Option("crf", int, None, "override the CRF that --quality picks", GROUP_VIDEO,
           min=0, max=51, nullable=True),
    Option("preset", str, None, "override the x264 preset that --quality picks", GROUP_VIDEO,
           choices=X264_PRESETS, nullable=True),
    # --- audio and metadata
    Option("audio", str, "drop", "drop (voices identify people), keep (copied unchanged), or disguise (pitch "
           "and formants shifted by a random factor, with vibrato: reduces, does not remove, the risk of voice "
           "identification)", GROUP_AUDIO, choices=AUDIO),
    Option("keep_audio", bool, False, "same as --audio keep (deprecated)", GROUP_AUDIO),
    # --- performance
    Option("threads", int, 0, "CPU threads for the detector (0 = onnxruntime's default)", GROUP_PERF,
           min=0, max=256, metavar="N"),
    # Falling back is never an error: the output is the same, only slower; the report records
    # the device each model ran on (models[i].device) and one log line says why.
    Option("device", str, "auto", "where the detectors run: auto (the fastest installed: CUDA, OpenVINO on CPUs with "
           "bf16 units, CoreML, DirectML, else CPU), cpu (onnxruntime), cuda, coreml, directml, openvino; an unavailable device falls "
           "back to the CPU with a warning", GROUP_PERF, choices=DEVICES),
    Option("ffmpeg_threads", int, 0, "threads for each ffmpeg decoder/encoder (0 = ffmpeg's default)",
           GROUP_PERF, min=0, max=256, metavar="N"),
    # Off by default: decoding is a small share of a run (bench/stages.py) and a hardware decoder
    # may treat a damaged stream differently from the software one the tests pin down.
    Option("hwaccel", str, "none", "video decoding: none (software) or auto (ffmpeg's hardware decoder where it "
           "finds one, else software)", GROUP_PERF, choices=HWACCELS),
)
#: The rows by field name.
OPTIONS: dict[str, Option] = {o.name: o for o in TABLE}

#: Where a run's files are processed (``--engine``, ``--ray-address``). Rows like TABLE's, checked
#: the same way and shown in the same help group, but not fields of :class:`Options`: they do not
#: change an output (so not the manifest's settings hash, nor a report's settings) and a service
#: client cannot pick them per job (``anonymize serve --engine`` does, for the whole service).
RUN_TABLE: tuple[Option, ...] = (
    Option("engine", str, "local", "where files are processed: local (this machine's processes) or ray (one "
           "Ray task per file on a Ray cluster; pip install \"anonymize-protest[ray]\"; every node must see the "
           "input and output folders on a shared mount)", GROUP_PERF, choices=("local", "ray")),
    # None: a private Ray started on this machine (loopback only, no dashboard, no usage stats)
    Option("ray_address", str, None, "with --engine ray: the address of a running Ray cluster (HOST:PORT); "
           "default: start a private one on this machine with --jobs CPUs", GROUP_PERF, nullable=True,
           metavar="ADDR"),
)
RUN_OPTIONS: dict[str, Option] = {o.name: o for o in RUN_TABLE}


def _default(name: str) -> Any:
    return OPTIONS[name].default


@dataclass(frozen=True)
class Options:
    """Everything a run can be told. Defaults (from :data:`TABLE`) are the safe choice for protest
    footage; every value is checked against the table on construction (ValueError)."""

    detector: str = _default("detector")
    photo_detector: str = _default("photo_detector")
    photo_threshold: float | None = _default("photo_threshold")
    threshold: float = _default("threshold")
    pad: float = _default("pad")
    detect_scale: float = _default("detect_scale")
    detect_every: int = _default("detect_every")
    between_scale: float = _default("between_scale")
    mask: str = _default("mask")
    mask_scale: float = _default("mask_scale")
    mask_shape: str = _default("mask_shape")
    edge_reach: float = _default("edge_reach")
    video_margin: float = _default("video_margin")
    edge_detect: float = _default("edge_detect")
    edge_pass: float = _default("edge_pass")
    second_look: bool = _default("second_look")

    rotated_faces: str = _default("rotated_faces")
    hold_before: float = _default("hold_before")
    hold_after: float = _default("hold_after")
    max_gap: float = _default("max_gap")
    #: a tuple, or a comma-separated string
    marks: tuple[str, ...] = _default("marks")
    marks_every: int = _default("marks_every")
    audio: str = _default("audio")
    #: deprecated alias of ``audio="keep"`` (kept for API compatibility)
    keep_audio: bool = _default("keep_audio")
    quality: str = _default("quality")
    crf: int | None = _default("crf")
    preset: str | None = _default("preset")
    on_error: str = _default("on_error")
    threads: int = _default("threads")
    ffmpeg_threads: int = _default("ffmpeg_threads")
    hwaccel: str = _default("hwaccel")
    device: str = _default("device")
    seed: int | None = _default("seed")

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, OPTIONS[f.name].check(getattr(self, f.name)))
        if self.keep_audio and self.audio == "drop":
            object.__setattr__(self, "audio", "keep")
        object.__setattr__(self, "keep_audio", self.audio == "keep")

    def updated(self, **changes: Any) -> "Options":
        """A copy with ``changes`` applied; unknown names raise TypeError. None leaves an option
        as it is, except for the options where None means "the program decides" (crf...)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if changes.get("audio") is not None and "keep_audio" not in changes:
            changes["keep_audio"] = False  # a new audio policy replaces the old alias
        return replace(self, **{k: v for k, v in changes.items() if v is not None or OPTIONS[k].nullable})

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value, ``marks`` as a comma-separated string (JSON-ready)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["marks"] = ",".join(self.marks)
        return d

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Options":
        """Options from JSON-ish ``values`` (a request body, a form, a config file).

        Keys are field names (``mask_scale``) or CLI names (``mask-scale``, ``--mask-scale``);
        values are of the option's type or strings of it ("1.5", "true", "faces,heads"; None or
        "" for the options that accept None). Unknown keys, a key given twice and values the
        table refuses raise ValueError (:class:`OptionError` for values).
        """
        picked: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).lstrip("-").replace("-", "_")
            row = OPTIONS.get(name)
            if row is None:
                raise ValueError(f"unknown option {key!r}")
            if name in picked:
                raise ValueError(f"option {name} given twice")
            picked[name] = row.parse(value)
        return cls(**picked)
