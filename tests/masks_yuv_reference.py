"""Frozen copy of anonymize/masks_yuv.py as of f5e597d (before its drawing was made faster): the
reference tests/test_draw_unchanged.py draws the planes against, so that a faster path must keep
every byte. Built on the frozen BGR reference (tests/masks_reference.py), with the two helpers
it took from the live masks module then (``MaskNoise.luma`` and the styles' ``upscale``) copied
here as functions. Not imported by the package.
"""
from __future__ import annotations

import cv2
import numpy as np

from anonymize.regions import Regions
from tests.masks_reference import (MIN_CELL_PX, BlurMask, MaskNoise, MaskStyle, PixelateMask, SolidMask,
                                   _pixel_window, region_shapes)

#: (Kr, Kb) of each matrix :func:`anonymize.video.color_matrix` names.
_WEIGHTS = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114), "bt2020": (0.2627, 0.0593)}
#: The styles drawn on planes (exact types: a subclass may change what its masks carry).
YUV_STYLES = (SolidMask, PixelateMask, BlurMask)


def supports(style: MaskStyle) -> bool:
    """Whether ``style`` can be drawn on yuv420p planes (else the caller takes the BGR path)."""
    return type(style) in YUV_STYLES


def planes(yuv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable views of the Y (h x w), U and V (h/2 x w/2) planes of an (h * 3 / 2, w) I420 frame."""
    rows, w = yuv.shape
    h = rows * 2 // 3
    if yuv.dtype != np.uint8 or rows != h * 3 // 2 or h % 2 or w % 2 or not yuv.flags.c_contiguous:
        raise ValueError(f"expected a contiguous uint8 I420 frame (h * 3 / 2, w) with even w and h, "
                         f"got {yuv.dtype} {yuv.shape}")
    flat = yuv.reshape(-1)
    quarter = (h // 2) * (w // 2)
    y = flat[:h * w].reshape(h, w)
    u = flat[h * w:h * w + quarter].reshape(h // 2, w // 2)
    v = flat[h * w + quarter:].reshape(h // 2, w // 2)
    return y, u, v


def bgr_to_yuv(color, matrix: str = "bt709") -> tuple[int, int, int]:
    """A BGR colour (0..255) as limited-range (Y, U, V) in ``matrix`` (bt709, bt601 or bt2020)."""
    kr, kb = _WEIGHTS[matrix]
    b, g, r = (float(c) for c in color)
    luma = kr * r + (1 - kr - kb) * g + kb * b
    y = 16 + 219 / 255 * luma
    u = 128 + 224 / 255 * (b - luma) / (2 * (1 - kb))
    v = 128 + 224 / 255 * (r - luma) / (2 * (1 - kr))
    return tuple(int(np.clip(round(c), 0, 255)) for c in (y, u, v))


def draw_yuv(yuv: np.ndarray, masked: Regions, style: MaskStyle, mask_shape: str, noise: MaskNoise | None = None,
             matrix: str = "bt709") -> np.ndarray:
    """:func:`anonymize.masks.draw` on an I420 frame (in place): whole boxes first, then the
    shaped regions; ``matrix``: the frame's YUV matrix (only ``solid``'s colour depends on it)."""
    if not supports(style):
        raise ValueError(f"the {type(style).__name__} mask cannot be drawn on yuv420p planes")
    noise = noise or style.default_noise
    shapes = region_shapes(masked, mask_shape) == "box"
    if shapes.any():
        _apply(yuv, masked[shapes], style, "box", noise, matrix)
    if (~shapes).any():
        _apply(yuv, masked[~shapes], style, mask_shape, noise, matrix)
    return yuv


def _apply(yuv: np.ndarray, regions: Regions, style: MaskStyle, shape: str, noise: MaskNoise,
           matrix: str) -> None:
    y_plane, u_plane, v_plane = planes(yuv)
    h, w = y_plane.shape
    boxes = regions.boxes.astype(np.float64)
    solid = bgr_to_yuv(style.color, matrix) if type(style) is SolidMask else None
    for k in range(len(boxes)):
        window = _pixel_window(boxes[k], w, h)
        if window is None:
            continue
        x0, y0, x1, y1 = window
        # A chroma sample stands for a 2 x 2 block of pixels: its window is the box's at half scale
        # (the blocks any masked pixel falls in), and the luma window lies inside it (doubled).
        cx0, cy0, cx1, cy1 = _pixel_window(boxes[k] / 2, w // 2, h // 2)
        y_crop = y_plane[y0:y1, x0:x1]
        u_crop, v_crop = u_plane[cy0:cy1, cx0:cx1], v_plane[cy0:cy1, cx0:cx1]
        if solid is not None:
            fills = [np.full(c.shape, value, np.uint8) for c, value in zip((y_crop, u_crop, v_crop), solid)]
        else:
            fills = _cell_fills(style, y_crop, u_crop, v_crop, int(regions.track_ids[k]), noise)
        if shape == "box":
            y_crop[...], u_crop[...], v_crop[...] = fills
            continue
        luma_cover, chroma_cover = _covers(boxes[k], x0, y0, x1, y1, cx0, cy0, cx1, cy1)
        _paste_plane(y_crop, fills[0], luma_cover)
        _paste_plane(u_crop, fills[1], chroma_cover)
        _paste_plane(v_crop, fills[2], chroma_cover)


def _covers(box: np.ndarray, x0: int, y0: int, x1: int, y1: int, cx0: int, cy0: int, cx1: int,
            cy1: int) -> tuple[np.ndarray, np.ndarray]:
    """The luma cover (``_ellipse_cover`` of the luma window) and the chroma cover (the 2 x 2
    blocks that touch the ellipse, i.e. those holding a covered pixel) of one box.

    The ellipse norm is separable, so a square's distance to the centre is the sum of its
    distances along each axis; a block's is the smaller of its two columns' plus the smaller of
    its two rows' (the same arithmetic as ``_ellipse_cover``, on the chroma window doubled)."""
    bx1, by1, bx2, by2 = (float(v) for v in box)
    cx, cy, a, b = (bx1 + bx2) / 2, (by1 + by2) / 2, (bx2 - bx1) / 2, (by2 - by1) / 2
    xs = np.arange(2 * cx0, 2 * cx1, dtype=np.float64)
    ys = np.arange(2 * cy0, 2 * cy1, dtype=np.float64)
    dx2 = ((np.minimum(np.maximum(cx, xs), xs + 1) - cx) / a) ** 2
    dy2 = ((np.minimum(np.maximum(cy, ys), ys + 1) - cy) / b) ** 2
    limit = 1.0 + 1e-9 - dy2  # errs towards covering more, as _ellipse_cover does
    luma = dx2[None, x0 - 2 * cx0:x1 - 2 * cx0] <= limit[y0 - 2 * cy0:y1 - 2 * cy0, None]
    chroma = np.minimum(dx2[0::2], dx2[1::2])[None, :] <= (1.0 + 1e-9 - np.minimum(dy2[0::2], dy2[1::2]))[:, None]
    return luma, chroma


def _cell_fills(style, y_crop: np.ndarray, u_crop: np.ndarray, v_crop: np.ndarray, track_id: int,
                noise: MaskNoise) -> list[np.ndarray]:
    """The three planes' fills of a pixelate/blur mask: each a function of its <= 8 x 8 cell grid."""
    h, w = y_crop.shape
    nx = min(style.cells, max(1, w // MIN_CELL_PX))  # the BGR path's cells (masks._CellMask._grid)
    ny = min(style.cells, max(1, h // MIN_CELL_PX))
    grid = cv2.resize(y_crop, (nx, ny), interpolation=cv2.INTER_AREA).reshape(ny, nx)
    if style.noise:
        grid = cv2.add(grid, _luma(noise, track_id, ny, nx, style.noise), dtype=cv2.CV_8U).reshape(ny, nx)
    ch, cw = u_crop.shape
    # U and V together, as one two-channel crop: one call for each step instead of two
    chroma = cv2.resize(cv2.merge([u_crop, v_crop]), (nx, ny), interpolation=cv2.INTER_AREA).reshape(ny, nx, 2)
    return [_upscale(style, grid, w, h).reshape(h, w), *cv2.split(_upscale(style, chroma, cw, ch).reshape(ch, cw, 2))]


def _paste_plane(crop: np.ndarray, fill: np.ndarray, cover: np.ndarray) -> None:
    """``crop[cover] = fill[cover]`` in place on one plane, fast."""
    if crop.strides[1] == 1 and crop.strides[0] > 0:  # a layout OpenCV can write into
        out = cv2.copyTo(fill, cover.view(np.uint8), crop)
        if out is crop:
            return
    np.copyto(crop, fill, where=cover)  # any other view; never leave it unmasked


def _luma(noise: MaskNoise, track_id: int, ny: int, nx: int, amplitude: int) -> np.ndarray:
    """anonymize.masks.MaskNoise.luma as of f5e597d (without its cache: the values are the same)."""
    cells = noise.cells(track_id, ny, nx, amplitude)[:, :, 0].astype(np.float64)
    return np.ascontiguousarray(np.rint(cells * (219 / 255)).astype(np.int16))


def _upscale(style: MaskStyle, grid: np.ndarray, w: int, h: int) -> np.ndarray:
    """The styles' ``upscale`` as of f5e597d."""
    if type(style) is PixelateMask:
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)
    ny, nx = grid.shape[:2]
    small = cv2.resize(grid, (nx * 4, ny * 4), interpolation=cv2.INTER_LINEAR)
    for _ in range(2):
        small = cv2.blur(small, (5, 5), borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
