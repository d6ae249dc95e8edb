"""Review (detect -> edit the plan -> render): the three targets of issue 17, measured.

    python bench/review.py speed  [--clip PATH | --make SECONDS] [--runs 3] [--against CHECKOUT]
    python bench/review.py follow [--clips 4] [--faces 40] [--seed 0]
    python bench/review.py spare  [--clips 3]
    python bench/review.py all    (the three, at their defaults)

* ``speed``: ``anonymize render`` from a plan at 1080p against a bare ffmpeg transcode at our
  encoder's settings (decode + libx264 at the ``balanced`` preset's x264 preset and CRF,
  yuv420p, video only: what render writes by default). The plan is made once by
  ``anonymize detect``; then the two commands run interleaved ``--runs`` times. Wall seconds and
  CPU seconds (user + system of the command and every process it waited for: on a shared machine
  the wall time depends on the others' load, CPU seconds much less) are medians. Default clip:
  ``../shared/eval/videos/street_pedestrians_arcade_1080p.mp4`` (a real crowded street, 105
  frames at 25 fps, ~90 masked regions a frame); ``--make S``: an S-second 1920x1080 clip made
  by ``eval/tools/make_video.py`` from a WIDER crowd photo instead. ``--against CHECKOUT``: also
  run that checkout's ``anonymize render`` (another commit, e.g. one extracted with ``git archive``)
  in the same interleaved rounds, for a before/after in one run.
* ``follow``: a box added by hand on one frame, followed by ``anonymize.follow``. On the
  handheld 1280x720 30 fps 4 s clips of bench/recall.py (made by ``make_video.py`` from WIDER
  photos, cached in /tmp/anonymize-bench/clips), the detector's plan is made once per clip. For
  each sampled face (true height >= 32 px at the chosen frame, spread over the sizes) the
  detector's face/head tracks that overlap the face in the window are spared (``masked: false``,
  so the face is one the detector "missed"), the face's true box at one frame (chosen at random
  at least 1 s from either end) is put in ``add``, and the added track's regions are computed
  the way render computes them (``follow_added``, ``PlanRegions``, the plan's mask geometry).
  Each frame within 1 s either side where the face is in the ground truth is scored: the share
  of the true box's pixels inside the added region's drawn ellipse (the pixels render masks:
  ``anonymize.masks``' own rasterisation). Target: >= 80 % of the box in >= 95 % of those frames.
* ``spare``: for every track of the plans of ``--clips`` clips, spare it alone and check that
  every other track's masked regions are exactly those of the unedited plan in every frame (as
  render computes them, and as a real render's report records them for one track per clip).

Shared data is read in place from ``<repo>/../shared/eval``; nothing made from it is written in
the repository (plans and outputs go under /tmp/anonymize-bench/review and a temporary folder).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
EVAL = ROOT.parent / "shared" / "eval"
STREET = EVAL / "videos" / "street_pedestrians_arcade_1080p.mp4"
CACHE = Path("/tmp/anonymize-bench/review")
COVER = 0.8  # the shared metric's rule: a face is masked when >= 80 % of its box is
TARGET_FRAMES = 0.95
SIZES = ((32, 64), (64, 128), (128, 10_000))


def need_shared() -> None:
    if not (EVAL / "tools" / "make_video.py").is_file():
        sys.exit(f"review.py: shared evaluation data not found at {EVAL}; nothing to benchmark")


def detect_plan(src: Path, runner=None) -> Path:
    """The plan of ``src`` (``anonymize detect`` at the defaults), cached under CACHE by file
    name, size and modification time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    st = src.stat()
    path = CACHE / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}.plan.json"
    if not path.is_file():
        from anonymize import Anonymizer

        runner = runner or Anonymizer()
        start = time.perf_counter()
        report = runner.detect(src)
        part = path.with_suffix(f".part{os.getpid()}")
        runner.write_report(part, [report])
        part.replace(path)
        print(f"  detect {src.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return path


# ---------------------------------------------------------------------------------------------
# speed


def speed(args) -> dict:
    from anonymize.ffmpeg_tools import ffmpeg_exe, probe
    from anonymize.video import QUALITY
    from speed import make_clip, timed

    clip = make_clip("1920x1080", args.make) if args.make else Path(args.clip)
    info = probe(clip)
    frames = info.estimated_frames() or 0
    plan = detect_plan(clip)
    preset, crf = QUALITY["balanced"]
    with tempfile.TemporaryDirectory(prefix="anonymize-review-") as tmp:
        work = Path(tmp)
        cmds = {
            "bare ffmpeg": [ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-map", "0:V:0", "-an",
                            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                            str(work / "bare.mp4")],
            "anonymize render": [sys.executable, "-m", "anonymize", "render", str(clip), "--plan", str(plan),
                                 "-o", str(work / "render.mp4"), "-y"],
        }
        envs: dict[str, dict | None] = {name: None for name in cmds}
        if args.against:
            other = f"anonymize render ({Path(args.against).name})"
            cmds[other] = [*cmds["anonymize render"][:-2], str(work / "other.mp4"), "-y"]
            envs[other] = {**os.environ, "PYTHONPATH": str(Path(args.against).resolve())}
        got: dict[str, list] = {k: [] for k in cmds}
        for i in range(args.runs):  # interleaved: a change in the others' load falls on both
            for name, cmd in cmds.items():
                wall, _, cpu = timed(cmd, env=envs[name])
                got[name].append((wall, cpu))
                print(f"  {name} run {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU (load {os.getloadavg()[0]:.1f})",
                      file=sys.stderr, flush=True)
    rows = {name: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v),
                   "runs": len(v)} for name, v in got.items()}
    base, ours = rows["bare ffmpeg"], rows["anonymize render"]
    regions = sum(len(f.get("regions", [])) for f in _frames(plan))
    for row in rows.values():
        row["x_wall"], row["x_cpu"] = round(row["wall_s"] / base["wall_s"], 2), round(row["cpu_s"] / base["cpu_s"], 2)
    return {"clip": clip.name, "size": f"{info.video.width}x{info.video.height}", "frames": frames,
            "regions_per_frame": round(regions / max(frames, 1), 1), "preset": preset, "crf": crf, "rows": rows,
            "x_wall": ours["x_wall"], "x_cpu": ours["x_cpu"], "load": os.getloadavg()[0]}


def _frames(plan: Path) -> list[dict]:
    return json.loads(plan.read_text())["files"][0]["frames"]


def speed_table(r: dict) -> str:
    b, o = r["rows"]["bare ffmpeg"], r["rows"]["anonymize render"]
    return "\n".join([
        f"{r['clip']} ({r['size']}, {r['frames']} frames, {r['regions_per_frame']} regions/frame; "
        f"libx264 {r['preset']} crf {r['crf']} yuv420p; medians of {b['runs']} interleaved runs)",
        "",
        "| command | wall s | CPU s | x bare (wall) | x bare (CPU) |",
        "|---|---|---|---|---|",
        f"| bare ffmpeg transcode | {b['wall_s']:.2f} | {b['cpu_s']:.2f} | 1.00 | 1.00 |",
        *[f"| {name} | {o['wall_s']:.2f} | {o['cpu_s']:.2f} | {o['x_wall']:.2f} | {o['x_cpu']:.2f} |"
          for name, o in r["rows"].items() if name != "bare ffmpeg"],
    ])


# ---------------------------------------------------------------------------------------------
# follow


def clips(n: int, seed: int) -> list[tuple[str, Path, dict]]:
    import recall

    recall.load_metric()
    return [(name, *recall.make_clip(name, seed)) for name in recall.pick_clip_photos(n)]


def _overlap(a: np.ndarray, gt: tuple) -> float:
    """Intersection of box ``a`` (x1, y1, x2, y2) with the true box, over the smaller's area."""
    x, y, w, h = gt
    iw = min(a[2], x + w) - max(a[0], x)
    ih = min(a[3], y + h) - max(a[1], y)
    if iw <= 0 or ih <= 0:
        return 0.0
    return float(iw * ih / max(min((a[2] - a[0]) * (a[3] - a[1]), w * h), 1e-6))


def cover(region_box: np.ndarray, gt: tuple, width: int, height: int, shape: str) -> float:
    """Share of the true box's pixels (clipped to the frame) that render masks for this region:
    the pixels of :func:`anonymize.masks._pixel_window` and, for ellipses, ``_ellipse_cover``."""
    from anonymize.masks import _ellipse_cover, _pixel_window

    x, y, w, h = gt
    gx0, gy0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    gx1, gy1 = min(int(np.ceil(x + w)), width), min(int(np.ceil(y + h)), height)
    if gx1 <= gx0 or gy1 <= gy0:
        return 1.0
    window = _pixel_window(region_box, width, height)
    if window is None:
        return 0.0
    x0, y0, x1, y1 = window
    mask = np.zeros((gy1 - gy0, gx1 - gx0), bool)
    ix0, iy0, ix1, iy1 = max(x0, gx0), max(y0, gy0), min(x1, gx1), min(y1, gy1)
    if ix1 <= ix0 or iy1 <= iy0:
        return 0.0
    drawn = np.ones((y1 - y0, x1 - x0), bool) if shape == "box" else _ellipse_cover(region_box, x0, y0, x1, y1)
    mask[iy0 - gy0:iy1 - gy0, ix0 - gx0:ix1 - gx0] = drawn[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    return float(mask.mean())


def sample_faces(meta: dict, per_clip: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``(face_id, frame)`` pairs: faces >= 32 px tall at a frame >= 1 s from both ends, spread
    over the size buckets (in turn), at random."""
    fps = int(round(meta["fps"]))
    n = len(meta["frames"])
    by_bucket: dict[int, list[tuple[int, int]]] = {k: [] for k in range(len(SIZES))}
    seen = set()
    for frame in rng.permutation(np.arange(fps, n - fps)):
        for f in meta["frames"][frame]:
            fid, h = f[4], f[3]
            if fid in seen:
                continue
            for k, (lo, hi) in enumerate(SIZES):
                if lo <= h < hi:
                    by_bucket[k].append((fid, int(frame)))
                    seen.add(fid)
    out: list[tuple[int, int]] = []
    while len(out) < per_clip and any(by_bucket.values()):
        for k in range(len(SIZES)):
            if by_bucket[k] and len(out) < per_clip:
                out.append(by_bucket[k].pop(int(rng.integers(len(by_bucket[k])))))
    return out


def follow(args) -> dict:
    from anonymize import Anonymizer
    from anonymize.ffmpeg_tools import probe
    from anonymize.follow import follow_added
    from anonymize.masks import region_shapes
    from anonymize.pipeline import grow
    from anonymize.plan import AddBox, load_plan
    from anonymize.regions_source import PlanRegions

    need_shared()
    rng = np.random.default_rng(args.seed)
    runner = None
    per_clip = -(-args.faces // args.clips)
    faces, frame_rows, secs = [], [], 0.0
    for name, mp4, meta in clips(args.clips, args.seed):
        if runner is None:
            runner = Anonymizer()
        entry = load_plan(detect_plan(mp4, runner)).files[0]
        info = probe(mp4)
        w, h = meta["size"]
        fps = int(round(meta["fps"]))
        for fid, frame in sample_faces(meta, per_clip, rng):
            gt_at = {i: next((tuple(f[:4]) for f in fs if f[4] == fid), None) for i, fs in enumerate(meta["frames"])}
            window = range(max(frame - fps, 0), min(frame + fps, len(meta["frames"]) - 1) + 1)
            spared = set()
            for i in window:
                gt = gt_at[i]
                raw = entry.raw.get(i)
                if gt is None or raw is None:
                    continue
                for b, t, k in zip(raw.boxes, raw.track_ids.tolist(), raw.kinds):
                    if t >= 0 and k in ("face", "head") and _overlap(b, gt) >= 0.5:
                        spared.add(t)
            x, y, bw, bh = gt_at[frame]
            edited = dataclasses.replace(
                entry, tracks={t: dataclasses.replace(tr, masked=tr.id not in spared) for t, tr in entry.tracks.items()},
                add=[AddBox(frame, (x, y, x + bw, y + bh), 5.0)])
            start = time.perf_counter()
            added = follow_added(mp4, info, edited)
            secs += time.perf_counter() - start
            source = PlanRegions(edited, added)
            track = next(iter(added[frame].track_ids.tolist()))
            covers = []
            for i in window:
                gt = gt_at[i]
                if gt is None:
                    continue
                masked = grow(source.at(i, w, h), w, h, edited.geometry)
                mine = masked[masked.track_ids == track]
                shapes = region_shapes(mine, edited.geometry.mask_shape)
                c = max([cover(b, gt, w, h, s) for b, s in zip(mine.boxes, shapes)], default=0.0)
                covers.append(c)
                frame_rows.append((bh, c))
            ok = float(np.mean([c >= COVER for c in covers]))
            faces.append({"clip": name, "face": fid, "frame": frame, "height": round(bh, 1), "spared": len(spared),
                          "frames": len(covers), "covered": ok, "min_cover": round(min(covers), 3)})
            print(f"  {name} face {fid} (h {bh:.0f}, frame {frame}, spared {len(spared)}): {ok * 100:.1f}% of "
                  f"{len(covers)} frames, min cover {min(covers):.2f}", file=sys.stderr, flush=True)
    buckets = {}
    for lo, hi in SIZES + ((32, 10_000),):
        sel = [c for fh, c in frame_rows if lo <= fh < hi]
        nf = [f for f in faces if lo <= f["height"] < hi]
        buckets[f"{lo}-{hi}" if hi < 10_000 else f">={lo}"] = {
            "faces": len(nf), "frames": len(sel), "covered": float(np.mean([c >= COVER for c in sel])) if sel else None,
            "faces_all_frames": sum(f["covered"] == 1.0 for f in nf)}
    return {"clips": args.clips, "faces": faces, "buckets": buckets, "follow_s_per_face": secs / max(len(faces), 1)}


def follow_table(r: dict) -> str:
    out = ["| face height at the added frame | faces | frames scored | frames covered >= 80 % | faces covered in every frame |",
           "|---|---|---|---|---|"]
    for label, b in r["buckets"].items():
        cov = "-" if b["covered"] is None else f"{b['covered'] * 100:.1f}%"
        out.append(f"| {label} px | {b['faces']} | {b['frames']} | {cov} | {b['faces_all_frames']} |")
    out.append(f"\n{r['clips']} clips; following took {r['follow_s_per_face']:.1f} s per added box (one decode "
               "of the 4 s 720p clip)")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# spare


def spare(args) -> dict:
    from anonymize import Anonymizer
    from anonymize.pipeline import grow
    from anonymize.plan import load_plan
    from anonymize.regions_source import PlanRegions

    need_shared()
    runner = None
    rows = []
    with tempfile.TemporaryDirectory(prefix="anonymize-review-") as tmp:
        for name, mp4, meta in clips(args.clips, args.seed):
            if runner is None:
                runner = Anonymizer()
            entry = load_plan(detect_plan(mp4, runner)).files[0]
            w, h = entry.width, entry.height
            base = PlanRegions(entry)
            full = {i: grow(base.at(i, w, h), w, h, entry.geometry) for i in range(entry.frame_count)}
            changed_tracks, compared = 0, 0
            for tid in entry.tracks:
                edited = dataclasses.replace(entry, tracks={
                    t: dataclasses.replace(tr, masked=t != tid) for t, tr in entry.tracks.items()})
                source = PlanRegions(edited)
                bad = False
                for i in range(entry.frame_count):
                    got = grow(source.at(i, w, h), w, h, edited.geometry)
                    want = full[i][full[i].track_ids != tid]
                    compared += len(want)
                    if (tid in got.track_ids.tolist() or not np.array_equal(got.boxes, want.boxes)
                            or not np.array_equal(got.track_ids, want.track_ids)
                            or list(got.kinds) != list(want.kinds)):
                        bad = True
                changed_tracks += bad
            # one real render per clip: its report's regions, against the unedited render's
            renders = {}
            tid = max(entry.tracks, key=lambda t: entry.tracks[t].last - entry.tracks[t].first)
            for label, spare_id in (("all", None), ("spared", tid)):
                edited = dataclasses.replace(entry, tracks={
                    t: dataclasses.replace(tr, masked=t != spare_id) for t, tr in entry.tracks.items()})
                rep = Anonymizer(detectors=False).render(mp4, edited, Path(tmp) / f"{label}.mp4")
                renders[label] = [[r for r in f["regions"]] for f in rep.frames()]
            report_same = all([r for r in a if r["track"] != tid] == b
                              for a, b in zip(renders["all"], renders["spared"]))
            report_spared_gone = all(r["track"] != tid for f in renders["spared"] for r in f)
            rows.append({"clip": name, "tracks": len(entry.tracks), "tracks_changing_others": changed_tracks,
                         "regions_compared": compared, "render_report_same": report_same and report_spared_gone,
                         "render_spared_track": tid})
            print(f"  {name}: {rows[-1]}", file=sys.stderr, flush=True)
    return {"clips": rows}


def spare_table(r: dict) -> str:
    out = ["| clip | tracks spared in turn | regions of the other tracks compared | tracks whose sparing changed another's regions | real render's report (longest track spared) |",
           "|---|---|---|---|---|"]
    for c in r["clips"]:
        out.append(f"| {c['clip']} | {c['tracks']} | {c['regions_compared']} | {c['tracks_changing_others']} | "
                   f"{'same regions' if c['render_report_same'] else 'DIFFERENT'} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("speed", "follow", "spare", "all"))
    p.add_argument("--clip", type=Path, default=STREET, help="speed: the 1080p clip (default: the shared street clip)")
    p.add_argument("--make", type=float, default=0, metavar="SECONDS",
                   help="speed: make a 1920x1080 clip of this length with make_video.py instead")
    p.add_argument("--runs", type=int, default=3, help="speed: interleaved runs of each command")
    p.add_argument("--against", type=Path, help="speed: another checkout whose render runs in the same rounds")
    p.add_argument("--clips", type=int, default=None, help="follow: clips (default 4); spare: clips (default 3)")
    p.add_argument("--faces", type=int, default=40, help="follow: faces in all (spread over the clips)")
    p.add_argument("--seed", type=int, default=0, help="clip camera seed and face sampling seed")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    out = {}
    if a.what in ("speed", "all"):
        need_shared() if not a.make and a.clip == STREET else None
        out["speed"] = speed(a)
        print(speed_table(out["speed"]) + "\n", flush=True)
    if a.what in ("follow", "all"):
        out["follow"] = follow(argparse.Namespace(**{**vars(a), "clips": a.clips or 4}))
        print(follow_table(out["follow"]) + "\n", flush=True)
    if a.what in ("spare", "all"):
        out["spare"] = spare(argparse.Namespace(**{**vars(a), "clips": a.clips or 3}))
        print(spare_table(out["spare"]) + "\n", flush=True)
    print(f"load average after: {os.getloadavg()}", file=sys.stderr)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
