"""Masks drawn on yuv420p planes (render's fast path, anonymize/masks_yuv.py): the same regions,
the same irreversibility, the BGR path's look up to colour-conversion rounding, and a video that
takes the path end to end (and the sources that must not)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymize import masks_yuv
from anonymize.ffmpeg_tools import Probe, StreamInfo, ffmpeg_exe, probe
from anonymize.masks import MASKS, SHAPES, MaskNoise, _ellipse_cover, _pixel_window, create_mask, draw
from anonymize.masks_yuv import draw_yuv, planes
from anonymize.regions import Regions
from anonymize.video import VideoDecoder, yuv_ready


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An I420 frame of a textured colour picture (made in BGR, so every colour is in gamut)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / (17.0 + 9 * c)) * np.cos(yy / (13.0 + 7 * c)) for c in range(3)], axis=2)
    bgr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def _regions(rng: np.random.Generator, w: int, h: int, n: int) -> Regions:
    size = rng.choice([3.0, 12.0, 40.0, 90.0, 200.0], n) * rng.uniform(0.5, 1.5, n)
    x, y = rng.uniform(-0.3 * w, 1.1 * w, n), rng.uniform(-0.3 * h, 1.1 * h, n)
    boxes = np.stack([x, y, x + size * rng.uniform(0.6, 1.4, n), y + size], axis=1)
    tracks = np.where(rng.random(n) < 0.3, -1, rng.integers(0, 12, n))
    kinds = rng.choice(["face", "head", "text"], n)
    return Regions(boxes.astype(np.float32), kinds=kinds, track_ids=tracks)


@pytest.mark.parametrize("shape", SHAPES)
def test_luma_cover_is_the_bgr_cover_and_chroma_covers_every_touched_block(shape: str) -> None:
    """Solid masks on a frame of zeros: the luma plane's masked pixels are exactly the BGR path's
    (``_pixel_window`` / ``_ellipse_cover``), and a chroma sample is masked exactly when a pixel
    of its 2 x 2 block is."""
    rng = np.random.default_rng(5)
    style = create_mask("solid", color=(200, 200, 200))
    h, w = 90, 124
    for _ in range(200):
        box = _regions(rng, w, h, 1)
        yuv = np.zeros((h * 3 // 2, w), np.uint8)
        draw_yuv(yuv, box, style, shape)
        y, u, v = planes(yuv)
        want = np.zeros((h, w), bool)
        window = _pixel_window(box.boxes[0], w, h)
        if window is not None:
            x0, y0, x1, y1 = window
            want[y0:y1, x0:x1] = True if shape == "box" or box.kinds[0] == "text" else \
                _ellipse_cover(box.boxes[0], x0, y0, x1, y1)
        np.testing.assert_array_equal(y > 0, want)
        blocks = want.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
        np.testing.assert_array_equal(u > 0, blocks)
        np.testing.assert_array_equal(v > 0, blocks)


@pytest.mark.parametrize("style", ["pixelate", "blur"])
def test_planes_output_is_a_function_of_at_most_64_cell_means(style: str) -> None:
    """Two frames whose region has equal 8 x 8 cell means on each plane (every pixel different)
    mask to identical planes: nothing finer than a cell survives."""
    rng = np.random.default_rng(7)
    a = rng.integers(20, 236, (180, 140), dtype=np.uint8)
    b = a.copy()
    pa, pb = planes(a), planes(b)
    # region [32, 96) x [16, 80) in luma: 8 cells of 8 px; in chroma [16, 48) x [8, 40): cells of 4
    for plane, (x0, y0, cell) in zip(pb, ((32, 16, 8), (16, 8, 4), (16, 8, 4))):
        for cy in range(8):
            for cx in range(8):
                block = plane[y0 + cy * cell:y0 + (cy + 1) * cell, x0 + cx * cell:x0 + (cx + 1) * cell]
                block[:] = block.reshape(-1)[rng.permutation(cell * cell)].reshape(cell, cell)
    assert (pa[0][16:80, 32:96] != pb[0][16:80, 32:96]).mean() > 0.9
    regions = Regions([[32, 16, 96, 80]], track_ids=[4])
    for shape in SHAPES:
        out_a = draw_yuv(a.copy(), regions, create_mask(style), shape, MaskNoise(11))
        out_b = draw_yuv(b.copy(), regions, create_mask(style), shape, MaskNoise(11))
        cover = draw_yuv(np.zeros_like(a), regions, create_mask("solid", color=(255, 255, 255)), shape) > 0
        np.testing.assert_array_equal(out_a[cover], out_b[cover])
        assert (out_a[cover] != a[cover]).mean() > 0.9


@pytest.mark.parametrize("style", sorted(MASKS))
@pytest.mark.parametrize("shape", SHAPES)
def test_planes_look_like_the_bgr_path(style: str, shape: str) -> None:
    """Drawn on the planes or on BGR (OpenCV's BT.601 conversion both ways, the matrix the test
    gives the solid colour too), the masked pixels differ by colour-conversion rounding only:
    the same cover, and per-pixel values within a few levels."""
    rng = np.random.default_rng(17)
    h, w = 360, 480
    for k in range(4):
        yuv = _frame(h, w, seed=k)
        regions = _regions(rng, w, h, 25)
        bgr = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
        via_bgr = draw(bgr, regions, create_mask(style), shape, MaskNoise(3))
        want = cv2.cvtColor(via_bgr, cv2.COLOR_BGR2YUV_I420)
        got = draw_yuv(yuv.copy(), regions, create_mask(style), shape, MaskNoise(3), matrix="bt601")
        # where the BGR path masked (the luma plane: full resolution)
        solid = create_mask("solid", color=(255, 255, 255))
        cover = draw(np.zeros((h, w, 3), np.uint8), regions, solid, shape)[:, :, 0] > 0
        diff = np.abs(got[:h].astype(int) - want[:h])[cover]
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 6, (diff.mean(), np.percentile(diff, 99))
        untouched = ~cover
        assert np.array_equal(got[:h][untouched], yuv[:h][untouched])  # the planes path: untouched exactly


def test_styles_that_are_not_known_are_refused() -> None:
    class Odd(type(create_mask("blur"))):
        pass

    with pytest.raises(ValueError):
        draw_yuv(_frame(8, 8), Regions([[0, 0, 4, 4]]), Odd(), "ellipse")
    assert not masks_yuv.supports(Odd()) and masks_yuv.supports(create_mask("blur"))


def test_solid_colour_in_each_matrix() -> None:
    assert masks_yuv.bgr_to_yuv((48, 48, 48), "bt709") == (57, 128, 128)
    assert masks_yuv.bgr_to_yuv((0, 0, 255), "bt601") == (81, 90, 240)  # ITU-R BT.601 red
    assert masks_yuv.bgr_to_yuv((255, 255, 255), "bt2020") == (235, 128, 128)


def _probe(pix_fmt: str, **color) -> Probe:
    return Probe({}, 1.0, [StreamInfo(0, "video", "h264", pix_fmt=pix_fmt, color=color)])


def test_only_8_bit_limited_range_420_takes_the_planes() -> None:
    assert yuv_ready(_probe("yuv420p"))
    assert yuv_ready(_probe("yuv420p", color_range="tv", color_space="bt709"))
    assert yuv_ready(_probe("yuv420p", color_space="bt2020nc"))
    for pix_fmt, color in (("yuv420p10le", {}), ("yuvj420p", {}), ("yuv422p", {}), ("yuv444p", {}),
                           ("yuv420p", {"color_range": "pc"}), ("yuv420p", {"color_space": "gbr"}), ("nv12", {})):
        assert not yuv_ready(_probe(pix_fmt, **color)), (pix_fmt, color)
    with pytest.raises(ValueError):
        VideoDecoder(Path("x.mp4"), _probe("yuv420p10le"), pixel_format="yuv420p")


def _clip(path: Path, size: str, pix_fmt: str, extra: tuple[str, ...] = ()) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10",
                    "-frames:v", "6", "-pix_fmt", pix_fmt, *extra, str(path)], check=True)
    return path


@pytest.mark.parametrize("size", ["64x48", "65x47"])
def test_decoder_planes_equal_the_source_planes(tmp_path: Path, size: str) -> None:
    """The yuv420p decoder hands over the source's own planes (odd sizes padded to even, as the
    BGR path pads), with the timestamps of the BGR decoder."""
    src = _clip(tmp_path / "c.mkv", size, "yuv420p", ("-c:v", "ffv1", "-vf", f"scale={size.replace('x', ':')}"))
    info = probe(src)
    planar = list(VideoDecoder(src, info, pixel_format="yuv420p").frames())
    bgr = list(VideoDecoder(src, info).frames())
    assert [f.pts for f in planar] == [f.pts for f in bgr] and len(planar) == 6
    w, h = (int(v) for v in size.split("x"))
    assert planar[0].size == bgr[0].size == (w + w % 2, h + h % 2)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                         capture_output=True, check=True).stdout
    if w % 2 == 0 and h % 2 == 0:
        assert planar[0].yuv.tobytes() == raw[:w * h * 3 // 2]
    else:
        # padded to even sizes as the BGR path pads (ffmpeg's pad filter may round an odd 4:2:0
        # size down before padding: the last column/row may come out black on both paths)
        y = planes(planar[0].yuv)[0]
        ew, eh = w - w % 2, h - h % 2
        np.testing.assert_array_equal(y[:eh, :ew], np.frombuffer(raw[:w * h], np.uint8).reshape(h, w)[:eh, :ew])
