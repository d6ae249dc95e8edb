"""Why tracks leak: every unmasked frame of every leaked track of the big video set, by kind.

    python bench/leaks.py --part tune [--cache-detections] [any recall.py option override]

Runs ours as ``bench/recall.py video --part P --no-encode`` does (the same live detect -> track
regions) and, for each counted track (median height >= 32 px) with a face-frame under 80 %
covered, sorts its unmasked frames into:

* ``edge``: the face is cut by the frame edge in that frame;
* ``start`` / ``late``: no mask on the face, before the first frame it is masked in (``start``
  when that run of frames begins at frame 0: nothing before the clip to hold from);
* ``end``: no mask, after the last frame it is masked in;
* ``mid``: no mask, between masked frames (a gap, or the track handed to a neighbour);
* ``short-det`` / ``short-held``: masked in part (5-80 %), by a region the detector found in
  that frame / one the tracker interpolated or held (``lag``).

Each line also says whether any detection of that frame overlaps the face (IoU >= 0.3 with the
raw box), and the coverage. For diagnosis only: tune on ``--part tune``, never on validation.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recall  # noqa: E402
import video_set  # noqa: E402


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detected_in(f: list, rec: dict) -> bool:
    """Whether a detection of that frame (raw box) overlaps the face ``f`` at IoU >= 0.3."""
    gt = (f[0], f[1], f[0] + f[2], f[1] + f[3])
    return any(r["kind"] == "face" and r["source"] == "detected" and iou(r["box"], gt) >= 0.3
               for r in rec.get("raw", []))


def classify(faces_by_frame: dict[int, tuple], covers: dict[int, float], records: dict[int, dict],
             h: int, w: int) -> list[tuple]:
    """``(frame, kind, height, cover, detected, source)`` for each unmasked frame of one face."""
    masked = sorted(i for i, c in covers.items() if c >= recall.wider.COVER)
    out = []
    frames = sorted(covers)
    for i in frames:
        c = covers[i]
        if c >= recall.wider.COVER:
            continue
        f = faces_by_frame[i]
        rec = records.get(i, {"regions": [], "raw": []})
        detected = detected_in(f, rec)
        # the region covering most of the face
        best, src = 0.0, "-"
        box = recall.int_box(*f[:4])
        for r in rec["regions"]:
            m = recall.to_mask(recall.report_regions({"regions": [r]}), h, w)
            cov = recall.wider.score([box], m)[0][1]
            if cov > best:
                best, src = cov, r["source"]
        if len(f) > 5 and f[5] < 0.995:
            kind = "edge"
        elif c >= 0.05:
            kind = "short-det" if src == "detected" else "short-held"
        elif not masked or i < masked[0]:
            run = [j for j in frames if j <= i]
            kind = "start" if frames[0] == 0 and all(covers[j] < 0.05 for j in run) else "late"
        elif i > masked[-1]:
            kind = "end"
        else:
            kind = "mid"
        out.append((i, kind, round(f[3]), round(c, 2), detected, src))
    return out


def track_covers(meta: dict, records: dict[int, dict], h: int, w: int
                 ) -> tuple[dict[int, dict[int, tuple]], dict[int, dict[int, float]]]:
    """Per true face id: its true box in each frame, and the share of that box masked there
    (``records``: the report's frames by index)."""
    tracks: dict[int, dict[int, tuple]] = {}
    covers: dict[int, dict[int, float]] = {}
    for i, faces in enumerate(meta["frames"]):
        regions = recall.report_regions(records.get(i, {"regions": []}))
        rows, _ = recall.score_frame([recall.int_box(*f[:4]) for f in faces], regions, h, w)
        for f, (_, c) in zip(faces, rows):
            tracks.setdefault(f[4], {})[i] = f
            covers.setdefault(f[4], {})[i] = c
    return tracks, covers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=video_set.PARTS, default="tune")
    p.add_argument("--clips-limit", type=int, default=None)
    p.add_argument("--cache-detections", action="store_true")
    p.add_argument("--tracker", action="append", default=[], metavar="FIELD=VALUE")
    pairs = recall.option_overrides(p)
    args = p.parse_args()
    recall.load_metric()
    if args.tracker:
        recall.patch_tracker(dict(kv.split("=", 1) for kv in args.tracker))
    overrides = {name: getattr(args, dest) for name, dest in pairs if getattr(args, dest) is not None}
    ours = recall.Ours(overrides)
    cache = recall.DetectionCache() if args.cache_detections else None
    clips = video_set.clips(args.part, set(recall.pick_clip_photos(6)))[:args.clips_limit]
    kinds: Counter = Counter()
    leaked = counted = never = 0
    with tempfile.TemporaryDirectory(prefix="anonymize-leaks-"):
        for name, seed in clips:
            mp4, meta = video_set.make(name, seed)
            w, h = meta["size"]
            if cache is not None:
                cache.start(mp4, ours.anonymizer)
            report = ours.anonymizer.detect(mp4)
            if cache is not None:
                cache.save()
            records = {r["index"]: r for r in report.frames()}
            tracks, covers = track_covers(meta, records, h, w)
            for fid, by_frame in tracks.items():
                if np.median([f[3] for f in by_frame.values()]) < recall.TRACK_MIN_HEIGHT:
                    continue
                counted += 1
                bad = classify(by_frame, covers[fid], records, h, w)
                if not bad:
                    continue
                leaked += 1
                here = Counter(k for _, k, *_ in bad)
                kinds.update({k: 1 for k in here})
                hits = sum(detected_in(f, records.get(i, {})) for i, f in by_frame.items())
                never += hits == 0
                span = f"frames {min(by_frame)}-{max(by_frame)}, detected in {hits}"
                print(f"{name} s{seed} {meta['motion']} face {fid} ({span}): " + ", ".join(
                    f"{n} {k}" for k, n in here.most_common()))
                for i, kind, bh, c, det, src in bad[:12]:
                    print(f"    frame {i:3d} {kind:10s} {bh:4d} px cover {c:.2f} "
                          f"{'detected' if det else 'not detected'}, best region {src}")
    print(f"{leaked} of {counted} counted tracks leaked ({never} never detected in any frame); "
          f"tracks with each kind: {dict(kinds)}")


if __name__ == "__main__":
    main()
