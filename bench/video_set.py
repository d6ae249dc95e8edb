"""The big video benchmark: handheld clips with fast pans and zooms, split once into tune / validation.

``bench/recall.py video --part tune|validation`` runs on it (``--part`` absent: the six classic
clips of ``make_video.py``). The clips are made here from the shared WIDER FACE photos; the shared
tool ``../shared/eval/tools/make_video.py`` is *imported* at run time (its ``ffmpeg_exe`` and its
``wider`` metric module), never copied, and nothing made from the data is written inside the
repository (clips are cached under /tmp/anonymize-bench/clips).

Why another generator: ``make_video.py`` eases its camera in from rest, pans slowly (a sine of at
most 0.2 of the photo's width) and zooms in only. Real handheld footage also pans fast, zooms out
(faces then enter from every edge at once) and is already moving when the recording starts. Each
clip here draws one motion from its seed:

* ``pan``: the window crosses 30-80 % of the photo in the clip, at full speed from frame 0;
* ``zoom-out``: the window grows from 30-50 % to 85-100 % of what fits, around a point near one
  of the photo's four edges or corners, so faces come in from every edge;
* ``zoom-in``: the reverse, with a drift, so faces leave by every edge;
* plus a handheld shake (a random walk of 0.8-2.5 photo pixels per frame, not pulled back to 0).

Ground truth follows ``make_video.py``'s rule: each face box is carried through the camera
transform, clipped to the frame, and kept while at least half of it is inside. One more number is
kept per face-frame: the share of the box inside the frame (1.0 for a face not cut by an edge),
so the bench can score faces cut by the frame edge.

The split (fixed before any tuning, and never to be tuned on): photos are ranked within each of the
five event folders by the SHA-256 of their name; a photo belongs to ``validation`` when that hash
is even, to ``tune`` when odd. Photos of the six classic clips are left out of both. Each part
takes the first ``SIZES[part][0]`` eligible photos (at least ``MIN_FACES`` faces >= 16 px and at
most ``MAX_FACES`` faces in all, so one huge crowd does not dominate and a clip stays quick to
process) of every event in hash order, and makes ``SIZES[part][1]`` clips of each (seeds 1, 2,
...: different motions of one photo). The tune part was grown (issue 21, second session) from 2
photos x 2 seeds per event to 4 x 4 (80 clips: more leaks to learn from); its first 20 clips are
the first session's. The validation part keeps its 20 clips (its earlier figure stays comparable);
the split itself is unchanged, so no validation photo ever enters the tune part.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
CLIP_CACHE = Path("/tmp/anonymize-bench/clips")
PARTS = ("tune", "validation")
#: (photos per event folder, seeds per photo) of each part
SIZES = {"tune": (4, 4), "validation": (2, 2)}
MIN_FACES = 6
MAX_FACES = 120
SIZE = (1280, 720)
FPS = 30.0
SECONDS = 2.0
MOTIONS = ("pan", "zoom-out", "zoom-in")
VERSION = 1  # part of the cache name: bump when the camera model changes


def _tool():
    """The shared ``make_video`` module, imported by path (it imports ``wider`` beside it)."""
    sys.path.insert(0, str(EVAL / "tools"))
    import make_video
    return make_video


def part_of(name: str) -> str:
    """``"validation"`` or ``"tune"``: the parity of the SHA-256 of the photo's name."""
    return "validation" if _hash(name) % 2 == 0 else "tune"


def _hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16)


def pick(part: str, gt: dict[str, list], exclude: set[str], per_event: int | None = None) -> list[str]:
    """The photos of ``part``: per event folder, the first ``per_event`` eligible ones in hash order."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}")
    per_event = SIZES[part][0] if per_event is None else per_event
    by_event: dict[str, list[str]] = {}
    for name, boxes in gt.items():
        if name in exclude or part_of(name) != part:
            continue
        if sum(b[3] >= 16 for b in boxes) >= MIN_FACES and len(boxes) <= MAX_FACES:
            by_event.setdefault(name.split("/")[0], []).append(name)
    out = []
    for event in sorted(by_event):
        out += sorted(by_event[event], key=_hash)[:per_event]
    return out


def clips(part: str, exclude: set[str], per_event: int | None = None,
          seeds: int | None = None) -> list[tuple[str, int]]:
    """``(photo, seed)`` of every clip of ``part``: the first session's clips (2 photos per
    event, seeds 1-2) first, then the rest, so ``--clips-limit 20`` still runs those."""
    gt = _tool().wider.load_gt(EVAL / "widerface" / "gt.txt")
    per_event, seeds = SIZES[part] if per_event is None else (per_event, seeds or SIZES[part][1])
    first = [(n, s) for n in pick(part, gt, exclude, min(2, per_event)) for s in range(1, min(2, seeds) + 1)]
    every = [(n, s) for n in pick(part, gt, exclude, per_event) for s in range(1, seeds + 1)]
    return first + [c for c in every if c not in first]


def camera(rng: np.random.Generator, iw: int, ih: int, n: int, aspect: float) -> tuple[str, np.ndarray]:
    """One motion: ``(kind, windows)``, windows an ``(n, 3)`` array of (x0, y0, width) in photo pixels."""
    kind = MOTIONS[int(rng.integers(len(MOTIONS)))]
    fit_w = min(iw, ih * aspect)
    u = np.linspace(0, 1, n)
    if kind == "pan":
        z = np.full(n, rng.uniform(0.45, 0.75)) + np.linspace(0, rng.uniform(-0.1, 0.1), n)
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.3, 0.8)
        start = np.array([0.5, 0.5]) - 0.5 * dist * np.array([np.cos(angle), np.sin(angle)])
        centre = start[None, :] + u[:, None] * dist * np.array([np.cos(angle), np.sin(angle)])[None, :]
    else:
        small, big = rng.uniform(0.3, 0.5), rng.uniform(0.85, 1.0)
        # eased, but entered mid-way: already moving at frame 0
        e = 0.5 - 0.5 * np.cos(np.pi * (0.25 + 0.75 * u))
        e = (e - e[0]) / (e[-1] - e[0])
        z = small + (big - small) * (e if kind == "zoom-out" else 1 - e)
        edge = rng.integers(8)  # one of the four edges or four corners
        anchor = np.array([[0.2, 0.5], [0.8, 0.5], [0.5, 0.2], [0.5, 0.8],
                           [0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]][edge])
        drift = rng.uniform(-0.1, 0.1, 2)
        centre = anchor[None, :] + u[:, None] * drift[None, :]
    shake = rng.normal(0, rng.uniform(0.8, 2.5), (n, 2)).cumsum(0)
    ww = fit_w * z
    wh = ww / aspect
    cx, cy = centre[:, 0] * iw + shake[:, 0], centre[:, 1] * ih + shake[:, 1]
    x0 = np.clip(cx - ww / 2, 0, iw - ww)
    y0 = np.clip(cy - wh / 2, 0, ih - wh)
    return kind, np.stack([x0, y0, ww], axis=1)


def make(name: str, seed: int) -> tuple[Path, dict]:
    """The clip of ``(name, seed)`` and its ground truth, made once and cached in /tmp."""
    CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "__").rsplit(".", 1)[0] + f"-v{VERSION}-s{seed}"
    mp4, meta = CLIP_CACHE / f"{stem}.mp4", CLIP_CACHE / f"{stem}.json"
    if not (mp4.is_file() and meta.is_file()):
        tool = _tool()
        img = cv2.imread(str(EVAL / "widerface" / "images" / name))
        boxes = tool.wider.load_gt(EVAL / "widerface" / "gt.txt")[name]
        W, H = SIZE
        n = int(round(FPS * SECONDS))
        rng = np.random.default_rng([_hash(name) % 2**32, seed])
        kind, windows = camera(rng, img.shape[1], img.shape[0], n, W / H)
        part = CLIP_CACHE / f"{stem}.part{os.getpid()}.mp4"  # renamed when complete: safe in parallel
        proc = subprocess.Popen([tool.ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
                                 "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "medium",
                                 "-crf", "23", "-pix_fmt", "yuv420p", str(part)], stdin=subprocess.PIPE)
        frames = []
        for x0, y0, ww in windows:
            s = W / ww
            m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
            proc.stdin.write(cv2.warpAffine(img, m, (W, H), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REFLECT).tobytes())
            frames.append(_boxes(boxes, x0, y0, s, W, H))
        proc.stdin.close()
        if proc.wait():
            raise RuntimeError(f"ffmpeg failed making {stem}")
        part.replace(mp4)
        meta.write_text(json.dumps({"source": name, "seed": seed, "motion": kind, "fps": FPS, "size": [W, H],
                                    "frames": frames}))
    return mp4, json.loads(meta.read_text())


def _boxes(boxes: list, x0: float, y0: float, s: float, W: int, H: int) -> list[list[float]]:
    """Ground truth of one frame: ``[x, y, w, h, face_id, share inside]`` for faces at least half in."""
    out = []
    for fid, (x, y, w, h) in enumerate(boxes):
        X1, Y1, X2, Y2 = (x - x0) * s, (y - y0) * s, (x + w - x0) * s, (y + h - y0) * s
        c1, d1, c2, d2 = max(X1, 0), max(Y1, 0), min(X2, W), min(Y2, H)
        if c2 <= c1 or d2 <= d1:
            continue
        inside = (c2 - c1) * (d2 - d1) / ((X2 - X1) * (Y2 - Y1))
        if inside < 0.5:
            continue
        out.append([round(c1, 1), round(d1, 1), round(c2 - c1, 1), round(d2 - d1, 1), fid, round(inside, 3)])
    return out


if __name__ == "__main__":  # list the split: python bench/video_set.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import recall
    recall.load_metric()
    old = set(recall.pick_clip_photos(6))
    for p in PARTS:
        c = clips(p, old)
        print(p, len(c), "clips:", ", ".join(sorted({n for n, _ in c})))
