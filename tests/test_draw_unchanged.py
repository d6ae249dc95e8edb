"""The faster drawing and report paths of render (issue 17) keep every pixel and every number.

The reference is a frozen copy of the drawing code before that work (tests/masks_reference.py);
every style and shape is drawn by both on the same frames, with the same file noise (tracked and
untracked regions, regions cut by the frame's edges, tiny, huge and overlapping regions), and the
results must be identical byte for byte. The report's frame records are checked the same way
against the record the earlier code wrote.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from anonymize import masks, masks_yuv
from anonymize.regions import Regions
from anonymize.report import FileReport
from tests import masks_reference as ref
from tests import masks_yuv_reference as ref_yuv


def _regions(rng: np.random.Generator, w: int, h: int, n: int) -> Regions:
    size = rng.choice([3.0, 12.0, 40.0, 90.0, 300.0], n) * rng.uniform(0.5, 1.5, n)
    x = rng.uniform(-0.3 * w, 1.1 * w, n)  # some cut by an edge, some (partly) outside the frame
    y = rng.uniform(-0.3 * h, 1.1 * h, n)
    boxes = np.stack([x, y, x + size * rng.uniform(0.6, 1.4, n), y + size], axis=1)
    tracks = np.where(rng.random(n) < 0.3, -1, rng.integers(0, 12, n))  # untracked ones draw fresh noise
    kinds = rng.choice(["face", "head", "text", "person"], n)
    return Regions(boxes.astype(np.float32), kinds=kinds, track_ids=tracks)


@pytest.mark.parametrize("style", sorted(masks.MASKS))
@pytest.mark.parametrize("shape", masks.SHAPES)
def test_draw_is_pixel_identical_to_the_reference(style: str, shape: str) -> None:
    rng = np.random.default_rng(17)
    new_style, old_style = masks.create_mask(style), ref.create_mask(style)
    new_noise, old_noise = masks.MaskNoise(1234), ref.MaskNoise(1234)
    for k in range(12):  # frames in a row: the tracks' noise is reused, the untracked noise drawn anew
        h, w = (1080, 1920) if k % 4 == 0 else (int(rng.integers(40, 400)), int(rng.integers(40, 400)))
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        frame[: h // 2] = (frame[: h // 2] // 64) * 64  # flat areas too: saturation at 0 and 255
        frame[:8] = 255
        frame[-8:] = 0
        regions = _regions(rng, w, h, int(rng.integers(1, 60)))
        got = masks.draw(frame.copy(), regions, new_style, shape, new_noise)
        want = ref.draw(frame.copy(), regions, old_style, shape, old_noise)
        assert np.array_equal(got, want), f"frame {k}: {np.count_nonzero((got != want).any(axis=2))} pixels differ"
        assert not np.array_equal(got, frame)  # something was drawn


@pytest.mark.parametrize("style", sorted(masks.MASKS))
@pytest.mark.parametrize("shape", masks.SHAPES)
def test_draw_yuv_is_byte_identical_to_the_reference(style: str, shape: str) -> None:
    """The planes path (render's) against its frozen copy: every byte of Y, U and V."""
    rng = np.random.default_rng(20)
    new_style, old_style = masks.create_mask(style), ref.create_mask(style)
    new_noise, old_noise = masks.MaskNoise(99), ref.MaskNoise(99)
    for k in range(12):
        h, w = (1080, 1920) if k % 4 == 0 else (2 * int(rng.integers(20, 200)), 2 * int(rng.integers(20, 200)))
        yuv = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
        yuv[: h // 2] = (yuv[: h // 2] // 64) * 64  # flat areas and saturation, as above
        yuv[:8] = 255
        yuv[h - 8:h] = 0
        regions = _regions(rng, w, h, int(rng.integers(8, 90)))
        matrix = ("bt709", "bt601", "bt2020")[k % 3]
        got = masks_yuv.draw_yuv(yuv.copy(), regions, new_style, shape, new_noise, matrix)
        want = ref_yuv.draw_yuv(yuv.copy(), regions, old_style, shape, old_noise, matrix)
        assert np.array_equal(got, want), f"frame {k}: {np.count_nonzero(got != want)} bytes differ"
        assert not np.array_equal(got, yuv)


def test_cells3_is_cells_on_every_channel() -> None:
    noise = masks.MaskNoise(5)
    for track in (0, 7):
        for ny, nx in ((8, 8), (1, 1), (3, 8), (8, 2)):
            c3 = noise.cells3(track, ny, nx, 12)
            assert c3.shape == (ny, nx, 3) and c3.dtype == np.int16
            assert np.array_equal(c3, np.repeat(noise.cells(track, ny, nx, 12), 3, axis=2))
            assert c3 is noise.cells3(track, ny, nx, 12)  # kept: the same every frame


def _old_record(index: int, pts: float, regions: Regions, shapes, raw: Regions) -> dict:
    """The frame record as the report wrote it before (3ecb8c4)."""
    rec = {"index": index, "pts": round(pts, 6), "regions": [
        {"x": round(float(b[0]), 1), "y": round(float(b[1]), 1), "w": round(float(b[2] - b[0]), 1),
         "h": round(float(b[3] - b[1]), 1), "shape": str(sh), "kind": str(k), "score": round(float(s), 3),
         "source": str(src), "track": int(t)}
        for b, k, s, src, sh, t in zip(regions.boxes, regions.kinds, regions.scores, regions.sources, shapes,
                                       regions.track_ids)]}
    rec["raw"] = [{"box": [float(v) for v in b], "track": int(t), "kind": str(k), "score": float(s),
                   "source": str(src)}
                  for b, t, k, s, src in zip(raw.boxes, raw.track_ids, raw.kinds, raw.scores, raw.sources)]
    return rec


def test_report_records_are_unchanged() -> None:
    rng = np.random.default_rng(3)
    report = FileReport("in.mp4", "out.mp4", "video")
    want = []
    for i in range(30):
        raw = _regions(rng, 1280, 720, int(rng.integers(0, 40)))
        raw = raw.with_(scores=rng.random(len(raw)).astype(np.float32))
        grown = masks.mask_regions(raw, 1280, 720, scale=1.5, edge_reach=0.5, margin=9.18)
        shapes = masks.region_shapes(grown, "ellipse")
        report.add_frame(i, i / 29.97, grown, shapes, raw=raw)
        want.append(json.loads(json.dumps(_old_record(i, i / 29.97, grown, shapes, raw), separators=(",", ":"))))
    got = list(report.frames())
    assert got == want
    assert json.dumps(got) == json.dumps(want)  # the same text, not only equal numbers


def test_pixel_windows_are_pixel_window_row_by_row() -> None:
    """The per-frame windows are the per-mask ones, garbage boxes included (NaN, inf, huge,
    empty, inverted, wholly outside)."""
    rng = np.random.default_rng(8)
    boxes = rng.uniform(-500, 2500, (4000, 4))
    boxes[:, 2:] = boxes[:, :2] + rng.choice([-3.0, 0.0, 0.4, 1.0, 7.5, 300.0], (4000, 2))
    boxes[::50] = [np.nan, 0, 5, 5]
    boxes[1::50] = [0, -np.inf, 5, np.inf]
    boxes[2::50] = [1e30, 1e30, 2e30, 2e30]
    boxes[3::50] = [-2e30, -2e30, 1e30, 1e30]
    boxes[4::50] = [10.0, 10.0, 10.0, 20.0]
    for w, h in ((1920, 1080), (7, 5), (1, 1)):
        for dtype in (np.float32, np.float64):
            b = boxes.astype(dtype)
            want = [masks._pixel_window(row, w, h) for row in b]
            assert masks._pixel_windows(b, w, h) == [list(x) if x is not None else None for x in want]
    assert masks._pixel_windows(np.zeros((0, 4), np.float32), 10, 10) == []
