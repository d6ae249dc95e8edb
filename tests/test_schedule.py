"""Detection schedule: every N-th frame, and always on a scene cut."""
from __future__ import annotations

import numpy as np

from anonymize.schedule import DetectionSchedule


def test_every_nth_frame_and_scene_cuts():
    rng = np.random.default_rng(0)
    shot_a = rng.integers(0, 255, (72, 128, 3), np.uint8)
    shot_b = 255 - shot_a
    s = DetectionSchedule(every=4)
    frames = [shot_a] * 6 + [shot_b] * 6
    due = [s.due(f) for f in frames]
    assert due == [True, False, False, False, True, False,   # every 4th
                   True, False, False, False, True, False]   # the cut at frame 6 restarts the count


def test_every_one_is_every_frame():
    s = DetectionSchedule(every=1)
    img = np.zeros((10, 10, 3), np.uint8)
    assert all(s.due(img) for _ in range(5))
