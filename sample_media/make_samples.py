#!/usr/bin/env python3
"""Generate the project's demo media: a small "crowd" video and photo with ground-truth face boxes.

The faces are real photographs shipped inside the scikit-image wheel (``skimage.data``), both
released without copyright restrictions (see ``sample_media/README.md``):

* ``astronaut`` -- NASA portrait of Eileen Collins, "released into the public domain";
* ``camera``    -- the "cameraman" photo, "CC0 by the photographer (Lav Varshney)".

Everything else (street background, placards, audio) is synthesised here from a fixed seed, so
running the script again rewrites byte-identical files (given the same numpy / OpenCV / Pillow /
imageio-ffmpeg versions).

Outputs, written next to this script:

* ``crowd.mp4``        1280x720, 30 fps, 4 s, H.264 yuv420p + AAC stereo, with phone-like
                       container metadata (creation time, GPS location, make/model, title).
* ``crowd.json``       per-frame face boxes ``[x, y, w, h, face_id]`` for ``crowd.mp4``.
* ``crowd.jpg``        1920x1080 still with EXIF (Make/Model, DateTimeOriginal, GPS, Orientation).
* ``crowd_photo.json`` face boxes for ``crowd.jpg``.

Boxes are integer pixels in the frame, top-left origin, clipped to the frame. A face that is
(partly) outside the frame is listed with its visible part only; one that is entirely outside
is left out of that frame. Usage::

    python sample_media/make_samples.py
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata

try:
    import imageio_ffmpeg
except ImportError:  # pragma: no cover - dependency of the project itself
    imageio_ffmpeg = None

OUT_DIR = Path(__file__).resolve().parent
SEED = 20240501

VIDEO_W, VIDEO_H, FPS, N_FRAMES = 1280, 720, 30, 120  # 4.0 s
PHOTO_W, PHOTO_H = 1920, 1080
AUDIO_RATE = 48000

# Phone-like metadata the anonymizer must remove.
CREATION_TIME = "2024-05-01T14:32:10.000000Z"
LAT, LON, ALT = 52.5200, 13.4050, 34.0  # Berlin, Pariser Platz-ish
ISO6709 = f"{LAT:+08.4f}{LON:+09.4f}/"  # "+52.5200+013.4050/"
ISO6709_ALT = f"{LAT:+08.4f}{LON:+09.4f}{ALT:+08.3f}/"
MAKE, MODEL, SOFTWARE = "ExamplePhone", "ExamplePhone 12 Pro", "ExampleOS 17.4.1"
TITLE = "May Day march - Unter den Linden"


# --------------------------------------------------------------------------------------------
# Face sources
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A person cut out of a skimage photo: crop, hand-drawn silhouette and the face box."""

    name: str
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image
    face: tuple[int, int, int, int]  # x, y, w, h in the original image (checked by eye, see README)
    ellipses: tuple[tuple[int, int, int, int], ...]  # cx, cy, ax, ay (original coords)
    polygons: tuple[tuple[tuple[int, int], ...], ...] = ()
    solid: tuple[tuple[tuple[int, int], ...], ...] = ()  # always part of the person
    feather: float = 1.2  # Gaussian sigma of the silhouette edge, original pixels

    @functools.lru_cache(maxsize=None)
    def image(self) -> np.ndarray:
        """RGB uint8 crop."""
        img = getattr(skdata, self.name)()
        if img.ndim == 2:  # the cameraman is grey: give it a faint warm cast so it sits in colour
            g = img.astype(np.float32)
            img = np.clip(np.stack([g * 1.04, g * 1.0, g * 0.93], axis=-1), 0, 255).astype(np.uint8)
        x0, y0, x1, y1 = self.crop
        return np.ascontiguousarray(img[y0:y1, x0:x1])

    @functools.lru_cache(maxsize=None)
    def alpha(self) -> np.ndarray:
        """float32 silhouette in [0, 1], crop-sized.

        The hand-drawn shapes bound the person loosely; inside them, pixels that look like the
        photo's backdrop (see :meth:`_backdrop`) and are connected to the outside are cut away.
        """
        x0, y0, x1, y1 = self.crop
        loose = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for cx, cy, ax, ay in self.ellipses:
            cv2.ellipse(loose, (cx - x0, cy - y0), (ax, ay), 0, 0, 360, 1, -1)
        for poly in self.polygons:
            cv2.fillPoly(loose, [np.array([(x - x0, y - y0) for x, y in poly], np.int32)], 1)
        bg = (self._backdrop() | (loose == 0)).astype(np.uint8)
        bg = cv2.morphologyEx(bg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        bg |= (loose == 0).astype(np.uint8)
        # small backdrop-coloured islands inside the person (highlights on skin, metal) are filled
        n, lab, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=4)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        keep_bg = np.zeros(n, bool)
        keep_bg[1:] = stats[1:, cv2.CC_STAT_AREA] >= 400
        keep_bg[border[border > 0]] = True
        fg = (~keep_bg[lab]).astype(np.uint8)
        for poly in self.solid:
            cv2.fillPoly(fg, [np.array([(x - x0, y - y0) for x, y in poly], np.int32)], 1)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        fg = cv2.erode(fg, np.ones((2, 2), np.uint8))
        a = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), self.feather)
        # fade the cut at the bottom of the crop so a far-away person doesn't end in a hard edge
        h = a.shape[0]
        fade = np.clip((h - 1 - np.arange(h)) / (0.12 * h), 0.0, 1.0).astype(np.float32)
        return a * fade[:, None]

    def _backdrop(self) -> np.ndarray:
        """Crop-sized bool map of pixels that look like the photo's background, not the person."""
        x0, y0, x1, y1 = self.crop
        img = getattr(skdata, self.name)()[y0:y1, x0:x1].astype(np.int16)
        if self.name == "astronaut":  # light, nearly grey studio backdrop
            return ((img.max(-1) - img.min(-1)) < 40) & (img.max(-1) > 150)
        # cameraman: bright sky everywhere; mid-grey grass and buildings below the horizon, where
        # the coat and gloves are near-black
        yy = np.arange(y0, y1)[:, None]
        return (img > 150) | ((img > 85) & (yy >= 196))


def _ellipse_poly(c: tuple[int, int], ax: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple((int(x), int(y)) for x, y in cv2.ellipse2Poly(c, ax, 0, 0, 360, 10))


ASTRONAUT = Source(
    name="astronaut",
    crop=(20, 0, 370, 330),
    # hairline/fringe (y 66) to chin (y 182), left cheek (x 178) to right ear (x 272)
    face=(178, 66, 94, 116),
    ellipses=(
        (228, 100, 77, 88),   # hair + face
        (224, 160, 50, 40),   # chin / neck
        (208, 228, 100, 80),  # suit collar ring
        (195, 390, 178, 140), # shoulders
    ),
    solid=(
        _ellipse_poly((224, 124), (44, 60)),  # face
        _ellipse_poly((208, 228), (88, 66)),  # inside the collar ring
    ),
)

CAMERAMAN = Source(
    name="camera",
    crop=(0, 50, 345, 330),
    # hairline (y 118) to chin (y 194), ear (x 184) to nose tip (x 258); three-quarter profile
    face=(184, 118, 74, 76),
    ellipses=(
        (214, 130, 60, 72),   # head (hair top ~62, chin ~195)
        (228, 175, 34, 24),   # jaw / chin
    ),
    polygons=(
        # coat, shoulders and arms
        ((0, 330), (0, 290), (40, 205), (100, 120), (150, 86), (172, 104), (200, 172),
         (248, 196), (262, 200), (300, 232), (284, 242), (276, 300), (250, 330)),
        # right glove
        ((298, 150), (330, 148), (336, 172), (334, 215), (310, 222), (298, 200)),
    ),
    # the video camera is light grey against a light sky: keep it whatever its colour
    solid=(
        ((252, 139), (326, 138), (326, 160), (318, 178), (300, 186), (268, 186), (258, 176), (252, 150)),
        # face (skin is as light as the sky) and the white shirt collar
        ((186, 122), (235, 118), (252, 130), (252, 150), (256, 160), (254, 170), (244, 176),
         (240, 192), (222, 198), (200, 190), (186, 165)),
        ((165, 160), (185, 160), (190, 200), (172, 200)),
    ),
)

SOURCES = {"astronaut": ASTRONAUT, "camera": CAMERAMAN}


# --------------------------------------------------------------------------------------------
# Sprites: cut-out people (with a face box) and procedural backs of heads (no face)
# --------------------------------------------------------------------------------------------
@dataclass
class Sprite:
    pre: np.ndarray  # float32 HxWx3, RGB premultiplied by alpha
    inv: np.ndarray  # float32 HxWx3, 1 - alpha (three equal channels, for cv2.multiply)
    solid: np.ndarray  # bool HxW, alpha > 0.5 (what hides people behind)
    face: tuple[int, int, int, int] | None  # x, y, w, h inside the sprite; None: no visible face

    @property
    def shape(self) -> tuple[int, int]:
        return self.solid.shape


def _sprite(rgb: np.ndarray, alpha: np.ndarray, face) -> Sprite:
    a = alpha.astype(np.float32)
    return Sprite(np.ascontiguousarray(rgb * a[..., None], np.float32),
                  np.ascontiguousarray(np.repeat((1.0 - a)[..., None], 3, axis=2)), a > 0.5, face)


def make_person_sprite(src: Source, face_h: float, flip: bool, gain: float,
                       tint: tuple[float, float, float]) -> Sprite:
    """Scale ``src`` so its face box is ``face_h`` pixels tall; optionally mirror and recolour."""
    img = src.image().astype(np.float32)
    a = src.alpha()
    h0, w0 = a.shape
    s = face_h / src.face[3]
    w1, h1 = max(1, round(w0 * s)), max(1, round(h0 * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    img = cv2.resize(img, (w1, h1), interpolation=interp)
    a = np.clip(cv2.resize(a, (w1, h1), interpolation=cv2.INTER_LINEAR), 0, 1)
    sx, sy = w1 / w0, h1 / h0
    fx, fy, fw, fh = src.face
    fx, fy = fx - src.crop[0], fy - src.crop[1]
    x0, x1 = round(fx * sx), round((fx + fw) * sx)
    y0, y1 = round(fy * sy), round((fy + fh) * sy)
    if flip:
        img, a = img[:, ::-1], a[:, ::-1]
        x0, x1 = w1 - x1, w1 - x0
    img = np.clip(img * gain * np.asarray(tint, np.float32), 0, 255)
    return _sprite(img, a, (x0, y0, x1 - x0, y1 - y0))


HAIR = [(28, 22, 20), (60, 40, 28), (92, 64, 40), (150, 120, 80), (120, 118, 116), (40, 30, 26)]
JACKETS = [(40, 52, 80), (150, 40, 40), (60, 70, 60), (200, 170, 60), (30, 30, 34),
           (90, 110, 140), (120, 70, 110), (70, 60, 50), (20, 90, 120)]
CAPS = [(200, 40, 40), (40, 80, 170), (230, 200, 60), (30, 30, 30)]


def make_back_sprite(head_h: float, style: int, rng: np.random.Generator) -> Sprite:
    """Someone seen from behind: hair (maybe a beanie), ears, neck, shoulders. Has no face."""
    u = head_h
    w, h = int(3.4 * u), int(3.2 * u)
    cx = w / 2
    hair = np.array(HAIR[(5 * style + 1) % len(HAIR)], np.float32)
    jacket = np.array(JACKETS[(4 * style) % len(JACKETS)], np.float32)
    skin = np.array([205, 160, 130], np.float32) * float(rng.uniform(0.6, 1.05))
    cap = CAPS[int(rng.integers(len(CAPS)))] if rng.random() < 0.25 else None
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def ell(c, ax):
        return ((xx - c[0]) / ax[0]) ** 2 + ((yy - c[1]) / ax[1]) ** 2 <= 1.0

    head_c = (cx, 0.55 * u)
    head = ell(head_c, (0.40 * u, 0.52 * u))
    ears = ell((cx - 0.39 * u, 0.66 * u), (0.08 * u, 0.14 * u)) | ell((cx + 0.39 * u, 0.66 * u), (0.08 * u, 0.14 * u))
    neck = (np.abs(xx - cx) < 0.24 * u) & (yy > 0.7 * u) & (yy < 1.5 * u)
    shoulders = ell((cx, 1.75 * u), (1.40 * u, 0.50 * u)) | (
        (yy >= 1.75 * u) & (np.abs(xx - cx) < 1.40 * u + 0.08 * (yy - 1.75 * u)))
    collar = ell((cx, 1.36 * u), (0.40 * u, 0.22 * u))
    body = shoulders | collar
    tex = cv2.resize(skdata.grass().astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    tex = cv2.GaussianBlur(tex, (0, 0), max(0.5, 0.02 * u))
    side = (1.0 - 0.30 * np.clip(np.abs(xx - cx) / (1.5 * u), 0, 1) ** 2)[..., None]
    down = (1.0 - 0.25 * np.clip((yy - 1.3 * u) / (2 * u), 0, 1))[..., None]
    rgb = np.zeros((h, w, 3), np.float32)
    fabric = jacket * side * down * (0.93 + 0.14 * tex[..., None])
    rgb[body] = fabric[body]
    rgb[(neck | ears) & ~body] = skin
    top_light = (1.2 - 0.4 * np.clip(yy / (1.1 * u), 0, 1))[..., None]
    rgb[head] = (hair * top_light * (0.85 + 0.3 * tex[..., None]))[head]
    if cap is not None:
        top = head & (yy < head_c[1] - 0.02 * u)
        rgb[top] = (np.array(cap, np.float32) * top_light * (0.9 + 0.2 * tex[..., None]))[top]
    alpha = (body | neck | ears | head).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.6, 0.015 * u))
    fade = np.clip((h - 1 - np.arange(h)) / (0.15 * h), 0.0, 1.0).astype(np.float32)
    return _sprite(rgb, alpha * fade[:, None], None)


# --------------------------------------------------------------------------------------------
# Background: sky, facades (one in CC0 brick), pavement (CC0 gravel), placards
# --------------------------------------------------------------------------------------------
def _tile(tex: np.ndarray, h: int, w: int, scale: float) -> np.ndarray:
    t = cv2.resize(tex.astype(np.float32), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    reps = (h // t.shape[0] + 1, w // t.shape[1] + 1)
    return np.tile(t, reps)[:h, :w]


def make_background(h: int, w: int, rng: np.random.Generator, unit: float, base: float) -> np.ndarray:
    """RGB float32 street scene. ``unit`` scales feature sizes (1.0 for 720p); ``base`` is the
    height, as a fraction of ``h``, where the facades meet the pavement."""
    img = np.zeros((h, w, 3), np.float32)
    base_y = int(base * h)
    t = np.linspace(0, 1, base_y)[:, None]
    top, bottom = np.array([128, 164, 206], np.float32), np.array([214, 222, 230], np.float32)
    img[:base_y] = (top * (1 - t) + bottom * t)[:, None, :]
    grav = _tile(skdata.gravel(), h - base_y, w, 0.5 * unit)
    grav = cv2.GaussianBlur(grav, (0, 0), 1.0 * unit)
    grav = (grav - grav.mean()) / (grav.std() + 1e-6)
    t = np.linspace(0, 1, h - base_y)[:, None]
    pave = (150 - 40 * t) + 7 * grav
    img[base_y:] = pave[..., None] * np.array([1.0, 0.99, 0.96], np.float32)
    img[base_y:base_y + int(6 * unit)] = (170, 168, 160)  # kerb
    brick = _tile(skdata.brick(), h, w, 0.35 * unit) / 255.0
    palette = [(196, 184, 160), (170, 150, 130), (214, 204, 186), (150, 160, 168),
               (188, 170, 150), (120, 110, 104), (205, 195, 170)]
    x, i = -int(rng.integers(0, 60) * unit), 0
    while x < w:
        bw = int(rng.integers(150, 330) * unit)
        bh = int(rng.integers(int(0.52 * base_y), int(0.9 * base_y)))
        y0, xs, x1 = base_y - bh, max(0, x), min(w, x + bw)
        if i % 4 == 2:
            img[y0:base_y, xs:x1] = np.array([150, 78, 60], np.float32) * (0.55 + 0.75 * brick[y0:base_y, xs:x1, None])
        else:
            img[y0:base_y, xs:x1] = np.array(palette[int(rng.integers(len(palette)))], np.float32)
        img[y0:y0 + int(8 * unit), xs:x1] *= 0.8  # cornice
        ww, wh = int(rng.integers(26, 40) * unit), int(rng.integers(36, 52) * unit)
        gx, gy = int(rng.integers(18, 30) * unit), int(rng.integers(22, 34) * unit)
        for wy in range(y0 + gy, base_y - wh - int(50 * unit), wh + gy):
            for wx in range(x + gx, x + bw - ww - gx // 2, ww + gx):
                glass = np.array([70, 86, 104], np.float32) * float(rng.uniform(0.8, 1.25))
                xa, xb = max(0, wx), min(w, wx + ww)
                if xb > xa:
                    img[wy:wy + wh, xa:xb] = glass
                    img[wy:wy + int(4 * unit), xa:xb] = glass * 0.7
        dx = x + int(rng.integers(10, max(11, bw // 3)))
        img[base_y - int(70 * unit):base_y, max(0, dx):max(0, min(w, dx + int(46 * unit)))] = (60, 52, 50)
        x, i = x + bw, i + 1
    # placards held up above the crowd (OpenCV draws text on uint8 only: layer + mask)
    lay, lmask = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
    signs = [("FREE PRESS", (245, 240, 225), (180, 20, 30)), ("NO!", (250, 210, 40), (20, 20, 20)),
             ("JUSTICE", (230, 60, 50), (255, 255, 255)), ("WE ARE HERE", (255, 255, 255), (20, 60, 150)),
             ("SOLIDARITY", (60, 140, 80), (255, 255, 255))]
    lw = max(1, round(2 * unit))
    for k, (text, bg, fg) in enumerate(signs):
        cx = int((k + 0.5 + rng.uniform(-0.25, 0.25)) * w / len(signs))
        sw, sh = int(rng.integers(150, 210) * unit), int(rng.integers(80, 110) * unit)
        cy = int(rng.uniform(0.40, 0.62) * base_y)
        p0, p1 = (cx - sw // 2, cy - sh // 2), (cx + sw // 2, cy + sh // 2)
        for tgt, col in ((lay, (120, 90, 60)), (lmask, 255)):
            cv2.line(tgt, (cx, cy), (cx, cy + int(200 * unit)), col, max(2, round(6 * unit)))
        cv2.rectangle(lay, p0, p1, bg, -1)
        cv2.rectangle(lay, p0, p1, (40, 40, 40), lw)
        cv2.rectangle(lmask, p0, p1, 255, -1)
        scale = 1.0 * unit
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, lw)
        scale *= min(1.0, 0.85 * sw / tw)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, lw)
        cv2.putText(lay, text, (cx - tw // 2, cy + th // 2), cv2.FONT_HERSHEY_DUPLEX, scale, fg, lw, cv2.LINE_AA)
    m = (lmask.astype(np.float32) / 255.0)[..., None]
    img = img * (1 - m) + lay.astype(np.float32) * m
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img *= (1.0 - 0.09 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2))[..., None]
    return cv2.GaussianBlur(img, (0, 0), 0.6 * unit)


# --------------------------------------------------------------------------------------------
# Compositing
# --------------------------------------------------------------------------------------------
def _window(sp: Sprite, x: int, y: int, W: int, H: int):
    h, w = sp.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))


def _clip_box(x: int, y: int, w: int, h: int, W: int, H: int) -> list[int] | None:
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def render(canvas: np.ndarray, placed: list[tuple[Sprite, int, int, int]]):
    """Draw ``placed`` = [(sprite, x, y, face_id)] far-to-near onto ``canvas`` (RGB float32, modified).

    Returns (RGB uint8 image, face boxes sorted by id, {face_id: fraction of its visible box
    covered by the solid part (alpha > 0.5) of anything drawn in front of it}).
    """
    H, W = canvas.shape[:2]
    for sp, x, y, _ in placed:
        win = _window(sp, x, y, W, H)
        if win is not None:
            dst, src = win
            roi = canvas[dst]
            cv2.multiply(roi, sp.inv[src], dst=roi)
            cv2.add(roi, sp.pre[src], dst=roi)
    boxes, hidden = [], {}
    occ = np.zeros((H, W), bool)
    for sp, x, y, fid in reversed(placed):
        if sp.face is not None:
            fx, fy, fw, fh = sp.face
            box = _clip_box(x + fx, y + fy, fw, fh, W, H)
            if box is not None:
                bx, by, bw, bh = box
                hidden[fid] = float(occ[by:by + bh, bx:bx + bw].mean())
                boxes.append(box + [fid])
        win = _window(sp, x, y, W, H)
        if win is not None:
            occ[win[0]] |= sp.solid[win[1]]
    boxes.sort(key=lambda b: b[4])
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), boxes, hidden


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    """A person in the scene. ``source`` "astronaut"/"camera" has a face (face_id >= 0);
    "back" is a procedural back of a head (size = head height, face_id -1)."""

    source: str
    size: float  # face-box height (people) or head height (backs), pixels
    cx: float  # face-box (or head) centre x at t = 0, frame coordinates before camera motion
    top: float  # face-box (or head) top y at t = 0
    face_id: int = -1
    flip: bool = False
    vx: float = 0.0  # drift, px/s
    sway: float = 0.0  # walking bob amplitude, px
    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _make(a: Actor, k: int, rng: np.random.Generator) -> tuple[Sprite, float, float]:
    """Sprite plus the offset from the sprite's top-left to the actor's (cx, top) anchor;
    ``k`` (the actor's index) picks the clothes of procedural people."""
    if a.source == "back":
        sp = make_back_sprite(a.size, k, rng)
        return sp, sp.shape[1] / 2, 0.03 * a.size
    sp = make_person_sprite(SOURCES[a.source], a.size, a.flip, a.gain, a.tint)
    fx, fy, fw, _ = sp.face
    return sp, fx + fw / 2, fy


# Camera held up at arm's length: the horizon is high, far heads sit near it and near heads low.
# Listed far-to-near (draw order). Faces 40..200 px tall; face 7 walks in from the right edge
# about 1.3 s into the clip.
VIDEO_ACTORS = [
    Actor("astronaut", 40, 250, 236, face_id=0, vx=8, sway=1.0, gain=0.92, tint=(1.0, 1.0, 1.04)),
    Actor("camera", 46, 1040, 232, face_id=1, flip=True, vx=-6, sway=1.0, gain=1.05),
    Actor("astronaut", 56, 690, 240, face_id=2, flip=True, vx=10, sway=1.5, gain=0.97, tint=(1.04, 1.0, 0.96)),
    Actor("back", 48, 560, 300, vx=6, sway=1.0),
    Actor("back", 44, 1150, 296, vx=-4, sway=1.0),
    Actor("back", 52, 150, 306, vx=5, sway=1.0),
    Actor("astronaut", 72, 420, 318, face_id=3, vx=-8, sway=2.0, gain=1.03, tint=(0.97, 1.0, 1.03)),
    Actor("astronaut", 100, 900, 330, face_id=4, flip=True, vx=12, sway=2.5, gain=0.95),
    Actor("back", 80, 700, 400, vx=6, sway=2.0),
    Actor("astronaut", 120, 1425, 372, face_id=7, flip=True, vx=-80, sway=4.0, tint=(1.03, 0.99, 0.95)),
    Actor("back", 110, 1010, 520, vx=10, sway=3.0),
    Actor("back", 120, 380, 540, vx=-6, sway=3.0),
    Actor("camera", 150, 150, 470, face_id=5, vx=10, sway=3.0),
    Actor("astronaut", 200, 640, 470, face_id=6, vx=-12, sway=3.0),
]

# The still: 1920x1080, far-to-near.
PHOTO_ACTORS = [
    Actor("astronaut", 36, 560, 352, face_id=0, flip=True, gain=0.9),
    Actor("astronaut", 44, 1230, 348, face_id=1, gain=1.04, tint=(0.96, 1.0, 1.04)),
    Actor("camera", 52, 910, 342, face_id=2, gain=1.02),
    Actor("astronaut", 60, 1620, 345, face_id=3, flip=True, gain=0.96, tint=(1.05, 1.0, 0.95)),
    Actor("back", 60, 760, 420), Actor("back", 56, 1420, 418), Actor("back", 64, 300, 430),
    Actor("back", 58, 1840, 424),
    Actor("astronaut", 84, 380, 440, face_id=4),
    Actor("astronaut", 110, 1060, 470, face_id=5, flip=True, gain=0.98),
    Actor("back", 100, 620, 560), Actor("back", 96, 1500, 600),
    Actor("camera", 150, 1330, 720, face_id=6, flip=True),
    Actor("astronaut", 190, 300, 660, face_id=7, tint=(1.02, 1.0, 0.97)),
    Actor("back", 170, 860, 800),
    Actor("astronaut", 260, 1760, 700, face_id=8, flip=True, gain=0.97),
]


def _face_info(actors: list[Actor]) -> dict[str, dict]:
    src_desc = {"astronaut": "skimage.data.astronaut()", "camera": "skimage.data.camera()"}
    return {str(a.face_id): {"source": src_desc[a.source], "mirrored": a.flip, "nominal_face_height_px": a.size}
            for a in sorted(actors, key=lambda a: a.face_id) if a.face_id >= 0}


def _camera_path(rng: np.random.Generator) -> np.ndarray:
    """Per-frame camera offset (dx, dy), pixels: slow pan to the right plus handheld shake."""
    t = np.arange(N_FRAMES) / FPS
    u = t / t[-1]
    dx = -45 + 90 * u * u * (3 - 2 * u)
    dy = 6 * np.sin(2 * np.pi * 0.3 * t)
    for amp, axis in ((4.0, 0), (4.0, 0), (4.0, 0), (3.0, 1), (3.0, 1), (3.0, 1)):
        f, ph, a = rng.uniform(0.6, 2.8), rng.uniform(0, 2 * np.pi), amp * rng.uniform(0.4, 1.0)
        if axis == 0:
            dx = dx + a * np.sin(2 * np.pi * f * t + ph)
        else:
            dy = dy + a * np.sin(2 * np.pi * f * t + ph)
    return np.stack([dx, dy], axis=1)


def video_frames(rng: np.random.Generator):
    """Yield (RGB uint8 frame, boxes, hidden) for each of the N_FRAMES frames."""
    cam = _camera_path(rng)
    mx, my = (int(np.ceil(np.abs(cam[:, k]).max())) + 2 for k in (0, 1))
    world = make_background(VIDEO_H + 2 * my, VIDEO_W + 2 * mx, rng, unit=1.0, base=0.47)
    made = [(_make(a, k, rng), a) for k, a in enumerate(VIDEO_ACTORS)]
    phases = rng.uniform(0, 2 * np.pi, len(made))
    for i in range(N_FRAMES):
        t = i / FPS
        ox, oy = (int(round(v)) for v in cam[i])
        placed = []
        for ((sp, ax, ay), a), ph in zip(made, phases):
            cx = a.cx + a.vx * t - ox
            top = a.top - a.sway * abs(np.sin(np.pi * 1.8 * t + ph)) - oy
            placed.append((sp, round(cx - ax), round(top - ay), a.face_id))
        canvas = world[my + oy:my + oy + VIDEO_H, mx + ox:mx + ox + VIDEO_W].copy()
        yield render(canvas, placed)


def photo(rng: np.random.Generator):
    canvas = make_background(PHOTO_H, PHOTO_W, rng, unit=1.5, base=0.47)
    placed = []
    for k, a in enumerate(PHOTO_ACTORS):
        sp, ax, ay = _make(a, k, rng)
        placed.append((sp, round(a.cx - ax), round(a.top - ay), a.face_id))
    return render(canvas, placed)


# --------------------------------------------------------------------------------------------
# Audio: crowd murmur, a chanted "speech-like" rhythm and a whistle
# --------------------------------------------------------------------------------------------
def make_audio(rng: np.random.Generator) -> np.ndarray:
    """(n, 2) int16 stereo at AUDIO_RATE, exactly N_FRAMES / FPS seconds."""
    n = AUDIO_RATE * N_FRAMES // FPS
    t = np.arange(n) / AUDIO_RATE
    freqs = np.fft.rfftfreq(n, 1 / AUDIO_RATE)

    def shaped_noise(lo: float, hi: float) -> np.ndarray:
        spec = np.fft.rfft(rng.standard_normal(n))
        band = (freqs > lo) & (freqs < hi)
        spec *= band / np.sqrt(np.maximum(freqs, 1.0))  # pink, band-limited
        x = np.fft.irfft(spec, n)
        return x / (np.abs(x).max() + 1e-9)

    out = np.zeros((n, 2))
    for ch in range(2):  # murmur, slowly swelling
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6.3))
        out[:, ch] += 0.25 * shaped_noise(120, 3500) * env
    # voices chanting two syllables per beat: harmonic stacks through two moving formants
    beat = 0.5
    vowels = [(700, 1200), (400, 2000), (600, 1000), (300, 2300)]
    n_syl = int(t[-1] / (beat / 2)) + 2
    for v in range(6):
        f0_mean = rng.uniform(110, 240)
        f0 = f0_mean * (1 + 0.02 * np.sin(2 * np.pi * 5 * t + v))
        z1 = np.exp(1j * 2 * np.pi * np.cumsum(f0) / AUDIO_RATE)
        syl = np.floor((t + rng.uniform(0, 0.04)) / (beat / 2)).astype(int)
        f1 = np.array([vowels[k % 4][0] for k in range(n_syl)], np.float64)
        f2 = np.array([vowels[k % 4][1] for k in range(n_syl)], np.float64)
        voice = np.zeros(n)
        zk = np.ones(n, np.complex128)
        for k in range(1, int(3500 / f0_mean) + 1):
            zk *= z1
            fk = k * f0_mean
            gain = np.exp(-((fk - f1) / 180) ** 2) + 0.6 * np.exp(-((fk - f2) / 250) ** 2) + 0.05 / k
            voice += gain[syl] * zk.imag
        frac = ((t / (beat / 2)) % 1.0)
        env = np.clip(frac / 0.08, 0, 1) * np.clip((0.85 - frac) / 0.3, 0, 1)  # syllable attack/decay
        env *= (t > 0.3) & (t < 3.8)
        pan = rng.uniform(0.2, 0.8)
        voice *= env / 25
        out[:, 0] += voice * (1 - pan)
        out[:, 1] += voice * pan
    whistle = (t > 2.4) & (t < 2.9)
    out[:, :] += (0.2 * np.sin(2 * np.pi * 2900 * t + 8 * np.sin(2 * np.pi * 30 * t)) * whistle)[:, None]
    fade = np.clip(np.minimum(t, t[-1] - t) / 0.05, 0, 1)[:, None]
    out = out * fade
    out *= 0.5 / np.abs(out).max()
    return np.round(out * 32767).astype(np.int16)


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(AUDIO_RATE)
        w.writeframes(pcm.tobytes())


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------
_KR, _KB = 0.2126, 0.0722  # BT.709
_KG = 1 - _KR - _KB
_Y = np.array([[_KR, _KG, _KB, 0]], np.float32) * np.array([[219 / 255, 219 / 255, 219 / 255, 1]], np.float32) + [[0, 0, 0, 16]]
_UV = np.array([
    [-_KR / (2 - 2 * _KB), -_KG / (2 - 2 * _KB), 0.5, 0],
    [0.5, -_KG / (2 - 2 * _KR), -_KB / (2 - 2 * _KR), 0],
], np.float32) * np.array([[224 / 255] * 3 + [1]], np.float32) + [[0, 0, 0, 128], [0, 0, 0, 128]]


def rgb_to_yuv420p(rgb: np.ndarray) -> bytes:
    """BT.709 limited-range planar 4:2:0 (done here, so the encoder's input is exactly defined)."""
    y = cv2.transform(rgb, _Y.astype(np.float32))
    h, w = rgb.shape[:2]
    sub = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # 2x2 means
    uv = cv2.transform(sub, _UV.astype(np.float32))
    return y.tobytes() + np.ascontiguousarray(uv[..., 0]).tobytes() + np.ascontiguousarray(uv[..., 1]).tobytes()


def _ffmpeg() -> str:
    if imageio_ffmpeg is not None:
        return imageio_ffmpeg.get_ffmpeg_exe()
    return "ffmpeg"


def write_video(path: Path, rng: np.random.Generator) -> dict:
    """Encode the crowd clip to ``path``; return the ground-truth document."""
    frames_doc = []
    worst: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        _write_wav(wav, make_audio(np.random.default_rng(SEED + 1)))
        tmp_out = path.with_name(path.name + ".part")
        meta = {
            "title": TITLE,
            "creation_time": CREATION_TIME,
            "location": ISO6709,
            "make": MAKE,
            "model": MODEL,
            "com.apple.quicktime.make": MAKE,
            "com.apple.quicktime.model": MODEL,
            "com.apple.quicktime.software": SOFTWARE,
            "com.apple.quicktime.creationdate": "2024-05-01T16:32:10+0200",
            "com.apple.quicktime.location.ISO6709": ISO6709_ALT,
        }
        cmd = [
            _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{VIDEO_W}x{VIDEO_H}", "-r", str(FPS),
            "-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-i", "-",
            "-i", str(wav),
            "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-profile:v", "high", "-pix_fmt", "yuv420p",
            "-g", "30", "-threads", "4",
            "-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-c:a", "aac", "-b:a", "96k", "-ar", str(AUDIO_RATE), "-ac", "2",
            "-fflags", "+bitexact", "-movflags", "+faststart+use_metadata_tags",
        ]
        for k, v in meta.items():
            cmd += ["-metadata", f"{k}={v}"]
        for s in ("v", "a"):
            cmd += [f"-metadata:s:{s}", f"creation_time={CREATION_TIME}"]
        cmd += ["-f", "mp4", str(tmp_out)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        try:
            for i, (frame, boxes, hidden) in enumerate(video_frames(rng)):
                proc.stdin.write(rgb_to_yuv420p(frame))
                frames_doc.append({"frame": i, "boxes": boxes})
                for k, v in hidden.items():
                    worst[k] = max(worst.get(k, 0.0), v)
            proc.stdin.close()
        except BaseException:
            proc.kill()
            raise
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}")
        os.replace(tmp_out, path)
    _check_unoccluded(worst, "video")
    return {
        "media": path.name,
        "width": VIDEO_W, "height": VIDEO_H, "fps": FPS, "num_frames": N_FRAMES,
        "box_format": "[x, y, w, h, face_id]: integer pixels, top-left origin, clipped to the frame; "
                      "a face wholly outside the frame is omitted from that frame",
        "face_box_convention": "hairline/forehead to chin, cheek or ear to cheek or ear (like WIDER FACE)",
        "faces": _face_info(VIDEO_ACTORS),
        "metadata_written": meta,
        "frames": frames_doc,
    }


def _check_unoccluded(worst: dict[int, float], what: str) -> None:
    bad = {k: round(v, 3) for k, v in worst.items() if v > 0.05}
    if bad:
        raise AssertionError(f"{what}: faces hidden behind other people (fraction of box): {bad}")


def _exif() -> Image.Exif:
    def dms(v: float) -> tuple[float, float, float]:
        v = abs(v)
        d = int(v)
        m = int((v - d) * 60)
        return float(d), float(m), round(((v - d) * 60 - m) * 60, 2)

    exif = Image.Exif()
    exif[0x010F] = MAKE                       # Make
    exif[0x0110] = MODEL                      # Model
    exif[0x0112] = 1                          # Orientation: top-left
    exif[0x0131] = SOFTWARE                   # Software
    exif[0x0132] = "2024:05:01 16:32:10"      # DateTime
    exif[0x013B] = "Jane Example"             # Artist
    sub = exif.get_ifd(0x8769)                # Exif IFD
    sub[0x9003] = "2024:05:01 16:32:10"       # DateTimeOriginal
    sub[0x9004] = "2024:05:01 16:32:10"       # DateTimeDigitized
    sub[0x9011] = "+02:00"                    # OffsetTimeOriginal
    sub[0xA431] = "EP12-0042-7781"            # BodySerialNumber
    sub[0xA433] = MAKE                        # LensMake
    sub[0xA434] = f"{MODEL} back camera 6.86mm f/1.78"  # LensModel
    gps = exif.get_ifd(0x8825)                # GPS IFD
    gps[0x0000] = b"\x02\x02\x00\x00"         # GPSVersionID 2.2.0.0
    gps[0x0001] = "N" if LAT >= 0 else "S"
    gps[0x0002] = dms(LAT)
    gps[0x0003] = "E" if LON >= 0 else "W"
    gps[0x0004] = dms(LON)
    gps[0x0005] = b"\x00"                     # above sea level
    gps[0x0006] = ALT
    gps[0x0007] = (14.0, 32.0, 10.0)          # GPSTimeStamp (UTC)
    gps[0x001D] = "2024:05:01"                # GPSDateStamp
    return exif


def write_photo(path: Path, rng: np.random.Generator) -> dict:
    img, boxes, hidden = photo(rng)
    _check_unoccluded(hidden, "photo")
    tmp_out = path.with_name(path.name + ".part")
    Image.fromarray(img).save(tmp_out, format="JPEG", quality=88, subsampling="4:2:0",
                              exif=_exif().tobytes())
    os.replace(tmp_out, path)
    return {
        "media": path.name,
        "width": PHOTO_W, "height": PHOTO_H,
        "box_format": "[x, y, w, h, face_id]: integer pixels, top-left origin",
        "face_box_convention": "hairline/forehead to chin, cheek or ear to cheek or ear (like WIDER FACE)",
        "faces": _face_info(PHOTO_ACTORS),
        "exif_written": {"Make": MAKE, "Model": MODEL, "Orientation": 1, "DateTimeOriginal": "2024:05:01 16:32:10",
                         "GPS": {"lat": LAT, "lon": LON, "alt_m": ALT}, "Software": SOFTWARE,
                         "Artist": "Jane Example", "BodySerialNumber": "EP12-0042-7781"},
        "boxes": boxes,
    }


def _dumps(doc: dict) -> str:
    """JSON with one frame (or one box) per line: short, readable and diffable."""
    def compact(v):
        return json.dumps(v, separators=(", ", ": "), ensure_ascii=False)

    lines = ["{"]
    items = list(doc.items())
    for n, (k, v) in enumerate(items):
        end = "," if n < len(items) - 1 else ""
        if isinstance(v, list) and v and isinstance(v[0], (dict, list)):
            body = ",\n".join("  " + compact(x) for x in v)
            lines.append(f" {json.dumps(k)}: [\n{body}\n ]{end}")
        elif isinstance(v, dict):
            body = ",\n".join(f"  {json.dumps(kk)}: {compact(vv)}" for kk, vv in v.items())
            lines.append(f" {json.dumps(k)}: {{\n{body}\n }}{end}")
        else:
            lines.append(f" {json.dumps(k)}: {compact(v)}{end}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    return text


def _write_json(path: Path, doc: dict) -> None:
    tmp_out = path.with_name(path.name + ".part")
    tmp_out.write_text(_dumps(doc), encoding="utf-8")
    os.replace(tmp_out, path)


def main() -> int:
    out = OUT_DIR
    written = []
    video_doc = write_video(out / "crowd.mp4", np.random.default_rng(SEED))
    written.append(out / "crowd.mp4")
    _write_json(out / "crowd.json", video_doc)
    written.append(out / "crowd.json")
    photo_doc = write_photo(out / "crowd.jpg", np.random.default_rng(SEED + 2))
    written.append(out / "crowd.jpg")
    _write_json(out / "crowd_photo.json", photo_doc)
    written.append(out / "crowd_photo.json")
    for p in written:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        print(f"wrote {p.relative_to(out.parent)}  {p.stat().st_size:>9,d} bytes  sha256:{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
