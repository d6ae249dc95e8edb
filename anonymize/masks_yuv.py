"""The masks of :mod:`anonymize.masks`, drawn straight on a frame's yuv420p planes.

``render`` of an 8-bit 4:2:0 video (:func:`anonymize.video.yuv_ready`) keeps the source's planes
from decoder to encoder: no conversion to BGR and back, half the bytes on each pipe. The masks are
the same regions, rasterised the same way (:func:`anonymize.masks._pixel_window`,
``_ellipse_cover``), in the same order, and they keep the same rule: the masked area is a function
of at most an 8 x 8 grid of cell means (now of Y, U and V instead of B, G and R) and the
file's noise, never of the pixels themselves.

* The luma plane is masked exactly where the BGR path masks pixels.
* A chroma sample carries the colour of a 2 x 2 block of pixels, so it is masked when *any* pixel of
  its block is: the chroma cover is the luma cover grown to whole blocks (the ellipse tested
  against each block's square; a pixel next to a mask may take the mask's colour, none inside
  keeps its own).
* Cell grids: the luma grid is the mean of the Y crop over the same cells as BGR, plus the file's
  noise scaled to luma (:meth:`~anonymize.masks.MaskNoise.luma`: the BGR noise adds the same
  offset to B, G and R, which moves Y only); the chroma grids are the means of the U and V crops
  over as many cells, with no noise. The grids are drawn up with the style's own
  :meth:`upscale`, so the look is the BGR path's up to colour-conversion rounding.
* ``solid``'s colour is the BGR colour in the source's matrix (limited range).
"""
from __future__ import annotations

import cv2
import numpy as np

from .masks import (_AXIS, MIN_CELL_PX, BlurMask, MaskNoise, MaskStyle, PixelateMask, SolidMask, _axis_norm,
                    _pixel_windows, region_shapes)
from .regions import Regions

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
    # Everything per box that is not per pixel, for all boxes at once (the same float64 arithmetic
    # as one box at a time): the hundreds of masks of a crowded frame pay for their fills only.
    windows = _pixel_windows(boxes, w, h)
    # A chroma sample stands for a 2 x 2 block of pixels: its window is the box's at half scale
    # (the blocks any masked pixel falls in), and the luma window lies inside it (doubled).
    chroma_windows = _pixel_windows(boxes / 2, w // 2, h // 2)
    tracks = regions.track_ids.tolist()
    solid = bgr_to_yuv(style.color, matrix) if type(style) is SolidMask else None
    ellipse = shape != "box"
    if ellipse:
        cxs, cys = ((boxes[:, 0] + boxes[:, 2]) / 2).tolist(), ((boxes[:, 1] + boxes[:, 3]) / 2).tolist()
        halves_x, halves_y = ((boxes[:, 2] - boxes[:, 0]) / 2).tolist(), ((boxes[:, 3] - boxes[:, 1]) / 2).tolist()
        left, right = _AXIS.get(max(w, h) + 2)
    for k, window in enumerate(windows):
        if window is None:
            continue
        x0, y0, x1, y1 = window
        cx0, cy0, cx1, cy1 = chroma_windows[k]
        y_crop = y_plane[y0:y1, x0:x1]
        u_crop, v_crop = u_plane[cy0:cy1, cx0:cx1], v_plane[cy0:cy1, cx0:cx1]
        if solid is not None:
            if not ellipse:
                y_crop[...], u_crop[...], v_crop[...] = solid
                continue
            fills = [np.full(c.shape, value, np.uint8) for c, value in zip((y_crop, u_crop, v_crop), solid)]
        else:
            fills = _cell_fills(style, y_crop, u_crop, v_crop, tracks[k], noise)
            if not ellipse:
                y_crop[...], u_crop[...], v_crop[...] = fills
                continue
        luma_cover, chroma_cover = _covers(left, right, cxs[k], cys[k], halves_x[k], halves_y[k],
                                           x0, y0, x1, y1, cx0, cy0, cx1, cy1)
        _paste_plane(y_crop, fills[0], luma_cover)
        _paste_plane(u_crop, fills[1], chroma_cover)
        _paste_plane(v_crop, fills[2], chroma_cover)


def _covers(left: np.ndarray, right: np.ndarray, cx: float, cy: float, a: float, b: float, x0: int, y0: int,
            x1: int, y1: int, cx0: int, cy0: int, cx1: int, cy1: int) -> tuple[np.ndarray, np.ndarray]:
    """The luma cover (``_ellipse_cover`` of the luma window) and the chroma cover (the 2 x 2
    blocks that touch the ellipse, i.e. those holding a covered pixel) of the box with centre
    ``(cx, cy)`` and half sizes ``(a, b)``; ``left``/``right``: the pixel edges (``_AXIS``).

    The ellipse norm is separable, so a square's distance to the centre is the sum of its
    distances along each axis; a block's is the smaller of its two columns' plus the smaller of
    its two rows' (the same arithmetic as ``_ellipse_cover``, on the chroma window doubled)."""
    dx2 = _axis_norm(left[2 * cx0:2 * cx1], right[2 * cx0:2 * cx1], cx, a)
    dy2 = _axis_norm(left[2 * cy0:2 * cy1], right[2 * cy0:2 * cy1], cy, b)
    limit = 1.0 + 1e-9 - dy2  # errs towards covering more, as _ellipse_cover does
    luma = dx2[x0 - 2 * cx0:x1 - 2 * cx0] <= limit[y0 - 2 * cy0:y1 - 2 * cy0, None]
    chroma = np.minimum(dx2[0::2], dx2[1::2]) <= (1.0 + 1e-9 - np.minimum(dy2[0::2], dy2[1::2]))[:, None]
    return luma, chroma


def _cell_fills(style, y_crop: np.ndarray, u_crop: np.ndarray, v_crop: np.ndarray, track_id: int,
                noise: MaskNoise) -> list[np.ndarray]:
    """The three planes' fills of a pixelate/blur mask: each a function of its <= 8 x 8 cell grid.

    U and V travel together, as one two-channel crop. Blur softens the Y, U and V grids as one
    3-channel grid (:meth:`~anonymize.masks.BlurMask.soften` treats every channel alone, with
    the same arithmetic whatever their number): three calls instead of six. The reductions and
    the stretches stay as they were, U and V together: where a crop is exactly twice its grid
    OpenCV takes a shortcut whose rounding depends on the number of channels."""
    h, w = y_crop.shape
    ch, cw = u_crop.shape
    nx = min(style.cells, max(1, w // MIN_CELL_PX))  # the BGR path's cells (masks._CellMask._grid)
    ny = min(style.cells, max(1, h // MIN_CELL_PX))
    grid = cv2.resize(y_crop, (nx, ny), interpolation=cv2.INTER_AREA).reshape(ny, nx)
    if style.noise:
        grid = cv2.add(grid, noise.luma(track_id, ny, nx, style.noise), dtype=cv2.CV_8U).reshape(ny, nx)
    chroma = cv2.resize(cv2.merge([u_crop, v_crop]), (nx, ny), interpolation=cv2.INTER_AREA).reshape(ny, nx, 2)
    if type(style) is BlurMask:
        small = BlurMask.soften(cv2.merge([grid, chroma]))
        return [BlurMask.stretch(small[:, :, 0].copy(), w, h).reshape(h, w),
                *cv2.split(BlurMask.stretch(small[:, :, 1:].copy(), cw, ch).reshape(ch, cw, 2))]
    return [style.upscale(grid, w, h).reshape(h, w), *cv2.split(style.upscale(chroma, cw, ch).reshape(ch, cw, 2))]


def _paste_plane(crop: np.ndarray, fill: np.ndarray, cover: np.ndarray) -> None:
    """``crop[cover] = fill[cover]`` in place on one plane, fast."""
    if crop.strides[1] == 1 and crop.strides[0] > 0:  # a layout OpenCV can write into
        out = cv2.copyTo(fill, cover.view(np.uint8), crop)
        if out is crop:
            return
    np.copyto(crop, fill, where=cover)  # any other view; never leave it unmasked
