"""Tracking: never let a face flash unmasked between, before or after its detections.

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

import heapq
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Generic, Iterator, Optional, TypeVar

import numpy as np
from .assignment import augment, linear_sum_assignment
from .regions import Regions, iou_matrix, iou_pairs

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
    # Entries of ``jitter`` before this frame are forgotten (trimmed lazily: see :func:`_note_jitter`).
    jitter_floor: int = -(1 << 62)

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
        live = [t for t in self._tracks if frame - t.hits[-1][0] <= self.s.max_gap]
        ids = np.full(len(dets), -1, np.int64)
        if len(dets) and live:
            preds, lasts = _predictions(live, frame)
            rows, cols = _match(dets.boxes, dets.kinds, preds, np.array([t.kind for t in live], dtype=object),
                                self.s.min_iou)
            if len(rows):
                boxes = dets.boxes[rows]  # a copy: the hits own their boxes
                jumped = _jumped(boxes, preds[cols], lasts[cols]).tolist()
                matched = [live[c] for c in cols.tolist()]
                for r, t, box, score, jump in zip(rows.tolist(), matched, boxes, dets.scores[rows].tolist(), jumped):
                    ids[r] = t.id
                    if jump:
                        t.jumps.append(frame)
                    t.hits.append((frame, box, score))
                if self.s.jitter_growth > 0:
                    _note_jitter(matched, frame)
        for r in np.flatnonzero(ids < 0):
            track = _Track(self._next_id, str(dets.kinds[r]), [(frame, dets.boxes[r].copy(), float(dets.scores[r]))])
            self._tracks.append(track)
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
        boxes = _HeldBoxes()
        for t in self._tracks:
            if t.jumps:
                self._jump_boxes(t, frame, boxes)
            if t.id not in have:
                self._virtual_boxes(t, frame, boxes)
        # Forget tracks that can no longer produce a box, and hits no future frame needs.
        horizon = frame + 1 - self.s.hold_after - self.s.max_gap
        self._tracks = [t for t in self._tracks if t.hits[-1][0] >= horizon - 1]
        for t in self._tracks:
            hits = t.hits
            while len(hits) > 2 and hits[1][0] < frame:
                hits.pop(0)
        out = Regions.merge([detected, boxes.regions()])
        if self.s.jitter_growth > 0 and len(out):
            out = self._grow_by_jitter(out, frame)
        return item, out

    def _grow_by_jitter(self, regions: Regions, frame: int) -> Regions:
        """Each face track's boxes grown by ``jitter_growth`` times its jitter around ``frame``."""
        faces = regions.kinds == "face"
        if not faces.any():
            return regions
        face_ids = regions.track_ids[faces]
        by_id = {t.id: t for t in self._tracks}
        pads = _jitter_pads([by_id[i] for i in set(face_ids.tolist()) if i in by_id], frame, self.s.jitter_growth)
        if not pads:
            return regions
        pad = np.zeros(len(regions), np.float32)
        pad[faces] = [pads.get(i, 0.0) for i in face_ids.tolist()]
        if not pad.any():
            return regions
        return regions.with_(boxes=regions.boxes + pad[:, None] * np.array([-1, -1, 1, 1], np.float32))

    def _jump_boxes(self, t: _Track, frame: int, out: "_HeldBoxes") -> None:
        """Boxes after each of ``t``'s coming jumps, held back to ``frame`` (see :class:`_Track`),
        added to ``out``.

        Linking by distance (:func:`_similarity`) can hand a track from a face the detector
        missed to a neighbour in a crowd; the neighbour then gets no hold before, as it would
        with a track of its own. So the link is kept (the track goes on) and the first box after
        the jump is also held, growing, for ``hold_before`` frames before it, when the track is
        detected ``jump_hits`` times from the jump on. Only the box where it was (not moved back
        along its motion, as a new track's): that halves the cost, and covered the same faces on
        the bench clips (outside ground truth +0.6 points on video).
        """
        t.jumps = [f for f in t.jumps if f > frame]
        for k, f1 in enumerate(t.jumps):
            if f1 - frame > self.s.hold_before:
                break
            end = t.jumps[k + 1] if k + 1 < len(t.jumps) else None
            seg = [h for h in t.hits if h[0] >= f1 and (end is None or h[0] < end)]
            if len(seg) >= self.s.jump_hits:
                _, b1, s1 = seg[0]
                out.grown(t, b1, self.s.growth * (f1 - frame), "held", s1)

    def _virtual_boxes(self, t: _Track, frame: int, out: "_HeldBoxes") -> None:
        """Boxes of track ``t`` at ``frame`` where it was not detected, added to ``out``:
        interpolated, or held.

        A held box is both the nearest hit's box where it was and that box moved along the
        track's motion (centre only: sizes of faces entering or leaving at the frame edge change
        fast, and extrapolating them would shrink the mask). Masking both costs a little area and
        covers a wrong guess of the motion.
        """
        hits = t.hits  # in frame order, one per frame
        i, j = bisect_left(hits, frame, key=_FRAME), bisect_right(hits, frame, key=_FRAME)
        n_after = len(hits) - j
        if i and n_after:
            (f0, b0, s0), (f1, b1, s1) = hits[i - 1], hits[j]
            if f1 - f0 <= self.s.max_gap + 1:
                out.between(t, b0, b1, (frame - f0) / (f1 - f0), min(s0, s1))
                return
        if n_after and hits[j][0] - frame <= self.s.hold_before:
            f1, b1, s1 = hits[j]
            grow = self.s.growth * (f1 - frame)
            if n_after > 1:  # run the track's first motion backwards: entering faces move
                f2, b2, _ = hits[j + 1]
                if self.s.zoom_holds:
                    grow = max(grow, _zoom(b1, b2, f2 - f1, f1 - frame))
                out.held(t, b1, grow, s1, b1, b2, f2 - f1, frame - f1)
            else:
                out.held(t, b1, grow, s1)
            return
        if i and not n_after and frame - hits[i - 1][0] <= self.s.hold_after:
            f0, b0, s0 = hits[i - 1]
            grow = self.s.growth * (frame - f0)
            if len(hits) >= 2:
                (fa, ba, _), (fb, bb, _) = hits[-2], hits[-1]
                if self.s.zoom_holds:
                    grow = max(grow, _zoom(bb, ba, fb - fa, frame - f0))
                out.held(t, b0, grow, s0, ba, bb, fb - fa, frame - f0)
            else:
                out.held(t, b0, grow, s0)


_FRAME = itemgetter(0)


class _HeldBoxes:
    """The boxes the tracker adds to a released frame, gathered track by track in order and
    computed together (numpy on all of them at once, not on each 4-vector): the same float32
    arithmetic, element for element, as the per-box helpers :func:`_grow`, :func:`_shift` and
    :func:`_centre_velocity`."""

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.kinds: list[str] = []
        self.ids: list[int] = []
        self.sources: list[str] = []
        self.at: list[int] = []  # per box: its row in ``grow`` (>= 0) or -1 - its row in ``mid``
        self.grow_boxes: list[np.ndarray] = []  # boxes grown by ``grow_by`` (a row of ``moved``: None)
        self.grow_by: list[float] = []
        self.moved: list[tuple] = []  # (box, a, b, frames, away, row in grow_boxes)
        self.mid: list[tuple] = []  # (b0, b1, weight)

    def _add(self, t: _Track, source: str, score: float, at: int) -> None:
        self.scores.append(score); self.kinds.append(t.kind); self.ids.append(t.id)
        self.sources.append(source); self.at.append(at)

    def grown(self, t: _Track, box: np.ndarray, fraction: float, source: str, score: float) -> None:
        """``_grow(box, fraction)``."""
        self._add(t, source, score, len(self.grow_boxes))
        self.grow_boxes.append(box); self.grow_by.append(fraction)

    def held(self, t: _Track, box: np.ndarray, fraction: float, score: float, a=None, b=None, frames=0,
             away=0) -> None:
        """The two held boxes: ``box`` and ``box`` moved by the centre motion from ``a`` to ``b``
        over ``frames`` times ``away`` (no ``a``: not moved), both grown by ``fraction``."""
        self.grown(t, box, fraction, "held", score)
        if a is None:
            self.grown(t, box, fraction, "held", score)
            return
        self.moved.append((box, a, b, frames, away, len(self.grow_boxes)))
        self.grown(t, box, fraction, "held", score)

    def between(self, t: _Track, b0: np.ndarray, b1: np.ndarray, weight: float, score: float) -> None:
        """``b0 + (b1 - b0) * weight``."""
        self._add(t, "tracked", score, -1 - len(self.mid))
        self.mid.append((b0, b1, weight))

    def regions(self) -> Regions:
        if not self.at:
            return Regions.empty()
        f32 = np.float32
        out = np.empty((len(self.at), 4), f32)
        at = np.array(self.at, np.int64)
        if self.grow_boxes:
            src = np.array(self.grow_boxes, f32).reshape(-1, 4)
            if self.moved:
                box, a, b, frames, away, row = zip(*self.moved)
                a, b = np.array(a, f32), np.array(b, f32)
                cv = ((b[:, :2] + b[:, 2:]) - (a[:, :2] + a[:, 2:])) / 2 / np.maximum(frames, 1).astype(f32)[:, None]
                delta = cv * np.array(away, f32)[:, None]
                src[list(row)] = np.array(box, f32) + np.concatenate([delta, delta], axis=1)
            cx, cy = (src[:, 0] + src[:, 2]) / 2, (src[:, 1] + src[:, 3]) / 2
            k = (1 + np.array(self.grow_by, np.float64)).astype(f32)  # as float32 * a Python float
            hw, hh = (src[:, 2] - src[:, 0]) * k / 2, (src[:, 3] - src[:, 1]) * k / 2
            out[at >= 0] = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)[at[at >= 0]]
        if self.mid:
            b0, b1, w = zip(*self.mid)
            b0, b1 = np.array(b0, f32), np.array(b1, f32)
            out[at < 0] = (b0 + (b1 - b0) * np.array(w, np.float64).astype(f32)[:, None])[-1 - at[at < 0]]
        return Regions(out, self.scores, np.array(self.kinds, object), self.ids, np.array(self.sources, object))


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


def _note_jitter(tracks: list[_Track], frame: int) -> None:
    """Record the jitter of each track's second-last hit (the tracks just linked at ``frame``):
    the mean distance of its four edges from the straight line through the hits before and after
    it (0 for a box moving smoothly). Entries more than ``2 * JITTER_SPAN`` frames before the
    last hit are forgotten: ``jitter_floor`` says so at once, the list is trimmed when it has some."""
    floor = frame - 2 * JITTER_SPAN
    todo = []
    for t in tracks:
        t.jitter_floor = floor
        if t.jitter and t.jitter[0][0] < floor:
            t.jitter = [(f, j) for f, j in t.jitter if f >= floor]
        if len(t.hits) >= 3:
            h0, h1, h2 = t.hits[-3:]
            if h2[0] - h0[0] <= JITTER_SPAN:
                todo.append((t, h0, h1, h2))
    if not todo:
        return
    f0, f1, f2 = (np.array([h[k][0] for h in todo], np.int64) for k in (1, 2, 3))
    b0, b1, b2 = (np.array([h[k][1] for h in todo], np.float32) for k in (1, 2, 3))
    # as b0 + (b2 - b0) * ((f1 - f0) / max(f2 - f0, 1)) per track: the Python float taken as a float32
    w = ((f1 - f0) / np.maximum(f2 - f0, 1)).astype(np.float32)
    line = b0 + (b2 - b0) * w[:, None]
    for (t, _, _, _), f, j in zip(todo, f1.tolist(), np.abs(b1 - line).mean(axis=1).tolist()):
        t.jitter.append((f, j))


def _jitter_pads(tracks: list[_Track], frame: int, growth: float) -> dict[int, float]:
    """By track id: how far each track's boxes at ``frame`` grow on each side, ``growth`` times
    its mean jitter over the hits within ``JITTER_SPAN`` frames (tracks without any: left out).

    The means of equally long lists are taken together, as rows of one array: numpy sums each
    row as it sums the list alone (tests/test_track_unchanged.py checks that it does)."""
    by_len: dict[int, tuple[list, list]] = {}
    for t in tracks:
        lo, hi = max(t.jitter_floor, frame - JITTER_SPAN), frame + JITTER_SPAN
        near = [j for f, j in t.jitter if lo <= f <= hi]
        if near:
            ids, rows = by_len.setdefault(len(near), ([], []))
            ids.append(t.id)
            rows.append(near)
    pads = {}
    for ids, rows in by_len.values():
        for i, m in zip(ids, np.array(rows, np.float64).mean(axis=1).tolist()):
            pads[i] = growth * m
    return pads


def _predictions(live: list[_Track], frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Each track's :meth:`_Track.predict` at ``frame`` and its last box, as (n, 4) arrays (the
    same float32 arithmetic, on all tracks at once)."""
    last = [t.hits[-1] for t in live]
    f1 = np.array([h[0] for h in last], np.int64)
    b1 = np.array([h[1] for h in last], np.float32).reshape(-1, 4)
    v = np.zeros_like(b1)
    two = [i for i, t in enumerate(live) if len(t.hits) >= 2]
    if two:
        prev = [live[i].hits[-2] for i in two]
        f0 = np.array([h[0] for h in prev], np.int64)
        b0 = np.array([h[1] for h in prev], np.float32)
        v[two] = (b1[two] - b0) / np.maximum(f1[two] - f0, 1).astype(np.float32)[:, None]
    return b1 + v * (frame - f1).astype(np.float32)[:, None], b1


def _jumped(box: np.ndarray, predicted: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Per row: a link is a jump when the new box overlaps neither the predicted nor the last
    box (the prediction alone would call the hit after a jump one too: it extrapolates the jump)."""
    return (iou_pairs(box, predicted) <= 0) & (iou_pairs(box, last) <= 0)


def _centre_velocity(a: np.ndarray, b: np.ndarray, frames: int) -> np.ndarray:
    """Motion per frame of the box centre from ``a`` to ``b`` (2 values)."""
    return ((b[:2] + b[2:]) - (a[:2] + a[2:])) / 2 / max(frames, 1)


def _shift(box: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return box + np.concatenate([delta, delta]).astype(np.float32)


def _match(dets: np.ndarray, det_kinds: np.ndarray, preds: np.ndarray, pred_kinds: np.ndarray,
           min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """The links of detections to predicted track boxes: rows (ascending) and columns of the
    allowed pairs (:func:`_similarity`, same kind) in the optimal assignment of the whole frame
    (:func:`~.assignment.linear_sum_assignment` on ``-similarity``, +1 where not allowed).

    That assignment's allowed pairs are the matching of allowed pairs of the largest total
    ``1 + similarity``. Each detection can only link to tracks nearby, so that matching is found
    on the allowed pairs alone (:func:`_sparse_matching`, a few thousand pairs where the whole
    frame's matrix has a few hundred thousand cells); when :func:`_only_best` proves that it is
    the only best one (by more than a rounding margin), it is the whole frame's assignment. Else
    (a tie, or a near one) the whole frame is solved at once, as before. Either way the links
    are the same.
    """
    nd, nt = len(dets), len(preds)
    if min_iou > 0:
        r, c = _near_pairs(dets, preds)
    else:  # every pair passes the IoU gate
        r, c = np.divmod(np.arange(nd * nt, dtype=np.int64), nt)
    same = det_kinds[r] == pred_kinds[c]
    r, c = r[same], c[same]
    sim, allowed = _similarity(dets[r], preds[c], min_iou)
    r, c, sim = r[allowed], c[allowed], sim[allowed]
    if not len(r):
        return r, c
    take = _sparse_matching(r, c, sim, nd, nt)
    if not _only_best(r, c, 1.0 + sim.astype(np.float64), take, nd, nt):  # a tie, or a near one
        return dense_matching(r, c, sim, nd, nt)
    rows, cols = r[take], c[take]
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


#: :func:`_only_best` asks every other matching to be worse by at least this much (the solvers'
#: rounding errors on sums of a few hundred terms of size ~1 are far below it).
MATCH_MARGIN = 1e-7


def _only_best(r: np.ndarray, c: np.ndarray, weight: np.ndarray, take: np.ndarray, nd: int, nt: int,
               most_rounds: int = 100) -> bool:
    """True when the matching ``take`` of the pairs ``(r, c)`` is the only one of the largest
    total ``weight``, every other matching being lighter by ``MATCH_MARGIN`` at least.

    Any other matching differs from it by alternating paths and cycles; it is proved when none
    of them gains: shortest paths (Bellman-Ford, all pairs relaxed at once) from every unmatched
    row and matched column, over "add a pair" (row -> column, length -weight) and "drop a
    matched pair" (column -> row, +weight) steps, each shortened by the margin, must not end
    below 0 at an unmatched column or after a drop, and must settle (no cycle that gains)
    within ``most_rounds`` rounds (else: not proved).
    """
    mr, mc, mw = r[take], c[take], weight[take] - MATCH_MARGIN
    ar, ac, aw = r[~take], c[~take], weight[~take] + MATCH_MARGIN
    free_c = np.ones(nt, bool)
    free_c[mc] = False
    dist_r = np.zeros(nd)
    dist_r[mr] = np.inf
    dist_c = np.where(free_c, np.inf, 0.0)
    order = np.argsort(ac, kind="stable")
    ar, ac, aw = ar[order], ac[order], aw[order]
    starts = np.flatnonzero(np.r_[True, ac[1:] != ac[:-1]]) if len(ac) else np.zeros(0, np.int64)
    cols = ac[starts]
    for _ in range(most_rounds):
        new_c = dist_c.copy()
        if len(ac):
            new_c[cols] = np.minimum(dist_c[cols], np.minimum.reduceat(dist_r[ar] - aw, starts))
        new_r = dist_r.copy()
        new_r[mr] = np.minimum(dist_r[mr], new_c[mc] + mw)
        if np.array_equal(new_c, dist_c) and np.array_equal(new_r, dist_r):
            return bool((dist_c[free_c] > 0).all() and (dist_r[mr] > 0).all())
        dist_c, dist_r = new_c, new_r
    return False


def _sparse_matching(r: np.ndarray, c: np.ndarray, sim: np.ndarray, nd: int, nt: int) -> np.ndarray:
    """A matching of the largest total ``1 + similarity`` over the pairs ``(r, c)`` (a mask over
    them): shortest augmenting paths as in :mod:`.assignment`, each row in turn, but over the
    allowed pairs only (Dijkstra with a heap), each row free to stay unmatched (a private
    column at cost 0) instead of taking a disallowed pair at cost 1."""
    order = np.argsort(r, kind="stable")
    cols = c[order].tolist()
    costs = (-(1.0 + sim[order].astype(np.float64))).tolist()
    start = np.searchsorted(r[order], np.arange(nd + 1)).tolist()
    inf = float("inf")
    u = [0.0] * nd
    v = [0.0] * (nt + nd)  # real columns, then each row's own "unmatched" column
    row4col = [-1] * (nt + nd)
    col4row = [-1] * nd
    push, pop = heapq.heappush, heapq.heappop
    for cur in np.unique(r).tolist():
        dist: dict[int, float] = {}
        path: dict[int, int] = {}
        done: list[int] = []
        final: set[int] = set()
        rows, d_rows = [cur], [0.0]
        heap: list = []
        i, di = cur, 0.0
        while True:
            ui = u[i]
            a, b = start[i], start[i + 1]
            for j, w in zip(cols[a:b] + [nt + i], costs[a:b] + [0.0]):
                if j in final:
                    continue
                d = di + w - ui - v[j]
                if d < dist.get(j, inf):
                    dist[j] = d
                    path[j] = i
                    push(heap, (d, j))
            while True:
                d, j = pop(heap)
                if j not in final and dist[j] == d:
                    break
            final.add(j)
            done.append(j)
            if row4col[j] == -1:
                sink, top = j, d
                break
            i, di = row4col[j], d
            rows.append(i)
            d_rows.append(d)
        for i, d in zip(rows, d_rows):
            u[i] += top - d
        for j in done:
            v[j] -= top - dist[j]
        augment(path, row4col, col4row, sink, cur)
    matched = [i * nt + j for i, j in enumerate(col4row) if 0 <= j < nt]
    return np.isin(r * nt + c, np.array(matched, np.int64))


def dense_matching(r: np.ndarray, c: np.ndarray, sim: np.ndarray, nd: int, nt: int) -> tuple[np.ndarray, np.ndarray]:
    """The best matching of the allowed pairs ``(r[k], c[k])`` (similarity ``sim[k]``) solved on the
    whole ``nd`` x ``nt`` matrix (+1 where not allowed), as the tracker always did: the fallback of
    :func:`_sparse_matching` when its answer is not proved the only best. Rows ascending."""
    cost = np.ones((nd, nt))
    cost[r, c] = -sim.astype(np.float64)
    link = np.zeros((nd, nt), bool)
    link[r, c] = True
    rows, cols = linear_sum_assignment(cost)
    keep = link[rows, cols]
    return rows[keep], cols[keep]


def _near_pairs(dets: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, track) pair that :func:`_similarity` could allow at a positive IoU
    gate, and some more: centres closer on both axes than the sum of the boxes' reaches (half
    their width or height, or 1.5 times their size, with a margin for float32 rounding). A pair
    the gate allows overlaps (IoU > 0) or has centres within 1.5 of the larger size."""
    def centres_reach(b: np.ndarray):
        b = b.astype(np.float64)
        w, h = np.abs(b[:, 2] - b[:, 0]), np.abs(b[:, 3] - b[:, 1])
        reach = np.maximum(np.maximum(w, h) / 2, 1.5 * np.sqrt(np.maximum(w * h, 1e-6))) * 1.001 + 1.0
        return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, reach

    xd, yd, rd = centres_reach(dets)
    xp, yp, rp = centres_reach(preds)
    reach = rd[:, None] + rp[None, :]
    near = (np.abs(xd[:, None] - xp[None, :]) <= reach) & (np.abs(yd[:, None] - yp[None, :]) <= reach)
    return np.nonzero(near)


def _similarity(dets: np.ndarray, preds: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Match score and gate between each detection and the predicted track box in its row
    ((n, 4) each; float32, as the tracker has always computed them).

    IoU alone cannot link a small face that moved more than its own width between detections
    (fast pans, or a face missed for a frame before the track has a velocity), so a pair is also
    allowed when the centres are within 1.5 box sizes and the sizes agree within 2x.
    """
    iou = iou_pairs(dets, preds)
    dc = (dets[:, :2] + dets[:, 2:]) / 2 - (preds[:, :2] + preds[:, 2:]) / 2
    dist = np.hypot(dc[:, 0], dc[:, 1])
    size_d = np.sqrt(np.maximum((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]), 1e-6))
    size_p = np.sqrt(np.maximum((preds[:, 2] - preds[:, 0]) * (preds[:, 3] - preds[:, 1]), 1e-6))
    size = np.maximum(size_d, size_p)
    ratio = np.maximum(size_d, size_p) / np.minimum(size_d, size_p)
    near = 1.0 - dist / (1.5 * size)
    allowed = (iou >= min_iou) | ((near > 0) & (ratio <= 2.0))
    return iou + 0.1 * near.clip(0), allowed


def _grow(box: np.ndarray, fraction: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * (1 + fraction) / 2, (box[3] - box[1]) * (1 + fraction) / 2
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)
