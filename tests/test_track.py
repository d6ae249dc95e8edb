"""Tracker: gaps filled, masks held before and after detections, no detection ever dropped."""
from __future__ import annotations

import numpy as np

from anonymize.regions import Regions
from anonymize.track import Tracker, TrackerSettings


def _run(dets_by_frame: dict[int, list[list[float]]], n: int, settings: TrackerSettings):
    tracker: Tracker[int] = Tracker(settings)
    out = []
    for f in range(n):
        boxes = dets_by_frame.get(f, [])
        out += list(tracker.push(f, Regions(np.array(boxes, np.float32).reshape(-1, 4))))
    out += list(tracker.flush())
    return out


def test_every_frame_released_once_in_order():
    out = _run({3: [[0, 0, 10, 10]]}, 50, TrackerSettings())
    assert [f for f, _ in out] == list(range(50))


def test_gap_is_interpolated_and_holds_before_and_after():
    s = TrackerSettings(hold_before=3, hold_after=4, max_gap=5)
    moving = {f: [[10 + 2 * f, 20, 40 + 2 * f, 50]] for f in (10, 11, 15, 16)}
    out = dict(_run(moving, 30, s))
    assert all(len(out[f]) == 0 for f in (0, 1, 2, 3, 4, 5, 6, 21, 25))
    # held before: the first box where it was, and moved back along the first motion (2 px/frame)
    assert list(out[7].sources) == ["held", "held"] and list(out[9].sources) == ["held", "held"]
    cx7 = sorted((out[7].boxes[:, 0] + out[7].boxes[:, 2]) / 2)
    assert abs(cx7[0] - (25 + 2 * 7)) < 1e-3 and abs(cx7[1] - (25 + 2 * 10)) < 1e-3
    for f in (12, 13, 14):
        r = out[f]
        assert list(r.sources) == ["tracked"]
        np.testing.assert_allclose(r.boxes[0], [10 + 2 * f, 20, 40 + 2 * f, 50], atol=1e-4)
    for f in (17, 18, 19, 20):
        r = out[f]
        assert list(r.sources) == ["held", "held"]
        # one box follows the motion (2 px/frame), one stays at the last hit; both grow
        cx = sorted((r.boxes[:, 0] + r.boxes[:, 2]) / 2)
        assert abs(cx[0] - (25 + 2 * 16)) < 1e-3 and abs(cx[1] - (25 + 2 * f)) < 1e-3
        assert (r.widths > 30).all()
    assert len({int(t) for f in out for t in out[f].track_ids}) == 1


def test_two_faces_keep_their_own_tracks_and_detections_are_never_dropped():
    s = TrackerSettings(hold_before=2, hold_after=2, max_gap=3)
    dets = {f: [[0, 0, 20, 20], [100, 0, 120, 20]] for f in range(10)}
    dets[5] = [[0, 0, 20, 20], [100, 0, 120, 20], [101, 1, 121, 21]]  # a duplicate hit is kept too
    out = dict(_run(dets, 10, s))
    for f in range(10):
        detected = out[f][out[f].sources == "detected"]
        assert len(detected) == len(dets[f])
    ids_left = {int(out[f].track_ids[0]) for f in range(10)}
    assert len(ids_left) == 1


def test_fast_motion_still_links():
    s = TrackerSettings(hold_before=0, hold_after=0, max_gap=2)
    dets = {f: [[15 * f, 0, 15 * f + 30, 30]] for f in range(0, 20, 2)}  # detected every other frame
    out = dict(_run(dets, 19, s))
    assert all(len(out[f]) == 1 for f in range(19))
    assert all(out[f].sources[0] == "tracked" for f in range(1, 19, 2))


def test_settings_from_seconds():
    s = TrackerSettings.from_seconds(30, hold_before=0.3, hold_after=0.5, max_gap=0.5)
    assert (s.hold_before, s.hold_after, s.max_gap) == (9, 15, 15)
    assert s.lookahead == 15


def test_jump_holds_the_new_box_before_it():
    # A still face at x 0..20 for 10 frames, then the track jumps to a box 26 px right that does
    # not overlap the prediction (linked by distance): a missed face handed over to a neighbour.
    # (no jitter growth: the jump itself would count as jitter and grow the boxes a little)
    s = TrackerSettings(hold_before=3, hold_after=0, max_gap=3, jitter_growth=0.0)
    still = {f: [[0, 0, 20, 20]] for f in range(10)}
    dets = {**still, **{f: [[26, 0, 46, 20]] for f in range(10, 16)}}
    out = dict(_run(dets, 16, s))
    assert len({int(t) for f in out for t in out[f].track_ids}) == 1  # still one linked track
    assert len(out[6]) == 1  # beyond hold_before: only the detection
    for f in (7, 8, 9):
        held = out[f][out[f].sources == "held"]
        assert len(held) == 1
        np.testing.assert_allclose((held.boxes[0, 0] + held.boxes[0, 2]) / 2, 36, atol=1e-4)
        np.testing.assert_allclose(held.widths[0], 20 * (1 + s.growth * (10 - f)), atol=1e-4)
    # a lone stray detection after the jump (fewer than jump_hits) adds no mask before it
    stray = {**still, 10: [[26, 0, 46, 20]], 11: [[26, 0, 46, 20]]}
    out = dict(_run(stray, 16, s))
    assert all(list(out[f].sources) == ["detected"] for f in (7, 8, 9))


def _run_looking(dets_by_frame, n, settings, look):
    tracker: Tracker[int] = Tracker(settings, second_look=look)
    out = []
    for f in range(n):
        boxes = dets_by_frame.get(f, [])
        out += list(tracker.push(f, Regions(np.array(boxes, np.float32).reshape(-1, 4))))
    out += list(tracker.flush())
    return dict(out)


def test_second_look_finds_a_late_track_in_the_frames_before_it():
    # a face at x = 100 + 3 f from frame 0; the full-frame pass finds it only from frame 10
    true = {f: [100 + 3 * f, 50, 130 + 3 * f, 80] for f in range(20)}
    asked = []

    def look(frame, box):
        asked.append(frame)
        # the "detector on the crop" finds the face when asked near it (frames 4..9 only)
        b = np.array(true[frame], np.float32)
        near = abs((box[0] + box[2]) / 2 - (b[0] + b[2]) / 2) < 15
        return (b, 0.3) if near and frame >= 4 else None

    s = TrackerSettings(hold_before=2, hold_after=2, max_gap=10, look_missed_hits=1000)  # buffer: 10 frames
    out = _run_looking({f: [true[f]] for f in range(10, 20)}, 20, s, look)
    assert asked[:7] == [9, 8, 7, 6, 5, 4, 3]  # back one frame at a time until a miss
    for f in range(4, 10):  # found there: real boxes, one track
        d = out[f][out[f].sources == "detected"]
        assert len(d) == 1 and int(d.track_ids[0]) == int(out[12].track_ids[0])
        np.testing.assert_allclose(d.boxes[0], true[f])
    # the hold before now starts from frame 4, not 10
    assert (out[2].sources == "held").any() and (out[3].sources == "held").any()
    assert len(out[1]) == 0


def test_second_look_on_a_missed_frame_adds_a_hit_not_a_duplicate():
    boxes = {f: [[10 + f, 10, 40 + f, 40]] for f in range(12) if f != 6}
    boxes[8] = [[18, 10, 48, 40], [200, 10, 230, 40]]

    def look(frame, box):
        return np.array([10 + frame, 10, 40 + frame, 40], np.float32), 0.2

    s = TrackerSettings(hold_before=2, hold_after=2, max_gap=3, look_back=0, look_missed_hits=3)
    out = _run_looking(boxes, 12, s, look)
    first = out[6][out[6].boxes[:, 0] < 100]  # (the face at x = 200 is held before frame 8)
    assert list(first.sources) == ["detected"]  # found by the second look, not interpolated
    np.testing.assert_allclose(first.boxes[0], [16, 10, 46, 40])
    # a detection already there is never doubled
    assert all((out[f].sources == "detected").sum() == len(boxes.get(f, [[0]])) for f in range(12) if f != 6)


def test_jitter_growth_grows_jittery_tracks_only():
    rng = np.random.default_rng(0)
    smooth = {f: [[10 + 2 * f, 10, 40 + 2 * f, 40]] for f in range(30)}
    shaky = {f: [list(np.array([300 + 2 * f, 10, 330 + 2 * f, 40]) + rng.uniform(-3, 3, 4))] for f in range(30)}
    both = {f: smooth[f] + shaky[f] for f in range(30)}
    plain = _run(both, 30, TrackerSettings(jitter_growth=0.0))
    grown = _run(both, 30, TrackerSettings(jitter_growth=2.0))
    for (_, a), (_, b) in zip(plain[5:25], grown[5:25]):
        left = a.boxes[:, 0] < 200
        np.testing.assert_allclose(a.boxes[left], b.boxes[left], atol=1e-4)  # smooth: unchanged
        assert (b.widths[~left] > a.widths[~left] + 2).all()  # shaky: grown by a few pixels


def _grown_box(cx: float, cy: float, f: int, rate: float, size0: float = 40.0) -> list[float]:
    half = size0 * rate ** f / 2
    return [cx - half, cy - half, cx + half, cy + half]


def test_zoom_holds_grow_held_boxes_as_the_face_grows():
    # a face growing 4 % a frame (a zoom in) detected in frames 0-9, then missed in 10-15
    true = {f: _grown_box(200, 200, f, 1.04) for f in range(16)}
    dets = {f: [true[f]] for f in range(10)}
    plain = dict(_run(dets, 16, TrackerSettings(jitter_growth=0.0, zoom_holds=False)))
    zoom = dict(_run(dets, 16, TrackerSettings(jitter_growth=0.0, zoom_holds=True)))
    for f in range(11, 16):
        want = true[f][2] - true[f][0]
        assert plain[f].widths.max() < want  # held at the old size: the face's rim left out
        assert zoom[f].widths.max() >= want * 0.99  # grown with it
    for f in range(10):  # detections unchanged
        np.testing.assert_allclose(zoom[f].boxes, plain[f].boxes)
    # a shrinking face (zoom out) first detected at frame 6: held bigger in the frames before it
    shrink = {f: _grown_box(200, 200, f, 0.96, 80) for f in range(16)}
    late = {f: [shrink[f]] for f in range(6, 16)}
    plain = dict(_run(late, 16, TrackerSettings(jitter_growth=0.0, zoom_holds=False)))
    zoom = dict(_run(late, 16, TrackerSettings(jitter_growth=0.0, zoom_holds=True)))
    for f in range(1, 6):
        want = shrink[f][2] - shrink[f][0]
        assert plain[f].widths.max() < want <= zoom[f].widths.max() * 1.01
    # capped: a held box never grows past MAX_ZOOM_HOLD times its hit
    from anonymize.track import MAX_ZOOM_HOLD
    assert zoom[0].widths.max() <= (shrink[6][2] - shrink[6][0]) * MAX_ZOOM_HOLD * (1 + 1e-4)
