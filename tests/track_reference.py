"""Frozen copy of anonymize/track.py as of f5e597d (main before the per-frame speed work of issue 20):
the reference tests/test_track_unchanged.py runs next to the tracker, so that a faster tracker must
release the same regions in every frame. Not imported by the package.

Tracking: never let a face flash unmasked between, before or after its detections.

Detections are linked into tracks by optimal assignment (scipy's ``linear_sum_assignment``, ported
to numpy in :mod:`.assignment`) on IoU with each track's constant-velocity prediction. A frame's
final regions are only decided once ``lookahead`` later frames have been seen, so the tracker can

* fill gaps: a frame between two detections of a track gets the interpolated box (``tracked``);
* hold before: a face first detected late is also masked in the frames before (``held``);
* hold after: a face that stops being detected stays masked along its predicted path (``held``);
* look again (with a ``second_look``, :mod:`.relook`): a face first detected late is looked for
  in the buffered frames before, one by one back, and a face missed in a frame right after a
  detection is looked for where the track predicts it; each face found is a hit of the track,
  so the hold before starts from the earliest frame the face was really found in;
* hold jumps: a track that jumps (its new detection overlaps neither its predicted nor its last
  box) may have been handed from a missed face to a neighbour, so the box after the jump is also
  held in the frames before it, as a track starting there would be (``held``).

Masking the union of detected and predicted boxes is deliberate: a privacy tool must never drop
a detection to keep a track "clean" (unlike trackers that only report confirmed tracks).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, Optional, TypeVar

import numpy as np
from anonymize.assignment import linear_sum_assignment

from anonymize.regions import Regions, iou_matrix

T = TypeVar("T")


@dataclass
class _Track:
    id: int
    kind: str
    # (frame index, box, score) of each detection, oldest first; trimmed as frames are released.
    hits: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    # Frames of the hits that jumped (see :func:`_jumped`) and are not yet released.
    jumps: list[int] = field(default_factory=list)
    # (frame, pixels) of recent box jitter: how far a hit's edges were from the straight line
    # through its neighbours (see :meth:`Tracker._note_jitter`), kept for ``JITTER_SPAN`` frames.
    jitter: list[tuple[int, float]] = field(default_factory=list)

    @property
    def last(self) -> tuple[int, np.ndarray, float]:
        return self.hits[-1]

    def velocity(self) -> np.ndarray:
        """Box motion per frame from the last two hits (zeros with one hit)."""
        if len(self.hits) < 2:
            return np.zeros(4, np.float32)
        (f0, b0, _), (f1, b1, _) = self.hits[-2], self.hits[-1]
        return (b1 - b0) / max(f1 - f0, 1)

    def predict(self, frame: int) -> np.ndarray:
        f, box, _ = self.last
        return box + self.velocity() * (frame - f)


@dataclass(frozen=True)
class TrackerSettings:
    """Frame counts; :meth:`from_seconds` converts from the user's seconds at a frame rate."""

    hold_before: int = 8
    hold_after: int = 15
    max_gap: int = 15
    min_iou: float = 0.1
    #: Held boxes grow by this fraction per frame away from the nearest hit (uncertainty).
    growth: float = 0.02
    #: A jump's box is held before it only when the track is then detected this many times
    #: before any next jump: a lone stray detection adds no mask (it was not a face moving there).
    jump_hits: int = 5
    #: With a second look: how many buffered frames before its first detection a new track is
    #: looked for (at most the look-ahead), and how many looks one frame may cost at most.
    look_back: int = 15
    looks_per_frame: int = 16
    #: A track missed in a frame is looked for there only once it has this many hits: new tracks
    #: flicker (small faces, stray detections), and looking after each cost more than it found.
    look_missed_hits: int = 3
    #: Face boxes of a track grow on every side by this many times its recent jitter (the mean
    #: distance of its box edges from the line through their neighbours' over the frames around):
    #: a box that jumps about by a few pixels leaves the face's rim out in some frames. 1.0 on
    #: bench/recall.py video --part tune: face-frames >= 32 px unmasked in counted tracks 31 -> 22,
    #: leaked tracks 4 -> 3 of 192, frame masked outside faces 12.7 -> 14.2 %; 2.0 masked 2.2
    #: points more for one leak fewer.
    jitter_growth: float = 1.0
    #: Held boxes also grow at the rate the track's box grew between the two hits nearest them
    #: (after its last hit: as it grew forward; before its first: as it shrank forward), when
    #: faster than ``growth``: in a zoom a face's size changes by several % a frame, and a held
    #: box of the old size leaves its rim out. Capped at ``MAX_ZOOM_HOLD`` times the hit's size.
    #: bench/recall.py video --part tune (80 clips, 858 tracks): leaked 26 -> 24, face-frames
    #: unmasked in counted tracks 356 -> 344, >= 32 px 98.81 -> 98.85 %, frame masked outside
    #: faces 18.40 -> 19.01 %; growing only the moved box of the pair: 25, 354, 18.77 %.
    zoom_holds: bool = True

    @classmethod
    def from_seconds(cls, fps: float, hold_before: float, hold_after: float, max_gap: float) -> "TrackerSettings":
        def frames(seconds: float) -> int:
            return max(0, int(np.ceil(seconds * fps)))

        return cls(frames(hold_before), frames(hold_after), frames(max_gap))

    @property
    def lookahead(self) -> int:
        # a jump's hold before needs the jump and the ``jump_hits - 1`` frames after it
        return max(self.hold_before + max(self.jump_hits - 1, 0), self.max_gap)


class Tracker(Generic[T]):
    """Feed ``push(item, detections)`` per frame in order; get ``(item, regions)`` back ``lookahead``
    frames later (``flush()`` releases the rest at the end). ``item`` is whatever the caller needs
    to carry along (the frame itself, in the pipeline)."""

    def __init__(self, settings: TrackerSettings = TrackerSettings(),
                 second_look: Optional[Callable[[T, np.ndarray], Optional[tuple[np.ndarray, float]]]] = None):
        """``second_look(item, box)``: the face found near ``box`` in ``item``'s frame, as
        ``(box, score)``, or None (see :mod:`.relook`); None: no second looks."""
        self.s = settings
        self.second_look = second_look
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = -1
        self._pending: deque[tuple[int, T, Regions]] = deque()

    def push(self, item: T, detections: Regions) -> Iterator[tuple[T, Regions]]:
        self._frame += 1
        tagged = self._assign(self._frame, detections)
        self._pending.append((self._frame, item, tagged))
        if self.second_look is not None:
            self._look_again(self._frame)
        while self._pending and self._pending[0][0] <= self._frame - self.s.lookahead:
            yield self._release()

    def flush(self) -> Iterator[tuple[T, Regions]]:
        while self._pending:
            yield self._release()

    # -- linking -------------------------------------------------------------------------------
    def _assign(self, frame: int, dets: Regions) -> Regions:
        live = [t for t in self._tracks if frame - t.last[0] <= self.s.max_gap]
        ids = np.full(len(dets), -1, np.int64)
        if len(dets) and live:
            preds = np.stack([t.predict(frame) for t in live])
            sim, allowed = _similarity(dets.boxes, preds, self.s.min_iou)
            same_kind = dets.kinds[:, None] == np.array([t.kind for t in live], dtype=object)[None, :]
            allowed &= same_kind
            rows, cols = linear_sum_assignment(-np.where(allowed, sim, -1.0))
            for r, c in zip(rows, cols):
                if allowed[r, c]:
                    ids[r] = live[c].id
                    if _jumped(dets.boxes[r], preds[c], live[c].last[1]):
                        live[c].jumps.append(frame)
                    live[c].hits.append((frame, dets.boxes[r].copy(), float(dets.scores[r])))
                    if self.s.jitter_growth > 0:
                        _note_jitter(live[c])
        by_id = {t.id: t for t in self._tracks}
        for r in np.flatnonzero(ids < 0):
            track = _Track(self._next_id, str(dets.kinds[r]), [(frame, dets.boxes[r].copy(), float(dets.scores[r]))])
            self._tracks.append(track)
            by_id[track.id] = track
            ids[r] = track.id
            self._next_id += 1
        return dets.with_(track_ids=ids, sources=np.full(len(dets), "detected", object))

    # -- second looks --------------------------------------------------------------------------
    def _look_again(self, frame: int) -> None:
        """Look for new tracks in the buffered frames before them, and for tracks missed in this
        frame right after a hit where they are predicted (see the module docstring)."""
        budget = self.s.looks_per_frame
        ids = set(self._pending[-1][2].track_ids.tolist())
        for t in self._tracks:
            if budget <= 0:
                return
            if t.kind != "face":
                continue
            if len(t.hits) == 1 and t.hits[0][0] == frame and frame > 0:  # new: look back
                for k in range(len(self._pending) - 2, -1, -1):
                    j = self._pending[k][0]
                    if frame - j > self.s.look_back or budget <= 0:
                        break
                    budget -= 1
                    if not self._add_found(t, k, self._back_box(t, j)):
                        break
            elif t.id not in ids and t.last[0] == frame - 1 and len(t.hits) >= self.s.look_missed_hits:
                budget -= 1
                self._add_found(t, len(self._pending) - 1, t.predict(frame))

    def _back_box(self, t: _Track, frame: int) -> np.ndarray:
        """Where track ``t`` was before its first hit: its first box moved back along its motion."""
        f1, b1, _ = t.hits[0]
        if len(t.hits) < 2:
            return b1
        f2, b2, _ = t.hits[1]
        return _shift(b1, _centre_velocity(b1, b2, f2 - f1) * (frame - f1))

    def _add_found(self, t: _Track, k: int, box: np.ndarray) -> bool:
        """Look for ``t`` near ``box`` in pending frame ``k``; a face found there that no detection
        of that frame already covers becomes a hit of ``t``. True when one was added."""
        j, item, det = self._pending[k]
        found = self.second_look(item, box)
        if found is None:
            return False
        b, score = found
        b = np.asarray(b, np.float32)
        if len(det) and (iou_matrix(b[None], det.boxes) >= 0.3).any():
            return False  # that face was detected: the track is someone else's neighbour
        t.hits.append((j, b.copy(), score))
        t.hits.sort(key=lambda h: h[0])
        self._pending[k] = (j, item, Regions.merge([det, Regions(b[None], [score], np.array([t.kind], object),
                                                                  [t.id], np.array(["detected"], object))]))
        return True

    # -- releasing -----------------------------------------------------------------------------
    def _release(self) -> tuple[T, Regions]:
        frame, item, detected = self._pending.popleft()
        have = set(detected.track_ids.tolist())
        boxes, scores, kinds, ids, sources = [], [], [], [], []
        for t in self._tracks:
            virtual = self._jump_boxes(t, frame)
            if t.id not in have:
                virtual += self._virtual_boxes(t, frame)
            for box, source, score in virtual:
                boxes.append(box); scores.append(score); kinds.append(t.kind); ids.append(t.id); sources.append(source)
        # Forget tracks that can no longer produce a box, and hits no future frame needs.
        horizon = frame + 1 - self.s.hold_after - self.s.max_gap
        self._tracks = [t for t in self._tracks if t.last[0] >= horizon - 1]
        for t in self._tracks:
            while len(t.hits) > 2 and t.hits[1][0] < frame:
                t.hits.pop(0)
        extra = Regions(np.array(boxes, np.float32).reshape(-1, 4), scores, np.array(kinds, object),
                        ids, np.array(sources, object)) if boxes else Regions.empty()
        out = Regions.merge([detected, extra])
        if self.s.jitter_growth > 0 and len(out):
            out = self._grow_by_jitter(out, frame)
        return item, out

    def _grow_by_jitter(self, regions: Regions, frame: int) -> Regions:
        """Each face track's boxes grown by ``jitter_growth`` times its jitter around ``frame``."""
        by_id = {t.id: t for t in self._tracks}
        pad = np.zeros(len(regions), np.float32)
        for i, (tid, kind) in enumerate(zip(regions.track_ids.tolist(), regions.kinds)):
            t = by_id.get(tid)
            if t is None or kind != "face":
                continue
            near = [j for f, j in t.jitter if abs(f - frame) <= JITTER_SPAN]
            if near:
                pad[i] = self.s.jitter_growth * float(np.mean(near))
        if not pad.any():
            return regions
        return regions.with_(boxes=regions.boxes + pad[:, None] * np.array([-1, -1, 1, 1], np.float32))

    def _jump_boxes(self, t: _Track, frame: int) -> list[tuple[np.ndarray, str, float]]:
        """Boxes after each of ``t``'s coming jumps, held back to ``frame`` (see :class:`_Track`).

        Linking by distance (:func:`_similarity`) can hand a track from a face the detector
        missed to a neighbour in a crowd; the neighbour then gets no hold before, as it would
        with a track of its own. So the link is kept (the track goes on) and the first box after
        the jump is also held, growing, for ``hold_before`` frames before it, when the track is
        detected ``jump_hits`` times from the jump on. Only the box where it was (not moved back
        along its motion, as a new track's): that halves the cost, and covered the same faces on
        the bench clips (outside ground truth +0.6 points on video).
        """
        t.jumps = [f for f in t.jumps if f > frame]
        out = []
        for k, f1 in enumerate(t.jumps):
            if f1 - frame > self.s.hold_before:
                break
            end = t.jumps[k + 1] if k + 1 < len(t.jumps) else None
            seg = [h for h in t.hits if h[0] >= f1 and (end is None or h[0] < end)]
            if len(seg) >= self.s.jump_hits:
                _, b1, s1 = seg[0]
                out.append((_grow(b1, self.s.growth * (f1 - frame)), "held", s1))
        return out

    def _virtual_boxes(self, t: _Track, frame: int) -> list[tuple[np.ndarray, str, float]]:
        """Boxes of track ``t`` at ``frame`` where it was not detected: interpolated, or held.

        A held box is both the nearest hit's box where it was and that box moved along the
        track's motion (centre only: sizes of faces entering or leaving at the frame edge change
        fast, and extrapolating them would shrink the mask). Masking both costs a little area and
        covers a wrong guess of the motion.
        """
        before = [h for h in t.hits if h[0] < frame]
        after = [h for h in t.hits if h[0] > frame]
        if before and after:
            (f0, b0, s0), (f1, b1, s1) = before[-1], after[0]
            if f1 - f0 <= self.s.max_gap + 1:
                w = (frame - f0) / (f1 - f0)
                return [(b0 + (b1 - b0) * w, "tracked", min(s0, s1))]
        if after and after[0][0] - frame <= self.s.hold_before:
            f1, b1, s1 = after[0]
            moved = b1
            if len(after) > 1:  # run the track's first motion backwards: entering faces move
                f2, b2, _ = after[1]
                moved = _shift(b1, _centre_velocity(b1, b2, f2 - f1) * (frame - f1))
            grow = self.s.growth * (f1 - frame)
            if self.s.zoom_holds and len(after) > 1:
                grow = max(grow, _zoom(b1, after[1][1], after[1][0] - f1, f1 - frame))
            return [(_grow(b1, grow), "held", s1), (_grow(moved, grow), "held", s1)]
        if before and not after and frame - before[-1][0] <= self.s.hold_after:
            f0, b0, s0 = before[-1]
            moved = b0
            if len(t.hits) >= 2:
                (fa, ba, _), (fb, bb, _) = t.hits[-2], t.hits[-1]
                moved = _shift(b0, _centre_velocity(ba, bb, fb - fa) * (frame - f0))
            grow = self.s.growth * (frame - f0)
            if self.s.zoom_holds and len(t.hits) >= 2:
                (fa, ba, _), (fb, bb, _) = t.hits[-2], t.hits[-1]
                grow = max(grow, _zoom(bb, ba, fb - fa, frame - f0))
            return [(_grow(b0, grow), "held", s0), (_grow(moved, grow), "held", s0)]
        return []


#: A held box grown by the track's zoom (``zoom_holds``) is at most this many times the hit's size.
MAX_ZOOM_HOLD = 1.5


def _zoom(near: np.ndarray, far: np.ndarray, frames: int, away: int) -> float:
    """How much a box held ``away`` frames from hit ``near`` grows (a fraction, as ``_grow``
    takes it) when the track's size changed from ``far`` to ``near`` over ``frames`` frames
    and goes on changing so; 0 when it was shrinking towards ``near``."""
    size = lambda b: float(np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-6)))
    rate = (size(near) / size(far)) ** (1 / max(frames, 1))
    return max(0.0, min(rate ** away, MAX_ZOOM_HOLD) - 1.0)


#: Jitter is averaged over the hits within this many frames of the frame released.
JITTER_SPAN = 8


def _note_jitter(t: _Track) -> None:
    """Record the jitter of ``t``'s second-last hit: the mean distance of its four edges from the
    straight line through the hits before and after it (0 for a box moving smoothly)."""
    t.jitter = [(f, j) for f, j in t.jitter if f >= t.last[0] - 2 * JITTER_SPAN]
    if len(t.hits) < 3:
        return
    (f0, b0, _), (f1, b1, _), (f2, b2, _) = t.hits[-3:]
    if f2 - f0 > JITTER_SPAN:
        return
    line = b0 + (b2 - b0) * ((f1 - f0) / max(f2 - f0, 1))
    t.jitter.append((f1, float(np.abs(b1 - line).mean())))


def _jumped(box: np.ndarray, predicted: np.ndarray, last: np.ndarray) -> bool:
    """A link is a jump when the new box overlaps neither the predicted nor the last box (the
    prediction alone would call the hit after a jump one too: it extrapolates the jump)."""
    return bool((iou_matrix(box[None], np.stack([predicted, last])) <= 0).all())


def _centre_velocity(a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    """Motion per frame of the box centre from ``a`` to ``b`` (2 values)."""
    return ((b[:2] + b[2:]) - (a[:2] + a[2:])) / 2 / max(frames, 1)


def _shift(box: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return box + np.concatenate([delta, delta]).astype(np.float32)


def _similarity(dets: np.ndarray, preds: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Match score and gate between detections and predicted track boxes.

    IoU alone cannot link a small face that moved more than its own width between detections
    (fast pans, or a face missed for a frame before the track has a velocity), so a pair is also
    allowed when the centres are within 1.5 box sizes and the sizes agree within 2x.
    """
    iou = iou_matrix(dets, preds)
    dc = (dets[:, None, :2] + dets[:, None, 2:]) / 2 - (preds[None, :, :2] + preds[None, :, 2:]) / 2
    dist = np.hypot(dc[..., 0], dc[..., 1])
    size_d = np.sqrt(np.maximum((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]), 1e-6))
    size_p = np.sqrt(np.maximum((preds[:, 2] - preds[:, 0]) * (preds[:, 3] - preds[:, 1]), 1e-6))
    size = np.maximum(size_d[:, None], size_p[None, :])
    ratio = np.maximum(size_d[:, None], size_p[None, :]) / np.minimum(size_d[:, None], size_p[None, :])
    near = 1.0 - dist / (1.5 * size)
    allowed = (iou >= min_iou) | ((near > 0) & (ratio <= 2.0))
    return iou + 0.1 * near.clip(0), allowed


def _grow(box: np.ndarray, fraction: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * (1 + fraction) / 2, (box[3] - box[1]) * (1 + fraction) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
