"""Faces turned by 90/180/270 degrees: what the turned passes (anonymize/rotation.py) gain and cost.

    python bench/rotation.py photos --limit 30     # WIDER photos turned 0/90/180/270, video detector
    python bench/rotation.py video --frames 150    # the shared upright clips: cost of "auto"

``photos``: each WIDER photo (shrunk to at most 1280 px) is turned by each angle, with its
ground truth; the face detector of a video frame (``Engine.detect``, default options, faces only)
runs with ``rotated_faces`` off / auto / always, exactly as on the first frame of a video (where
the probe runs), and every face's coverage is scored with the shared metric (>= 80 % of its box
inside the head masks). ``video``: the first ``--frames`` frames of each upright shared clip go
through ``LiveRegions`` with each mode; printed: seconds, probes, full turned passes and angles
activated (on upright content every activation is a false alarm, and costs full passes).
Shared data is read in place from ``../shared/eval``; nothing made from it is written.
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
EVAL = ROOT.parent / "shared" / "eval"
MODES = ("off", "auto", "always")


def _metric():
    if not (EVAL / "tools" / "wider.py").is_file():
        sys.exit(f"rotation.py: shared evaluation data not found at {EVAL}")
    sys.path.insert(0, str(EVAL / "tools"))
    import wider
    return wider


def turn_gt(boxes: list, k: int, w: int, h: int) -> list:
    """WIDER boxes (x, y, bw, bh) of a photo -> those of ``np.rot90(photo, k)``."""
    out = []
    for x, y, bw, bh in boxes:
        x1, y1, x2, y2 = x, y, x + bw, y + bh
        fw, fh = w, h
        for _ in range(k % 4):  # one counterclockwise quarter turn of an (fw, fh) frame
            x1, y1, x2, y2 = y1, fw - x2, y2, fw - x1
            fw, fh = fh, fw
        out.append([x1, y1, x2 - x1, y2 - y1])
    return out


def photos(args) -> None:
    from anonymize.config import Options
    from anonymize.pipeline import Engine, grow
    from anonymize.regions import Regions
    from anonymize.rotation import RotationWatch

    wider = _metric()
    gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
    names = sorted(gt)[args.offset:args.offset + args.limit]
    engine = Engine(Options(marks=("faces",), threads=args.threads))
    rows: dict[tuple[int, str], list] = {}
    secs: dict[tuple[int, str], float] = {}
    for name in names:
        img = cv2.imread(str(EVAL / "widerface" / "images" / name))
        f = min(1.0, 1280 / max(img.shape[:2]))
        if f < 1:
            img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
        boxes = [[round(v * f) for v in b] for b in gt[name]]
        for k in range(4):
            view = np.ascontiguousarray(np.rot90(img, k))
            h, w = view.shape[:2]
            g = engine.geometry("video", w, h)
            truth = turn_gt(boxes, k, img.shape[1], img.shape[0])
            for mode in MODES:
                t = time.perf_counter()
                found = engine.detect(view, full=True, marks=False)
                watch = RotationWatch(lambda im: engine.detect(im, full=True, marks=False), mode)
                found = Regions.merge([found, watch(view, found, True)])
                secs[(k, mode)] = secs.get((k, mode), 0.0) + time.perf_counter() - t
                masked = grow(found, w, h, g)
                regions = [(*b, "ellipse") for b in masked.boxes.tolist()]
                rows.setdefault((k, mode), []).extend(wider.score(truth, wider.rasterize(regions, h, w)))
    print(f"\n{len(names)} WIDER photos (offset {args.offset}, <= 1280 px), video face detector, default options\n")
    print("| turned | mode | faces >= 16 px | >= 32 px | >= 64 px | s/frame |")
    print("|---|---|---|---|---|---|")
    for k in range(4):
        for mode in MODES:
            r = rows[(k, mode)]
            cells = []
            for lo in (16, 32, 64):
                sel = [c >= wider.COVER for hh, c in r if hh >= lo]
                cells.append(f"{100 * np.mean(sel):.1f} % (n={len(sel)})" if sel else "-")
            print(f"| {90 * k} | {mode} | " + " | ".join(cells) + f" | {secs[(k, mode)] / len(names):.2f} |")


def video(args) -> None:
    from anonymize.config import Options
    from anonymize.ffmpeg_tools import probe
    from anonymize.pipeline import Engine
    from anonymize.regions_source import LiveRegions
    from anonymize.video import VideoDecoder

    clips = sorted((EVAL / "videos").glob("*"))
    if not clips:
        sys.exit(f"rotation.py: no clips in {EVAL / 'videos'}")
    engine = {m: Engine(Options(marks=("faces",), threads=args.threads, rotated_faces=m)) for m in MODES}
    print(f"\nfirst {args.frames} frames of each shared clip, --marks faces, default options\n")
    print("| clip | mode | s | vs off | probes | full turned passes | activations |")
    print("|---|---|---|---|---|---|---|")
    for clip in clips:
        info = probe(clip)
        frames = []
        gen = VideoDecoder(clip, info).frames()
        for fr in gen:
            frames.append(fr)
            if len(frames) >= args.frames:
                break
        gen.close()
        base = None
        for mode in MODES:
            src = LiveRegions(engine[mode], engine[mode].options, float(info.video.fps or 30))
            t = time.perf_counter()
            for _ in src.regions(iter(frames)):
                pass
            s = time.perf_counter() - t
            base = base or s
            w = src.rotation
            print(f"| {clip.name} | {mode} | {s:.1f} | {s / base:.2f}x | {w.probes} | {w.passes} | {w.activations} |",
                  flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("photos", "video"))
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    photos(args) if args.mode == "photos" else video(args)


if __name__ == "__main__":
    main()
