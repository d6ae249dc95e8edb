"""Which frames get a fresh detection.

Full-quality detection on every 1080p frame costs more than encoding it, so by default the
detector runs on every ``every``-th frame and the tracker fills the frames between (it already
looks ahead, so a face first seen on a detection frame is also masked in the frames before it).
A scene cut always forces a detection, so a new shot never relies on boxes from the previous one.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Mean absolute difference (0-255) of tiny grey thumbnails above which two frames are a cut.
CUT_THRESHOLD = 25.0


class SceneCuts:
    """Call once per frame, in order; True when the frame starts a new shot (a scene cut)."""

    def __init__(self, threshold: float = CUT_THRESHOLD):
        self.threshold = threshold
        self._thumb: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> bool:
        thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
        cut = self._thumb is not None and float(cv2.absdiff(thumb, self._thumb).mean()) > self.threshold
        self._thumb = thumb
        return cut


class DetectionSchedule:
    """Call :meth:`due` once per frame, in order; True means "run the detector on this frame".

    Several schedules over one video (faces every frame, other marks every 5th) can share one
    :class:`SceneCuts` through :meth:`tick`, so the cut check runs once per frame.
    """

    def __init__(self, every: int = 1, cut_threshold: float = CUT_THRESHOLD):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.every = every
        self._cuts = SceneCuts(cut_threshold)
        self._since = every  # the first frame is always detected

    def due(self, image: np.ndarray) -> bool:
        return self.tick(self._cuts(image))

    def tick(self, cut: bool) -> bool:
        """:meth:`due` for a frame whose scene-cut check was done elsewhere."""
        if cut or self._since >= self.every:
            self._since = 1
            return True
        self._since += 1
        return False
