"""How often ``anonymize audit`` catches a face left visible, and how often it cries wolf.

On shared WIDER FACE photos of assemblies (read in place from ``<repo>/../shared/eval``; nothing
made from them is written inside the repository): each photo is copied as PNG to a temporary
folder and anonymized by our pipeline (``Anonymizer(marks="faces").file``; ``--marks`` for others:
with the default marks the heads are masked too, and a pasted-back face then sits in an island of
blur that a face the pipeline really missed would not have; seed 1 with the default marks: 77.7 %
flagged instead of 89.4 %); then the original pixels of a few
randomly chosen ground-truth faces (seeded; ``--per-image``, faces >= 16 px) are pasted back into
the output, as if the pipeline had missed them (``--restore-scale 1.5``: the whole head around
the box, as a real miss looks; the tight box inside a mask is the harder case). The audit's own
decision (``Auditor.suspects``: RetinaFace, mask-likeness test, second look) is run on that
picture and on the untouched output.

Reported:

- **restored faces flagged**, by height (>= 32 px, 16-32 px): a suspect box overlaps the restored
  ground-truth box with IoU >= 0.3 or covers its centre. Target: >= 95 % of those >= 32 px.
  Also split by WIDER's own occlusion attribute (none / partial / heavy): a "face" marked heavily
  occluded is often a hand, a sign or the back of a head with no face to see.
- **masked faces flagged**: the same test on ground-truth faces >= 32 px that our pipeline did
  mask (>= 80 % of the box, the shared metric) and that touch no restored face: false alarms.
- **findings per clean output**: suspects in the untouched outputs, split by what they sit on
  (:func:`kinds`): a ground-truth face our pipeline left under 80 % masked (a true finding), only
  masked ground-truth faces (a false alarm on a mask), or no labelled face (mostly false alarms:
  hands, knees, signs, headlights; now and then a face WIDER did not label).
- with ``--against``: share of restored faces (>= 32 px) that the recognition check flags as
  leaks (``anonymize.audit.leaking``), and of masked faces it wrongly flags; and the audit's
  flags with the original at hand (any finding the audit reports: a suspect, an input face whose
  pixels are unchanged, ``Auditor.unchanged``, or a recognised face, ``Auditor.leaks``), restored
  and masked, and its findings per clean output, split the same way.

Usage::

    python bench/audit_recall.py --images 50 [--per-image 3] [--seed 0] [--mask blur] [--against] [--json OUT]
    python bench/audit_recall.py --seed 1 --cache /tmp/audit-cache      # keep/reuse our pipeline's outputs
    python bench/audit_recall.py --seed 1 --set threshold=0.3 --set flip=false   # other AuditSettings

``--cache DIR`` (outside the repository: the outputs show the shared photos) keeps each photo's
output and masked regions there and reuses them on later runs with the same seed and mask, so that
audit settings can be compared on the same outputs; delete it when the pipeline changes.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval"


def flagged(boxes: np.ndarray, gt: list[int]) -> bool:
    """Does any (x1, y1, x2, y2) box overlap the ground-truth (x, y, w, h) with IoU >= 0.3, or cover its centre?"""
    if not len(boxes):
        return False
    x, y, w, h = gt
    ix = np.clip(np.minimum(boxes[:, 2], x + w) - np.maximum(boxes[:, 0], x), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], y + h) - np.maximum(boxes[:, 1], y), 0, None)
    inter = ix * iy
    iou = inter / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + w * h - inter)
    cx, cy = x + w / 2, y + h / 2
    centre = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
    return bool(((iou >= 0.3) | centre).any())


def occlusion(gt_file: Path) -> dict[tuple[str, tuple[int, ...]], int]:
    """WIDER's occlusion attribute (0 none, 1 partial, 2 heavy) of each (photo, (x, y, w, h)) box:
    the shared metric's loader drops the attributes, so gt.txt is read here again."""
    lines, out, i = gt_file.read_text().split("\n"), {}, 0
    while i < len(lines) and lines[i].strip():
        name, n = lines[i].strip(), int(lines[i + 1])
        for line in lines[i + 2:i + 2 + max(n, 1)]:
            v = [int(float(t)) for t in line.split()]
            if len(v) >= 10:
                out[name, tuple(v[:4])] = v[8]
        i += 2 + max(n, 1)
    return out


def kinds(boxes: np.ndarray, faces: list[list[int]], cover: list[float]) -> np.ndarray:
    """Counts of findings in an untouched output by what they sit on: [a ground-truth face our
    pipeline left under 80 % masked (a true finding), only masked ground-truth faces (a false
    alarm on a mask), no ground-truth face (a false alarm, or a face WIDER did not label)]."""
    out = np.zeros(3, int)
    for box in np.asarray(boxes).reshape(-1, 4):
        hit = [c for b, c in zip(faces, cover) if flagged(box[None], b)]
        out[0 if any(c < 0.8 for c in hit) else 1 if hit else 2] += 1
    return out


def touches(a: list[int], b: list[int]) -> bool:
    return not (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1])


def grown(box: list[int], factor: float) -> list[int]:
    """(x, y, w, h) grown about its centre by ``factor``, clipped at 0."""
    x, y, w, h = box
    g = (factor - 1) / 2
    x0, y0 = max(int(x - g * w), 0), max(int(y - g * h), 0)
    return [x0, y0, int(x + w + g * w) - x0, int(y + h + g * h) - y0]


def describe(per_output: np.ndarray) -> str:
    on_missed, on_masked, elsewhere = per_output
    return f"{on_missed:.2f} on faces we missed, {on_masked:.2f} on masked faces, {elsewhere:.2f} on no labelled face"


def share(values: list[bool]) -> str:
    return f"{100 * np.mean(values):5.1f}% ({sum(values)}/{len(values)})" if values else "  n/a"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--per-image", type=int, default=3, help="faces restored per photo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask", default="blur", help="our pipeline's mask style")
    p.add_argument("--marks", default="faces",
                   help="our pipeline's marks (default faces: with heads masked too, a pasted-back face sits in "
                        "an island of blur that a real miss would not have, and is harder to see)")
    p.add_argument("--restore-scale", type=float, default=1.0,
                   help="restore this multiple of the ground-truth box (1.5: the whole head, as a real miss looks)")
    p.add_argument("--against", action="store_true", help="also measure the --against recognition check")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--cache", type=Path, help="keep and reuse our pipeline's outputs here (outside the repo)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an AuditSettings field (repeatable)")
    args = p.parse_args()
    if not (EVAL / "tools" / "wider.py").is_file() or not (EVAL / "widerface" / "gt.txt").is_file():
        print(f"audit_recall.py: shared evaluation data not found at {EVAL}; skipped")
        return 0
    sys.path.insert(0, str(EVAL / "tools"))
    import wider  # the shared metric, read in place

    from anonymize import Anonymizer
    from anonymize.audit import Auditor, AuditSettings

    gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
    occluded = occlusion(EVAL / "widerface" / "gt.txt")
    names = random.Random(args.seed).sample(sorted(gt), min(args.images, len(gt)))
    rng = random.Random(args.seed + 1)
    runner = Anonymizer(seed=args.seed, mask=args.mask, marks=args.marks)
    from dataclasses import fields, replace

    types = {f.name: type(getattr(AuditSettings(), f.name)) for f in fields(AuditSettings)}
    changes = {}
    for item in args.set:
        key, value = item.split("=", 1)
        changes[key] = value.lower() in ("1", "true", "yes") if types[key] is bool else types[key](value)
    settings = replace(AuditSettings(), **changes)
    auditor = Auditor(settings, against=args.against)
    keep = args.cache / f"{args.mask}-{args.marks.replace(',', '+')}-seed{args.seed}" if args.cache else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    rec32, rec16, masked_flags, clean_counts, leak_hit, leak_false, seconds = [], [], [], [], [], [], []
    both32, both16, both_false, both_clean = [], [], [], []  # --against: any finding (suspect, unchanged, leak)
    clean_kinds, both_kinds = [], []  # findings on untouched outputs by what they sit on (kinds())
    by_occlusion: dict[int, list[bool]] = {0: [], 1: [], 2: []}  # restored >= 32 px, by WIDER's attribute
    with tempfile.TemporaryDirectory(prefix="audit-recall-") as tmp:
        for k, name in enumerate(names):
            original = cv2.imread(str(EVAL / "widerface" / "images" / name))
            src, dst = Path(tmp) / f"{k}.png", Path(tmp) / f"{k}.out.png"
            kept = keep / f"{k}.json" if keep else None
            if kept and kept.is_file() and json.loads(kept.read_text())["name"] == name:
                dst = keep / f"{k}.out.png"
                regions = [tuple(r) for r in json.loads(kept.read_text())["regions"]]
            else:
                cv2.imwrite(str(src), original)
                report = runner.file(src, dst)
                regions = [(r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"], r["shape"])
                           for f in report.frames() for r in f["regions"]]
                if kept:
                    (keep / f"{k}.out.png").write_bytes(dst.read_bytes())
                    kept.write_text(json.dumps({"name": name, "regions": regions}))
            cover = [c for _, c in wider.score(gt[name], wider.rasterize(regions, *original.shape[:2]))]
            output = cv2.imread(str(dst))
            candidates = [b for b in gt[name] if b[3] >= 16]
            restored_boxes = rng.sample(candidates, min(args.per_image, len(candidates)))
            restored = output.copy()
            pasted = [grown(b, args.restore_scale) for b in restored_boxes]
            for x, y, w, h in pasted:
                restored[y:y + h, x:x + w] = original[y:y + h, x:x + w]
            start = time.perf_counter()
            suspects = auditor.suspects(restored)[0].boxes
            seconds.append(time.perf_counter() - start)
            clean_suspects = auditor.suspects(output)[0].boxes
            clean_counts.append(len(clean_suspects))
            clean_kinds.append(kinds(clean_suspects, gt[name], cover))
            for b in restored_boxes:
                (rec32 if b[3] >= 32 else rec16).append(flagged(suspects, b))
                if b[3] >= 32:
                    by_occlusion[occluded.get((name, tuple(b)), 0)].append(flagged(suspects, b))
            masked = [b for b, c in zip(gt[name], cover)
                      if b[3] >= 32 and c >= 0.8 and not any(touches(b, r) for r in pasted)]
            masked_flags += [flagged(suspects, b) for b in masked]
            if args.against:
                faces = auditor.input_faces(output, original)  # the same input for both outputs
                measured = auditor.distances(restored, original, faces)
                matches = auditor.leaks(restored, original, faces, measured=measured)[0]  # recognition alone
                leak_hit += [flagged(matches, b) for b in restored_boxes if b[3] >= 32]
                leak_false += [flagged(matches, b) for b in masked]
                # what `anonymize audit --against` reports: face, unmasked and leak findings together
                unchanged = auditor.unchanged(restored, original, faces)
                either = np.concatenate([suspects, unchanged.boxes,
                                         auditor.leaks(restored, original, faces, unchanged, measured)[0]])
                for b in restored_boxes:
                    (both32 if b[3] >= 32 else both16).append(flagged(either, b))
                both_false += [flagged(either, b) for b in masked]
                unchanged = auditor.unchanged(output, original, faces)
                clean_either = np.concatenate([clean_suspects, unchanged.boxes,
                                               auditor.leaks(output, original, faces, unchanged)[0]])
                both_clean.append(len(clean_either))
                both_kinds.append(kinds(clean_either, gt[name], cover))
            print(f"{k + 1}/{len(names)} {name}: {len(gt[name])} faces, restored {len(restored_boxes)}, "
                  f"suspects {len(suspects)}, {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    figures = {
        "images": len(names), "seed": args.seed, "mask": args.mask, "marks": args.marks, "restore_scale": args.restore_scale,
        "settings": changes,
        "restored_ge32_flagged": float(np.mean(rec32)) if rec32 else None, "restored_ge32": len(rec32),
        "restored_16_32_flagged": float(np.mean(rec16)) if rec16 else None, "restored_16_32": len(rec16),
        "masked_ge32_flagged": float(np.mean(masked_flags)) if masked_flags else None, "masked_ge32": len(masked_flags),
        "restored_ge32_flagged_by_occlusion": {k: float(np.mean(v)) if v else None for k, v in by_occlusion.items()},
        "findings_per_clean_output": float(np.mean(clean_counts)),
        "clean_outputs_with_findings": float(np.mean(np.array(clean_counts) > 0)),
        "clean_findings_per_output_on_missed_on_masked_elsewhere": np.mean(clean_kinds, axis=0).round(3).tolist(),
        "audit_seconds_per_image": float(np.mean(seconds)),
    }
    print(f"\naudit recall on {len(names)} WIDER photos (mask {args.mask}, marks {args.marks}, {args.per_image} faces restored each "
          f"x{args.restore_scale}, seed {args.seed}; {np.mean(seconds):.1f} s per audited photo; settings {changes})")
    print(f"  restored faces >= 32 px flagged : {share(rec32)}   (target >= 95 %)")
    print(f"    by WIDER occlusion: none {share(by_occlusion[0])}, partial {share(by_occlusion[1])}, "
          f"heavy {share(by_occlusion[2])}")
    print(f"  restored faces 16-32 px flagged : {share(rec16)}")
    print(f"  masked faces >= 32 px flagged   : {share(masked_flags)}   (false alarms)")
    print(f"  findings per clean output       : {np.mean(clean_counts):.2f} "
          f"({100 * np.mean(np.array(clean_counts) > 0):.0f}% of outputs have any; per output "
          f"{describe(np.mean(clean_kinds, axis=0))})")
    if args.against:
        figures.update(against_restored_ge32_matched=float(np.mean(leak_hit)) if leak_hit else None,
                       against_masked_ge32_matched=float(np.mean(leak_false)) if leak_false else None,
                       against_restored_ge32_flagged=float(np.mean(both32)) if both32 else None,
                       against_restored_16_32_flagged=float(np.mean(both16)) if both16 else None,
                       against_masked_ge32_flagged=float(np.mean(both_false)) if both_false else None,
                       against_findings_per_clean_output=float(np.mean(both_clean)),
                       against_clean_findings_per_output_on_missed_on_masked_elsewhere=np.mean(both_kinds, axis=0)
                       .round(3).tolist())
        print(f"  --against (any finding: suspect, unchanged input face, recognised face): restored >= 32 px flagged {share(both32)}, "
              f"16-32 px {share(both16)}, masked >= 32 px flagged {share(both_false)}, "
              f"findings per clean output {np.mean(both_clean):.2f} ({describe(np.mean(both_kinds, axis=0))})")
        print(f"  --against: restored >= 32 px matched {share(leak_hit)}, masked >= 32 px matched {share(leak_false)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
