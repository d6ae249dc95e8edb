"""Follow a box a person added to a plan forwards and backwards through a video.

An ``"add"`` entry of a plan (docs/plan-schema.md) names a box at one frame: a face the detector
missed. :func:`follow_added` follows it with pyramidal Lucas-Kanade optical flow (OpenCV's
``calcOpticalFlowPyrLK``, forward-backward checked) on corner features inside the box, for up to
the entry's ``seconds`` each way, in one extra decode of the video: frames before the box's frame
are kept (small, grey) in a ring buffer for the backward pass. The box moves by the features'
median motion and scales by the median change of their spread. When the features are lost (a
flat region, an occlusion), the box stays where it was last seen for the rest of its window:
masking too much is the safe side. Added regions are masked like faces (with head growth).

A box drawn against the frame's edge holds only the visible part of a face the edge cuts; as the
camera or the person moves, the rest comes into view. Such a box is first completed beyond that
edge to a face's likely proportions (:func:`complete_at_edges`), then followed: on the handheld
clips of bench/review.py, boxes added on cut faces otherwise covered only ~77 % of the face once
it was in full view.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .ffmpeg_tools import Probe
from .regions import Regions
from .video import VideoDecoder

if TYPE_CHECKING:
    from .plan import PlanFile

#: Frames are followed at this many pixels on the long side at most (speed, and memory of the
#: backward buffer).
FOLLOW_PX = 480
#: A face box is at most this wide for its height (WIDER faces >= 32 px: 95th percentile of w/h
#: 1.02), and at least this wide (25th percentile 0.69): a box cut by a side edge is completed to
#: the widest, one cut by the top or bottom edge to the tallest likely face (the safe side).
FACE_WIDEST, FACE_TALLEST = 1.0, 0.7
_LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


class _Follower:
    """One box followed from frame to frame in one direction (coordinates of the small frames)."""

    def __init__(self, gray: np.ndarray, box: np.ndarray):
        self.box = box.astype(np.float64)
        self.points = _features(gray, self.box)
        self.lost = self.points is None

    def step(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        if self.lost:
            return self.box
        pts = self.points
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, **_LK)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, nxt, None, **_LK)
        good = (st.ravel() == 1) & (st2.ravel() == 1) & (np.linalg.norm(back - pts, axis=2).ravel() < 1.0)
        if good.sum() < 3:
            self.lost = True
            return self.box
        a, b = pts[good, 0].astype(np.float64), nxt[good, 0].astype(np.float64)
        shift = np.median(b - a, axis=0)
        spread_a = np.linalg.norm(a - a.mean(axis=0), axis=1)
        spread_b = np.linalg.norm(b - b.mean(axis=0), axis=1)
        ok = spread_a > 1e-3
        scale = float(np.clip(np.median(spread_b[ok] / spread_a[ok]), 0.8, 1.25)) if ok.sum() >= 2 else 1.0
        cx, cy = (self.box[0] + self.box[2]) / 2 + shift[0], (self.box[1] + self.box[3]) / 2 + shift[1]
        hw, hh = (self.box[2] - self.box[0]) * scale / 2, (self.box[3] - self.box[1]) * scale / 2
        self.box = np.array([cx - hw, cy - hh, cx + hw, cy + hh])
        self.points = nxt[good]
        if len(self.points) < 10:  # re-seed inside the moved box
            fresh = _features(cur, self.box)
            if fresh is not None:
                self.points = fresh
        return self.box


def complete_at_edges(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...]:
    """An added box ``(x1, y1, x2, y2)`` that touches the frame's edge, grown beyond that edge to
    a whole face's proportions (:data:`FACE_WIDEST`, :data:`FACE_TALLEST`); other boxes unchanged."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    left, right = x1 <= 1, x2 >= width - 1
    top, bottom = y1 <= 1, y2 >= height - 1
    if left != right and w < FACE_WIDEST * h:  # cut by one side: the hidden part is beyond it
        grow = FACE_WIDEST * h - w
        x1, x2 = (x1 - grow, x2) if left else (x1, x2 + grow)
    if top != bottom and h < w / FACE_TALLEST:
        grow = w / FACE_TALLEST - h
        y1, y2 = (y1 - grow, y2) if top else (y1, y2 + grow)
    return x1, y1, x2, y2


def _features(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    h, w = gray.shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    mask = np.zeros_like(gray)
    mask[y0:y1, x0:x1] = 255
    pts = cv2.goodFeaturesToTrack(gray, maxCorners=60, qualityLevel=0.01, minDistance=2, mask=mask)
    return pts.astype(np.float32) if pts is not None and len(pts) >= 3 else None


def follow_added(src: Path, info: Probe, entry: "PlanFile") -> dict[int, Regions]:
    """The added regions of every frame (frame index -> raw regions), following each of
    ``entry.add`` through the video at ``src`` (one decode pass)."""
    fps = float(info.video.fps or 30) if info.video else 30.0
    adds = entry.add
    windows = [int(round(a.seconds * fps)) for a in adds]
    scale = min(1.0, FOLLOW_PX / max(entry.width, entry.height))
    paths: list[dict[int, tuple]] = [{} for _ in adds]
    buffer: deque[tuple[int, np.ndarray]] = deque(maxlen=max(windows, default=0) + 1)
    starts: dict[int, list[int]] = {}
    for k, a in enumerate(adds):
        starts.setdefault(a.frame, []).append(k)
    last_start = max(starts, default=-1)
    frames = VideoDecoder(src, info).frames()
    try:
        boxes = [complete_at_edges(a.box, entry.width, entry.height) for a in adds]
        _follow(frames, boxes, windows, scale, paths, buffer, starts, last_start)
    finally:
        frames.close()  # kills ffmpeg when every box was followed before the end
    return added_regions(entry, paths)


def _follow(frames, boxes, windows, scale, paths, buffer, starts, last_start) -> None:
    forward: list[tuple[int, _Follower, int]] = []
    prev = None
    for frame in frames:
        i = frame.index
        if i > last_start and not forward:
            break  # every box is followed: stop decoding early
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        if scale < 1:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        still = []
        for k, f, end in forward:
            paths[k][i] = tuple(f.step(prev, gray) / scale)
            if i < end:
                still.append((k, f, end))
        forward = still
        for k in starts.get(i, []):
            box = np.array(boxes[k]) * scale
            paths[k][i] = tuple(boxes[k])
            back, later = _Follower(gray, box), gray
            for j, g in reversed(buffer):
                if i - j > windows[k]:
                    break
                paths[k][j] = tuple(back.step(later, g) / scale)
                later = g
            if windows[k] > 0:
                forward.append((k, _Follower(gray, box), i + windows[k]))
        if last_start > i:
            buffer.append((i, gray))
        prev = gray


def added_regions(entry: "PlanFile", paths: list[dict[int, tuple]]) -> dict[int, Regions]:
    """Per-frame regions from each added box's path (frame -> box): kind "face", source "added",
    one new track per "add" entry (ids after the plan's own)."""
    base = max([t for t in entry.tracks] + [-1]) + 1
    for r in entry.raw.values():
        if len(r):
            base = max(base, int(r.track_ids.max()) + 1)
    by_frame: dict[int, list[tuple[tuple, int]]] = {}
    for k, path in enumerate(paths):
        for i, box in path.items():
            by_frame.setdefault(i, []).append((box, base + k))
    return {i: Regions(np.array([b for b, _ in items], np.float32), kinds=["face"] * len(items),
                       track_ids=[t for _, t in items], sources=["added"] * len(items))
            for i, items in by_frame.items()}
