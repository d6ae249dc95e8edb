"""One table of defaults: the CLI's flags, their help text and the Python API all read it."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

ON_ERROR = ("fail", "mask-frame")
MASK_SHAPES = ("ellipse", "box")
#: What can be masked (``--marks``). faces: CenterFace (or ``detector``); heads: heads of people
#: seen from behind or the side; persons: whole people; plates, text: legible text (plates are
#: found as text: no plate detector with a permissive licence ships its weights).
MARKS = ("faces", "heads", "persons", "plates", "text")
#: Audio policy: voices identify people, so audio is dropped unless asked for.
AUDIO = ("drop", "keep", "disguise")


@dataclass(frozen=True)
class Options:
    """Everything a run can be told. Defaults are the safe choice for protest footage."""

    #: Face detector (see ``anonymize.detectors.DETECTORS``).
    detector: str = "centerface"
    #: Face detector for photos: a photo is one frame with no tracker to catch a miss, and the
    #: time budget allows several passes, so the default fuses flipped/padded passes.
    photo_detector: str = "centerface-tta"
    #: Score threshold of the photo detector; None: ``centerface-tta`` uses its measured photo
    #: setting (:data:`anonymize.detectors.tta.PHOTO`, 0.3 with score voting across passes), any
    #: other detector ``threshold``.
    photo_threshold: float | None = None
    #: Detection score threshold; lower finds more faces and masks a little more background.
    threshold: float = 0.1
    #: Grow every face box by this many detector-input pixels on each side: boxes of small
    #: faces come out a few pixels short (the heatmap has a 4 px stride); measured on the video
    #: benchmark, 2 px took face-frames >= 32 px from 99.3 % to 99.7 % and halved leaked tracks.
    pad: float = 2.0
    #: Resize factor applied before detection (1.0 = full resolution).
    detect_scale: float = 1.0
    #: Run the detector on every N-th video frame (and on every scene cut); the tracker fills
    #: the frames between. 1 = every frame.
    detect_every: int = 1
    #: On the frames between full detections, run a cheap pass at this resize factor (finds
    #: large faces every frame); 0 disables it. Only matters when ``detect_every > 1``.
    between_scale: float = 0.5
    #: Mask style (see ``anonymize.masks.MASKS``); all styles are irreversible.
    mask: str = "blur"
    #: Face box -> head region growth factor.
    mask_scale: float = 1.5
    mask_shape: str = "ellipse"
    #: A face region cut by a frame edge is grown past that edge by this share of its size (see
    #: :func:`anonymize.masks.reach_edges`); 0 disables. A face entering the frame is only partly
    #: visible and its box lags. It used to grow regions merely *near* an edge (within
    #: half their size): that cost 2.1 points of the WIDER photos masked outside faces and 0.9 of
    #: the video clips for no measured recall; cut faces only: photos 8.1 % (same as off, vs
    #: 10.2 %), video 26.6 % (vs 27.5 %), recall unchanged (bench/recall.py).
    edge_reach: float = 0.5
    #: Video: every face mask also grows by this share of the frame's shorter side on each side
    #: (6 px at 720p, 9 px at 1080p). Between detections a mask follows an interpolated or held
    #: box, and the boxes of small faces are a few pixels off, so an absolute margin pays most
    #: where the boxes are least precise. Replayed on the six benchmark clips' cached
    #: detections: leaked tracks 12 -> 4 of 500, face-frames >= 32 px unmasked 133 -> 37, frame
    #: masked outside faces 32.5 -> 40.9 %; growing ``mask_scale`` instead pays less (1.8: 6
    #: leaks at 41.7 %), as does a lower threshold (0.08: 10 leaks at 36.9 %). Photos: no margin
    #: (the photo detector fuses several passes). 0 disables.
    video_margin: float = 0.0085
    #: Reflect the face detector's input outward by this many pixels per side (rounded up to a
    #: multiple of 32; see :class:`anonymize.detectors.centerface.CenterFace`): a face cut by the
    #: frame edge becomes a nearly whole mirror-symmetric face the network can find (the
    #: astronaut's face with only its top third in frame: found with 32, missed without). Off by
    #: default because the benchmarks do not gain: 32 px changes detections within ~120 px of the
    #: edges of crowded frames, video clips 8 -> 12 leaked tracks of 286, WIDER photos 16-32 px
    #: 96.8 -> 96.6 %; +4.7 to +9.4 % time per 1080p frame. 0 disables.
    edge_detect: float = 0.0
    #: Seconds a mask is held before a face's first and after its last detection.
    hold_before: float = 0.3
    hold_after: float = 0.5
    #: Longest detection gap (seconds) bridged by interpolation within one track.
    max_gap: float = 0.5
    #: What to mask, a subset of :data:`MARKS` (a tuple, or a comma-separated string).
    marks: tuple[str, ...] = ("faces", "heads", "plates", "text")
    #: Video: run the detectors of marks other than faces on every N-th frame (and scene cuts);
    #: the tracker holds and interpolates their masks between. Text and heads move slowly.
    marks_every: int = 5
    #: "drop" (default), "keep" (copied unchanged) or "disguise" (pitch and formants shifted by a
    #: random factor, with vibrato: reduces, does not remove, the risk of voice identification).
    audio: str = "drop"
    #: Deprecated alias of ``audio="keep"`` (kept for API compatibility).
    keep_audio: bool = False
    #: Encoder preset (see ``anonymize.video.QUALITY``) and raw overrides.
    quality: str = "balanced"
    crf: int | None = None
    preset: str | None = None
    #: "fail": stop and write nothing; "mask-frame": a frame whose detection fails is masked whole.
    on_error: str = "fail"
    #: CPU threads for the detector (0 = onnxruntime's default).
    threads: int = 0
    #: Threads for each ffmpeg decoder/encoder (0 = ffmpeg's default, one per core).
    ffmpeg_threads: int = 0
    #: Seed for mask noise (None = fresh randomness each run).
    seed: int | None = None

    def __post_init__(self) -> None:
        marks = self.marks.split(",") if isinstance(self.marks, str) else list(self.marks)
        marks = tuple(dict.fromkeys(m.strip().lower() for m in marks if m.strip()))
        unknown = [m for m in marks if m not in MARKS]
        if unknown or not marks:
            raise ValueError(f"marks must be a non-empty subset of {','.join(MARKS)}; got {self.marks!r}")
        object.__setattr__(self, "marks", marks)
        if self.keep_audio and self.audio == "drop":
            object.__setattr__(self, "audio", "keep")
        if self.audio not in AUDIO:
            raise ValueError(f"audio must be one of {AUDIO}")
        object.__setattr__(self, "keep_audio", self.audio == "keep")
        if self.marks_every < 1:
            raise ValueError("marks_every must be >= 1")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}")
        if self.mask_shape not in MASK_SHAPES:
            raise ValueError(f"mask_shape must be one of {MASK_SHAPES}")
        if not 0 < self.threshold < 1:
            raise ValueError("threshold must be between 0 and 1")
        if self.mask_scale < 1:
            raise ValueError("mask_scale must be >= 1 (masks cover the whole head)")
        if self.detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        if self.photo_threshold is not None and not 0 < self.photo_threshold < 1:
            raise ValueError("photo_threshold must be between 0 and 1")
        if self.edge_reach < 0:
            raise ValueError("edge_reach must be >= 0")
        if self.video_margin < 0:
            raise ValueError("video_margin must be >= 0")
        if self.edge_detect < 0:
            raise ValueError("edge_detect must be >= 0")
        if self.pad < 0:
            raise ValueError("pad must be >= 0")
        if self.detect_scale <= 0:
            raise ValueError("detect_scale must be > 0")

    def updated(self, **changes: Any) -> "Options":
        """A copy with ``changes`` applied; unknown names raise TypeError."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if changes.get("audio") is not None and "keep_audio" not in changes:
            changes["keep_audio"] = False  # a new audio policy replaces the old alias
        return replace(self, **{k: v for k, v in changes.items() if v is not None or k in ("crf", "preset", "seed", "photo_threshold")})

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["marks"] = ",".join(self.marks)
        return d
