"""Text and licence-plate detector: PP-OCRv4 text *detection* (Apache-2.0), no recognition.

Names on badges and signs, phone numbers, house numbers and licence plates identify people as
surely as faces. No plate detector with a permissive licence ships its weights, but a plate is
text, so a general scene-text detector covers plates too. We take PaddleOCR's PP-OCRv4 detection
network as the ``rapidocr_onnxruntime`` wheel ships it (the file sits inside the wheel: nothing is
downloaded at run time), run it in our own onnxruntime session and do the DB post-processing
(probability map -> connected regions -> rotated rectangles -> "unclip") with numpy and OpenCV.

The text is never read: there is no recognition model here, so nothing legible reaches the report.
Every region comes back as the axis-aligned box around its whole rotated, unclipped rectangle plus
a margin, because a partly masked word is still legible.
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
# PP-OCR's normalisation as rapidocr configures it for this model: (x / 255 - 0.5) / 0.5.
_NORM_SCALE, _NORM_SHIFT = 2.0 / 255.0, -1.0


@register("text")
class TextDetector(Detector):
    """PP-OCRv4 text detection (PaddleOCR, Apache-2.0) on onnxruntime CPU; kind ``"text"``.

    ``threshold`` and ``scale`` (and any other unknown keyword) are accepted and ignored: the
    pipeline passes the *face* detector's settings under those names, which mean nothing for this
    network. Its own knobs are below; the defaults were chosen on ``bench/marks.py`` (synthetic
    text and plates on the WIDER crowd photos): at 960, text >= 16 px high on a sign, badge or
    plate is masked >= 99 % of the time, on photos and on 1080p frames; text drawn straight over
    a busy scene only ~70 %, and the share drops with the angle.

    Args:
        threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
        max_side: the frame is shrunk (never enlarged) so its longer side is at most this many
            pixels, then each side is rounded up to a multiple of 32. Cost grows with the area:
            a 1080p frame takes ~0.1 s at 640, ~0.25 s at 960, ~0.45 s at 1280 on one core.
            On 1080p frames 960 misses about half the characters under 16 px; 640 also starts
            missing 16-32 px ones (95 % masked), 1280 misses fewer small ones.
        bin_threshold: probability above which a map pixel is text (DB's ``thresh``).
        box_threshold: a region is kept when its mean probability reaches this (DB's
            ``box_thresh``). The map is nearly binary, so 0.3 and 0.5 measured the same.
        unclip: DB's unclip ratio. The network predicts a shrunk text kernel; each rotated
            rectangle is grown on every side by ``area * unclip / perimeter`` map pixels to
            recover the full text (PP-OCR uses 1.5-2.0). 2.0 with ``pad`` 0.15 masked every
            glyph of 100 % of plates where 1.5 with ``pad`` 0.05 left some glyph pixels of 8 %
            of them showing, for ~5 % more of the frame masked (11 % -> 16 % on the photos).
        pad: a further margin added to every side, as a fraction of the rotated rectangle's
            short side (about the text height): masks that stop exactly at the glyph edges leave
            ascenders, descenders and end letters readable.
        max_regions: at most this many regions per frame, the highest-scoring first.
    """

    kinds = ("text",)

    def __init__(self, threshold: float | None = None, scale: float | None = None, threads: int = 0,
                 max_side: int = 960, bin_threshold: float = 0.3, box_threshold: float = 0.5,
                 unclip: float = 2.0, pad: float = 0.15, max_regions: int = 1000,
                 **_ignored) -> None:
        del threshold, scale  # the face detector's settings (see the class docstring)
        if max_side < _ALIGN:
            raise ValueError(f"max_side must be >= {_ALIGN}, got {max_side}")
        if not 0 < bin_threshold < 1 or not 0 <= box_threshold < 1:
            raise ValueError("bin_threshold must be in (0, 1) and box_threshold in [0, 1)")
        if unclip < 0 or pad < 0:
            raise ValueError("unclip and pad must be >= 0")
        self.max_side, self.bin_threshold, self.box_threshold = int(max_side), float(bin_threshold), float(box_threshold)
        self.unclip, self.pad, self.max_regions = float(unclip), float(pad), int(max_regions)
        self._session = cpu_session(str(model_path("ppocr-det")), threads)
        self._input = self._session.get_inputs()[0].name

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """Network input (width, height): shrunk to ``max_side``, sides rounded up to multiples of 32."""
        ratio = min(1.0, self.max_side / max(h, w))
        sw, sh = max(round(w * ratio), 1), max(round(h * ratio), 1)
        return int(np.ceil(sw / _ALIGN) * _ALIGN), int(np.ceil(sh / _ALIGN) * _ALIGN)

    def probability(self, frame: np.ndarray) -> np.ndarray:
        """The network's text probability map (h_in x w_in float32) for a BGR uint8 frame."""
        h, w = frame.shape[:2]
        w_in, h_in = self.input_size(h, w)
        # BGR, as PaddleOCR feeds cv2-decoded images. Resize in uint8 (cheap), normalise once.
        resized = frame if (w_in, h_in) == (w, h) else cv2.resize(frame, (w_in, h_in), interpolation=cv2.INTER_AREA)
        blob = np.empty((1, 3, h_in, w_in), np.float32)
        for c in range(3):
            np.multiply(resized[:, :, c], np.float32(_NORM_SCALE), out=blob[0, c], casting="unsafe")
        blob += np.float32(_NORM_SHIFT)
        return self._session.run(None, {self._input: blob})[0][0, 0]

    def detect(self, frame: np.ndarray) -> Regions:
        """Text regions in a BGR uint8 frame, as padded boxes in frame pixels (kinds "text")."""
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            return Regions.empty()
        prob = self.probability(frame)
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
        for i in candidates[: self.max_regions]:
            x, y, bw, bh = stats[i, :4]
            region = (labels[y:y + bh, x:x + bw] == i).astype(np.uint8)
            outline = np.concatenate(cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
            # Pixel squares, not centres: each boundary pixel spans [x, x+1], so take its corners.
            pts = (outline.reshape(-1, 1, 2) + _CORNERS).reshape(-1, 2) + np.array([x, y])
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(pts.astype(np.float32))
            if min(rw, rh) < _MIN_SIDE:
                continue
            # Unclip as pyclipper does for a rectangle (offset by d on every side; we keep sharp
            # corners, which only covers more), then the margin relative to the text height.
            d = rw * rh * self.unclip / (2 * (rw + rh))
            grow = 2 * d + 2 * self.pad * (min(rw, rh) + 2 * d)
            rects.append((cx, cy, rw + grow, rh + grow, angle))
            kept.append(scores[i])
        return np.asarray(rects, np.float32).reshape(-1, 5), np.asarray(kept, np.float32)

    def models(self) -> list[dict]:
        return [model_info("ppocr-det")]
