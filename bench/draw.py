"""Drawing cost alone: the masks of a crowded 1080p frame, today's code against the frozen copies
of the code before the render speed work (tests/masks_reference.py, tests/masks_yuv_reference.py).

    python bench/draw.py [--regions 90] [--frames 20] [--rounds 5] [--style blur] [--shape ellipse]
    python bench/draw.py --plan PLAN.json --clip CLIP.mp4 [--frames 30]

Default: synthetic 1920x1080 frames (a textured picture) with ``--regions`` masks a frame, sized
like the street clip's (a median box ~85 px, 5 % at ~250 px, a fifth of them text boxes), some
cut by the edges, many overlapping; tracked ids so the noise is the per-track one. ``--plan``:
the first ``--frames`` frames of CLIP with that plan's own regions instead (grown as render
grows them). Both paths are timed: BGR (``masks.draw``, detect/one-shot) and yuv420p planes
(``masks_yuv.draw_yuv``, render). Rounds alternate old and new on the same frames; the table
gives the best round's CPU ms a frame (process time; the best, as the least disturbed by other jobs on a shared machine) and checks that
every output byte is the same.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anonymize import masks, masks_yuv  # noqa: E402
from anonymize.regions import Regions  # noqa: E402
from tests import masks_reference as ref, masks_yuv_reference as ref_yuv  # noqa: E402


def synthetic(n_frames: int, n_regions: int, size: float = 85.0, seed: int = 0) -> tuple[list[np.ndarray], list[Regions]]:
    """BGR frames and their (already grown) regions."""
    rng = np.random.default_rng(seed)
    h, w = 1080, 1920
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(xx / (17.0 + 9 * c)) * np.cos(yy / (13.0 + 7 * c)) for c in range(3)], axis=2)
    frames, regions = [], []
    centres = rng.uniform([-40, -40], [w + 40, h + 40], (n_regions, 2))
    sizes = np.exp(rng.normal(np.log(size), 0.5, n_regions))
    kinds = np.where(rng.random(n_regions) < 0.2, "text", "face")
    for i in range(n_frames):
        frames.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
        c = centres + rng.normal(0, 2, centres.shape) + i
        s = sizes * rng.uniform(0.97, 1.03, n_regions)
        boxes = np.stack([c[:, 0] - s / 2, c[:, 1] - s / 2, c[:, 0] + s / 2, c[:, 1] + s * 0.6], axis=1)
        regions.append(Regions(boxes.astype(np.float32), kinds=kinds, track_ids=np.arange(n_regions)))
    return frames, regions


def from_plan(plan: Path, clip: Path, n_frames: int) -> tuple[list[np.ndarray], list[Regions]]:
    from anonymize.api import _sha256
    from anonymize.ffmpeg_tools import probe
    from anonymize.pipeline import grow
    from anonymize.plan import load_plan
    from anonymize.regions_source import PlanRegions
    from anonymize.video import VideoDecoder

    entry = load_plan(plan).entry_for(_sha256(clip))
    frames, regions = [], []
    got = PlanRegions(entry, {}).regions(VideoDecoder(clip, probe(clip)).frames())
    for item, raw in got:
        if len(frames) < n_frames:
            w, h = item.size
            frames.append(item.image)
            regions.append(grow(raw, w, h, entry.geometry))
    return frames, regions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--regions", type=int, default=90)
    p.add_argument("--size", type=float, default=85.0, help="median region size in pixels (synthetic frames)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--style", default="blur", choices=sorted(masks.MASKS))
    p.add_argument("--shape", default="ellipse", choices=masks.SHAPES)
    p.add_argument("--plan", type=Path)
    p.add_argument("--clip", type=Path)
    a = p.parse_args()
    frames, regions = from_plan(a.plan, a.clip, a.frames) if a.plan else synthetic(a.frames, a.regions, a.size)
    yuvs = [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420) for f in frames]
    per_frame = sum(len(r) for r in regions) / len(regions)
    runs = {
        "BGR (masks.draw)": (frames, lambda img, r, st, nz: masks.draw(img, r, st, a.shape, nz), masks, ref.draw, ref),
        "planes (masks_yuv.draw_yuv)": (yuvs, lambda img, r, st, nz: masks_yuv.draw_yuv(img, r, st, a.shape, nz),
                                        masks, lambda img, r, st, shape, nz: ref_yuv.draw_yuv(img, r, st, shape, nz), ref),
    }
    print(f"{len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, {per_frame:.1f} regions/frame, "
          f"{a.style} {a.shape}, best of {a.rounds} alternating rounds (CPU ms a frame)\n")
    print("| path | before | after | x faster | identical |\n|---|---|---|---|---|")
    for name, (images, new, new_mod, old, old_mod) in runs.items():
        times: dict[str, list[float]] = {"old": [], "new": []}
        outs: dict[str, list[np.ndarray]] = {}
        for _ in range(a.rounds):
            for which in ("old", "new"):
                mod = old_mod if which == "old" else new_mod
                style, noise = mod.create_mask(a.style), mod.MaskNoise(7)
                work = [img.copy() for img in images]
                start = time.process_time()
                if which == "old":
                    out = [old(img, r, style, a.shape, noise) for img, r in zip(work, regions)]
                else:
                    out = [new(img, r, style, noise) for img, r in zip(work, regions)]
                times[which].append((time.process_time() - start) / len(images) * 1000)
                outs[which] = out
        same = all(np.array_equal(x, y) for x, y in zip(outs["old"], outs["new"]))
        before, after = min(times["old"]), min(times["new"])
        print(f"| {name} | {before:.1f} | {after:.1f} | {before / after:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
