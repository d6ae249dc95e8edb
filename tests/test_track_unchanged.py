"""The faster tracker (issue 20) releases exactly the regions the tracker of main did.

The reference is a frozen copy of the tracker before that work (tests/track_reference.py). Both
get the same detections frame by frame (synthetic crowds with misses, jumps, zooms, stray and
duplicate boxes and other kinds, under several settings, with and without a second look; and
the real detections of the bundled sample clip at the defaults), and every released frame must
hold the same boxes (bit for bit), scores, kinds, track ids and sources, in the same order.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from anonymize import regions_source
from anonymize.api import Anonymizer
from anonymize.regions import Regions
from anonymize.track import Tracker, TrackerSettings
from tests import track_reference as ref

SAMPLES = Path(__file__).resolve().parents[1] / "sample_media"


def _same(got: list, want: list) -> None:
    assert [f for f, _ in got] == [f for f, _ in want]
    for (f, a), (_, b) in zip(got, want):
        assert len(a) == len(b), f"frame {f}: {len(a)} regions, the reference {len(b)}"
        assert np.array_equal(a.boxes, b.boxes), f"frame {f}: boxes differ"
        assert np.array_equal(a.scores, b.scores), f"frame {f}: scores differ"
        assert list(a.kinds) == list(b.kinds) and list(a.sources) == list(b.sources), f"frame {f}"
        assert np.array_equal(a.track_ids, b.track_ids), f"frame {f}: track ids differ"


def _crowd(seed: int, frames: int, faces: int) -> list[Regions]:
    """Detections of a moving, zooming crowd: misses, late entries, jitter, jumps to a neighbour,
    stray boxes, exact duplicates (ties in the assignment) and heads and text."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 1800, (faces, 2))
    size = rng.choice([8.0, 14.0, 24.0, 40.0, 90.0, 250.0], faces) * rng.uniform(0.8, 1.2, faces)
    vel = rng.normal(0, 3, (faces, 2)) + rng.choice([0.0, 25.0], (faces, 1), p=[0.8, 0.2])  # some fast pans
    zoom = rng.choice([1.0, 1.0, 1.03, 0.97], faces)
    start = np.where(rng.random(faces) < 0.3, rng.integers(0, frames, faces), 0)
    kinds = rng.choice(["face"] * 8 + ["head", "text"], faces)
    out = []
    for f in range(frames):
        seen = (start <= f) & (rng.random(faces) > 0.15)
        cx, cy = pos[:, 0] + vel[:, 0] * f, pos[:, 1] + vel[:, 1] * f
        s = size * zoom ** f
        jit = rng.normal(0, 0.05, (faces, 4)) * s[:, None]
        boxes = np.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + 1.2 * s / 2], 1) + jit
        b, k = boxes[seen], kinds[seen]
        if len(b) > 3 and rng.random() < 0.2:  # a face missed, its neighbour's box in its place
            b[0] = b[1] + rng.normal(0, 2, 4)
        if len(b) and rng.random() < 0.1:  # an exact duplicate
            b, k = np.concatenate([b, b[:1]]), np.concatenate([k, k[:1]])
        stray = rng.uniform(0, 1900, (int(rng.integers(0, 4)), 2))
        b = np.concatenate([b, np.concatenate([stray, stray + 20], 1)])
        k = np.concatenate([k, ["face"] * len(stray)])
        b = b.clip(0, 1920).astype(np.float32)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        out.append(Regions(b[keep], rng.uniform(0.2, 1, int(keep.sum())).astype(np.float32),
                           np.array(k[keep], object)))
    return out


def _run(tracker_cls, settings, dets: list[Regions], look=None) -> list:
    t = tracker_cls(settings, second_look=look)
    out = []
    for f, d in enumerate(dets):
        out += list(t.push(f, d))
    return out + list(t.flush())


SETTINGS = [
    TrackerSettings(),
    TrackerSettings.from_seconds(30, 1.0, 0.5, 0.5),  # a look-ahead longer than the jitter span
    TrackerSettings(jitter_growth=0.0, zoom_holds=False, min_iou=0.3),
    TrackerSettings(hold_before=0, hold_after=0, max_gap=2, jump_hits=1, min_iou=0.0),
]


@pytest.mark.parametrize("k", range(len(SETTINGS)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_crowds_as_the_reference(seed: int, k: int) -> None:
    dets = _crowd(seed, frames=70, faces=[150, 40, 8][seed])
    _same(_run(Tracker, SETTINGS[k], dets), _run(ref.Tracker, ref.TrackerSettings(**vars(SETTINGS[k])), dets))


def test_second_looks_as_the_reference() -> None:
    """The same looks asked in the same order, and the same regions from their answers."""
    dets = _crowd(5, frames=60, faces=60)

    def looker(asked: list):
        def look(frame, box):
            asked.append((frame, np.asarray(box, np.float32).tobytes()))
            h = zlib.crc32(asked[-1][1] + bytes([frame % 256])) % 3
            if h == 0:
                return None
            return np.asarray(box, np.float32) + np.float32(h), 0.3
        return look

    asked_new, asked_ref = [], []
    s = TrackerSettings(look_missed_hits=2)
    got = _run(Tracker, s, dets, looker(asked_new))
    want = _run(ref.Tracker, ref.TrackerSettings(**vars(s)), dets, looker(asked_ref))
    assert asked_new == asked_ref and len(asked_new) > 50
    _same(got, want)


def test_sample_clip_regions_as_the_reference(monkeypatch) -> None:
    """The real detections of sample_media/crowd.mp4 at the defaults, through both trackers."""
    pushed: list[Regions] = []
    settings = []

    class Recording(Tracker):
        def __init__(self, s, second_look=None):
            super().__init__(s, second_look)
            settings.append(s)

        def push(self, item, detections):
            pushed.append(detections)
            return super().push(item, detections)

    released = []
    monkeypatch.setattr(regions_source, "Tracker", Recording)
    source = regions_source.LiveRegions.regions

    def regions(self, frames):
        for frame, raw in source(self, frames):
            released.append((frame.index, raw))
            yield frame, raw

    monkeypatch.setattr(regions_source.LiveRegions, "regions", regions)
    report = Anonymizer().detect(SAMPLES / "crowd.mp4")
    assert report.frame_count == len(pushed) == 120 and sum(map(len, pushed)) > 800
    s = settings[0]
    want = _run(ref.Tracker, ref.TrackerSettings(**vars(s)), pushed)
    _same(released, want)


def test_row_means_are_the_means_of_each_list() -> None:
    """The tracker averages the jitter of many tracks as the rows of one array: each row's mean
    must be, bit for bit, what ``np.mean`` of that list alone gives (numpy's pairwise sums)."""
    rng = np.random.default_rng(11)
    for n in range(1, 41):
        rows = rng.exponential(2.0, (50, n)) * rng.choice([1e-3, 1.0, 300.0], (50, 1))
        together = np.array(rows.tolist(), np.float64).mean(axis=1).tolist()
        assert together == [float(np.mean(list(r))) for r in rows.tolist()], n


def test_sparse_matching_is_the_assignment_and_only_best_is_strict() -> None:
    """The matching on the allowed pairs alone is the whole matrix's assignment (random graphs),
    and the proof refuses ties and matchings that are not the best."""
    from anonymize.track import _only_best, _sparse_matching, dense_matching

    rng = np.random.default_rng(8)
    proved = 0
    for _ in range(400):
        nd, nt = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        r, c = np.nonzero(rng.random((nd, nt)) < 0.35)
        if not len(r):
            continue
        sim = rng.random(len(r)).astype(np.float32)
        rows, cols = dense_matching(r, c, sim, nd, nt)
        take = _sparse_matching(r, c, sim, nd, nt)
        assert set(zip(r[take].tolist(), c[take].tolist())) == set(zip(rows.tolist(), cols.tolist()))
        weight = 1.0 + sim.astype(np.float64)
        if _only_best(r, c, weight, take, nd, nt):
            proved += 1
        for e in np.flatnonzero(take)[:1]:  # one pair dropped: no longer the best
            worse = take.copy()
            worse[e] = False
            assert not _only_best(r, c, weight, worse, nd, nt)
    assert proved > 300
    # a tie: one detection, two tracks of the same similarity
    r, c, sim = np.array([0, 0]), np.array([0, 1]), np.array([0.5, 0.5], np.float32)
    take = _sparse_matching(r, c, sim, 1, 2)
    assert take.sum() == 1 and not _only_best(r, c, 1.0 + sim.astype(np.float64), take, 1, 2)
