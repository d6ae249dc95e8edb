"""End-to-end face coverage: our real pipeline against deface 1.5.0, on the shared ground truth.

Every number comes from what a tool actually masked, scored with the shared metric
(``../shared/eval/tools/wider.py``): a ground-truth face counts as masked when at least 80 % of
its box lies inside the masked area. Ours is run through the public API
(``Anonymizer(...).file(src, dst)``) and its report's regions are the masked area; deface is run
through its own ``image_detect`` / ``video_detect`` at its defaults (threshold 0.2, mask scale
1.3, ellipse, full-resolution inference, RGB frames as imageio decodes them), with its CenterFace
wrapped to record the detections, from which deface's exact masked pixels are rebuilt.

Modes::

    python bench/recall.py photos [--limit 40]   # WIDER FACE photos of assemblies
    python bench/recall.py masked                # photos of people with and without face masks
    python bench/recall.py video [--clips 6]     # handheld 720p clips made from WIDER photos
    python bench/recall.py video --part tune     # the big video set (bench/video_set.py): tune part
    python bench/recall.py video --part validation   # ... and the part no choice is made on
    python bench/recall.py all

``--tool ours|deface|both`` picks the tools; any ``Options`` field can be overridden for ours
(``--threshold 0.1 --detect-scale 0.5 --mask-scale 1.5 ...``; ``Options.seed`` is ``--mask-seed``).
``--json OUT`` writes every figure. Shared data is read in place from ``<repo>/../shared/eval``
and nothing made from it is written inside the repository: inputs and outputs go to a temporary
folder, clips are cached under /tmp/anonymize-bench/clips.

Caveats: ours masks every pixel its ellipse *touches*, while ``wider.rasterize`` counts pixels
whose *centre* is inside, so our coverage is under-counted by a pixel rim (never over-counted).
Seconds are wall time per file end to end (decode, detect, mask, encode, write) on whatever else
the machine is running; the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVAL = ROOT.parent / "shared" / "eval"
CLIP_CACHE = Path("/tmp/anonymize-bench/clips")
COLS = ["<16", "16-32", "32-64", "64-128", ">=128", ">=16", ">=32"]
MASKED_LABELS = ("with_mask", "without_mask", "mask_weared_incorrect")
TRACK_MIN_HEIGHT = 32  # tracks whose median height is below this are not counted as tracks
DEFACE_MASK_SCALE = 1.3  # deface 1.5.0's --mask-scale default
DEFACE_THRESHOLD = 0.2  # deface 1.5.0's --thresh default

wider = None  # the shared metric module, imported by load_metric()


def load_metric() -> None:
    """Import the shared ``wider.py`` (by path, not copied), or exit if the shared data is absent."""
    global wider
    if not (EVAL / "tools" / "wider.py").is_file():
        sys.exit(f"recall.py: shared evaluation data not found at {EVAL} (expected ../shared/eval "
                 "beside the repository); nothing to benchmark")
    sys.path.insert(0, str(EVAL / "tools"))
    import wider as module
    wider = module


# ---------------------------------------------------------------------------------------------
# Regions -> mask -> scores
# ---------------------------------------------------------------------------------------------

def report_regions(record: dict) -> list[tuple]:
    """One frame record of our report -> regions ``(x1, y1, x2, y2, shape)`` in output pixels.

    Whole-frame regions (kind ``"frame"``, from ``on_error="mask-frame"``) are drawn as boxes by
    the pipeline whatever the mask shape, so they are scored as boxes.
    """
    return [(r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"], "box" if r["kind"] == "frame" else r["shape"])
            for r in record["regions"]]


def deface_regions(dets: np.ndarray, h: int, w: int, mask_scale: float = DEFACE_MASK_SCALE,
                   ellipse: bool = True) -> list[tuple]:
    """The pixels deface 1.5.0 masks for ``dets``, as regions in ``wider.rasterize``'s convention.

    Mirrors ``deface.deface.anonymize_frame`` and ``draw_det``: the box is truncated to int, grown by
    ``mask_scale - 1`` of its size on *each* side (so 1.3 makes it 1.6x as wide and tall), rounded,
    and clipped to ``[0, w-1] x [0, h-1]`` (deface never masks the last row or column). The ellipse
    is ``skimage.draw.ellipse`` inside that box: centre at pixel ``(dy//2, dx//2)`` of the box,
    radii ``dy//2, dx//2``, pixels strictly inside. ``rasterize`` tests pixel centres with ``<= 1``,
    so the same ellipse is written with its centre moved by half a pixel and the radii shrunk by a
    hair (strict inequality). Boxes with a zero radius mask nothing.
    """
    from deface.deface import scale_bb

    out = []
    for det in dets:
        x1, y1, x2, y2 = scale_bb(*det[:4].astype(int), mask_scale)
        y1, y2 = max(0, y1), min(h - 1, y2)
        x1, x2 = max(0, x1), min(w - 1, x2)
        if not ellipse:
            out.append((x1, y1, x2, y2, "box"))
            continue
        ry, rx = (y2 - y1) // 2, (x2 - x1) // 2
        if ry <= 0 or rx <= 0:
            continue
        cy, cx, sy, sx = y1 + ry + 0.5, x1 + rx + 0.5, ry * (1 - 1e-9), rx * (1 - 1e-9)
        out.append((cx - sx, cy - sy, cx + sx, cy + sy, "ellipse"))
    return out


def to_mask(regions: list[tuple], h: int, w: int) -> np.ndarray:
    """The one place regions become a boolean (h, w) mask: the shared ``wider.rasterize``."""
    return wider.rasterize(regions, h, w)


def score_frame(gt_boxes: list, regions: list[tuple], h: int, w: int) -> tuple[list, float]:
    """``wider.score`` rows ``(box height, covered fraction)`` per face, and the share of the frame
    masked outside every ground-truth box (as ``wider.evaluate`` computes it)."""
    mask = to_mask(regions, h, w)
    gtm = to_mask([(x, y, x + bw, y + bh) for x, y, bw, bh in gt_boxes], h, w)
    return wider.score(gt_boxes, mask), float((mask & ~gtm).mean())


def int_box(x: float, y: float, w: float, h: float) -> list[int]:
    """A float box as the integer pixel box whose pixel centres it contains (for ``wider.score``)."""
    x1, y1, x2, y2 = round(x), round(y), round(x + w), round(y + h)
    return [x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)]


def share(covers: list[float]) -> float | None:
    """Share of faces masked (coverage >= wider.COVER), None for no faces."""
    return float(np.mean([c >= wider.COVER for c in covers])) if covers else None


# ---------------------------------------------------------------------------------------------
# The two tools
# ---------------------------------------------------------------------------------------------

class Ours:
    """Our real pipeline through the public API; one Anonymizer for the whole run."""

    name = "ours"

    def __init__(self, overrides: dict):
        from anonymize import Anonymizer

        self.anonymizer = Anonymizer(**overrides)
        o = self.anonymizer.options
        self.label = (f"ours {code_version()} (t={o.threshold} detect_scale={o.detect_scale} "
                      f"mask x{o.mask_scale} {o.mask_shape})")

    def photo(self, src: Path, work: Path) -> tuple[list[tuple], float]:
        """Anonymize one photo; its masked regions and the wall time."""
        t0 = time.perf_counter()
        report = self.anonymizer.file(src, work / f"ours{src.suffix}")
        secs = time.perf_counter() - t0
        return report_regions(next(report.frames())), secs

    def video(self, src: Path, work: Path) -> tuple[dict[int, list[tuple]], float]:
        """Anonymize one clip (``--no-encode``: detect only, the same regions without the encoder);
        masked regions by frame index, and the wall time."""
        if self.cache is not None:
            self.cache.start(src, self.anonymizer)
        t0 = time.perf_counter()
        if self.encode:
            report = self.anonymizer.file(src, work / "ours.mp4")
        else:
            report = self.anonymizer.detect(src)
        secs = time.perf_counter() - t0
        if self.cache is not None:
            self.cache.save()
        return {rec["index"]: report_regions(rec) for rec in report.frames()}, secs

    encode, cache = True, None


class DetectionCache:
    """``--cache-detections``: replays the face detector's full-frame results per clip.

    For tuning what comes after detection (tracking, mask geometry) only: the key holds the
    detection options but not the detector code, so clear /tmp/anonymize-bench/detections after
    changing a detector. Calls to ``Engine.detect`` are recorded in order for each clip and replayed
    in the same order; anything else (a second look with the detector on a crop) runs for real.
    """

    def __init__(self, root: Path = Path("/tmp/anonymize-bench/detections")):
        self.root = root
        self.path: Path | None = None
        self.calls: list = []
        self.replay = False

    def start(self, src: Path, anonymizer) -> None:
        import hashlib
        import pickle

        from anonymize.regions import Regions

        o = anonymizer.options
        # the device too: OpenVINO bf16 and onnxruntime fp32 differ a little (a cache made on one
        # was replayed on the other); "auto" resolves by what is installed
        import importlib.util

        backend = (o.device, importlib.util.find_spec("openvino") is not None)
        key = repr((o.detector, o.threshold, o.pad, o.detect_scale, o.edge_detect, o.detect_every,
                    o.between_scale, o.marks, o.marks_every, backend))
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f"{src.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pkl"
        self.replay = self.path.is_file()
        self.calls = pickle.loads(self.path.read_bytes()) if self.replay else []
        engine = anonymizer.engine
        real = type(engine).detect.__get__(engine)
        it = iter(self.calls)

        def detect(image, full=True, marks=True, photo=False):
            if self.replay:
                boxes, scores, kinds = next(it)
                return Regions(boxes, scores, kinds)
            r = real(image, full=full, marks=marks, photo=photo)
            self.calls.append((r.boxes.copy(), np.asarray(r.scores).copy(), np.asarray(r.kinds).copy()))
            return r

        engine.detect = detect

    def save(self) -> None:
        import pickle

        if not self.replay and self.path is not None:
            tmp = self.path.with_suffix(f".part{os.getpid()}")
            tmp.write_bytes(pickle.dumps(self.calls))
            tmp.replace(self.path)


def code_version() -> str:
    """The commit of the code under test, ``+dirty`` when anonymize/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "anonymize"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


class _Recorder:
    """Stands in for deface's CenterFace: calls it and keeps each frame's detections and size."""

    def __init__(self, centerface):
        self.centerface, self.calls = centerface, []

    def __call__(self, frame, threshold=0.5):
        dets, lms = self.centerface(frame, threshold=threshold)
        self.calls.append((np.array(dets, copy=True), frame.shape[:2]))
        return dets, lms


class Deface:
    """deface 1.5.0 end to end (its own ``image_detect`` / ``video_detect``) at its CLI defaults."""

    name = "deface"
    label = "deface 1.5.0 (defaults)"

    def __init__(self):
        from deface.centerface import CenterFace

        with contextlib.redirect_stdout(io.StringIO()):  # "Running on CPUExecutionProvider."
            self.recorder = _Recorder(CenterFace(in_shape=None, backend="auto"))
        self.crashes = 0  # inputs on which deface itself raised (it would have stopped there)

    def _defaults(self) -> dict:
        return {"centerface": self.recorder, "threshold": DEFACE_THRESHOLD, "replacewith": "blur",
                "mask_scale": DEFACE_MASK_SCALE, "ellipse": True, "draw_scores": False, "enable_preview": False}

    def _run(self, fn, **kw) -> float:
        from deface import deface

        self.recorder.calls = []
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                getattr(deface, fn)(**self._defaults(), **kw)  # tqdm bars and prints silenced
        except Exception as exc:  # noqa: BLE001 - count it; its detections are still scored
            self.crashes += 1
            print(f"  deface raised on {kw['ipath']}: {exc!r}", file=sys.stderr)
        return time.perf_counter() - t0

    def photo(self, src: Path, work: Path) -> tuple[list[tuple], float]:
        """deface's ``image_detect`` on one photo; its masked regions and the wall time."""
        secs = self._run("image_detect", ipath=str(src), opath=str(work / f"deface{src.suffix}"),
                         keep_metadata=False)
        dets, (h, w) = self.recorder.calls[0]
        return deface_regions(dets, h, w), secs

    def video(self, src: Path, work: Path) -> tuple[dict[int, list[tuple]], float]:
        """deface's ``video_detect`` on one clip; masked regions by decoded frame index, wall time.

        No output file is asked for (``opath=None``): deface still decodes with imageio, detects and
        masks every frame, but skips encoding, which keeps the run short. Its seconds therefore
        leave out the encoder that ours pays for.
        """
        secs = self._run("video_detect", ipath=str(src), opath=None, cam=False, nested=False, ffmpeg_config={})
        return {i: deface_regions(d, h, w) for i, (d, (h, w)) in enumerate(self.recorder.calls)}, secs


def make_tools(args, overrides: dict) -> list:
    """The tools named by ``--tool``, ours first."""
    tools = []
    if args.tool in ("ours", "both"):
        tools.append(Ours(overrides))
    if args.tool in ("deface", "both"):
        tools.append(Deface())
    return tools


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------

def spread(names: list[str], limit: int | None, group=lambda n: n.split("/")[0]) -> list[str]:
    """``limit`` names, an equal share from each group (event folder), evenly spaced within it.

    Deterministic. Groups too small for their share give the rest to the others; all if no limit.
    """
    if not limit or limit >= len(names):
        return sorted(names)
    groups: dict[str, list[str]] = {}
    for n in sorted(names):
        groups.setdefault(group(n), []).append(n)
    quota, left = {g: 0 for g in groups}, limit
    while left:  # round-robin so the counts differ by at most one
        for g in sorted(groups, key=lambda g: (quota[g], g)):
            if left and quota[g] < len(groups[g]):
                quota[g] += 1
                left -= 1
    out = []
    for g, items in groups.items():
        if quota[g]:
            idx = np.linspace(0, len(items) - 1, quota[g]).round().astype(int)
            out += [items[i] for i in sorted(set(idx))]
    return sorted(out)


def load_masked_gt(path: Path) -> dict[str, list[tuple]]:
    """``eval/masked/gt.txt``: name, count, then ``x y w h label`` lines -> {name: [(box, label)]}."""
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    gt, i = {}, 0
    while i < len(lines):
        name, n = lines[i], int(lines[i + 1])
        faces = []
        for l in lines[i + 2:i + 2 + n]:
            x, y, w, h, label = l.split()
            if int(w) > 0 and int(h) > 0:
                faces.append(([int(x), int(y), int(w), int(h)], label))
        gt[name] = faces
        i += 2 + n
    return gt


def stills(mode: str, limit: int | None) -> list[tuple[str, Path, list, list]]:
    """(name, source image, gt boxes, labels) for the ``photos`` or ``masked`` set."""
    if mode == "photos":
        gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
        return [(n, EVAL / "widerface" / "images" / n, gt[n], ["-"] * len(gt[n])) for n in spread(list(gt), limit)]
    gt = load_masked_gt(EVAL / "masked" / "gt.txt")
    names = spread(list(gt), limit, group=lambda n: "")
    return [(n, EVAL / "masked" / "images" / n, [b for b, _ in gt[n]], [l for _, l in gt[n]]) for n in names]


# ---------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------

def run_stills(mode: str, tools: list, args) -> dict:
    """Score every tool on the ``photos`` or ``masked`` set; returns {tool: result}.

    Each image is decoded once with OpenCV (as ``wider.evaluate`` reads it, EXIF orientation applied)
    and written as a PNG: both tools read the same pixels from a file with no metadata and no ICC
    profile, so neither tool's colour or orientation handling can move a face off its ground truth.
    """
    items = stills(mode, args.limit)
    acc = {t.name: {"rows": [], "labels": [], "outside": [], "secs": 0.0, "per_image": []} for t in tools}
    with tempfile.TemporaryDirectory(prefix="anonymize-bench-") as tmp:
        work = Path(tmp)
        for k, (name, src, boxes, labels) in enumerate(items):
            img = cv2.imread(str(src))
            if img is None:
                print(f"  skipped unreadable {name}", file=sys.stderr)
                continue
            png = work / "input.png"
            cv2.imwrite(str(png), img)
            h, w = img.shape[:2]
            for t in tools:
                regions, secs = t.photo(png, work)
                rows, outside = score_frame(boxes, regions, h, w)
                a = acc[t.name]
                a["rows"] += rows
                a["labels"] += labels
                a["outside"].append(outside)
                a["secs"] += secs
                a["per_image"].append((name, [c for _, c in rows]))
            if (k + 1) % 20 == 0:
                print(f"  {mode}: {k + 1}/{len(items)} images", file=sys.stderr)
    n = len(acc[tools[0].name]["per_image"])
    results = {}
    for t in tools:
        a = acc[t.name]
        res = wider.summarize(a["rows"], a["outside"], a["secs"], n)
        res["tool"] = t.label
        res["overall"] = share([c for _, c in a["rows"]])
        if mode == "masked":
            res["labels"] = {lab: {"faces": sum(l == lab for l in a["labels"]),
                                   "covered": share([c for (_, c), l in zip(a["rows"], a["labels"]) if l == lab])}
                             for lab in MASKED_LABELS}
        if isinstance(t, Deface):
            res["deface_crashes"] = t.crashes
        res["_per_image"], res["_rows"] = a["per_image"], a["rows"]
        results[t.name] = res
    return results


# ---------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------

def pick_clip_photos(n: int) -> list[str]:
    """``n`` WIDER photos with many faces of at least 16 px, taken in turn from each event folder.

    Within a folder photos are ranked by that count (ties by name); deterministic.
    """
    gt = wider.load_gt(EVAL / "widerface" / "gt.txt")
    by_event: dict[str, list[str]] = {}
    for name in gt:
        by_event.setdefault(name.split("/")[0], []).append(name)
    for names in by_event.values():
        names.sort(key=lambda m: (-sum(b[3] >= 16 for b in gt[m]), m))
    events, out, rank = sorted(by_event), [], 0
    while len(out) < n and rank < max(map(len, by_event.values())):
        out += [by_event[e][rank] for e in events if rank < len(by_event[e])][:n - len(out)]
        rank += 1
    return out


def make_clip(name: str, seed: int) -> tuple[Path, dict]:
    """A 1280x720 30 fps 4 s handheld clip of ``name`` and its per-frame boxes, cached in /tmp."""
    CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "__").rsplit(".", 1)[0] + f"-s{seed}"
    mp4, meta = CLIP_CACHE / f"{stem}.mp4", CLIP_CACHE / f"{stem}.json"
    if not (mp4.is_file() and meta.is_file()):
        part = CLIP_CACHE / f"{stem}.part{os.getpid()}.mp4"  # renamed when complete: safe for parallel runs
        subprocess.run([sys.executable, str(EVAL / "tools" / "make_video.py"), str(EVAL / "widerface" / "gt.txt"),
                        str(EVAL / "widerface" / "images"), name, str(part), "--size", "1280x720", "--fps", "30",
                        "--seconds", "4", "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
        part.replace(mp4)
        part.with_suffix(".json").replace(meta)
    return mp4, json.loads(meta.read_text())


def run_video(tools: list, args) -> dict:
    """Score every tool frame by frame on ``--clips`` handheld clips; returns {tool: result}.

    Face-frames are bucketed by the box height in that frame. A track is one ground-truth face
    (face_id) through a clip; tracks whose median height is >= 32 px count, and a track *leaks*
    when any of its frames is not masked.
    """
    if args.part:
        import video_set

        clips = video_set.clips(args.part, set(pick_clip_photos(6)))
        if args.clips_limit:
            clips = clips[:args.clips_limit]
        maker = video_set.make
    else:
        clips = [(name, args.seed) for name in pick_clip_photos(args.clips)]
        maker = make_clip
    acc = {t.name: {"rows": [], "outside": [], "secs": 0.0, "frames": 0, "tracks": {}, "per_clip": [],
                    "edge": {}} for t in tools}
    with tempfile.TemporaryDirectory(prefix="anonymize-bench-") as tmp:
        work = Path(tmp)
        for name, seed in clips:
            mp4, meta = maker(name, seed)
            w, h = meta["size"]
            print(f"  clip {name} s{seed} {meta.get('motion', '')}: {sum(map(len, meta['frames']))} face-frames",
                  file=sys.stderr)
            for t in tools:
                by_index, secs = t.video(mp4, work)
                a = acc[t.name]
                a["secs"] += secs
                a["frames"] += len(meta["frames"])
                if len(by_index) != len(meta["frames"]):
                    print(f"  {t.name}: {len(by_index)} frames masked, clip has {len(meta['frames'])}", file=sys.stderr)
                clip_rows = []
                for i, faces in enumerate(meta["frames"]):
                    rows, outside = score_frame([int_box(*f[:4]) for f in faces], by_index.get(i, []), h, w)
                    a["rows"] += rows
                    a["outside"].append(outside)
                    clip_rows += rows
                    for f, (_, cover) in zip(faces, rows):
                        a["tracks"].setdefault((name, seed, f[4]), []).append((f[3], cover))
                        if len(f) > 5 and f[5] < 0.995 and f[3] >= 16:  # cut by the frame edge
                            a["edge"].setdefault((name, seed, f[4]), []).append((i, f[3], cover))
                a["per_clip"].append((f"{name} s{seed}", share([c for bh, c in clip_rows if bh >= 32])))
    results = {}
    for t in tools:
        a = acc[t.name]
        res = wider.summarize(a["rows"], a["outside"], a["secs"], a["frames"])
        res["clips"], res["tool"] = len(clips), t.label
        big = {k: v for k, v in a["tracks"].items() if np.median([bh for bh, _ in v]) >= TRACK_MIN_HEIGHT}
        leaked = [k for k, v in big.items() if any(c < wider.COVER for _, c in v)]
        res["tracks"] = {"counted": len(big), "leaked": len(leaked),
                         "leaked_per_100": 100 * len(leaked) / len(big) if big else None,
                         "unmasked_frames_in_counted": sum(c < wider.COVER for v in big.values() for _, c in v)}
        res["per_clip_>=32"] = a["per_clip"]
        if a["edge"]:
            # faces cut by the frame edge (>= 16 px, at least half inside: the ground truth's rule)
            cut = [c for v in a["edge"].values() for _, _, c in v]
            bad = {k: [(i, bh, round(c, 2)) for i, bh, c in v if c < wider.COVER] for k, v in a["edge"].items()}
            res["edge_cut"] = {"face_frames": len(cut), "masked": share(cut),
                               "faces": len(a["edge"]),
                               "faces_over_2_frames_unmasked": sum(len(v) > 2 for v in bad.values()),
                               "worst": sorted(((len(v), f"{k[0]} s{k[1]} face {k[2]}") for k, v in bad.items()
                                                if v), reverse=True)[:5]}
        res["leaked"] = [(f"{k[0]} s{k[1]} face {k[2]}", [(round(bh), round(c, 2)) for bh, c in v if c < wider.COVER][:8])
                         for k, v in big.items() if k in set(leaked)]
        if isinstance(t, Deface):
            res["deface_crashes"] = t.crashes
        results[t.name] = res
    return results


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def print_tables(mode: str, results: dict) -> None:
    """wider.table-style lines per tool, the extras of the mode, and a markdown table."""
    unit = "frame" if mode == "video" else "image"
    print(f"\n== {mode} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs) ==")
    for name, res in results.items():
        line = wider.table(res, res["tool"])
        if mode == "video":
            line = line.replace(" images,", " frames,").replace("ms/image", "ms/frame")
        print(line)
        if "labels" in res:
            print("  by label: " + " | ".join(f"{lab} {pct(v['covered'])} (n={v['faces']})"
                                             for lab, v in res["labels"].items()))
        if "tracks" in res:
            tr = res["tracks"]
            print(f"  tracks with median height >= {TRACK_MIN_HEIGHT}px: {tr['counted']}, leaked (>= 1 unmasked "
                  f"frame) {tr['leaked']} = {tr['leaked_per_100'] or 0:.1f} per 100; unmasked frames in them "
                  f"{tr['unmasked_frames_in_counted']}")
            if "edge_cut" in res:
                e = res["edge_cut"]
                print(f"  faces cut by the frame edge (>= 16 px): {e['faces']} faces, {e['face_frames']} face-frames, "
                      f"{pct(e['masked'])} masked; faces unmasked in > 2 cut frames: "
                      f"{e['faces_over_2_frames_unmasked']} {e['worst']}")
            for k, v in res.get("leaked", []):
                print(f"  leaked {k}: (height, cover) {v}")
            if len(res["per_clip_>=32"]) <= 12:
                print("  per clip, face-frames >= 32px masked: "
                      + ", ".join(f"{n} {pct(v)}" for n, v in res["per_clip_>=32"]))
        if mode == "video" and name == "deface":
            print("  (deface seconds: decode + detect + mask, no encode; ours: the whole pipeline with encode)")
        if res.get("deface_crashes"):
            print(f"  deface raised on {res['deface_crashes']} inputs (it would stop there)")
    if "ours" in results and "deface" in results and mode != "video":
        print_disagreement(results["ours"], results["deface"])
    print()
    print(markdown(mode, results, unit))


def print_disagreement(ours: dict, deface: dict) -> None:
    """Faces one tool masks and the other does not, by bucket, and the photos deface does better on."""
    by_bucket, worst = {lab: [0, 0] for _, _, lab in wider.BUCKETS}, []
    for (name, oc), (_, dc) in zip(ours["_per_image"], deface["_per_image"]):
        lost = sum(d >= wider.COVER > o for o, d in zip(oc, dc))
        if lost:
            worst.append((lost, name))
    for (h, o), (_, d) in zip(ours["_rows"], deface["_rows"]):
        label = next(lab for lo, hi, lab in wider.BUCKETS if lo <= h < hi)
        by_bucket[label][0] += d >= wider.COVER > o
        by_bucket[label][1] += o >= wider.COVER > d
    print("  faces masked by deface only / by ours only: "
          + " | ".join(f"{lab} {v[0]}/{v[1]}" for lab, v in by_bucket.items()))
    if worst:
        print("  photos where deface masks most faces we miss: "
              + ", ".join(f"{n} ({k})" for k, n in sorted(worst, reverse=True)[:5]))


def markdown(mode: str, results: dict, unit: str) -> str:
    """One markdown row per tool, ready for the README."""
    extra = {"masked": list(MASKED_LABELS), "video": ["leaked tracks /100 (leaked/tracks)"]}.get(mode, [])
    head = ["tool", f"{unit}s", "faces" if mode != "video" else "face-frames", "all"] + extra + COLS + \
           ["masked outside GT", f"s/{unit}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results.values():
        b = res["buckets"]
        cells = [res["tool"], str(res["images"]), str(res["faces"]), pct(share_all(res))]
        if mode == "masked":
            cells += [f"{pct(res['labels'][lab]['covered'])} (n={res['labels'][lab]['faces']})" for lab in MASKED_LABELS]
        if mode == "video":
            tr = res["tracks"]
            cells.append(f"{tr['leaked_per_100'] or 0:.1f} ({tr['leaked']}/{tr['counted']})")
        cells += [pct(b[c]["covered"]) for c in COLS]
        cells += [f"{res['masked_outside_gt'] * 100:.1f}%", f"{res['sec_per_image']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def share_all(res: dict) -> float | None:
    """Share of all faces masked, from the bucket counts."""
    n = sum(res["buckets"][lab]["faces"] for _, _, lab in wider.BUCKETS)
    if not n:
        return None
    return sum((res["buckets"][lab]["covered"] or 0) * res["buckets"][lab]["faces"] for _, _, lab in wider.BUCKETS) / n


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def option_overrides(p: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """Add one flag per ``Options`` field (``--detect-scale`` ...); returns (field, dest) pairs."""
    from anonymize.config import Options

    pairs = []
    g = p.add_argument_group("overrides of our Options (default: Options' own defaults)")
    for f in dataclasses.fields(Options):
        flag = "--mask-seed" if f.name == "seed" else "--" + f.name.replace("_", "-")
        dest = "opt_" + f.name
        ann = str(f.type)
        if "bool" in ann:
            g.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = float if "float" in ann else int if "int" in ann else str
            g.add_argument(flag, dest=dest, type=kind, default=None, metavar=kind.__name__.upper(),
                           help=f"(default {f.default})")
        pairs.append((f.name, dest))
    return pairs


def patch_tracker(fields: dict[str, str]) -> None:
    """``--tracker``: every live run's TrackerSettings get these fields (numbers as in the class)."""
    from dataclasses import replace

    from anonymize import regions_source
    from anonymize.track import TrackerSettings

    types = {f.name: f.type for f in dataclasses.fields(TrackerSettings)}
    values = {k: (float(v) if "float" in str(types[k]) else int(v)) for k, v in fields.items()}
    init = regions_source.LiveRegions.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        self.settings = replace(self.settings, **values)

    regions_source.LiveRegions.__init__ = patched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("photos", "video", "masked", "all"))
    p.add_argument("--limit", type=int, default=None, help="photos: this many, spread evenly over the event folders")
    p.add_argument("--clips", type=int, default=6, help="video: number of clips (default 6)")
    p.add_argument("--seed", type=int, default=0, help="video: make_video.py camera-motion seed (default 0)")
    p.add_argument("--part", choices=("tune", "validation"), help="video: the big set of bench/video_set.py "
                   "instead of the six classic clips (validation: no choice is made on it)")
    p.add_argument("--clips-limit", type=int, default=None, help="video --part: only the first N clips")
    p.add_argument("--no-encode", action="store_true", help="video, ours: detect only (the same regions, "
                   "no encoder; seconds then leave the encoder out)")
    p.add_argument("--tracker", action="append", default=[], metavar="FIELD=VALUE", help="video, ours: "
                   "override a TrackerSettings field (anonymize/track.py) for tuning, e.g. look_back=0")
    p.add_argument("--cache-detections", action="store_true", help="video, ours: record / replay the "
                   "detector's full-frame results per clip (tuning what follows detection)")
    p.add_argument("--tool", choices=("ours", "deface", "both"), default="both")
    p.add_argument("--json", type=Path, help="write all results here")
    pairs = option_overrides(p)
    args = p.parse_args()
    load_metric()
    overrides = {name: getattr(args, dest) for name, dest in pairs if getattr(args, dest) is not None}
    if args.tracker:
        patch_tracker(dict(kv.split("=", 1) for kv in args.tracker))
    tools = make_tools(args, overrides)
    for t in tools:
        if isinstance(t, Ours):
            t.encode = not args.no_encode
            t.cache = DetectionCache() if args.cache_detections else None
    modes = ["photos", "masked", "video"] if args.mode == "all" else [args.mode]
    everything = {}
    for mode in modes:
        t0 = time.perf_counter()
        results = run_video(tools, args) if mode == "video" else run_stills(mode, tools, args)
        print_tables(mode, results)
        print(f"({mode} took {time.perf_counter() - t0:.0f} s)")
        everything[mode] = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in results.items()}
    if args.json:
        args.json.write_text(json.dumps({"options": overrides, "results": everything}, indent=1, default=str))


if __name__ == "__main__":
    main()
