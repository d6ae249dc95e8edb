"""Irreversible masks for face regions, and the head-sized boxes they are drawn over.

The rule every style keeps: **the masked area carries at most a few dozen numbers derived from the
original pixels, never the pixels themselves.**

* ``solid`` writes a flat colour: nothing from the original survives.
* ``pixelate`` and ``blur`` first reduce the region's crop to a grid of at most 8 x 8 cell means
  (``MAX_CELLS``; fewer for small regions), add random noise to every cell, and draw *only that
  grid* back: as hard blocks (``pixelate``) or smoothly upscaled and blurred (``blur``). The output
  in the region is a function of those <= 64 cell colours and the noise alone, so no detail finer
  than a cell can be recovered, however the output is sharpened or "deblurred". That is why
  ``blur`` here is *not* a Gaussian blur of the face: a plain blur keeps every pixel's
  contribution, and face recognisers still match blurred faces (see tests/test_masks.py, which
  checks this with dlib's face-recognition network).

The noise comes from a :class:`MaskNoise`, one per file being masked (its seed is recorded in the
plan, so a render of the plan draws the same noise). For a tracked region (``track_id >= 0``) it is
fixed for the whole track: the mask does not flicker from frame to frame, and averaging many frames
cannot cancel it. Untracked regions get fresh noise every time. Each file has its own noise: track
3 of one video and track 3 of the next are not masked with the same offsets.

Mask geometry (:func:`head_boxes`, :func:`reach_edges`, :func:`widen`, :func:`mask_regions`,
:func:`region_shapes`) is pure: detected boxes in, masked boxes out, no state.

Regions are drawn as the ellipse inscribed in each box (``shape="ellipse"``) or the whole box
(``shape="box"``). The ellipse is rasterised conservatively: a pixel is masked when its unit square
touches the closed ellipse, so coverage is never smaller than the ellipse. Work is done on each
box's clipped crop only, so 50 regions on a 1080p frame take a few milliseconds.
"""
from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from typing import ClassVar

import cv2
import numpy as np

from .regions import Regions

#: Upper bound on grid cells per side for the pixelate/blur styles (64 cells per region at most).
#: Raising it would weaken the guarantee in the module docstring, so the styles refuse more.
MAX_CELLS = 8
#: Cells are at least this many pixels wide, so small regions get fewer cells.
MIN_CELL_PX = 4
SHAPES = ("ellipse", "box")
#: Region kinds drawn as whole boxes whatever ``mask_shape`` says: an ellipse inscribed in a text
#: line's box would leave its ends legible, and a person box is already loose.
BOX_KINDS = ("text", "person", "frame")


def head_boxes(regions: Regions, scale: float = 1.3, lift: float = 0.1) -> Regions:
    """Grow face boxes (kind ``"face"``) to cover the whole head; other kinds pass unchanged.

    For a face box of width ``w``, height ``h`` and centre ``(cx, cy)`` the head box has width
    ``scale * w``, height ``scale * h`` and centre ``(cx, cy - lift * h)``: it grows evenly sideways
    and more upward (hair, forehead) than downward (chin). With the defaults the head box reaches
    ``0.75 h`` above the face centre and ``0.55 h`` below it. ``lift`` is capped at
    ``(scale - 1) / 2``, which is exactly what keeps the face box inside the head box *and* the
    face's inscribed ellipse inside the head's (in units of the face's half-sizes: a unit circle
    inside a circle of radius ``scale`` whose centre is ``2 * lift`` away). The face box's corners
    fall outside the head ellipse unless ``scale`` is about 1.5 or more. Boxes are not clipped to
    the frame (the masks clip, keeping the ellipse of the whole box). Not idempotent: apply once.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    faces = regions.kinds == "face"
    if not faces.any():
        return regions
    b = regions.boxes.astype(np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2 - min(lift, (scale - 1) / 2) * h
    grown = np.stack([cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2], axis=1)
    return regions.with_(boxes=np.where(faces[:, None], grown, b))


def reach_edges(regions: Regions, width: int, height: int, reach: float = 0.5) -> Regions:
    """Grow face regions cut by a frame edge outward, past that edge, by ``reach`` of their size.

    A face cut by the frame edge (entering, leaving, or simply at the border) is only partly
    visible, and the detector's box covers the visible part poorly: it is small and lags behind the
    motion. A region that crosses an edge is extended by ``reach`` times its size on that axis
    beyond it; the part outside the frame masks nothing, the part inside fattens the ellipse along
    the border. Only regions that already cross the edge grow: growing every region *near* an edge
    (within half its size, as this did before) cost 2.1 points of the WIDER photos masked outside
    faces (10.2 % vs 8.1 %) and 0.9 on the video clips, and covered no more ground-truth faces
    (bench/recall.py; a face cut by the edge always has a head box that crosses it). Other kinds
    pass unchanged.
    """
    faces = regions.kinds == "face"
    if not faces.any():
        return regions
    b = regions.boxes.astype(np.float64).copy()
    grow_x, grow_y = reach * (b[:, 2] - b[:, 0]), reach * (b[:, 3] - b[:, 1])
    left, top = faces & (b[:, 0] < 0), faces & (b[:, 1] < 0)
    right, bottom = faces & (b[:, 2] > width), faces & (b[:, 3] > height)
    b[left, 0] -= grow_x[left]
    b[top, 1] -= grow_y[top]
    b[right, 2] += grow_x[right]
    b[bottom, 3] += grow_y[bottom]
    return regions.with_(boxes=b)


def widen(regions: Regions, margin: float) -> Regions:
    """Grow face regions by ``margin`` pixels on every side; other kinds pass unchanged.

    Used on video (``Options.video_margin``): boxes that jitter or lag a few pixels between frames
    matter most for small faces, which a relative growth (``head_boxes``'s scale) barely widens.
    """
    faces = regions.kinds == "face"
    if margin <= 0 or not faces.any():
        return regions
    b = regions.boxes.astype(np.float64).copy()
    b[faces] += np.array([-margin, -margin, margin, margin])
    return regions.with_(boxes=b)


def mask_regions(regions: Regions, width: int, height: int, *, scale: float, edge_reach: float,
                 margin: float = 0.0) -> Regions:
    """Detected (raw) boxes -> the regions that get masked: faces grow to head size
    (:func:`head_boxes`, by ``scale``), past the frame edge when they are cut by it
    (:func:`reach_edges`, by ``edge_reach``) and by ``margin`` pixels on every side
    (:func:`widen`, used for video). A pure function of its arguments.

    Boxes are *not* clipped to the frame: an ellipse redrawn inside a clipped box would be
    smaller than the true one and leave part of an edge face visible. The masks clip while
    drawing; regions wholly outside the frame are dropped.
    """
    heads = head_boxes(regions, scale)
    if edge_reach > 0:
        heads = reach_edges(heads, width, height, edge_reach)
    heads = widen(heads, margin)
    b = heads.boxes
    inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < width) & (b[:, 1] < height)
    return heads[inside]


def region_shapes(masked: Regions, mask_shape: str) -> np.ndarray:
    """How each region is drawn: ``mask_shape`` for faces and heads, a box for :data:`BOX_KINDS`."""
    boxed = np.isin(masked.kinds.astype(str), BOX_KINDS)
    return np.where(boxed, "box", mask_shape).astype(object)


def draw(image: np.ndarray, masked: Regions, style: "MaskStyle", mask_shape: str,
         noise: "MaskNoise | None" = None) -> np.ndarray:
    """Mask ``masked`` in ``image`` (in place) with ``style``: whole boxes first, then the shaped
    regions (:func:`region_shapes`); ``noise``: the file's :class:`MaskNoise`."""
    boxes = region_shapes(masked, mask_shape) == "box"
    extra = {} if noise is None else {"noise": noise}
    if boxes.any():
        style.apply(image, masked[boxes], shape="box", **extra)
    if (~boxes).any():
        style.apply(image, masked[~boxes], shape=mask_shape, **extra)
    return image


def file_seed(seed: int | None, input_sha256: str) -> int:
    """The mask-noise seed of one file: fresh randomness when ``seed`` is None, else derived from
    ``seed`` and the file's sha256 (reproducible, and different for every file)."""
    if seed is None:
        return int.from_bytes(np.random.SeedSequence().generate_state(2, np.uint32).tobytes(), "little") >> 1
    digest = hashlib.sha256(f"{seed}:{input_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: a JSON-safe, non-negative int


class MaskNoise:
    """The mask noise of one file: fixed per track (keyed by the file's seed and the track id),
    fresh for untracked regions (drawn from a generator seeded with the file's seed)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._entropy = np.random.SeedSequence(seed).entropy
        self._tracks: dict[tuple[int, int], np.ndarray] = {}
        self._tracks3: dict[tuple[int, int, int, int], np.ndarray] = {}

    def cells(self, track_id: int, ny: int, nx: int, amplitude: int) -> np.ndarray:
        """(ny, nx, 1) int16 offsets in ``[-amplitude, amplitude]``."""
        if track_id < 0:
            return self.rng.integers(-amplitude, amplitude + 1, size=(ny, nx, 1), dtype=np.int16)
        noise = self._tracks.get((track_id, amplitude))
        if noise is None:
            if len(self._tracks) >= 4096:  # bound memory on very long videos
                self._tracks.clear()
            rng = np.random.default_rng([self._entropy, track_id])
            noise = rng.integers(-amplitude, amplitude + 1, size=(MAX_CELLS, MAX_CELLS, 1), dtype=np.int16)
            self._tracks[(track_id, amplitude)] = noise
        return noise[:ny, :nx]

    def cells3(self, track_id: int, ny: int, nx: int, amplitude: int) -> np.ndarray:
        """:meth:`cells` on all three channels: a C-contiguous (ny, nx, 3) int16 array (what the
        cell masks add to their grid; kept per track and grid size, as it is the same every frame)."""
        if track_id < 0:
            return np.repeat(self.cells(track_id, ny, nx, amplitude), 3, axis=2)
        key = (track_id, amplitude, ny, nx)
        noise = self._tracks3.get(key)
        if noise is None:
            if len(self._tracks3) >= 16384:  # bound memory on very long videos
                self._tracks3.clear()
            noise = np.repeat(self.cells(track_id, ny, nx, amplitude), 3, axis=2)
            self._tracks3[key] = noise
        return noise

    def luma(self, track_id: int, ny: int, nx: int, amplitude: int) -> np.ndarray:
        """:meth:`cells` as the change it makes to limited-range luma: a C-contiguous (ny, nx)
        int16 array. Adding ``d`` to B, G and R adds ``d * 219 / 255`` to Y and nothing to U and V
        (the matrix's weights sum to 1), so the planes' masks jitter like the BGR masks do."""
        def scaled() -> np.ndarray:
            cells = self.cells(track_id, ny, nx, amplitude)[:, :, 0].astype(np.float64)
            return np.ascontiguousarray(np.rint(cells * (219 / 255)).astype(np.int16))
        if track_id < 0:
            return scaled()
        key = (track_id, amplitude, ny, nx, "luma")
        noise = self._tracks3.get(key)
        if noise is None:
            if len(self._tracks3) >= 16384:  # bound memory on very long videos
                self._tracks3.clear()
            noise = self._tracks3[key] = scaled()
        return noise


def _pixel_window(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel range ``(x0, y0, x1, y1)`` touched by ``box``, clipped to the frame; None if empty."""
    # Plain floats and the math module: this runs once per mask, hundreds of times per crowded
    # frame, where numpy's per-call overhead on four scalars was 15 % of the drawing time.
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(map(math.isfinite, (x1, y1, x2, y2))) or x2 <= x1 or y2 <= y1:
        return None  # zero-area or garbage box: there is nothing to cover
    # floor/ceil: every pixel whose square overlaps the box is included.
    x0, y0 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    xe, ye = min(math.ceil(x2), width), min(math.ceil(y2), height)
    if xe <= x0 or ye <= y0:
        return None  # wholly outside the frame
    return x0, y0, xe, ye


def _pixel_windows(boxes: np.ndarray, width: int, height: int) -> list[list[int] | None]:
    """:func:`_pixel_window` of every row of ``boxes`` (n x 4) at once, as ``[x0, y0, x1, y1]``
    lists (None where it is None): one numpy pass per frame instead of a Python call per mask.

    The same windows: floor/ceil of the same float64 values, and clipping both ends to the frame
    before the emptiness test changes no answer (an empty window stays empty, a non-empty one
    lies inside the frame already), while it keeps huge finite coordinates out of the int cast.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b = np.where(ok[:, None], b, 0.0)
    limits = np.array([width, height], np.float64)
    start = np.minimum(np.maximum(np.floor(b[:, :2]), 0.0), limits)
    end = np.maximum(np.minimum(np.ceil(b[:, 2:]), limits), 0.0)
    ok &= (end > start).all(axis=1)
    rows = np.concatenate([start, end], axis=1).astype(np.int64).tolist()
    return [row if good else None for row, good in zip(rows, ok.tolist())]


class _Axis:
    """Pixel coordinates 0, 1, 2, ... and their right edges 1, 2, 3, ... as float64 arrays, grown
    as frames need: the ellipse covers slice them instead of building an arange per mask."""

    def __init__(self) -> None:
        self.left = self.right = np.zeros(0)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.left) < n:
            self.left = np.arange(max(n, 2 * len(self.left)), dtype=np.float64)
            self.right = self.left + 1  # integers: exactly the xs + 1 of _ellipse_cover
        return self.left, self.right


_AXIS = _Axis()


def _axis_norm(left: np.ndarray, right: np.ndarray, centre: float, half: float) -> np.ndarray:
    """``((min(max(centre, xs), xs + 1) - centre) / half) ** 2`` for the pixels ``xs`` whose left
    and right edges are ``left`` and ``right``: :func:`_ellipse_cover`'s per-axis term, with the
    same float64 operations in the same order (in place, on one new array)."""
    d = np.maximum(left, centre)
    np.minimum(d, right, out=d)
    d -= centre
    d /= half
    return np.multiply(d, d, out=d)  # what ** 2 computes (numpy squares by one multiply)


def _ellipse_cover(box: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Boolean (y1-y0, x1-x0) mask of pixels whose unit square touches the box's inscribed ellipse.

    The ellipse norm ((x-cx)/a)^2 + ((y-cy)/b)^2 is separable, so its minimum over a pixel square
    [j, j+1] x [i, i+1] is at the point nearest the centre on each axis (centre clamped into the
    square). The square touches the ellipse exactly when that minimum is <= 1.
    """
    bx1, by1, bx2, by2 = (float(v) for v in box)
    cx, cy, a, b = (bx1 + bx2) / 2, (by1 + by2) / 2, (bx2 - bx1) / 2, (by2 - by1) / 2
    xs, ys = np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)
    dx2 = ((np.minimum(np.maximum(cx, xs), xs + 1) - cx) / a) ** 2
    dy2 = ((np.minimum(np.maximum(cy, ys), ys + 1) - cy) / b) ** 2
    # dx2 + dy2 <= 1, written as a broadcast compare; the epsilon errs towards covering more.
    return dx2[None, :] <= (1.0 + 1e-9 - dy2)[:, None]


def _paste(crop: np.ndarray, fill: np.ndarray, cover: np.ndarray) -> None:
    """``crop[cover] = fill[cover]`` in place, fast."""
    if crop.strides[1:] == (3, 1) and crop.strides[0] > 0:  # a layout OpenCV can write into
        out = cv2.copyTo(fill, cover.view(np.uint8), crop)  # ~40x faster than boolean indexing
        if out is crop:
            return
    np.copyto(crop, fill, where=cover[:, :, None])  # any other view; never leave it unmasked


class MaskStyle(ABC):
    """A way of painting over regions. Subclasses implement :meth:`_fill` for one crop."""

    name: ClassVar[str]

    def apply(self, frame: np.ndarray, regions: Regions, shape: str = "ellipse",
              noise: MaskNoise | None = None) -> np.ndarray:
        """Mask every region of ``frame`` (BGR uint8, modified in place) and return ``frame``.

        ``noise``: the file's :class:`MaskNoise` (default: the style's own, from its ``seed``).

        Boxes should already be head-sized (:func:`head_boxes`). Boxes partly outside the frame are
        clipped; zero-area and wholly outside boxes are skipped. Overlapping boxes are masked one
        after another, each over what the previous ones left.
        """
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a BGR uint8 frame (h, w, 3), got {frame.dtype} {frame.shape}")
        height, width = frame.shape[:2]
        noise = noise or self.default_noise
        boxes = regions.boxes.astype(np.float64)
        windows = _pixel_windows(boxes, width, height)  # per frame: the per-mask work is the fills
        tracks = regions.track_ids.tolist()
        if shape != "box":
            # each box's centre and half sizes, with _ellipse_cover's float64 arithmetic
            cxs, cys = ((boxes[:, 0] + boxes[:, 2]) / 2).tolist(), ((boxes[:, 1] + boxes[:, 3]) / 2).tolist()
            halves_x, halves_y = ((boxes[:, 2] - boxes[:, 0]) / 2).tolist(), ((boxes[:, 3] - boxes[:, 1]) / 2).tolist()
            left, right = _AXIS.get(max(width, height))
        for k, window in enumerate(windows):
            if window is None:
                continue
            x0, y0, x1, y1 = window
            crop = frame[y0:y1, x0:x1]  # a view: writes land in the frame
            fill = self._fill(crop, tracks[k], noise)
            if shape == "box":
                crop[...] = fill
                continue
            dx2 = _axis_norm(left[x0:x1], right[x0:x1], cxs[k], halves_x[k])
            dy2 = _axis_norm(left[y0:y1], right[y0:y1], cys[k], halves_y[k])
            _paste(crop, fill, dx2 <= (1.0 + 1e-9 - dy2)[:, None])  # = _ellipse_cover(box, x0, y0, x1, y1)
        return frame

    @abstractmethod
    def _fill(self, crop: np.ndarray, track_id: int, noise: MaskNoise) -> np.ndarray:
        """What the whole crop becomes (a new contiguous uint8 array); ``apply`` keeps the covered part."""


class SolidMask(MaskStyle):
    """A flat colour; carries nothing from the original."""

    name = "solid"

    def __init__(self, color: tuple[int, int, int] = (48, 48, 48), seed: int | None = None) -> None:
        self.color = np.array(color, dtype=np.uint8).reshape(3)  # BGR; seed accepted for a uniform API
        self.default_noise = MaskNoise(seed)

    def _fill(self, crop: np.ndarray, track_id: int, noise: MaskNoise) -> np.ndarray:
        # Repeat a whole row: numpy broadcasting a 3-byte colour over the crop is ~20x slower.
        return np.repeat(np.tile(self.color, (1, crop.shape[1], 1)), crop.shape[0], axis=0)


class _CellMask(MaskStyle):
    """Shared part of pixelate/blur: the crop reduced to <= 8x8 noisy cell colours."""

    def __init__(self, cells: int = MAX_CELLS, noise: int = 12, seed: int | None = None) -> None:
        if not 1 <= cells <= MAX_CELLS:
            raise ValueError(f"cells must be 1..{MAX_CELLS} (the irreversibility bound), got {cells}")
        if not 0 <= noise <= 127:
            raise ValueError(f"noise must be 0..127, got {noise}")
        self.cells, self.noise = cells, noise
        #: used when ``apply`` is given no file's noise (direct use of a style)
        self.default_noise = MaskNoise(seed)

    def _grid(self, crop: np.ndarray, track_id: int, noise: MaskNoise) -> np.ndarray:
        """(ny, nx, 3) uint8 cell means plus per-cell noise: everything the output may depend on."""
        h, w = crop.shape[:2]
        nx = min(self.cells, max(1, w // MIN_CELL_PX))
        ny = min(self.cells, max(1, h // MIN_CELL_PX))
        grid = cv2.resize(crop, (nx, ny), interpolation=cv2.INTER_AREA).reshape(ny, nx, 3)
        if self.noise:
            # One offset per cell, the same on all channels: brightness jitter, not colour speckle.
            # OpenCV's saturating add of the int16 offsets is exactly clip(grid + offsets, 0, 255),
            # in one call instead of numpy's five (tests/test_draw_unchanged.py checks it).
            grid = cv2.add(grid, noise.cells3(track_id, ny, nx, self.noise), dtype=cv2.CV_8U).reshape(ny, nx, 3)
        return grid


class PixelateMask(_CellMask):
    """Coarse blocks: the noisy cell grid drawn with hard edges."""

    name = "pixelate"

    def _fill(self, crop: np.ndarray, track_id: int, noise: MaskNoise) -> np.ndarray:
        h, w = crop.shape[:2]
        return self.upscale(self._grid(crop, track_id, noise), w, h)

    @staticmethod
    def upscale(grid: np.ndarray, w: int, h: int) -> np.ndarray:
        """The cell grid (any number of channels) drawn over a ``w`` x ``h`` crop."""
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST)


class BlurMask(_CellMask):
    """A calm, blurred look made only from the noisy cell grid (never from the original pixels)."""

    name = "blur"

    def _fill(self, crop: np.ndarray, track_id: int, noise: MaskNoise) -> np.ndarray:
        h, w = crop.shape[:2]
        return self.upscale(self._grid(crop, track_id, noise), w, h)

    @staticmethod
    def upscale(grid: np.ndarray, w: int, h: int) -> np.ndarray:
        """The cell grid (any number of channels) drawn smoothly over a ``w`` x ``h`` crop."""
        return BlurMask.stretch(BlurMask.soften(grid), w, h)

    @staticmethod
    def soften(grid: np.ndarray) -> np.ndarray:
        """The grid upscaled 4x with its bilinear creases softened (<= 32 x 32 pixels a channel).
        Every step sees only grid values (the blur replicates its border), and every step treats
        each channel alone: the planes path softens Y, U and V as one 3-channel grid."""
        ny, nx = grid.shape[:2]
        small = cv2.resize(grid, (nx * 4, ny * 4), interpolation=cv2.INTER_LINEAR)
        for _ in range(2):  # two 5x5 box blurs ~ a Gaussian of sigma 2, at a tenth of the cost
            small = cv2.blur(small, (5, 5), borderType=cv2.BORDER_REPLICATE)
        return small

    @staticmethod
    def stretch(small: np.ndarray, w: int, h: int) -> np.ndarray:
        """A softened grid (:meth:`soften`) stretched over a ``w`` x ``h`` crop."""
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


MASKS: dict[str, type[MaskStyle]] = {m.name: m for m in (SolidMask, PixelateMask, BlurMask)}
#: Calm to look at (no hard blocks that draw the eye) and as safe as pixelate: same <= 64 cells.
DEFAULT_MASK = "blur"


def create_mask(name: str = DEFAULT_MASK, **opts) -> MaskStyle:
    """Build a mask style by name, e.g. ``create_mask("pixelate", seed=0)``."""
    try:
        cls = MASKS[name]
    except KeyError:
        raise ValueError(f"unknown mask {name!r}; choose from {', '.join(MASKS)}") from None
    return cls(**opts)
