"""CenterFace with test-time augmentation: several passes over one frame, fused into one set.

Each pass runs the network on a view of the frame: resized by one of ``scales``, optionally
mirrored (``flip``), or cut into ``tiles`` x ``tiles`` overlapping tiles enlarged by
``tile_scale`` (small faces become big enough for the network). Every pass keeps the boxes scoring
at least ``threshold``, so the result finds everything any single pass finds; boxes of different
passes overlapping by IoU > ``fuse_iou`` are one face and are fused into one box (:mod:`.fusion`).
Optionally ``vote`` adds faces that no pass scores as high as ``threshold`` but that at least two
passes see at ``vote`` or more; with ``vote_sum`` the passes' scores are added up instead (one
strong look or several weak ones), and ``tall`` lets tall faces through at a lower sum.

:data:`PHOTO` is the setting measured for photos (bench/detector_recall.py on WIDER crowd photos).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..regions import Regions
from .base import register
from .centerface import CenterFace
from .fusion import MODES, contained, fuse, group

#: The photo setting (kwargs of :class:`CenterFaceTTA`, threshold included): the frame and its
#: mirror image at 1x and the frame at 1.3x. A face is kept when one look scores it >= 0.3, or when
#: the looks' scores (each look's best box of that face, boxes from 0.04 up) add up to >= 0.25, or
#: to >= 0.2 for a face >= 28 px tall (large false positives are rare; large faces the network
#: scores low are not); the box of such a tall face scoring below 0.5 is grown by 15 % (its box is
#: often misplaced). Chosen on three slices of 151 WIDER photos (bench/detector_recall.py --preset
#: photo --limit 150 --offset 0/1/2; pooled 16-32 px 97.0 %, >= 32 px 97.0 %, 8.0 % of the frame
#: masked outside faces), checked on the other 141 (98.2 / 98.1 / 7.1 %, against 98.1 / 97.5 /
#: 7.1 % for the plain flip-and-pad setting at threshold 0.1). 0.95 s per 1080p photo on 2 threads;
#: a 1.5x pass instead of 1.3x masks a little more (held-out 98.3 / 98.2 / 6.9 %) in 1.12 s, over
#: the 1 s budget for photos.
PHOTO = {"threshold": 0.3, "scales": (1.0, 1.3), "flip": (1.0,), "pad": 2.0, "vote": 0.04, "vote_sum": 0.25,
         "tall": (28.0, 0.2), "grow": (1.15, 0.5), "max_pixels": 2_200_000}

#: Bigger photos are detected in tiles (see :meth:`CenterFaceTTA.detect`): tiles overlap by at
#: least this many frame pixels, and by enough that a face too big to fit whole in one tile is at
#: least ``_OVERVIEW_MIN_FACE`` pixels tall in the downscaled overview.
_TILE_OVERLAP = 384
_OVERVIEW_MIN_FACE = 80


def big_frame_tiles(h: int, w: int, max_pixels: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """The fewest windows (x0, y0, x1, y1) of at most ``max_pixels`` each that cover an ``h`` x
    ``w`` frame, neighbours overlapping by at least ``overlap`` pixels (as square as possible)."""
    best = None
    for nx in range(1, 257):
        tw = int(np.ceil((w + (nx - 1) * overlap) / nx))
        if nx > 1 and tw <= overlap:
            break
        th_max = max_pixels // max(tw, 1)
        if th_max <= overlap and h > th_max:
            continue
        ny = 1 if h <= th_max else int(np.ceil((h - overlap) / (th_max - overlap)))
        th = int(np.ceil((h + (ny - 1) * overlap) / ny))
        key = (nx * ny, abs(np.log(tw / th)))
        if best is None or key < best[0]:
            best = (key, nx, ny, tw, th)
    if best is None:
        raise ValueError(f"cannot tile {w}x{h} into windows of {max_pixels} pixels overlapping by {overlap}")
    _, nx, ny, tw, th = best

    def starts(n: int, tile: int, size: int) -> list[int]:
        return [0] if n == 1 else [round(k * (size - tile) / (n - 1)) for k in range(n)]
    return [(x0, y0, min(w, x0 + tw), min(h, y0 + th)) for y0 in starts(ny, th, h) for x0 in starts(nx, tw, w)]


def tile_windows(h: int, w: int, n: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """``n`` x ``n`` windows (x0, y0, x1, y1) covering the frame; neighbours share a strip of
    ``overlap`` times the frame's side."""
    def cuts(size: int) -> list[tuple[int, int]]:
        return [(max(0, round((k / n - overlap / 2) * size)), min(size, round(((k + 1) / n + overlap / 2) * size)))
                for k in range(n)]
    return [(x0, y0, x1, y1) for y0, y1 in cuts(h) for x0, x1 in cuts(w)]


def _cut(b: np.ndarray, window: tuple[int, int, int, int], h: int, w: int) -> np.ndarray:
    """Mask of boxes (tile pixels) touching an inner edge of their tile: part of a face that goes
    on in the neighbouring tile (the decoder shifts such a box to fit, so it is misplaced too)."""
    x0, y0, x1, y1 = window
    return (((x0 > 0) & (b[:, 0] <= 0.5)) | ((x1 < w) & (b[:, 2] >= x1 - x0 - 0.5))
            | ((y0 > 0) & (b[:, 1] <= 0.5)) | ((y1 < h) & (b[:, 3] >= y1 - y0 - 0.5)))


@register("centerface-tta")
class CenterFaceTTA(CenterFace):
    """CenterFace over several views of the frame (one session), fused. Defaults: the frame and
    its mirror image at full resolution, boxes padded by 2 pixels (measured with
    bench/detector_recall.py).

    Args:
        threshold, scale, threads, nms_iou, pad, edge: as :class:`CenterFace`; ``scale`` multiplies
            every pass's own scale, and ``pad`` is applied once, to the fused boxes.
        scales: whole-frame passes, as resize factors (e.g. ``(1.0, 0.5)``).
        flip: also run each whole-frame pass on the mirrored frame; or a tuple of the scales
            whose pass is also run mirrored (e.g. ``(1.0,)``).
        tiles: 0 for none, else ``tiles`` x ``tiles`` overlapping tiles, each enlarged by
            ``tile_scale``; ``tile_overlap`` is the shared strip, as a fraction of the frame side.
        fuse_iou, fusion: boxes overlapping by more are one face; ``fusion`` is how their boxes
            merge (``"wbf"``, ``"union"`` or ``"best"``, see :func:`~.fusion.fuse`).
        vote: if set, a face below ``threshold`` in every pass is still kept when at least two
            passes score it ``vote`` or more (boxes scoring less are not looked at).
        vote_sum: with ``vote``: instead of two passes, keep a face when the best scores that the
            passes give it (each at least ``vote``) add up to ``vote_sum`` or more.
        tall: with ``vote``, (height, sum): a face whose tallest box is at least ``height`` frame
            pixels is also kept when its pass scores add up to ``sum``.
        grow: with ``tall``, (factor, below): the fused box of a face at least ``tall[0]`` pixels
            tall whose best score is below ``below`` is grown by ``factor`` about its centre.
        max_pixels: bounds memory (onnxruntime's working memory grows with the network input,
            about 0.4 GB per million frame pixels with the photo setting): a frame with more
            pixels (at ``scale``) is detected in overlapping tiles of at most this many pixels,
            plus one overview of the whole frame shrunk to this many pixels for the faces too big
            for a tile (:meth:`detect`). None (the default): every frame in one piece. Frames up
            to ``max_pixels`` are detected exactly as without it.
    """

    def __init__(self, threshold: float = 0.2, scale: float = 1.0, threads: int = 0, nms_iou: float = 0.3,
                 pad: float = 2.0, scales: tuple[float, ...] = (1.0,), flip: bool = True, tiles: int = 0,
                 tile_scale: float = 1.5, tile_overlap: float = 0.1, fuse_iou: float = 0.5,
                 fusion: str = "wbf", vote: float | None = None, vote_sum: float | None = None,
                 tall: tuple[float, float] | None = None, grow: tuple[float, float] | None = None,
                 edge: float = 0.0, max_pixels: int | None = None, device: str = "cpu") -> None:
        if max_pixels is not None and max_pixels < 4 * _TILE_OVERLAP ** 2:
            raise ValueError(f"max_pixels must be at least {4 * _TILE_OVERLAP ** 2}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        if not scales and not tiles:
            raise ValueError("need at least one pass (scales or tiles)")
        if any(s <= 0 for s in scales) or tile_scale <= 0 or not 0 <= tile_overlap < 1:
            raise ValueError("pass scales must be > 0 and tile_overlap in [0, 1)")
        if vote is not None and not 0 < vote <= threshold:
            raise ValueError("vote must be in (0, threshold]")
        if (vote_sum is not None or tall is not None) and vote is None:
            raise ValueError("vote_sum and tall need vote (the lowest score looked at)")
        if vote_sum is not None and vote_sum <= 0 or tall is not None and (len(tall) != 2 or min(tall) <= 0):
            raise ValueError("vote_sum must be > 0 and tall a (height, sum) pair of positive numbers")
        if grow is not None and (tall is None or len(grow) != 2 or grow[0] < 1):
            raise ValueError("grow needs tall and is a (factor >= 1, below) pair")
        if fusion not in MODES:
            raise ValueError(f"fusion must be one of {MODES}, got {fusion!r}")
        super().__init__(threshold=threshold, scale=scale, threads=threads, nms_iou=nms_iou, pad=pad, edge=edge,
                         device=device)
        self.scales, self.tiles = tuple(float(s) for s in scales), int(tiles)
        self.flip = bool(flip) if isinstance(flip, (bool, int)) else tuple(float(s) for s in flip)
        self.tile_scale, self.tile_overlap = float(tile_scale), float(tile_overlap)
        self.fuse_iou, self.fusion, self.vote = float(fuse_iou), fusion, vote
        self.vote_sum = None if vote_sum is None else float(vote_sum)
        self.tall = None if tall is None else (float(tall[0]), float(tall[1]))
        self.grow = None if grow is None else (float(grow[0]), float(grow[1]))

    def passes(self, frame: np.ndarray, low: float):
        """Yield each pass's (boxes, scores) in frame pixels, scores above ``low``."""
        h, w = frame.shape[:2]
        mirrored = cv2.flip(frame, 1) if self.flip else None
        for s in self.scales:
            yield self.boxes_at(frame, s * self.scale, low)
            if mirrored is not None and (self.flip is True or s in self.flip):
                b, sc = self.boxes_at(mirrored, s * self.scale, low)
                yield np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1), sc
        if self.tiles:
            whole, cut = [], []  # tile boxes; cut ones are kept only if no other box holds them
            for win in tile_windows(h, w, self.tiles, self.tile_overlap):
                x0, y0, x1, y1 = win
                b, sc = self.boxes_at(np.ascontiguousarray(frame[y0:y1, x0:x1]), self.tile_scale * self.scale, low)
                b = b + np.array([x0, y0, x0, y0], np.float32)
                part = _cut(b - np.array([x0, y0, x0, y0], np.float32), win, h, w)
                whole.append((b[~part], sc[~part]))
                cut.append((b[part], sc[part]))
            yield self._stack(whole)
            yield self._stack(cut)

    @staticmethod
    def _stack(parts):
        return (np.concatenate([np.zeros((0, 4), np.float32)] + [b for b, _ in parts]),
                np.concatenate([np.zeros(0, np.float32)] + [s for _, s in parts]))

    def detect(self, frame: np.ndarray) -> Regions:
        """Faces in a BGR uint8 frame, fused over all passes (kinds "face").

        A frame of more than ``max_pixels`` (at ``scale``) is detected piecewise, so memory stays
        bounded: in overlapping full-resolution tiles of at most ``max_pixels`` each (a face
        smaller than the overlap lies whole in one of them), and in an overview, the whole frame
        shrunk to ``max_pixels``, where every face bigger than the overlap is at least
        ``_OVERVIEW_MIN_FACE`` pixels tall. Boxes cut by an inner tile edge are dropped when a
        whole box holds them; the rest are merged by union (never smaller than any one look).
        """
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            return Regions.empty()
        if self.max_pixels is not None and h * w * self.scale ** 2 > self.max_pixels:
            return self._detect_tiled(frame)
        boxes, scores = self._fused(frame)
        return self._regions(boxes, scores, h, w)

    def _detect_tiled(self, frame: np.ndarray) -> Regions:
        h, w = frame.shape[:2]
        limit = self.max_pixels / self.scale ** 2  # frame pixels per piece
        shrink = float(np.sqrt(limit / (h * w)))
        overlap = max(_TILE_OVERLAP, int(np.ceil(_OVERVIEW_MIN_FACE / shrink)))
        small = cv2.resize(frame, (max(1, int(w * shrink)), max(1, int(h * shrink))), interpolation=cv2.INTER_AREA)
        sx, sy = w / small.shape[1], h / small.shape[0]
        b, sc = self._fused(small)
        del small
        pad = np.array([-1, -1, 1, 1], np.float32) * np.float32(self.pad / self.scale)
        # the overview's boxes get the pad in its own pixels: the same margin around the face
        whole = [(b * np.array([sx, sy, sx, sy], np.float32) + pad * np.float32(max(sx, sy)), sc)]
        cut = []
        for win in big_frame_tiles(h, w, int(limit), overlap):
            x0, y0, x1, y1 = win
            b, sc = self._fused(np.ascontiguousarray(frame[y0:y1, x0:x1]))
            part = _cut(b, win, h, w)
            b = b + np.array([x0, y0, x0, y0], np.float32) + pad
            whole.append((b[~part], sc[~part]))
            cut.append((b[part], sc[part]))
        whole_b, whole_s = self._stack(whole)
        cut_b, cut_s = self._stack(cut)
        keep = ~contained(cut_b, whole_b, 0.7) if len(whole_b) else np.ones(len(cut_b), bool)
        boxes = np.concatenate([whole_b, cut_b[keep]]).astype(np.float64)
        scores = np.concatenate([whole_s, cut_s[keep]]).astype(np.float64)
        boxes, scores = fuse(boxes, scores, self.fuse_iou, "union")
        return Regions(boxes, scores, np.full(len(boxes), "face", object)).clipped(w, h)

    def _fused(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All passes over ``frame``, voted and fused: boxes (not yet padded or clipped), scores."""
        h, w = frame.shape[:2]
        found = list(self.passes(frame, self.threshold if self.vote is None else self.vote))
        if self.tiles:  # the last pass holds the tile boxes cut by a tile edge: drop the duplicates
            cut_b, cut_s = found.pop()
            keep = ~contained(cut_b, self._stack(found)[0], 0.7)
            found.append((cut_b[keep], cut_s[keep]))
        boxes, scores = (a.astype(np.float64) for a in self._stack(found))
        if self.vote is not None and len(boxes):
            pass_ids = np.repeat(np.arange(len(found)), [len(s) for _, s in found])
            keep = self._voted(boxes, scores, pass_ids)
            boxes, scores = boxes[keep], scores[keep]
        boxes, scores = fuse(boxes, scores, self.fuse_iou, self.fusion)
        if self.grow is not None and len(boxes):
            factor, below = self.grow
            loose = ((boxes[:, 3] - boxes[:, 1]) >= self.tall[0]) & (scores < below)
            centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
            half[loose] *= factor
            boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
        return boxes, scores

    def _voted(self, boxes: np.ndarray, scores: np.ndarray, pass_ids: np.ndarray) -> np.ndarray:
        """Mask of boxes in groups (one face) kept by the vote: a box >= threshold, or seen by at
        least two passes (or, with ``vote_sum`` / ``tall``, the passes' best scores adding up)."""
        labels = group(boxes, scores, self.fuse_iou)
        n = int(labels.max()) + 1
        best = np.zeros((n, int(pass_ids.max()) + 1))  # each pass's best score of each face
        np.maximum.at(best, (labels, pass_ids), scores)
        keep = best.max(axis=1) >= self.threshold
        if self.vote_sum is None:
            keep |= (best > 0).sum(axis=1) >= 2
        else:
            keep |= best.sum(axis=1) >= self.vote_sum
        if self.tall is not None:
            height = np.zeros(n)
            np.maximum.at(height, labels, boxes[:, 3] - boxes[:, 1])
            keep |= (height >= self.tall[0]) & (best.sum(axis=1) >= self.tall[1])
        return keep[labels]


@register("centerface-tta-int8")
class CenterFaceTTAInt8(CenterFaceTTA):
    """:class:`CenterFaceTTA` on the int8 weights (:class:`~.centerface.CenterFaceInt8`): opt-in
    (``--photo-detector centerface-tta-int8``), faster photos for slightly different recall."""

    weights = "centerface-int8"
