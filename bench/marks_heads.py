"""Heads a face detector cannot see (backs, sides, helmets, hoods): how many the marks mask.

    .venv/bin/python bench/marks_heads.py heads [--detectors centerface,head,person] [--frames 10]

Ground truth is ``bench/heads_set.json``: hand-drawn boxes on photos read in place from
``../shared/eval`` (see its "about"). A head counts as masked when at least 80 % of its box lies
inside the union of the detector's boxes (the face benchmark's rule). "outside" is the share of
the frame masked away from any labelled head (what masking costs the picture; frontal faces and
bodies are part of it). Latency is per 1080p frame (the shared 1080p clip, or the photos
stretched to 1920x1080 when it is absent), measured alternately with CenterFace alone so the
ratio holds on a busy machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anonymize.detectors import create

SHARED = ROOT.parent / "shared" / "eval"
CLIP = SHARED / "videos" / "street_pedestrians_arcade_1080p.mp4"


def mask_of(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
        x1, y1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        mask[y1:max(int(np.ceil(y2)), y1), x1:max(int(np.ceil(x2)), x1)] = True
    return mask


def frames_1080p(n: int, photos: list[np.ndarray]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while cap.isOpened() and len(frames) < n:
        for _ in range(10):  # every 10th frame: different scenes
            ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        frames = [cv2.resize(p, (1920, 1080)) for p in photos[:n]]
    return frames


def _kwargs(spec: str) -> dict:
    """``"head:tiles=2"`` -> ``{"tiles": 2}`` (ints and floats)."""
    out = {}
    for item in spec.split(":")[1:]:
        key, value = item.split("=", 1)
        out[key] = float(value) if "." in value else int(value)
    return out


def heads(args: argparse.Namespace) -> None:
    gt = json.loads((ROOT / "bench" / "heads_set.json").read_text())
    images = []
    for name, boxes in gt["images"].items():
        path = SHARED / gt["root"] / name
        if not path.is_file():
            sys.exit(f"missing {path}: this benchmark needs ../shared/eval")
        images.append((cv2.imread(str(path)), np.asarray(boxes, np.float32)))
    total = sum(len(b) for _, b in images)
    rows = []
    frames = frames_1080p(args.frames, [im for im, _ in images])
    base = create("centerface", threads=args.threads)
    for name in args.detectors.split(","):
        dets = [create(n.split(":")[0], threads=args.threads, **_kwargs(n)) for n in name.split("+")]
        masked = outside = 0.0
        for image, boxes in images:
            h, w = image.shape[:2]
            mask = mask_of(np.concatenate([d.detect(image).boxes for d in dets]), h, w)
            for b in boxes:
                x1, y1, x2, y2 = b.astype(int)
                area = max((x2 - x1) * (y2 - y1), 1)
                masked += mask[y1:y2, x1:x2].sum() / area >= 0.8
            outside += (mask & ~mask_of(boxes, h, w)).mean() / len(images)
        for d in dets:  # warm up
            d.detect(frames[0])
        t_det = t_base = 0.0
        for frame in frames:
            t = time.perf_counter()
            for d in dets:
                d.detect(frame)
            t_det += time.perf_counter() - t
            t = time.perf_counter()
            base.detect(frame)
            t_base += time.perf_counter() - t
        ms, base_ms = 1000 * t_det / len(frames), 1000 * t_base / len(frames)
        rows.append((name, int(masked), total, masked / total, outside, ms, ms / base_ms))
    print(f"{len(images)} photos, {total} labelled heads (backs, sides, helmets, hoods); "
          f"latency over {len(frames)} 1080p frames, {args.threads} threads")
    print("| detectors | heads masked | share | frame masked outside heads | ms / 1080p frame | x CenterFace |")
    print("|---|---|---|---|---|---|")
    for name, m, n, share, out, ms, ratio in rows:
        print(f"| {name} | {m}/{n} | {share:.0%} | {out:.1%} | {ms:.0f} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["heads"])
    parser.add_argument("--detectors", default="centerface,head,person,centerface+head",  # e.g. head:tiles=2
                        help="comma-separated; '+' joins detectors into one mask")
    parser.add_argument("--frames", type=int, default=10, help="1080p frames for the latency")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    heads(args)


if __name__ == "__main__":
    main()
