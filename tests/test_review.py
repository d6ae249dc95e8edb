"""Review edits at the level of the regions render masks: sparing any one track leaves every other
track's masked regions exactly as they were; added boxes cut by the frame's edge are completed
beyond it before they are followed (bench/review.py measures both on real clips)."""
from __future__ import annotations

import dataclasses

import numpy as np

from anonymize.follow import FACE_TALLEST, FACE_WIDEST, complete_at_edges
from anonymize.pipeline import grow
from anonymize.plan import Geometry, PlanFile, Track
from anonymize.regions import Regions
from anonymize.regions_source import PlanRegions


def _entry(rng: np.random.Generator, frames: int = 20, tracks: int = 8) -> PlanFile:
    w, h = 640, 360
    raw = {}
    for i in range(frames):
        n = int(rng.integers(0, 12))
        x, y = rng.uniform(-40, w, n), rng.uniform(-40, h, n)  # some cross the edges (edge reach)
        s = rng.uniform(8, 120, n)
        ids = rng.integers(-1, tracks, n)  # -1: untracked (e.g. a whole-frame region)
        kinds = rng.choice(["face", "head", "text"], n)
        raw[i] = Regions(np.stack([x, y, x + s, y + s * 1.2], axis=1), kinds=kinds, track_ids=ids)
    return PlanFile(input="x.mp4", kind="video", input_sha256="0" * 64, width=w, height=h, frame_count=frames,
                    noise_seed=1, geometry=Geometry("blur", "ellipse", 1.5, 0.5, 4.5),
                    tracks={t: Track(t, "face", True, 0, frames - 1) for t in range(tracks)}, raw=raw,
                    mask_frames=[(3, 4)])


def _masked(entry: PlanFile, i: int) -> Regions:
    return grow(PlanRegions(entry).at(i, entry.width, entry.height), entry.width, entry.height, entry.geometry)


def test_sparing_each_track_in_turn_leaves_every_other_track_unchanged():
    rng = np.random.default_rng(0)
    entry = _entry(rng)
    full = {i: _masked(entry, i) for i in range(entry.frame_count)}
    assert sum(len(r) for r in full.values()) > 50
    for tid in entry.tracks:
        spared = dataclasses.replace(entry, tracks={t: dataclasses.replace(tr, masked=t != tid)
                                                    for t, tr in entry.tracks.items()})
        for i in range(entry.frame_count):
            got, want = _masked(spared, i), full[i][full[i].track_ids != tid]
            assert tid not in got.track_ids
            assert np.array_equal(got.boxes, want.boxes) and np.array_equal(got.track_ids, want.track_ids)
            assert list(got.kinds) == list(want.kinds) and list(got.sources) == list(want.sources)


def test_added_box_at_an_edge_is_completed_beyond_it():
    w, h = 1280, 720
    assert complete_at_edges((100, 100, 150, 170), w, h) == (100, 100, 150, 170)  # inside: unchanged
    x1, y1, x2, y2 = complete_at_edges((0, 600, 53, 699), w, h)  # half a face at the left edge
    assert (x2, y1, y2) == (53, 600, 699) and x1 < 0 and abs((x2 - x1) - FACE_WIDEST * 99) < 1e-9
    x1, y1, x2, y2 = complete_at_edges((1150, 619, 1280, 720), w, h)  # right edge, wide enough: kept
    assert (x1, x2, y1) == (1150, 1280, 619) and y2 > 720  # (and cut by the bottom: taller)
    x1, y1, x2, y2 = complete_at_edges((1100, 619, 1237, 720), w, h)  # cut by the bottom edge
    assert (x1, y1, x2) == (1100, 619, 1237) and abs((y2 - y1) - 137 / FACE_TALLEST) < 1e-9
    x1, y1, x2, y2 = complete_at_edges((500, 0, 580, 40), w, h)  # cut by the top edge
    assert y2 == 40 and y1 < 0
    assert complete_at_edges((0, 0, w, h), w, h) == (0, 0, w, h)  # both sides: nothing hidden beyond one
