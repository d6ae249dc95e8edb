"""How much a "detect only around live tracks" pass could save on a clip: its ceiling.

    python bench/sparse_ceiling.py [GT.json ...] [--cell 32] [--margins 0.25,0.5,1]

Between full detections, a sparse pass re-detects crops around every live track (each face's box
grown by ``margin`` times its size per side, plus the detector's 16 px context), at full
resolution. CenterFace is fully convolutional, so its cost is about the pixels it sees; this
prints the share of the frame such crops cover (on a grid of ``--cell`` px cells, as tiles
would), from the ground-truth boxes of a clip made by the shared ``eval/tools/make_video.py``
(default: bench/speed.py's 1080p clip). A share near 1 means the sparse pass costs as much as a
full one before the edge bands and motion regions are even added. Writes nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEFAULT = Path("/tmp/anonymize-bench/speed/silent_1920x1080_4s.json")


def covered(frame: list, width: int, height: int, margin: float, cell: int) -> float:
    """Share of the frame's cells that crops around ``frame``'s boxes ([x, y, w, h, id]) touch."""
    grid = np.zeros((-(-height // cell), -(-width // cell)), bool)
    for x, y, w, h, *_ in frame:
        x0, y0 = max(0.0, x - margin * w - 16), max(0.0, y - margin * h - 16)
        x1, y1 = min(width, x + w + margin * w + 16), min(height, y + h + margin * h + 16)
        if x1 > x0 and y1 > y0:
            grid[int(y0 // cell):int(-(-y1 // cell)), int(x0 // cell):int(-(-x1 // cell))] = True
    return float(grid.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", type=Path, default=[DEFAULT])
    ap.add_argument("--cell", type=int, default=32)
    ap.add_argument("--margins", default="0.25,0.5,1")
    args = ap.parse_args()
    margins = [float(m) for m in args.margins.split(",")]
    print(f"{'clip':40} {'faces/frame':>11} " + " ".join(f"{'margin ' + str(m):>11}" for m in margins))
    for clip in args.clips:
        d = json.load(open(clip))
        w, h = d["size"]
        frames = d["frames"]
        shares = [np.mean([covered(f, w, h, m, args.cell) for f in frames]) for m in margins]
        faces = np.mean([len(f) for f in frames])
        print(f"{clip.name:40} {faces:11.1f} " + " ".join(f"{100 * s:10.1f}%" for s in shares))


if __name__ == "__main__":
    main()
