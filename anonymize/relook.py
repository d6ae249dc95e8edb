"""A second look: the face detector run again on a small window where a track says a face is.

The tracker knows where a face should be in frames the full-frame pass got wrong: the frames
before a track's first detection (it was found late: the look-ahead buffer still holds them) and
the frame after a detection that did not come (the face was missed for a frame). There the
detector is run on a square window around the expected box, resampled to ``INPUT_PX`` pixels
(small faces upscaled, so the face is about a third of the window), at a lower score threshold
(a face is already expected there), with the frame reflected outward where the window passes its
edge (a face cut by the edge then looks nearly whole, as ``--edge-detect`` does for the whole
frame). The found box nearest to the
expected one is the answer, in frame pixels; the caller links it to the track.
"""
from __future__ import annotations

import cv2
import numpy as np

from .regions import iou_matrix

#: The window is a square this many times the expected box's longer side, centred on it.
CONTEXT = 3.0
#: ... resampled to this many pixels a side: one fixed network input shape (the runtime plans
#: it once; a new shape per crop cost ~10x more), the expected face ~1/3 of it.
INPUT_PX = 128
#: A found box answers the query when it overlaps the expected box at least this much.
MIN_IOU = 0.3


class SecondLook:
    """``look(image, box) -> (box, score) | None`` with a detector that has ``boxes_at`` (CenterFace)."""

    def __init__(self, detector, threshold: float, pad: float = 0.0):
        self.detector = detector
        self.threshold = float(threshold)
        self.pad = float(pad)
        self.calls = 0

    def look(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The face nearest ``box`` (x1, y1, x2, y2 in frame pixels) in ``image``, or None."""
        h, w = image.shape[:2]
        bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
        if bw < 2 or bh < 2:
            return None
        side = CONTEXT * max(bw, bh)
        k = INPUT_PX / side
        x0, y0 = (box[0] + box[2]) / 2 - side / 2, (box[1] + box[3]) / 2 - side / 2
        # one warp crops, resamples and reflects the frame outward where the window passes its
        # edge: a face cut by the edge then looks nearly whole (as --edge-detect does)
        m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)
        crop = cv2.warpAffine(image, m, (INPUT_PX, INPUT_PX), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
        self.calls += 1
        boxes, scores = self.detector.boxes_at(crop, 1.0, self.threshold)
        if not len(boxes):
            return None
        found = boxes / np.float32(k) + np.array([x0, y0, x0, y0], np.float32)
        # drop mirror images: a face whose centre is outside the frame is a reflection
        cx, cy = (found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2
        real = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        found, scores = found[real], scores[real]
        if not len(found):
            return None
        if self.pad:
            found = found + np.array([-1, -1, 1, 1], np.float32) * np.float32(self.pad)
        iou = iou_matrix(found, np.asarray(box, np.float32)[None])[:, 0]
        best = int(np.argmax(iou))
        if iou[best] < MIN_IOU:
            return None
        b = found[best].copy()
        # the tracker works on boxes inside the frame, as the full-frame pass gives them
        b[[0, 2]] = b[[0, 2]].clip(0, w)
        b[[1, 3]] = b[[1, 3]].clip(0, h)
        if b[2] <= b[0] or b[3] <= b[1]:
            return None
        return b, float(scores[best])
