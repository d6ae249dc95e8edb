"""Turned-face passes (anonymize/rotation.py): box maths, the probe schedule, and a real face
turned upside down in a real video (the pipeline masks it)."""
from __future__ import annotations

import numpy as np
import pytest

from anonymize.regions import Regions
from anonymize.rotation import TURNS, RotationWatch, photo_turned, probe_shrink, turn_back, turned_pass


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_turn_back_inverts_rot90(k):
    rng = np.random.default_rng(k)
    h, w = 37, 61
    for _ in range(20):
        x1, y1 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
        x2, y2 = int(rng.integers(x1 + 1, w + 1)), int(rng.integers(y1 + 1, h + 1))
        frame = np.zeros((h, w), np.uint8)
        frame[y1:y2, x1:x2] = 1
        ys, xs = np.nonzero(np.rot90(frame, k))
        found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        assert turn_back(found, k, w, h).tolist() == [[x1, y1, x2, y2]]


def _bright_box(img: np.ndarray) -> Regions:
    """A stand-in for a face detector that finds the bright square only when it is in the top-left
    quarter of the view: a 'face' the upright pass misses but one turned view finds."""
    ys, xs = np.nonzero(img[:, :, 0] > 200)
    h, w = img.shape[:2]
    if not len(xs) or xs.mean() > w / 2 or ys.mean() > h / 2:
        return Regions.empty()
    return Regions(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32), np.array([0.9]),
                   kinds=["face"])


def _frame() -> np.ndarray:
    img = np.zeros((120, 160, 3), np.uint8)
    img[80:100, 110:130] = 255  # bottom right: found only in the view turned by 180 degrees
    return img


def test_turned_pass_maps_boxes_back_to_the_frame():
    img = _frame()
    assert len(_bright_box(img)) == 0
    got = turned_pass(_bright_box, img, 2)
    assert got.boxes.tolist() == [[110, 80, 130, 100]]
    shrunk = turned_pass(_bright_box, img, 2, shrink=0.5)
    assert np.allclose(shrunk.boxes, [[110, 80, 130, 100]], atol=2)


def test_watch_probes_on_schedule_and_keeps_a_found_angle_active():
    img = _frame()
    calls = []

    def detect(view):
        calls.append(view.shape)
        return _bright_box(view)

    watch = RotationWatch(detect, "auto", probe_every=9, active_frames=30)
    first = watch(img, Regions.empty(), full=True)
    # frame 0: three probes; the 180-degree one finds the face, so that angle gets a full pass too
    assert watch.probes == 3 and watch.passes == 1 and watch.activations == 1
    assert len(first) >= 1 and np.allclose(first.boxes[0], [110, 80, 130, 100], atol=2)
    for i in range(1, 9):  # active: a full 180-degree pass on every detection frame, no probe
        assert len(watch(img, Regions.empty(), full=True)) == 1
    assert watch.probes == 3 and watch.passes == 9
    watch(img, Regions.empty(), full=True)  # frame 9: probes of the two inactive angles
    assert watch.probes == 5
    assert len(watch(img, Regions.empty(), full=False)) == 0  # no detection frame: nothing runs
    # a face the upright pass already has does not activate anything
    quiet = RotationWatch(detect, "auto")
    upright = Regions(np.array([[110, 80, 130, 100]], np.float32), kinds=["face"])
    quiet(img, upright, full=True)
    assert quiet.activations == 0 and quiet.passes == 0


def test_modes_off_and_always():
    img = _frame()
    off = RotationWatch(_bright_box, "off")
    assert len(off(img, Regions.empty(), full=True)) == 0 and off.probes == off.passes == 0
    always = RotationWatch(_bright_box, "always")
    assert len(always(img, Regions.empty(), full=True)) == 1 and always.passes == len(TURNS) and always.probes == 0
    assert len(photo_turned(_bright_box, _bright_box, img, Regions.empty(), "auto")) >= 2  # probe + full pass
    assert len(photo_turned(_bright_box, _bright_box, img, Regions.empty(), "off")) == 0
    with pytest.raises(ValueError):
        RotationWatch(_bright_box, "sometimes")


def test_weak_turned_finds_are_masked_but_start_nothing():
    img = _frame()

    def weak(view):
        return _bright_box(view).with_(scores=np.full(len(_bright_box(view)), 0.2, np.float32))

    watch = RotationWatch(weak, "auto")
    got = watch(img, Regions.empty(), full=True)
    assert len(got) == 1 and watch.activations == 0 and watch.passes == 0


def test_probe_stays_small_on_big_photos():
    assert probe_shrink(1080, 1920) == 0.5
    assert 4000 * 6000 * probe_shrink(4000, 6000) ** 2 <= 1_000_001
