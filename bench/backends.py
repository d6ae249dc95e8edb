"""Which runtime runs CenterFace fastest on this CPU, and does it find the same faces?

    python bench/backends.py [--rounds 5] [--threads 2] [--size 1920x1088] [--qdq /tmp/centerface-int8-qdq.onnx]

Times one CenterFace call (network only, plus the decoder: ``CenterFace.detect``) on the bundled
``sample_media/crowd.jpg`` stretched to ``--size``, for each runtime in turn, round-robin over
``--rounds`` rounds (so a change in the machine's other load falls on all alike), and prints the
median and best ms. Each runtime's detections (threshold 0.1) are compared with onnxruntime fp32's:
faces matched at IoU >= 0.5 both ways, and the largest heatmap difference. Rows:

* ``ort-fp32``: onnxruntime CPU, the float model (``--device cpu``, the reference);
* ``ov-f32``, ``ov-bf16``: the OpenVINO runtime's CPU plugin, INFERENCE_PRECISION_HINT f32 / bf16;
* ``ov-bf16-dynamic``: bf16 with the model compiled once for any input size (the factory compiles
  one model per input shape instead);
* ``ort-int8``: the shipped int8 model (``centerface-int8``, QOperator) on onnxruntime;
* ``ov-int8-qdq``: a QDQ int8 model (``models/build_centerface_int8.py --qdq OUT``) on OpenVINO.

The table in anonymize/runtime.py (``AUTO_ORDER``) cites this script. Writes nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from anonymize.detectors import create
    from anonymize.detectors.centerface import _HEATMAP, _OFFSET, _SCALE
    from anonymize.models import model_path
    from anonymize.regions import iou_matrix
    from anonymize.runtime import OpenVinoSession, openvino_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="1920x1088")
    ap.add_argument("--qdq", type=Path, help="a QDQ int8 CenterFace to run on OpenVINO")
    ap.add_argument("--image", type=Path, default=ROOT / "sample_media" / "crowd.jpg")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    img = cv2.resize(cv2.imread(str(a.image)), (w, h))
    fp32 = str(model_path("centerface"))

    def ov(path: str, precision: str, static: bool = True):
        det = create("centerface", threshold=0.1, threads=a.threads)
        det._session = OpenVinoSession(path, a.threads, precision, static_shapes=static)
        return det

    rows = {"ort-fp32": lambda: create("centerface", threshold=0.1, threads=a.threads, device="cpu"),
            "ort-int8": lambda: create("centerface-int8", threshold=0.1, threads=a.threads, device="cpu")}
    if openvino_precision() is not None:
        rows["ov-f32"] = lambda: ov(fp32, "f32")
        rows["ov-bf16"] = lambda: ov(fp32, "bf16")
        rows["ov-bf16-dynamic"] = lambda: ov(fp32, "bf16", static=False)
        if a.qdq:
            rows["ov-int8-qdq"] = lambda: ov(str(a.qdq), "f32")
            rows["ov-int8-qdq-bf16"] = lambda: ov(str(a.qdq), "bf16")
    dets, times, first = {}, {k: [] for k in rows}, {}
    for name, make in rows.items():
        t = time.perf_counter()
        dets[name] = make()
        for _ in range(OpenVinoSession.STATIC_AFTER):  # compile (OpenVINO: for this shape) / warm up
            dets[name].detect(img)
        first[name] = time.perf_counter() - t
    for _ in range(a.rounds):
        for name, det in dets.items():
            t = time.perf_counter()
            det.detect(img)
            times[name].append(time.perf_counter() - t)

    blob = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
    ref_heat = dets["ort-fp32"]._session.run([_HEATMAP], {dets["ort-fp32"]._input: blob})[0]
    ref = dets["ort-fp32"].detect(img)
    print(f"CenterFace {w}x{h}, {a.threads} threads, {a.rounds} rounds, {a.image.name}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; OpenVINO precision here: {openvino_precision()}")
    print("| runtime | device recorded | median ms | best ms | first call s | faces | matched | max heatmap diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, det in dets.items():
        r = det.detect(img)
        m = iou_matrix(r.boxes, ref.boxes) if len(r) and len(ref) else np.zeros((len(r), len(ref)))
        matched = f"{int((m.max(axis=0) >= 0.5).sum()) if len(r) else 0}/{len(ref)}"
        heat = det._session.run([_HEATMAP, _SCALE, _OFFSET], {det._input: blob})[0]
        print(f"| {name} | {det.models()[0]['device']} | {statistics.median(times[name]) * 1000:.0f} | "
              f"{min(times[name]) * 1000:.0f} | {first[name]:.2f} | {len(r)} | {matched} | "
              f"{float(np.abs(heat - ref_heat).max()):.4f} |", flush=True)


if __name__ == "__main__":
    main()
