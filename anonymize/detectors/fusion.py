"""Fusing the boxes of several detector passes into one set, without losing any face.

Passes (flip, scales, tiles) find mostly the same faces, with slightly different boxes. Fusion
groups boxes that overlap (IoU above ``iou``) around the best-scoring one and replaces each group
by one box; a box that no other box overlaps is kept as it is. So the result covers every face any
pass found (a box is only ever merged into a duplicate of itself) and carries no double boxes.
"""
from __future__ import annotations

import numpy as np

MODES = ("wbf", "union", "best")


def _iou_row(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box against (n, 4) boxes; two empty boxes give 0."""
    w = (np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])).clip(0)
    h = (np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])).clip(0)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-6)


def group(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Group label per box: greedy, best score first, each group = its anchor + boxes with IoU > iou.

    One vectorised step per group. Anchoring on the best box (no chaining through neighbours)
    keeps two adjacent faces apart even when a loose box overlaps both.
    """
    labels = np.full(len(boxes), -1, np.int64)
    free = np.ones(len(boxes), bool)  # not yet in a group
    k = 0
    for anchor in np.argsort(-scores, kind="stable"):
        if not free[anchor]:
            continue
        members = free & (_iou_row(boxes[anchor], boxes) > iou)
        members[anchor] = True  # the anchor, even if its own IoU is 0 (empty box)
        labels[members] = k
        free &= ~members
        k += 1
    return labels


def contained(inner: np.ndarray, outer: np.ndarray, share: float) -> np.ndarray:
    """Mask of ``inner`` boxes having at least ``share`` of their area inside one ``outer`` box."""
    if len(inner) == 0 or len(outer) == 0:
        return np.zeros(len(inner), bool)
    w = (np.minimum(inner[:, None, 2], outer[None, :, 2]) - np.maximum(inner[:, None, 0], outer[None, :, 0])).clip(0)
    h = (np.minimum(inner[:, None, 3], outer[None, :, 3]) - np.maximum(inner[:, None, 1], outer[None, :, 1])).clip(0)
    area = (inner[:, 2] - inner[:, 0]) * (inner[:, 3] - inner[:, 1])
    return (w * h).max(axis=1) >= share * np.maximum(area, 1e-6)


def _merge(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, mode: str):
    """One box and score (the group's best) per group label."""
    n = int(labels.max()) + 1
    best = np.full(n, -np.inf, np.float64)
    np.maximum.at(best, labels, scores)
    if mode == "union":
        lo, hi = np.full((n, 2), np.inf), np.full((n, 2), -np.inf)
        np.minimum.at(lo, labels, boxes[:, :2])
        np.maximum.at(hi, labels, boxes[:, 2:])
        out = np.concatenate([lo, hi], axis=1)
    elif mode == "wbf":  # score-weighted mean of the group's corners
        wsum = np.zeros(n)
        acc = np.zeros((n, 4))
        np.add.at(wsum, labels, scores)
        np.add.at(acc, labels, boxes * scores[:, None])
        out = acc / np.maximum(wsum, 1e-12)[:, None]
    else:  # "best": the anchor's box, as NMS would keep it
        order = np.lexsort((-scores, labels))  # by group, best score first within a group
        _, first = np.unique(labels[order], return_index=True)
        out = boxes[order[first]]
    return out.astype(np.float32), best.astype(np.float32)


def fuse(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5, mode: str = "wbf"):
    """Fuse (n, 4) boxes with (n,) scores; return the fused boxes and scores (float32).

    ``mode``: ``"wbf"`` (score-weighted mean box), ``"union"`` (smallest box holding the whole
    group) or ``"best"`` (the best box of the group). Regrouping is repeated until no two output
    boxes overlap by more than ``iou`` (a mean box can move closer to a neighbour).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    for _ in range(8):
        if len(boxes) < 2:
            break
        labels = group(boxes, scores, iou)
        if labels.max() + 1 == len(boxes):  # nothing overlaps: done
            break
        boxes, scores = (a.astype(np.float64) for a in _merge(boxes, scores, labels, mode))
    return boxes.astype(np.float32), scores.astype(np.float32)
