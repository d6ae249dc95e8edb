"""The person / head detectors on real pictures (scikit-image's public-domain astronaut)."""
import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from anonymize.detectors import create  # noqa: E402
from anonymize.detectors.person import _anchors, head_boxes  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])  # RGB -> BGR


@pytest.fixture(scope="module")
def detectors():
    # one whole-frame pass: these tests check the network and its geometry (the default also
    # runs column tiles; see test_default_tiles_keep_the_whole_person)
    return create("person", threads=2, tiles=1), create("head", threads=2, tiles=1), create("centerface", threads=2)


def _inside(inner: np.ndarray, outer: np.ndarray) -> float:
    """Share of box ``inner`` lying inside box ``outer``."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    return max(w, 0) * max(h, 0) / ((inner[2] - inner[0]) * (inner[3] - inner[1]))


def test_anchor_count_matches_network():
    # 19x19x3 + (10x10 + 5x5 + 3x3 + 2x2 + 1x1) x 6 = the graph's 1917 outputs
    assert _anchors().shape == (1917, 4)


def test_person_and_head_found_on_the_astronaut(astronaut, detectors):
    person, head, centerface = detectors
    people = person.detect(astronaut)
    assert len(people) == 1 and set(people.kinds) == {"person"}
    assert people.scores[0] > 0.5
    x1, y1, x2, y2 = people.boxes[0]
    assert x2 - x1 > 250 and y2 - y1 > 350  # she fills most of the picture
    heads = head.detect(astronaut)
    assert len(heads) == 1 and set(heads.kinds) == {"head"}
    face = centerface.detect(astronaut).boxes[0]  # an independent detector places the face
    assert _inside(face, heads.boxes[0]) >= 0.95
    # and the head box is a head, not the body: well above the bottom of the picture
    assert heads.boxes[0][3] < 0.7 * astronaut.shape[0]


def test_blank_frames_give_nothing(detectors):
    person, head, _ = detectors
    for frame in (np.zeros((480, 640, 3), np.uint8), np.full((301, 517, 3), 128, np.uint8)):
        assert len(person.detect(frame)) == 0
        assert len(head.detect(frame)) == 0
    assert len(person.detect(np.zeros((0, 10, 3), np.uint8))) == 0


def test_coordinates_on_an_odd_sized_canvas(astronaut, detectors):
    person, _, _ = detectors
    canvas = np.full((1037, 1401, 3), 255, np.uint8)
    ox, oy = 333, 401
    canvas[oy:oy + 512, ox:ox + 512] = astronaut
    found = person.detect(canvas)
    assert len(found) >= 1
    best = found.boxes[np.argmax(found.scores)]
    ref = person.detect(astronaut).boxes[0] + np.array([ox, oy, ox, oy], np.float32)
    # same person, same place (the network sees a different resize, so allow some slack)
    assert np.abs(best - ref).max() < 0.12 * 512
    assert (best >= 0).all() and best[2] <= 1401 and best[3] <= 1037


def test_head_boxes_geometry():
    person = np.array([[100, 50, 200, 400], [0, 0, 100, 40]], np.float32)
    heads = head_boxes(person, width=0.8, height=0.8, lift=0.1)
    np.testing.assert_allclose(heads[0], [110, 40, 190, 120])
    # a short (cut-off) person box: the head never reaches below it
    assert heads[1][3] <= 40 + 1e-4


def test_default_tiles_keep_the_whole_person(astronaut, detectors):
    """Column tiles see only part of a close-up person; the whole-frame box must win, so the head
    box stays on the head (a tile's half-person box would put it on the shoulder)."""
    _, _, centerface = detectors
    people = create("person", threads=2).detect(astronaut)  # whole frame + 2 column tiles
    assert 1 <= len(people) <= 3 and any(b[0] < 50 and b[2] > 300 for b in people.boxes)  # her, whole
    heads = create("head", threads=2).detect(astronaut)
    face = centerface.detect(astronaut).boxes[0]
    assert max(_inside(face, h) for h in heads.boxes) >= 0.95
    assert len(create("head", threads=2).detect(np.zeros((480, 640, 3), np.uint8))) == 0


def test_tiles_add_small_people_beside_big_ones(astronaut):
    """A wide frame: the astronaut at full height on the left, and a small copy far right. The
    tiles must add the small person the whole-frame view is too coarse for, or at least not lose
    the big one."""
    canvas = np.full((540, 1920, 3), 200, np.uint8)
    canvas[14:526, 0:512] = astronaut
    small = cv2.resize(astronaut, (128, 128))
    canvas[380:508, 1700:1828] = small
    whole = create("person", threads=2, tiles=1).detect(canvas)
    tiled = create("person", threads=2).detect(canvas)
    assert len(tiled) >= len(whole) >= 1
    assert any(b[0] < 100 and b[2] > 350 for b in tiled.boxes)  # the big one, whole
