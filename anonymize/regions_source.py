"""Where a frame's regions come from: live (detectors + tracker) or a plan file.

Both yield, for each decoded frame in order, the *raw* regions of that frame: boxes before head
growth, each with its track id. Mask geometry (:func:`anonymize.masks.mask_regions`) then makes
them the masked regions, the same way for both, so rendering an unedited plan masks exactly what
the one-shot run masked.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterator, Protocol

import numpy as np

from .errors import InputError
from .regions import Regions, iou_matrix
from .relook import SecondLook
from .rotation import RotationWatch, video_mode
from .schedule import DetectionSchedule, SceneCuts
from .track import Tracker, TrackerSettings
from .video import Frame

if TYPE_CHECKING:
    from .config import Options
    from .pipeline import Engine
    from .plan import PlanFile


#: The second look's score threshold, as a share of ``Options.threshold``: a face is expected there.
RELOOK_THRESHOLD = 0.5


class RegionSource(Protocol):
    """The raw regions of every frame, in order: ``(frame, regions)`` for each frame of ``frames``
    (the source may hold frames back, as the tracker does, but yields each exactly once)."""

    def regions(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Regions]]: ...


class LiveRegions:
    """Detectors and tracker: detect -> track, as the one-shot run does."""

    def __init__(self, engine: "Engine", options: "Options", fps: float, rotation_tag: float = 0.0):
        self.engine = engine
        self.options = options
        self.fps = fps
        #: the stream's display rotation (degrees): under ``rotated_faces="auto"`` only a tagged
        #: stream gets the turned passes (see :func:`.rotation.video_mode`)
        self.rotation_tag = rotation_tag
        #: the last file's turned-face passes (counts for the report and bench/rotation.py)
        self.rotation: RotationWatch | None = None
        settings = TrackerSettings.from_seconds(fps, options.hold_before, options.hold_after, options.max_gap)
        # a track must survive the frames on which no detection runs
        every = max(options.detect_every, options.marks_every if engine.mark_detectors else 1)
        self.settings = replace(settings, max_gap=max(settings.max_gap, 2 * every),
                                hold_after=max(settings.hold_after, every))

    def edge_pass(self) -> "EdgePass | None":
        """The extra pass for faces cut by the frame edge, or None (off, or no face detector)."""
        o = self.options
        if o.edge_pass <= 0 or self.engine.detector is None:
            return None
        from .detectors import create as create_detector

        det = create_detector(o.detector, threshold=max(o.threshold, EDGE_PASS_THRESHOLD),
                              scale=o.detect_scale * o.edge_pass,
                              threads=o.threads, pad=o.pad, edge=EDGE_PASS_BORDER)
        return EdgePass(det, min_height=EDGE_PASS_MIN_PX)

    def second_look(self):
        """The tracker's second look (:mod:`.relook`), or None when off or the face detector has
        no single-pass ``boxes_at`` to run on a crop."""
        det = self.engine.detector
        if not self.options.second_look or det is None or not hasattr(det, "boxes_at"):
            return None
        look = SecondLook(det, threshold=RELOOK_THRESHOLD * self.options.threshold,
                          pad=self.options.pad / self.options.detect_scale)
        return lambda frame, box: look.look(frame.image, box)

    def regions(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Regions]]:
        tracker: Tracker[Frame] = Tracker(self.settings, second_look=self.second_look())
        edges = self.edge_pass()
        cuts = SceneCuts()
        schedule = DetectionSchedule(self.options.detect_every)
        marks = DetectionSchedule(self.options.marks_every)
        engine = self.engine
        turned = None
        mode = video_mode(self.options.rotated_faces, self.rotation_tag)
        if engine.detector is not None and mode != "off":
            turned = RotationWatch.for_video(lambda img: engine.detect(img, full=True, marks=False),
                                             mode, self.fps, self.options.hold_before)
        self.rotation = turned
        for frame in frames:
            cut = cuts(frame.image)  # once per frame, for both schedules
            full = schedule.tick(cut)
            detections = engine.detect(frame.image, full=full,
                                       marks=bool(engine.mark_detectors) and marks.tick(cut))
            if edges is not None and full:
                detections = edges.add(frame.image, detections)
            if turned is not None:  # faces shown sideways or upside down (anonymize/rotation.py)
                extra = turned(frame.image, detections, full, cut)
                if len(extra):
                    detections = Regions.merge([detections, extra])
            yield from tracker.push(frame, detections)
        yield from tracker.flush()


#: The edge pass reflects its (shrunk) input by this many pixels per side.
EDGE_PASS_BORDER = 32
#: ... at this score threshold at least: it is for big faces, which score high, and each stray
#: box it keeps is masked (and tracked) like a face.
EDGE_PASS_THRESHOLD = 0.4
#: ... and keeps faces at least this wide or tall (frame pixels): smaller cut faces the full pass finds.
EDGE_PASS_MIN_PX = 64.0


class EdgePass:
    """Faces cut by the frame edge, from one pass on the shrunk frame reflected at its edges.

    The full-resolution pass misses a big face cut by the edge (a 300 px face half below the
    frame at the end of a pan: bench/recall.py video --part tune); mirrored, it looks nearly whole,
    and a big face needs no full resolution, so the pass is cheap (1/16 of the pixels at 0.25).
    Only faces touching the frame edge are kept, and none that a detection of the frame already
    overlaps: elsewhere the full pass is the better one.
    """

    def __init__(self, detector, min_height: float):
        self.detector = detector
        self.min_height = float(min_height)

    def add(self, image: np.ndarray, detections: Regions) -> Regions:
        """``detections`` with the edge faces this pass finds and they lack."""
        h, w = image.shape[:2]
        found = self.detector.detect(image)
        if not len(found):
            return detections
        b = found.boxes
        touch = (b[:, 0] <= 1) | (b[:, 1] <= 1) | (b[:, 2] >= w - 1) | (b[:, 3] >= h - 1)
        keep = touch & (np.maximum(found.widths, found.heights) >= self.min_height)  # cut: one side is short
        faces = detections.boxes[detections.kinds == "face"]
        if keep.any() and len(faces):
            keep &= (iou_matrix(b, faces) < 0.3).all(axis=1)
        return Regions.merge([detections, found[keep]]) if keep.any() else detections


def photo_regions(detections: Regions) -> Regions:
    """A photo's detections as tracks of one frame each (ids 0..n-1), so that the plan's edits
    (``"masked": false``) can name them."""
    return detections.with_(track_ids=np.arange(len(detections), dtype=np.int64))


class PlanRegions:
    """The regions a plan recorded for each frame, with the plan's edits applied: tracks marked
    ``"masked": false`` are left out, ``mask_frames`` ranges get a whole-frame region, and the
    ``added`` regions (followed from the plan's "add" boxes by :mod:`anonymize.follow`) join in."""

    def __init__(self, entry: "PlanFile", added: dict[int, Regions] | None = None):
        self.entry = entry
        self.added = added or {}
        self._spared = np.array(sorted(entry.spared), np.int64)

    def at(self, index: int, width: int, height: int) -> Regions:
        """The raw regions of frame ``index`` (edits applied)."""
        raw = self.entry.raw.get(index, Regions.empty())
        if len(self._spared) and len(raw):
            raw = raw[~np.isin(raw.track_ids, self._spared)]
        parts = [raw, self.added.get(index, Regions.empty())]
        if any(a <= index <= b for a, b in self.entry.mask_frames):
            parts.append(Regions(np.array([[0, 0, width, height]], np.float32), kinds=["frame"],
                                 sources=["added"]))
        return Regions.merge(parts)

    def regions(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Regions]]:
        """Each frame with its regions; InputError when the input has another frame count or size
        than the plan (the caller's atomic output then leaves nothing behind)."""
        e = self.entry
        count = 0
        for frame in frames:
            w, h = frame.size
            if (w, h) != (e.width, e.height):
                raise InputError(f"the input's frames are {w}x{h}, the plan's {e.width}x{e.height}")
            if frame.index >= e.frame_count:
                raise InputError(f"the input has more than the plan's {e.frame_count} frames")
            count += 1
            yield frame, self.at(frame.index, w, h)
        if count != e.frame_count:
            raise InputError(f"the input has {count} frames, the plan {e.frame_count}")
