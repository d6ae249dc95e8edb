"""Identifying marks other than faces: how much of them the detectors mask, and at what cost.

``text``: a deterministic synthetic set built from the shared WIDER crowd photos (read in place
from ../shared/eval/widerface; nothing made from them is written anywhere). Onto every photo the
bench renders text lines (names, phone numbers, house numbers, name tapes, slogans) and licence
plates at random character heights (log-uniform, default 8-80 px), angles (-30..30 deg for text,
-15..15 plus a perspective warp for plates), fonts (OpenCV's Hershey faces and any DejaVu TTF,
else Pillow's built-in font), colours and contrasts, sometimes on a sign or badge, then saves the
frame as JPEG (q 90) and decodes it again. Ground truth is exact: the rotated/warped quad of the
glyphs' tight box, and the glyph pixels themselves.

The detector's regions are drawn as the pipeline draws text (``shape="box"``, with the project's
own mask code) and every target is scored by the share of its ground-truth quad that is masked.
Buckets are by character height, the cap height ("H") of the font as rendered in the frame.
"outside targets" is the share of the frame masked outside every target's quad and its carrier
(sign, badge or plate); real text in the photos (banners, shirts, real signs) counts as outside.

``--clean`` also runs the detector on the photos without our targets (real text and false
positives alone). A second table gives the share masked by absolute angle.

    python bench/marks.py text --limit 100 --seed 0 --clean             # WIDER photos as they are
    python bench/marks.py video --limit 40 --seed 0 --threads 1,2 --faces --max-side 640,960,1280
    python bench/marks.py text --limit 40 --unclip 1.5,2.0 --pad 0.05,0.15 --box-threshold 0.3,0.5
    python bench/marks.py text --limit 100 --seed 0 --clean --model ppocr-det-v6s,ppocr-det --unclip 1.5,2.0
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from anonymize.detectors import create
from anonymize.masks import SolidMask

EVAL = ROOT.parent / "shared" / "eval"
WIDER = EVAL / "widerface" / "images"
BUCKETS = [(0, 16, "<16"), (16, 32, "16-32"), (32, 64, "32-64"), (64, 10**9, ">=64")]
COVER = 0.8  # a target counts as masked when at least this share of its quad is masked

# --- what gets rendered -----------------------------------------------------------------------

FIRST = ["Maria", "James", "Ahmed", "Olga", "Chen", "Lucia", "Kwame", "Sofia", "Pierre", "Aisha",
         "Jonas", "Fatima", "Diego", "Hannah", "Yuki", "Noah"]
LAST = ["Schmidt", "O'Neill", "Kowalski", "Nguyen", "Garcia", "Okafor", "Rossi", "Novak",
        "Johansson", "Dubois", "Haddad", "Petrov", "Silva", "Muller", "Tanaka", "Moreau"]
SLOGANS = ["NO MORE WAR", "Climate Justice Now", "FREE PRESS", "Housing for all", "STOP THE CUTS",
           "We are the 99%", "RIGHTS NOT RUBBER BULLETS", "Solidarity!"]
HERSHEY = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
           cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL]
TTF_DIRS = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts"]


def ttf_fonts() -> list[str]:
    """DejaVu (or other) TTF files on this machine; empty means Pillow's built-in font only."""
    found = sorted(str(p) for d in TTF_DIRS if d.is_dir() for p in d.rglob("*.ttf")
                   if "Math" not in p.name)
    dejavu = [f for f in found if "DejaVu" in f]
    return dejavu or found[:12]


def text_string(rng: np.random.Generator) -> str:
    """A name, phone number, house number, name tape or slogan."""
    kind = rng.integers(6)
    d = lambda n: "".join(str(v) for v in rng.integers(0, 10, n))
    if kind == 0:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        return name.upper() if rng.random() < 0.4 else name
    if kind == 1:
        return str(rng.choice([f"+49 {d(3)} {d(7)}", f"0{d(3)}-{d(3)}-{d(4)}", f"({d(3)}) {d(3)}-{d(4)}",
                               f"Tel. {d(4)} {d(6)}"]))
    if kind == 2:
        return str(rng.choice([f"No. {rng.integers(1, 300)}", f"{rng.integers(1, 200)}b",
                               f"{rng.integers(1, 999)}", f"Apt {rng.integers(1, 60)}"]))
    if kind == 3:
        return str(rng.choice([f"POLICE {d(4)}", f"{rng.choice(LAST).upper()}", f"OFFICER {rng.choice(LAST).upper()}",
                               f"ID {d(6)}"]))
    if kind == 4:
        return f"Call {rng.choice(FIRST)}: {d(4)} {d(4)}"
    return str(rng.choice(SLOGANS))


def plate_string(rng: np.random.Generator) -> str:
    """A licence-plate-like string (European, UK and US patterns)."""
    L = lambda n: "".join(chr(65 + v) for v in rng.integers(0, 26, n))
    d = lambda n: "".join(str(v) for v in rng.integers(0, 10, n))
    return str(rng.choice([f"{L(2)} {d(3)} {L(2)}", f"{L(1)}-{L(2)} {d(4)}", f"{L(2)}{d(2)} {L(3)}",
                           f"{d(1)}{L(3)}{d(3)}", f"{L(3)} {d(4)}", f"{L(2)}-{d(3)}-{L(2)}"]))


@dataclass
class Font:
    """One font: a Hershey face (``hershey`` >= 0) or a TTF path ('' = Pillow's built-in)."""

    hershey: int = -1
    path: str = ""
    italic: bool = False

    def name(self) -> str:
        return f"hershey{self.hershey}" if self.hershey >= 0 else (Path(self.path).stem or "pil-default")


def _pil_font(font: Font, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font.path, px) if font.path else ImageFont.load_default(size=px)


def _ink_height(alpha: np.ndarray) -> int:
    rows = np.nonzero(alpha.max(axis=1) > 127)[0]
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def render_line(text: str, font: Font, cap_px: float) -> tuple[np.ndarray, float]:
    """Glyph coverage (uint8 alpha, tight-ish patch with a margin) of ``text`` whose capital H is
    about ``cap_px`` tall, and the exact cap height obtained."""
    if font.hershey >= 0:
        # Hershey caps are ~ getTextSize height; solve the scale, measure exactly after.
        base = cv2.getTextSize("H", font.hershey | (cv2.FONT_ITALIC if font.italic else 0), 1.0, 1)[0][1]
        scale = cap_px / base
        thick = max(1, round(cap_px / 12))
        ff = font.hershey | (cv2.FONT_ITALIC if font.italic else 0)

        def draw(s: str) -> np.ndarray:
            (tw, th), bl = cv2.getTextSize(s, ff, scale, thick)
            m = thick + 4
            img = np.zeros((th + bl + 2 * m, tw + 2 * m), np.uint8)
            cv2.putText(img, s, (m, m + th), ff, scale, 255, thick, cv2.LINE_AA)
            return img
    else:
        px = max(4, round(cap_px / 0.73))  # DejaVu's cap height is 0.73 em
        f = _pil_font(font, px)
        px = max(4, round(px * cap_px / max(_ink_height(np.asarray(_pil_draw("H", f))), 1)))
        f = _pil_font(font, px)

        def draw(s: str) -> np.ndarray:
            return np.asarray(_pil_draw(s, f))
    return draw(text), float(_ink_height(draw("H")))


def _pil_draw(s: str, f: ImageFont.FreeTypeFont) -> Image.Image:
    x1, y1, x2, y2 = f.getbbox(s)
    m = 4
    img = Image.new("L", (x2 - min(x1, 0) + 2 * m, y2 - min(y1, 0) + 2 * m), 0)
    ImageDraw.Draw(img).text((m - min(x1, 0), m - min(y1, 0)), s, font=f, fill=255)
    return img


def tight_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of every pixel with any ink (exclusive ends)."""
    ys, xs = np.nonzero(alpha)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass
class Target:
    kind: str  # "text" or "plate"
    string: str
    font: str
    char_h: float  # cap height in frame pixels
    angle: float
    quad: np.ndarray  # (4, 2) glyphs' tight box in frame pixels
    carrier: np.ndarray | None  # (4, 2) sign / badge / plate, or None
    ink: np.ndarray  # (h, w) bool glyph pixels, in the frame-sized window below
    window: tuple[int, int]  # (x0, y0) of ``ink`` in the frame


def _luma(bgr) -> float:
    b, g, r = (float(v) for v in bgr)
    return 0.114 * b + 0.587 * g + 0.299 * r


def _ink_colour(rng: np.random.Generator, bg: float) -> tuple[float, float, float]:
    """A colour whose luma differs from ``bg`` by 50..200 (toward whichever side has room)."""
    delta = rng.uniform(50, 200)
    target = bg + delta if (bg + delta <= 255 and (bg < 128 or bg - delta < 0)) else bg - delta
    target = float(np.clip(target, 0, 255))
    tint = rng.uniform(-40, 40, 3)
    col = np.clip(target + tint - _luma(tint), 0, 255)  # same luma, some hue
    return tuple(float(v) for v in col)


class Scene:
    """Renders targets onto one photo, keeping them apart, and remembers their ground truth."""

    def __init__(self, img: np.ndarray, rng: np.random.Generator, fonts: list[Font]) -> None:
        self.photo = img
        self.img = img.astype(np.float32)
        self.h, self.w = img.shape[:2]
        self.rng, self.fonts = rng, fonts
        self.taken = np.zeros((self.h, self.w), bool)
        self.targets: list[Target] = []

    def add(self, kind: str, char_h: float, tries: int = 30) -> bool:
        rng = self.rng
        for _ in range(tries):
            font = self.fonts[rng.integers(len(self.fonts))]
            plate = kind == "plate"
            if plate and font.hershey in (cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL):
                continue
            text = plate_string(rng) if plate else text_string(rng)
            glyphs, cap = render_line(text, font, char_h)
            gx1, gy1, gx2, gy2 = tight_box(glyphs)
            # The carrier: a plate always, a sign/badge for 40 % of text lines.
            on_carrier = plate or rng.random() < 0.4
            mx, my = ((0.25, 0.3) if plate else (0.3, 0.45)) if on_carrier else (0.1, 0.1)
            ph, pw = glyphs.shape
            bx, by = round(cap * mx * 2) + 2, round(cap * my * 2) + 2
            patch_w, patch_h = pw + 2 * bx, ph + 2 * by
            ink = np.zeros((patch_h, patch_w), np.float32)
            ink[by:by + ph, bx:bx + pw] = glyphs / 255.0
            gbox = np.array([[gx1 + bx, gy1 + by], [gx2 + bx, gy1 + by], [gx2 + bx, gy2 + by],
                             [gx1 + bx, gy2 + by]], np.float64)
            cbox = np.array([[0, 0], [patch_w, 0], [patch_w, patch_h], [0, patch_h]], np.float64)
            angle = rng.uniform(-15, 15) if plate else rng.uniform(-30, 30)
            H = self._homography(patch_w, patch_h, angle, jitter=0.08 if plate else 0.0)
            if H is None:
                continue
            corners = cv2.perspectiveTransform(cbox[None], H)[0]
            x0, y0 = np.floor(corners.min(axis=0)).astype(int)
            x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
            if x0 < 0 or y0 < 0 or x1 > self.w or y1 > self.h:
                continue
            if self.taken[max(y0 - 4, 0):y1 + 4, max(x0 - 4, 0):x1 + 4].any():
                continue
            self._paint(kind, on_carrier, ink, H, (x0, y0, x1, y1), cap, rng)
            quad = cv2.perspectiveTransform(gbox[None], H)[0]
            # The cap height as it lands in the frame: the local vertical scale at the text centre.
            c = gbox.mean(axis=0)
            p = cv2.perspectiveTransform(np.array([[c, c + (0, 1)]], np.float64), H)[0]
            win = self._warp(ink, H, (x0, y0, x1, y1)) > 0.5
            self.targets.append(Target(kind, text, font.name(), cap * float(np.linalg.norm(p[1] - p[0])), angle,
                                       quad.astype(np.float32), corners.astype(np.float32) if on_carrier else None,
                                       win, (int(x0), int(y0))))
            self.taken[y0:y1, x0:x1] = True
            return True
        return False

    def _homography(self, pw: int, ph: int, angle: float, jitter: float) -> np.ndarray | None:
        """patch -> frame: perspective jitter, rotation about the centre, a random placement."""
        rng = self.rng
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
        dst = src + rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32) * np.float32([pw, ph])
        P = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
        R = np.eye(3)
        R[:2] = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
        M = R @ P
        c = cv2.perspectiveTransform(src[None].astype(np.float64), M)[0]
        span = c.max(axis=0) - c.min(axis=0)
        if span[0] >= self.w - 2 or span[1] >= self.h - 2:
            return None
        tx = rng.uniform(0, self.w - span[0]) - c[:, 0].min()
        ty = rng.uniform(0, self.h - span[1]) - c[:, 1].min()
        return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]]) @ M

    @staticmethod
    def _warp(layer: np.ndarray, H: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ H
        return cv2.warpPerspective(layer, T, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)

    def _paint(self, kind: str, on_carrier: bool, ink: np.ndarray, H: np.ndarray,
               box: tuple[int, int, int, int], cap: float, rng: np.random.Generator) -> None:
        x0, y0, x1, y1 = box
        region = self.img[y0:y1, x0:x1]
        ph, pw = ink.shape
        if on_carrier:
            if kind == "plate":
                fill = np.array([235, 235, 235] if rng.random() < 0.7 else [40, 200, 240], np.float32)
                edge = np.array([20, 20, 20], np.float32)
                ink_col = np.array([15, 15, 15], np.float32)
            else:
                fill = np.array(rng.uniform(0, 255, 3), np.float32)
                edge = fill * 0.6
                ink_col = np.array(_ink_colour(rng, _luma(fill)), np.float32)
            body = np.ones((ph, pw), np.float32)
            border = np.zeros((ph, pw), np.float32)
            t = max(1, round(cap * 0.08))
            border[:t], border[-t:], border[:, :t], border[:, -t:] = 1, 1, 1, 1
            if kind == "plate" and rng.random() < 0.5:  # EU band
                border[:, t:t + max(2, round(pw * 0.07))] = 0.5
            a_body = self._warp(body, H, box)[..., None]
            region[:] = region * (1 - a_body) + fill * a_body
            a_edge = self._warp(border, H, box)[..., None]
            region[:] = region * (1 - a_edge) + edge * a_edge
        else:
            ink_col = np.array(_ink_colour(rng, float(_luma(region.reshape(-1, 3).mean(axis=0)))), np.float32)
        a_ink = self._warp(ink, H, box)
        if rng.random() < 0.3:  # a little defocus now and then
            a_ink = cv2.GaussianBlur(a_ink, (0, 0), rng.uniform(0.5, 1.0))
        region[:] = region * (1 - a_ink[..., None]) + ink_col * a_ink[..., None]

    def frame(self, quality: int = 90) -> np.ndarray:
        """The composite, through a JPEG round trip like any camera photo."""
        _ok, buf = cv2.imencode(".jpg", np.clip(self.img, 0, 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def photos(limit: int | None) -> list[Path]:
    """``limit`` WIDER photos evenly spread over the sorted list (all event folders)."""
    names = sorted(WIDER.glob("*/*.jpg"))
    if limit and limit < len(names):
        names = [names[i] for i in np.linspace(0, len(names) - 1, limit).round().astype(int)]
    return names


def fit_frame(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The photo scaled to cover ``size`` (w, h) and centre-cropped; unchanged when None."""
    if size is None:
        return img
    w, h = size
    s = max(w / img.shape[1], h / img.shape[0])
    big = cv2.resize(img, (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
    y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y:y + h, x:x + w])


def build_scene(path: Path, index: int, args, fonts: list[Font]) -> Scene:
    """Photo ``index`` with its targets; depends only on (seed, index, path, options)."""
    rng = np.random.default_rng([args.seed, index])
    scene = Scene(fit_frame(cv2.imread(str(path)), args.frame), rng, fonts)
    lo, hi = np.log(args.min_char), np.log(args.max_char)
    items = [(float(np.exp(rng.uniform(lo, hi))), kind) for kind in ["text"] * args.texts + ["plate"] * args.plates]
    for char_h, kind in sorted(items, reverse=True):  # the largest first, while there is room
        scene.add(kind, char_h)
    return scene


# --- scoring ----------------------------------------------------------------------------------

def mask_of(regions, h: int, w: int) -> np.ndarray:
    """The pixels the pipeline masks for these regions (its own mask code, ``shape="box"``)."""
    canvas = np.zeros((h, w, 3), np.uint8)
    SolidMask(color=(255, 255, 255)).apply(canvas, regions, shape="box")
    return canvas[:, :, 0] > 0


def score_scene(scene: Scene, mask: np.ndarray) -> tuple[list[dict], float]:
    """Per target: kind, char height, share of its quad masked, all its glyph pixels masked;
    and the share of the frame masked outside every target and carrier."""
    h, w = mask.shape
    rows, inside = [], np.zeros((h, w), np.uint8)
    for t in scene.targets:
        quad = np.zeros((h, w), np.uint8)
        cv2.fillPoly(quad, [np.round(t.quad * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        covered = float(mask[quad > 0].mean()) if quad.any() else 0.0
        x0, y0 = t.window
        ih, iw = t.ink.shape
        ink_all = bool(mask[y0:y0 + ih, x0:x0 + iw][t.ink].all())
        rows.append({"kind": t.kind, "char_h": t.char_h, "cover": covered, "ink_all": ink_all,
                     "font": t.font, "angle": t.angle, "carrier": t.carrier is not None})
        inside |= quad
        if t.carrier is not None:
            cv2.fillPoly(inside, [np.round(t.carrier * 16).astype(np.int32)], 1, shift=4)
    return rows, float((mask & (inside == 0)).mean())


def _group(row: dict) -> str:
    """Plates; text on a sign or badge; text drawn straight onto the busy photo (harder than most
    real text, which sits on a plain surface)."""
    if row["kind"] == "plate":
        return "plate"
    return "text on sign" if row["carrier"] else "text on scene"


def _share(rows: list[dict], key) -> str:
    if not rows:
        return "-"
    return f"{100 * np.mean([key(r) for r in rows]):.1f}%"


def table(results: list[dict]) -> str:
    """Markdown: per config and kind, masked (>= 80 % of the quad) / fully masked, by bucket."""
    head = ["config", "kind", "n (<16/16-32/32-64/>=64)"] + [b[2] for b in BUCKETS] + [
        ">=16", ">=16 100% box", ">=16 all ink", "outside targets", "clean photo masked", "s/frame (median)", "faces s/frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        for kind in ("text on sign", "text on scene", "plate", "all"):
            rows = [r for r in res["rows"] if kind in ("all", _group(r))]
            if not rows:
                continue
            by = [[r for r in rows if lo <= r["char_h"] < hi] for lo, hi, _ in BUCKETS]
            big = [r for r in rows if r["char_h"] >= 16]
            cells = [res["config"], kind, "/".join(str(len(b)) for b in by)]
            cells += [_share(b, lambda r: r["cover"] >= COVER) for b in by]
            cells += [_share(big, lambda r: r["cover"] >= COVER), _share(big, lambda r: r["cover"] >= 1.0),
                      _share(big, lambda r: r["ink_all"])]
            if kind == "all":
                cells += [f"{100 * np.mean(res['outside']):.2f}%",
                          f"{100 * np.mean(res['clean']):.2f}%" if res["clean"] else "-",
                          f"{res['latency']:.3f} ({res['threads']} thr)",
                          f"{res['faces']:.3f}" if res.get("faces") is not None else "-"]
            else:
                cells += [""] * 4
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def angle_table(results: list[dict]) -> str:
    """Markdown: share masked (>= 80 % of the quad) of targets >= 16 px, by absolute angle."""
    spans = [(0, 10), (10, 20), (20, 31)]
    head = ["config", "kind (>=16 px)"] + [f"angle ±{lo}-{min(hi, 30)}°" for lo, hi in spans]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        for kind in ("text on sign", "text on scene", "plate"):
            rows = [r for r in res["rows"] if r["char_h"] >= 16 and _group(r) == kind]
            cells = [res["config"], kind]
            for lo, hi in spans:
                b = [r for r in rows if lo <= abs(r["angle"]) < hi]
                cells.append(f"{_share(b, lambda r: r['cover'] >= COVER)} ({len(b)})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- commands ---------------------------------------------------------------------------------

def configs(args) -> list[dict]:
    """Every combination of the swept detector options."""
    return [{"model": mo, "max_side": m, "bin_threshold": bt, "box_threshold": b, "unclip": u, "pad": p,
             "max_height": mh, "inverted_side": inv, "swapped_side": sw} for mo, m, bt, b, u, p, mh, inv, sw in
            itertools.product(args.model, args.max_side, args.bin_threshold, args.box_threshold, args.unclip,
                              args.pad, args.max_height, args.inverted_side, args.swapped_side)]


def run_text(args) -> None:
    if not WIDER.is_dir():
        print(f"shared WIDER photos not found under {WIDER}; nothing to measure")
        return
    ttf = ttf_fonts()
    fonts = [Font(hershey=f) for f in HERSHEY] + [Font(hershey=cv2.FONT_HERSHEY_SIMPLEX, italic=True)]
    fonts += [Font(path=p) for p in ttf] if ttf else [Font(path="")]
    paths = photos(args.limit)
    threads = args.threads
    cfgs = configs(args)
    dets = [create("text", threads=threads[0], **c) for c in cfgs]
    extra = {t: [create("text", threads=t, **c) for c in cfgs] for t in threads[1:]}
    faces = {t: create("centerface", threads=t) for t in threads} if args.faces else {}
    out = [{"config": " ".join(f"{k}={v}" for k, v in c.items()), "rows": [], "outside": [], "times": [], "clean": [],
                "threads": threads[0], "extra": {t: [] for t in threads[1:]}} for c in cfgs]
    face_times = {t: [] for t in threads}
    load = []
    for i, path in enumerate(paths):
        scene = build_scene(path, i, args, fonts)
        frame = scene.frame()
        h, w = frame.shape[:2]
        load.append(os.getloadavg()[0])
        for j, det in enumerate(dets):
            t0 = time.perf_counter()
            regions = det.detect(frame)
            out[j]["times"].append(time.perf_counter() - t0)
            rows, outside = score_scene(scene, mask_of(regions, h, w))
            out[j]["rows"] += rows
            out[j]["outside"].append(outside)
            if args.clean:  # the same photo without our targets: real text and false positives
                out[j]["clean"].append(float(mask_of(det.detect(scene.photo), h, w).mean()))
            if i < args.latency_frames:
                for t, ds in extra.items():
                    t0 = time.perf_counter()
                    ds[j].detect(frame)
                    out[j]["extra"][t].append(time.perf_counter() - t0)
        if i < args.latency_frames:
            for t, fd in faces.items():
                t0 = time.perf_counter()
                fd.detect(frame)
                face_times[t].append(time.perf_counter() - t0)
        if args.dump and i < args.dump_count:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            vis = frame.copy()
            for t in scene.targets:
                cv2.polylines(vis, [np.round(t.quad).astype(np.int32)], True, (0, 255, 0), 1)
            for b in dets[0].detect(frame).boxes.astype(int):
                cv2.rectangle(vis, tuple(b[:2]), tuple(b[2:]), (0, 0, 255), 1)
            cv2.imwrite(str(Path(args.dump) / f"{i:03d}.png"), vis)
    size = "native" if args.frame is None else f"{args.frame[0]}x{args.frame[1]}"
    n_targets, asked = len(out[0]["rows"]), len(paths) * (args.texts + args.plates)
    print(f"{len(paths)} photos ({size}), {n_targets} of {asked} targets placed, seed {args.seed}, char height "
          f"{args.min_char}-{args.max_char} px, load average {np.mean(load):.1f} (2-core machine shared)")
    for res in out:
        res["latency"] = float(np.median(res["times"]))
        res["faces"] = float(np.median(face_times[threads[0]])) if faces else None
    print(table(out))
    print()
    print(angle_table(out))
    if len(threads) > 1 or faces:
        print(f"\nLatency, median s/frame over the first {args.latency_frames} frames ({size}):\n")
        print("| config | " + " | ".join(f"text {t} thr" for t in threads)
              + ("".join(f" | faces {t} thr" for t in threads) if faces else "") + " |")
        print("|---|" + "---|" * (len(threads) * (2 if faces else 1)))
        for res in out:
            cells = [f"{np.median(res['times'][:args.latency_frames]):.3f}"]
            cells += [f"{np.median(res['extra'][t]):.3f}" for t in threads[1:]]
            if faces:
                cells += [f"{np.median(face_times[t]):.3f}" for t in threads]
            print(f"| {res['config']} | " + " | ".join(cells) + " |")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for mode, frame, help_ in (("text", "native", "text and plates on the WIDER photos as they are"),
                               ("video", "1920x1080", "the same on 1920x1080 frames (cost per video frame)")):
        s = sub.add_parser(mode, help=help_)
        s.add_argument("--limit", type=int, default=100, help="photos, evenly spread (0 = all)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--frame", type=_size, default=_size(frame), help="WxH, or native")
        s.add_argument("--texts", type=int, default=6, help="text lines per photo")
        s.add_argument("--plates", type=int, default=2, help="plates per photo")
        s.add_argument("--min-char", type=float, default=8.0, help="smallest cap height, px")
        s.add_argument("--max-char", type=float, default=80.0, help="largest cap height, px")
        s.add_argument("--threads", type=_ints, default=[1], help="ort threads; the first scores, all are timed")
        s.add_argument("--latency-frames", type=int, default=10, help="frames timed for the other thread counts")
        s.add_argument("--faces", action="store_true", help="also time centerface (defaults) on the frames")
        s.add_argument("--clean", action="store_true", help="also detect on the photos without targets")
        s.add_argument("--model", type=lambda t: t.split(","), default=["ppocr-det-v6s"],
                       help="text weights: ppocr-det-v6s (PP-OCRv6 small) and/or ppocr-det (PP-OCRv4 mobile)")
        s.add_argument("--max-side", type=_ints, default=[960])
        s.add_argument("--inverted-side", type=_ints, default=[640],
                       help="second pass on the inverted frame at this size (0 = none)")
        s.add_argument("--swapped-side", type=_ints, default=[640],
                       help="third pass on the frame with its colour channels reversed, at this size (0 = none)")
        s.add_argument("--bin-threshold", type=_floats, default=[0.3])
        s.add_argument("--box-threshold", type=_floats, default=[0.5])
        s.add_argument("--unclip", type=_floats, default=[1.5])
        s.add_argument("--pad", type=_floats, default=[0.15])
        s.add_argument("--max-height", type=_floats, default=[0.25], help="drop regions thicker than this share of the frame")
        s.add_argument("--dump", help="write the first --dump-count annotated frames here (outside the repo!)")
        s.add_argument("--dump-count", type=int, default=5)
        s.set_defaults(func=run_text)
    args = p.parse_args()
    if args.dump and Path(args.dump).resolve().is_relative_to(ROOT):
        p.error("--dump must point outside the repository (frames are made from WIDER photos)")
    args.func(args)


if __name__ == "__main__":
    main()
