"""Probe (issue 4): how much faster is an int8 CenterFace, and how much recall does it keep?

    python bench/int8_probe.py [--photos 60]
    python bench/int8_probe.py --shipped     # the shipped centerface-int8 model instead

Quantizes our rewritten CenterFace graph (onnxruntime static QDQ, opset 13, per-channel int8
weights, uint8 activations, MinMax calibration on frames of the bundled sample clip at 960x544;
nothing from ../shared is used to build the model), then times both on one 1080p frame (2
threads) and counts how many faces >= 16 px that the float model finds on WIDER photos (read in
place from ../shared) the int8 model also finds (IoU >= 0.5). Writes only under /tmp.
Also prints ground-truth recall (share of WIDER faces >= 16 / >= 32 px matched by a detection at
IoU >= 0.3) for both: the "also found" share counts every float box, and most float boxes scoring
0.1-0.2 are not faces, so it understates int8. The MinMax QDQ model built here is not used; the
shipped opt-in model (``--shipped``) is built by ``models/build_centerface_int8.py``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = Path("/tmp/anonymize-bench/int8")
SHARED = ROOT.parent / "shared" / "eval" / "widerface" / "images"


def build() -> Path:
    import onnx
    import onnxruntime as ort
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from anonymize.models import model_path
    from anonymize.ffmpeg_tools import ffmpeg_exe

    WORK.mkdir(parents=True, exist_ok=True)
    # per-channel DequantizeLinear needs opset >= 13; the shipped graph is opset 9
    onnx.save(version_converter.convert_version(onnx.load(str(model_path("centerface"))), 13), str(WORK / "fp32.onnx"))
    quant_pre_process(str(WORK / "fp32.onnx"), str(WORK / "pre.onnx"), skip_symbolic_shape=True)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(ROOT / "sample_media" / "crowd.mp4"), "-vf",
                          "scale=960:544", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 544, 960, 3)
    name = ort.InferenceSession(str(WORK / "pre.onnx"), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(frames)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {name: np.ascontiguousarray(f[:, :, ::-1].transpose(2, 0, 1)[None],
                                                                       dtype=np.float32)}

    quantize_static(str(WORK / "pre.onnx"), str(WORK / "int8.onnx"), Frames(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return WORK / "int8.onnx"


def main() -> None:
    import onnxruntime as ort

    from anonymize.detectors.centerface import CenterFace
    from anonymize.regions import iou_matrix

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--shipped", action="store_true", help="measure the shipped centerface-int8 model")
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: this probe needs ../shared/eval")
    sys.path.insert(0, str(SHARED.parents[1] / "tools"))
    import wider  # the shared ground-truth loader, read in place

    from anonymize.models import model_path

    model = model_path("centerface-int8") if a.shipped else build()
    fp, q = CenterFace(threshold=0.1, threads=2, pad=2), CenterFace(threshold=0.1, threads=2, pad=2)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 2, 3
    q._session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    paths = sorted(SHARED.glob("*/*.jpg"))
    frame = cv2.resize(cv2.imread(str(paths[0])), (1920, 1080))
    for label, det in (("float32", fp), ("int8", q)):
        det.detect(frame)
        times = []
        for _ in range(6):
            t = time.perf_counter()
            det.detect(frame)
            times.append(time.perf_counter() - t)
        print(f"{label}: {1000 * float(np.median(times)):.1f} ms per 1080p frame (median of 6, 2 threads)")
    gt = wider.load_gt(SHARED.parent / "gt.txt")
    hit = total = 0
    found = {"float32": {16: [], 32: []}, "int8": {16: [], 32: []}}
    for p in paths[::8][:a.photos]:
        im = cv2.imread(str(p))
        ref, got = fp.detect(im), q.detect(im)
        big = ref.boxes[ref.heights >= 16]
        if len(big):
            total += len(big)
            hit += int((iou_matrix(big, got.boxes).max(axis=1) >= 0.5).sum()) if len(got) else 0
        g = np.array([[x, y, x + w, y + h] for x, y, w, h in gt.get(str(p.relative_to(SHARED)), [])], np.float32)
        for label, r in (("float32", ref), ("int8", got)):
            if len(g):
                matched = iou_matrix(g, r.boxes).max(axis=1) >= 0.3 if len(r) else np.zeros(len(g), bool)
                for low in (16, 32):
                    found[label][low] += matched[g[:, 3] - g[:, 1] >= low].tolist()
    print(f"{a.photos} WIDER photos: float32 faces >= 16 px also found by int8: {hit}/{total} = {100 * hit / max(total, 1):.1f} %")
    for label, by in found.items():
        print(f"  {label}: ground-truth faces found (IoU >= 0.3) >= 16 px {100 * np.mean(by[16]):.2f} % "
              f"(n={len(by[16])}), >= 32 px {100 * np.mean(by[32]):.2f} % (n={len(by[32])})")


if __name__ == "__main__":
    main()
