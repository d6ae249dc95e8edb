"""Faces shown sideways or upside down: face-detector passes on the frame turned 90, 180, 270 degrees.

The face detectors are trained on upright faces and find few faces turned by 90 degrees or more:
people lying on the ground, a camera held sideways, or upright video carrying a wrong rotation
tag (ffmpeg applies the tag, so its frames come out turned). A pass on the turned frame finds
them; its boxes are turned back into frame pixels.

Which files get them (:func:`video_mode`, :func:`photo_mode`): under the default
``rotated_faces="auto"`` only video whose stream carries a display rotation tag; untagged video and
photos only with ``"always"`` (on upright footage the turned boxes of upright faces disturbed the
tracker). Turned passes on every frame would cost three times the face detection, so in
``"auto"`` a cheap probe looks for turned faces on a schedule and a full pass runs
only at the angles where the probe (or a full pass) recently found one:

- the **probe** runs the face detector on the frame turned by each angle, shrunk to half size
  (a quarter of the pixels: three probes cost about 0.75 of one upright pass), on the first
  frame, on scene cuts and then every ``hold_before`` seconds (0.3 s by default), so that the
  look-ahead hold masks the frames between a turned face's appearance and its first detection;
- an angle where a turned face was found (one no upright box overlaps, scoring at least
  ``ACTIVATE_SCORE``) is **active** for
  ``ACTIVE_SECONDS``: every full detection frame also gets a full-size pass at that angle, and
  every new find renews it.

Every box a probe or a pass finds is masked, whether it renews an angle or not. ``"always"``:
full passes at the three angles on every detection frame; ``"off"``: upright only. Photos get the
probe once and the full pass (with the photo detector) at every angle where it found something.

Measured (``bench/rotation.py``, default options, on a machine shared with other jobs, so the
times are rough): 12 WIDER photos turned by 0/90/180/270 degrees, as the first frame of a video,
faces >= 16 px masked: off 97.1/45.9/40.4/43.2 %, auto 99.0/98.6/92.3/98.6 %, always
97.1/98.6/97.1/98.6 %; per frame auto costs about 1.5-2.2x and always 3.5-3.9x the upright pass
(crowds start full passes on the first frame). The four shared upright clips, first 60 frames:
auto 1.04-1.32x the time of off with no angle started on three of them, 2.15x on the stage clip
(one angle started, 40 full passes); always 2.6-5.5x.
"""
from __future__ import annotations

import cv2
import numpy as np

from .regions import Regions, iou_matrix

#: Quarter turns counterclockwise (``np.rot90``'s ``k``) that make a face turned by 90, 180 or
#: 270 degrees upright.
TURNS = (1, 2, 3)
#: What the probe shrinks the turned frame to (side factor), and its pixel budget (a 24 Mpx photo
#: is shrunk further so the probe's memory stays small).
PROBE_SCALE = 0.5
PROBE_PIXELS = 1_000_000
#: How long an angle stays active after a turned face was last found there (seconds).
ACTIVE_SECONDS = 2.0
#: A turned-pass box overlapping an upright box by at least this IoU is the same face.
SAME_FACE_IOU = 0.3
#: Only a turned face scoring at least this starts (or renews) full passes at its angle: at the
#: detection threshold (0.1) the probes of crowded footage find some new small face or texture at
#: almost every angle, which would make "auto" cost what "always" costs. Every box found is masked.
ACTIVATE_SCORE = 0.5
MODES = ("auto", "always", "off")


def turn_back(boxes: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Boxes found in ``np.rot90(frame, k)`` -> boxes in ``frame`` (``w`` x ``h``) pixels."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    k %= 4
    if k == 0:
        out = b
    elif k == 1:  # rotated[r, c] = frame[c, w - 1 - r]
        out = np.stack([w - y2, x1, w - y1, x2], axis=1)
    elif k == 2:
        out = np.stack([w - x2, h - y2, w - x1, h - y1], axis=1)
    else:  # rotated[r, c] = frame[h - 1 - c, r]
        out = np.stack([y1, h - x2, y2, h - x1], axis=1)
    return np.ascontiguousarray(out, dtype=np.float32)


def turned_pass(detect, image: np.ndarray, k: int, shrink: float = 1.0) -> Regions:
    """``detect`` (a frame -> :class:`Regions` callable) on ``image`` turned by ``k`` quarter turns
    (and shrunk by ``shrink``), its face boxes in ``image`` pixels."""
    h, w = image.shape[:2]
    view = np.ascontiguousarray(np.rot90(image, k))
    if shrink < 1.0:
        vh, vw = view.shape[:2]
        size = (max(1, round(vw * shrink)), max(1, round(vh * shrink)))
        view = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
        sx, sy = vw / size[0], vh / size[1]
    else:
        sx = sy = 1.0
    found = detect(view)
    if not len(found):
        return found
    boxes = found.boxes * np.array([sx, sy, sx, sy], np.float32)
    return found.with_(boxes=turn_back(boxes, k, w, h)).clipped(w, h)


def probe_shrink(h: int, w: int) -> float:
    """The probe's shrink factor for an ``h`` x ``w`` frame."""
    return float(min(PROBE_SCALE, np.sqrt(PROBE_PIXELS / max(h * w, 1))))


def new_faces(found: Regions, known: Regions, score: float = ACTIVATE_SCORE) -> np.ndarray:
    """Mask of the faces in ``found`` scoring at least ``score`` that no box in ``known``
    overlaps (IoU < SAME_FACE_IOU)."""
    faces = (found.kinds == "face") & (found.scores >= score)
    if not len(known) or not faces.any():
        return faces
    return faces & (iou_matrix(found.boxes, known.boxes).max(axis=1) < SAME_FACE_IOU)


class RotationWatch:
    """The turned passes of one file (see the module docstring). Call once per frame, in order.

    Args:
        detect: the face detection of a full detection frame (frame -> Regions), used for the
            probe (on the shrunk view) and for the full passes.
        mode: ``"auto"``, ``"always"`` or ``"off"``.
        probe_every: frames between probes (``hold_before`` in frames, at least 1).
        active_frames: frames an angle stays active after its last find.
    """

    def __init__(self, detect, mode: str = "auto", probe_every: int = 9, active_frames: int = 60):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.detect, self.mode = detect, mode
        self.probe_every, self.active_frames = max(1, int(probe_every)), max(1, int(active_frames))
        self._frame = -1
        self._last_probe: int | None = None
        self._active: dict[int, int] = {}  # turn -> last frame it stays active
        #: counts for the report and the benchmark: probes run, full passes run, activations
        self.probes = self.passes = self.activations = 0

    @classmethod
    def for_video(cls, detect, mode: str, fps: float, hold_before: float) -> "RotationWatch":
        seconds = hold_before if hold_before > 0 else 0.3
        return cls(detect, mode, probe_every=max(1, round(seconds * fps)),
                   active_frames=max(1, round(ACTIVE_SECONDS * fps)))

    def __call__(self, image: np.ndarray, upright: Regions, full: bool, cut: bool = False) -> Regions:
        """Turned faces of this frame (``upright``: what the upright pass found; ``full``: a full
        detection frame; only full detection frames get turned passes)."""
        self._frame += 1
        if self.mode == "off" or not full:
            return Regions.empty()
        if self.mode == "always":
            turns = list(TURNS)
        else:
            turns = [k for k, until in self._active.items() if until >= self._frame]
        parts = []
        known = upright
        for k in turns:
            got = turned_pass(self.detect, image, k)
            self.passes += 1
            self._note(k, got, known)
            parts.append(got)
        due = self._last_probe is None or cut or self._frame - self._last_probe >= self.probe_every
        if self.mode == "auto" and due:
            self._last_probe = self._frame
            shrink = probe_shrink(*image.shape[:2])
            for k in TURNS:
                if k in turns:
                    continue
                got = turned_pass(self.detect, image, k, shrink)
                self.probes += 1
                if self._note(k, got, known):
                    parts.append(turned_pass(self.detect, image, k))  # this frame gets the full pass too
                    self.passes += 1
                parts.append(got)
        return Regions.merge(parts) if parts else Regions.empty()

    def _note(self, k: int, got: Regions, known: Regions) -> bool:
        """Renew (or start) angle ``k`` when ``got`` holds a face the upright pass missed."""
        if not new_faces(got, known).any():
            return False
        if self._active.get(k, -1) < self._frame:
            self.activations += 1
        self._active[k] = self._frame + self.active_frames
        return True


def video_mode(option: str, rotation_tag: float) -> str:
    """The mode a video runs in: ``"auto"`` turns the passes on only for a stream that carries a
    display rotation tag (the tag may be wrong: upright pixels shown turned), ``"off"`` otherwise.

    Why not on every video: on upright, untagged footage the turned views' boxes of upright faces
    (coarse, offset) join the tracker's detections and can take a face's track from its better
    upright box; on the merged code that left a face unmasked in one frame of the audit test clip
    and cut a sample clip's edge face to 79 % covered. Until the turned passes run a tracker of
    their own, untagged footage takes them only with ``"always"``.
    """
    if option == "auto":
        return "auto" if round(float(rotation_tag)) % 360 else "off"
    return option


def photo_mode(option: str) -> str:
    """The mode a photo runs in: ``"always"`` only; ``"auto"`` is off for photos, because the
    turned views' boxes of upright faces and of placards mask more than the faces (an extra 8 % of
    a text box with ``--marks faces``; four boxes for one face on skimage's astronaut) and the photo
    targets' outside-faces share was not remeasured with them."""
    return "always" if option == "always" else "off"


def photo_turned(probe_detect, full_detect, image: np.ndarray, upright: Regions, mode: str) -> Regions:
    """Turned faces of a photo: the probe (``probe_detect`` on the shrunk turned views) and, at
    each angle where it found a face the upright pass missed, ``full_detect`` (the photo
    detector) on the turned photo; ``"always"``: the full pass at every angle."""
    if mode == "off":
        return Regions.empty()
    parts = []
    shrink = probe_shrink(*image.shape[:2])
    for k in TURNS:
        if mode == "always":
            hit = True
        else:
            got = turned_pass(probe_detect, image, k, shrink)
            parts.append(got)
            hit = bool(new_faces(got, upright).any())
        if hit:
            parts.append(turned_pass(full_detect, image, k))
    return Regions.merge(parts) if parts else Regions.empty()
