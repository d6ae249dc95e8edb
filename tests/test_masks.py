"""Masks: geometry, edge cases, information content, and irreversibility against a real recogniser.

The irreversibility test uses dlib's offline face-recognition ResNet (128-d descriptors; the
library's own threshold for "same person" is a distance below 0.6). It first shows the attack is
real: a plain 31 px Gaussian blur of the face still matches. Then it shows every mask style does
not match, and that a masked face is not nearer to its own identity than to the others.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from anonymize.masks import DEFAULT_MASK, MASKS, MAX_CELLS, create_mask, head_boxes
from anonymize.regions import Regions

STYLES = sorted(MASKS)
SAME_PERSON = 0.6  # dlib's documented threshold


def _textured(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _inside_ellipse_points(box, n: int, rng) -> np.ndarray:
    """Random points strictly inside the box's inscribed ellipse, plus its four extreme points."""
    x1, y1, x2, y2 = box
    cx, cy, a, b = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    t, r = rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(0, 1, n)) * (1 - 1e-9)
    t = np.concatenate([t, [0, np.pi / 2, np.pi, 3 * np.pi / 2]])
    r = np.concatenate([r, [1 - 1e-9] * 4])
    return np.stack([cx + a * r * np.cos(t), cy + b * r * np.sin(t)], axis=1)


# --- head boxes ------------------------------------------------------------------------------


def test_head_boxes_grow_up_more_than_down():
    regions = Regions([[100, 100, 200, 200], [10, 10, 20, 20]], kinds=["face", "plate"])
    head = head_boxes(regions, scale=1.3)
    np.testing.assert_allclose(head.boxes[0], [85, 75, 215, 205])  # centre lifted by 10% of height
    np.testing.assert_allclose(head.boxes[1], [10, 10, 20, 20])  # other kinds untouched
    assert list(head.kinds) == ["face", "plate"]
    top_gain, bottom_gain = 100 - head.boxes[0, 1], head.boxes[0, 3] - 200
    assert top_gain > bottom_gain > 0


def test_head_boxes_always_contain_the_face():
    face = np.array([[50, 60, 90, 120]], np.float32)
    for scale in (1.0, 1.05, 1.1, 1.3, 2.0):
        b = head_boxes(Regions(face), scale=scale).boxes[0]
        assert b[0] <= 50 and b[1] <= 60 and b[2] >= 90 and b[3] >= 120, (scale, b)
    assert len(head_boxes(Regions.empty())) == 0
    with pytest.raises(ValueError):
        head_boxes(Regions(face), scale=0.5)


# --- registry ----------------------------------------------------------------------------------


def test_registry_and_options():
    assert set(MASKS) == {"solid", "pixelate", "blur"}
    assert DEFAULT_MASK in MASKS
    for name in MASKS:
        mask = create_mask(name, seed=1)
        assert mask.name == name
    with pytest.raises(ValueError, match="unknown mask"):
        create_mask("swirl")
    with pytest.raises(ValueError):
        create_mask("pixelate", cells=MAX_CELLS + 1)  # would weaken the information bound
    with pytest.raises(ValueError):
        create_mask("blur").apply(_textured(), Regions([[0, 0, 10, 10]]), shape="circle")
    with pytest.raises(ValueError):
        create_mask("blur").apply(_textured().astype(np.float32), Regions([[0, 0, 10, 10]]))


# --- geometry ----------------------------------------------------------------------------------


def test_ellipse_covers_the_inscribed_ellipse():
    """Every point of each box's inscribed ellipse lies in a masked pixel (all styles share this
    rasterisation; solid makes it visible)."""
    rng = np.random.default_rng(3)
    boxes = [[10.0, 10.0, 60.0, 40.0], [100.3, 20.7, 101.2, 22.9], [150.5, 50.5, 153.5, 51.5],
             [200.49, 100.51, 260.77, 199.99], [30.0, 150.0, 31.0, 151.0]]
    for x, y in rng.uniform(0, 250, (40, 2)):  # random sizes, from sub-pixel to large
        boxes.append([x, y, x + rng.uniform(0.3, 60), y + rng.uniform(0.3, 60)])
    for box in boxes:
        frame = np.zeros((320, 320, 3), np.uint8)
        regions = Regions([box])
        box = regions.boxes[0].astype(np.float64)  # exactly the (float32) box the mask sees
        create_mask("solid", color=(255, 255, 255)).apply(frame, regions)
        masked = frame[:, :, 0] > 0
        pts = _inside_ellipse_points(box, 400, rng)
        cols, rows = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
        assert masked[rows, cols].all(), box
        # ...and nothing outside the pixels the box touches.
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        outside = masked.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), box


def test_box_shape_covers_every_touched_pixel():
    frame = np.zeros((50, 50, 3), np.uint8)
    create_mask("solid", color=(1, 2, 3)).apply(frame, Regions([[10.5, 5.2, 20.1, 9.0]]), shape="box")
    changed = (frame != 0).any(axis=2)
    expected = np.zeros((50, 50), bool)
    expected[5:9, 10:21] = True
    np.testing.assert_array_equal(changed, expected)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_masked_pixels_change_and_the_rest_do_not(style, shape):
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    boxes = [[160, 50, 280, 175], [300, 300, 420, 420], [330, 320, 450, 470]]  # two overlap
    regions = Regions(boxes)
    out = create_mask(style, seed=0).apply(image.copy(), regions, shape=shape)
    marker = create_mask("solid", color=(255, 255, 255)).apply(np.zeros_like(image), regions, shape=shape)
    cover = marker[:, :, 0] > 0
    changed = (out != image).any(axis=2)
    assert not changed[~cover].any(), "pixels outside the regions changed"
    face = cover.copy()
    face[200:] = False  # the face (not the flat black suit ring, where cell means equal pixels)
    assert changed[face].mean() > 0.95
    assert np.abs(out[face].astype(int) - image[face]).mean() > 10


@pytest.mark.parametrize("style", STYLES)
def test_edge_zero_and_tiny_boxes(style):
    mask = create_mask(style, seed=0)
    image = _textured(120, 160)
    # Wholly outside, zero-area, inverted and NaN boxes change nothing and raise nothing.
    nothing = Regions([[-50, -50, -10, -10], [200, 10, 260, 50], [10, 10, 10, 40], [30, 30, 20, 20],
                       [np.nan, 0, 10, 10], [5, 5, 5, 5]])
    out = mask.apply(image.copy(), nothing)
    np.testing.assert_array_equal(out, image)
    # Partly outside: the visible part is masked, the frame keeps its size.
    for box in ([-30, -20, 40, 50], [130, 90, 200, 160], [-10, 40, 170, 80]):
        out = mask.apply(image.copy(), Regions([box]), shape="box")
        x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], 160), min(box[3], 120)
        assert out.shape == image.shape
        assert (out[y0:y1, x0:x1] != image[y0:y1, x0:x1]).any(axis=2).mean() > 0.9
    # Tiny boxes (1-3 px) still mask the pixels they touch.
    for box in ([50, 50, 51, 51], [60.2, 60.7, 61.1, 61.9], [70, 70, 73, 72], [80.5, 80.5, 83.5, 83.5]):
        out = mask.apply(image.copy(), Regions([box]))
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        assert (out[cy, cx] != image[cy, cx]).any() or style != "solid"
        changed = (out != image).any(axis=2)
        assert not changed[: int(box[1])].any() and not changed[int(np.ceil(box[3])):].any()


@pytest.mark.parametrize("style", STYLES)
def test_many_overlapping_boxes_and_in_place(style):
    rng = np.random.default_rng(5)
    image = _textured(200, 200)
    xy = rng.uniform(40, 120, (200, 2))
    regions = Regions(np.hstack([xy, xy + rng.uniform(1, 80, (200, 1))]))
    frame = image.copy()
    out = create_mask(style, seed=0).apply(frame, regions)
    assert out is frame  # in place
    np.testing.assert_array_equal(out[:35], image[:35])  # above every box


@pytest.mark.parametrize("style", STYLES)
def test_works_on_non_contiguous_frames(style):
    base = _textured(100, 140)
    view = base[:, ::-1]  # negative strides: OpenCV cannot write into it
    before = view.copy()
    create_mask(style, seed=0).apply(view, Regions([[10, 10, 60, 70]]))
    assert (view[40, 35] != before[40, 35]).any() or style != "solid"
    assert (view != before).any(axis=2)[10:70, 10:60].mean() > 0.5
    np.testing.assert_array_equal(view[75:], before[75:])


# --- information content -----------------------------------------------------------------------


@pytest.mark.parametrize("style", ["pixelate", "blur"])
def test_output_is_a_function_of_at_most_64_cell_means(style):
    """Two crops with equal 8x8 cell means (different pixels) mask to identical outputs."""
    rng = np.random.default_rng(7)
    a = rng.integers(20, 236, (120, 140, 3), dtype=np.uint8)
    # Shuffle pixels within each 8x8 cell of the 64x64 region, and add a zero-sum checkerboard:
    # every pixel changes, every cell sum stays the same.
    b = a.copy()
    region = b[20:84, 30:94]
    for cy in range(8):
        for cx in range(8):
            cell = region[cy * 8:(cy + 1) * 8, cx * 8:(cx + 1) * 8].reshape(64, 3)
            cell[:] = cell[rng.permutation(64)]
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 2 - 1)[:, :, None] * 15
    region[:] = (region.astype(int) + checker).astype(np.uint8)
    assert (a[20:84, 30:94] != b[20:84, 30:94]).mean() > 0.9
    regions = Regions([[30, 20, 94, 84]])
    for shape in ("ellipse", "box"):
        out_a = create_mask(style, seed=11).apply(a.copy(), regions, shape=shape)
        out_b = create_mask(style, seed=11).apply(b.copy(), regions, shape=shape)
        cover = create_mask("solid", color=(9, 9, 9)).apply(np.zeros_like(a), regions, shape=shape)[:, :, 0] > 0
        np.testing.assert_array_equal(out_a[cover], out_b[cover])


def test_pixelate_draws_at_most_64_cells():
    image = _textured(400, 400)
    out = create_mask("pixelate", seed=0).apply(image.copy(), Regions([[0, 0, 400, 400]]), shape="box")
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 64
    small = create_mask("pixelate", seed=0).apply(image.copy(), Regions([[0, 0, 12, 12]]), shape="box")
    assert len(np.unique(small[:12, :12].reshape(-1, 3), axis=0)) <= 9  # fewer cells when small


def test_noise_is_seeded_and_fixed_per_track():
    image = _textured(120, 120)
    tracked = Regions([[10, 10, 100, 100]], track_ids=[7])
    untracked = Regions([[10, 10, 100, 100]])
    mask = create_mask("blur", seed=3)
    first, again = (mask.apply(image.copy(), tracked) for _ in range(2))
    np.testing.assert_array_equal(first, again)  # same track: same noise, no flicker
    np.testing.assert_array_equal(first, create_mask("blur", seed=3).apply(image.copy(), tracked))
    assert (first != create_mask("blur", seed=4).apply(image.copy(), tracked)).any()
    other = mask.apply(image.copy(), tracked.with_(track_ids=[8]))
    assert (first != other).any()
    u1, u2 = (mask.apply(image.copy(), untracked) for _ in range(2))
    assert (u1 != u2).any()  # untracked: fresh noise each time


# --- irreversibility against a real face recogniser -------------------------------------------


@pytest.fixture(scope="module")
def recogniser():
    dlib = pytest.importorskip("dlib")
    models = pytest.importorskip("face_recognition_models")
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def describe(bgr: np.ndarray, box) -> np.ndarray:
        """128-d descriptor at a known box: landmarks from the box, never from a detector, so a
        masked face still gets a descriptor (the strongest position for an attacker)."""
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        return np.array(net.compute_face_descriptor(rgb, predictor(rgb, rect)))

    return describe


def _face_sheet() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Faces side by side at ~110-150 px, their face boxes, and an identity label each.

    Real faces shipped in installed wheels: scikit-image's astronaut (Eileen Collins; also mirrored
    and at a second scale) and five people from its LFW subset (25 px, upscaled: soft, but distinct
    identities to rank against).
    """
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[20:260, 110:330]
    face = np.array([65, 56, 155, 146], float)  # dlib's detection in this crop (90 px)
    mirrored = np.array([220 - 155, 56, 220 - 65, 146], float)
    tiles = []
    for scale, mirror in ((150 / 90, False), (150 / 90, True), (110 / 90, False)):
        img, box = (astronaut[:, ::-1], mirrored) if mirror else (astronaut, face)
        img = cv2.resize(np.ascontiguousarray(img), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        tiles.append((img, box * scale, "astronaut"))
    lfw = skimage.data.lfw_subset()
    for i in (0, 10, 20, 30, 40):
        tile = np.full((220, 220, 3), 128, np.uint8)
        tile[35:185, 35:185] = cv2.resize((lfw[i] * 255).astype(np.uint8), (150, 150),
                                          interpolation=cv2.INTER_CUBIC)[:, :, None]
        tiles.append((tile, np.array([45, 45, 175, 175], float), f"lfw{i}"))
    sheet = np.full((max(t.shape[0] for t, _, _ in tiles), sum(t.shape[1] for t, _, _ in tiles), 3), 120, np.uint8)
    boxes, x = [], 0
    for img, box, _ in tiles:
        sheet[: img.shape[0], x:x + img.shape[1]] = img
        boxes.append(box + [x, 0, x, 0])
        x += img.shape[1]
    return sheet, np.array(boxes), [name for _, _, name in tiles]


@pytest.fixture(scope="module")
def faces(recogniser):
    sheet, boxes, names = _face_sheet()
    originals = np.array([recogniser(sheet, b) for b in boxes])
    # The sheet is sound: the astronaut's copies match each other, the others do not match her.
    dist = np.linalg.norm(originals[:, None] - originals[None], axis=-1)
    assert dist[:3, :3].max() < SAME_PERSON and dist[:3, 3:].min() > SAME_PERSON
    return sheet, boxes, names, originals


def test_plain_gaussian_blur_is_still_recognised(recogniser, faces):
    """The attack is real: a 31 px Gaussian blur over the head leaves every face matchable."""
    sheet, boxes, _, originals = faces
    blurred = sheet.copy()
    for x1, y1, x2, y2 in head_boxes(Regions(boxes)).boxes.astype(int):
        x1, y1 = max(x1, 0), max(y1, 0)
        blurred[y1:y2, x1:x2] = cv2.GaussianBlur(sheet[y1:y2, x1:x2], (31, 31), 0)
    dist = [np.linalg.norm(recogniser(blurred, b) - o) for b, o in zip(boxes, originals)]
    assert max(dist) < SAME_PERSON, dist


@pytest.mark.parametrize("shape", ["ellipse", "box"])
@pytest.mark.parametrize("style", STYLES)
def test_masked_faces_are_not_recognised(recogniser, faces, style, shape):
    sheet, boxes, names, originals = faces
    masked = create_mask(style, seed=0).apply(sheet.copy(), head_boxes(Regions(boxes)), shape=shape)
    probes = np.array([recogniser(masked, b) for b in boxes])
    dist = np.linalg.norm(probes[:, None] - originals[None], axis=-1)  # probe x original
    own = np.diag(dist)
    assert own.min() >= SAME_PERSON, dict(zip(names, own.round(3)))
    # Where other identities exist, a masked astronaut is nearer to someone else than to any
    # picture of herself: the mask leaves nothing to pick her out by.
    same = np.array([[a == b for b in names] for a in names])
    for i, name in enumerate(names):
        if name == "astronaut":
            assert dist[i][same[i]].min() > dist[i][~same[i]].min(), (name, dist[i].round(3))
