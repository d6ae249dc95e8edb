"""The one data type that flows between stages: an immutable set of regions in one frame.

Every stage (detect -> track -> mask -> report) takes a :class:`Regions` and returns a new one;
nothing mutates it in place. Boxes are float ``(x1, y1, x2, y2)`` in frame pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

#: Where a region came from: a detector hit in this frame, a box predicted by the tracker
#: between hits, or a box held before the first / after the last hit of a track.
SOURCES = ("detected", "tracked", "held")


def _col(values: Iterable | None, n: int, dtype, default) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=dtype)
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} values, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class Regions:
    """Boxes with per-row score, kind, track id and source. Immutable; indexing returns a copy."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2
    scores: np.ndarray = field(default=None)  # (n,) float32
    kinds: np.ndarray = field(default=None)  # (n,) object str: "face", "head", "plate", ...
    track_ids: np.ndarray = field(default=None)  # (n,) int64, -1 = not tracked
    sources: np.ndarray = field(default=None)  # (n,) object str, one of SOURCES

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", _col(self.scores, n, np.float32, 1.0))
        object.__setattr__(self, "kinds", _col(self.kinds, n, object, "face"))
        object.__setattr__(self, "track_ids", _col(self.track_ids, n, np.int64, -1))
        object.__setattr__(self, "sources", _col(self.sources, n, object, "detected"))
        for a in (self.boxes, self.scores, self.kinds, self.track_ids, self.sources):
            a.setflags(write=False)

    @classmethod
    def empty(cls) -> "Regions":
        return cls(np.zeros((0, 4), np.float32))

    @classmethod
    def merge(cls, parts: Sequence["Regions"]) -> "Regions":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.kinds for p in parts]),
            np.concatenate([p.track_ids for p in parts]),
            np.concatenate([p.sources for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Regions":
        return Regions(
            self.boxes[index], self.scores[index], self.kinds[index],
            self.track_ids[index], self.sources[index],
        )

    def with_(self, **changes) -> "Regions":
        """A copy with some columns replaced (e.g. ``regions.with_(sources=...)``)."""
        cols = dict(boxes=self.boxes, scores=self.scores, kinds=self.kinds,
                    track_ids=self.track_ids, sources=self.sources)
        cols.update(changes)
        return Regions(**cols)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    def scaled(self, factor: float) -> "Regions":
        """Boxes grown (or shrunk) about their centres by ``factor`` in width and height."""
        b = self.boxes
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        hw, hh = (b[:, 2] - b[:, 0]) * factor / 2, (b[:, 3] - b[:, 1]) * factor / 2
        return self.with_(boxes=np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1))

    def clipped(self, width: int, height: int) -> "Regions":
        """Boxes clipped to the frame; boxes left with no area are dropped."""
        b = self.boxes.copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        return self.with_(boxes=b)[keep]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two (n, 4) / (m, 4) box arrays."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` with the box in the same row of ``b`` ((n, 4) each): the
    diagonal of :func:`iou_matrix`, computed the same way, without the other n * (n - 1) pairs."""
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 2], b[:, 2])
    y2 = np.minimum(a[:, 3], b[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-6)
