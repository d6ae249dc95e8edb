"""Per-frame cost of the default marks next to faces, timed interleaved on the same 1080p frames.

    python bench/marks_cost.py [--frames 40] [--every 5] [--threads 2] [--text-models ppocr-det-v6s,ppocr-det]

Reads the first ``--frames`` frames of the 1080p clip that ``bench/speed.py`` makes (cached under
/tmp/anonymize-bench/speed; run speed.py once first). Each frame goes through CenterFace (the video
face detector, as the pipeline builds it); every ``--every``-th frame also through the text and
head detectors (the pipeline's ``--marks-every``). Timing them alternately in one process keeps
the ratio meaningful on a machine busy with other work, which end-to-end runs are not.
``--text-models`` times further text weights on the same frames (first = the default's, counted).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = Path("/tmp/anonymize-bench/speed/clip_1920x1080_10s.mp4")


def main() -> None:
    from anonymize.detectors import create
    from anonymize.ffmpeg_tools import ffmpeg_exe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--text-models", type=lambda t: t.split(","), default=[],
                    help="also time these text weights (registry names), e.g. ppocr-det for PP-OCRv4")
    a = ap.parse_args()
    if not CLIP.is_file():
        sys.exit(f"{CLIP} not found: run bench/speed.py once to make it")
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(CLIP), "-frames:v", str(a.frames), "-f", "rawvideo",
                          "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 1080, 1920, 3)
    detectors = {"face": create("centerface", threshold=0.1, threads=a.threads, pad=2),
                 "text": create("text", threads=a.threads), "head": create("head", threads=a.threads)}
    for m in a.text_models:
        if m != detectors["text"].model:
            detectors[f"text ({m})"] = create("text", threads=a.threads, model=m)
    for d in detectors.values():
        d.detect(frames[0])  # warm up
    calls: dict[str, list[float]] = {k: [] for k in detectors}
    for i, frame in enumerate(frames):
        for name, d in detectors.items():
            if name != "face" and i % a.every:
                continue
            t = time.perf_counter()
            d.detect(frame)
            calls[name].append(time.perf_counter() - t)
    per_frame = {k: 1000 * sum(v) / len(frames) for k, v in calls.items()}
    print(f"{len(frames)} 1080p frames, {a.threads} threads, marks every {a.every}th frame")
    print("| detector | ms per call (median) | ms per frame |")
    print("|---|---|---|")
    for k, v in calls.items():
        print(f"| {k} | {1000 * float(np.median(v)):.1f} | {per_frame[k]:.1f} |")
    print(f"default marks cost: +{100 * (per_frame['text'] + per_frame['head']) / per_frame['face']:.1f} % of faces"
          f" (text: {detectors['text'].model})")
    for name in calls:
        if name.startswith("text ("):
            print(f"with {name[6:-1]} instead: +{100 * (per_frame[name] + per_frame['head']) / per_frame['face']:.1f} % of faces")


if __name__ == "__main__":
    main()
