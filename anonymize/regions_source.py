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
from .regions import Regions
from .rotation import RotationWatch
from .schedule import DetectionSchedule, SceneCuts
from .track import Tracker, TrackerSettings
from .video import Frame

if TYPE_CHECKING:
    from .config import Options
    from .pipeline import Engine
    from .plan import PlanFile


class RegionSource(Protocol):
    """The raw regions of every frame, in order: ``(frame, regions)`` for each frame of ``frames``
    (the source may hold frames back, as the tracker does, but yields each exactly once)."""

    def regions(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Regions]]: ...


class LiveRegions:
    """Detectors and tracker: detect -> track, as the one-shot run does."""

    def __init__(self, engine: "Engine", options: "Options", fps: float):
        self.engine = engine
        self.options = options
        self.fps = fps
        #: the last file's turned-face passes (counts for the report and bench/rotation.py)
        self.rotation: RotationWatch | None = None
        settings = TrackerSettings.from_seconds(fps, options.hold_before, options.hold_after, options.max_gap)
        # a track must survive the frames on which no detection runs
        every = max(options.detect_every, options.marks_every if engine.mark_detectors else 1)
        self.settings = replace(settings, max_gap=max(settings.max_gap, 2 * every),
                                hold_after=max(settings.hold_after, every))

    def regions(self, frames: Iterator[Frame]) -> Iterator[tuple[Frame, Regions]]:
        tracker: Tracker[Frame] = Tracker(self.settings)
        cuts = SceneCuts()
        schedule = DetectionSchedule(self.options.detect_every)
        marks = DetectionSchedule(self.options.marks_every)
        engine = self.engine
        turned = None
        if engine.detector is not None:
            turned = RotationWatch.for_video(lambda img: engine.detect(img, full=True, marks=False),
                                             self.options.rotated_faces, self.fps, self.options.hold_before)
        self.rotation = turned
        for frame in frames:
            cut = cuts(frame.image)  # once per frame, for both schedules
            full = schedule.tick(cut)
            detections = engine.detect(frame.image, full=full, marks=bool(engine.mark_detectors) and marks.tick(cut))
            if turned is not None:  # faces shown sideways or upside down (anonymize/rotation.py)
                extra = turned(frame.image, detections, full, cut)
                if len(extra):
                    detections = Regions.merge([detections, extra])
            yield from tracker.push(frame, detections)
        yield from tracker.flush()


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
            h, w = frame.image.shape[:2]
            if (w, h) != (e.width, e.height):
                raise InputError(f"the input's frames are {w}x{h}, the plan's {e.width}x{e.height}")
            if frame.index >= e.frame_count:
                raise InputError(f"the input has more than the plan's {e.frame_count} frames")
            count += 1
            yield frame, self.at(frame.index, w, h)
        if count != e.frame_count:
            raise InputError(f"the input has {count} frames, the plan {e.frame_count}")
