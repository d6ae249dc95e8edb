"""Faces cut by the frame edge, end to end: ``--edge-detect`` finds them, ``--edge-reach`` grows them."""
from __future__ import annotations

import json

import cv2
import numpy as np

from anonymize import Anonymizer
from anonymize.cli import main as cli_main

from .test_centerface import _cut_at_bottom


def _masked_share(report_frame: dict, box: np.ndarray, h: int, w: int) -> float:
    """Share of ``box`` inside the ellipses of the report's regions (pixel centres)."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    mask = np.zeros((h, w), bool)
    for r in report_frame["regions"]:
        cx, cy, a, b = r["x"] + r["w"] / 2, r["y"] + r["h"] / 2, r["w"] / 2, r["h"] / 2
        mask |= ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1
    x1, y1, x2, y2 = box.astype(int)
    return float(mask[y1:y2, x1:x2].mean())


def test_edge_detect_masks_a_photo_face_cut_through_the_eyes(tmp_path, astronaut_bgr):
    # Only the top quarter of the face (forehead, eyes) is in the photo: the photo detector's
    # passes do not find it without the reflected border.
    frame, visible = _cut_at_bottom(astronaut_bgr, 0.25)
    src = tmp_path / "cut.png"
    cv2.imwrite(str(src), frame)
    report = Anonymizer(seed=0, marks="faces", edge_detect=32).file(src, tmp_path / "out.png")
    assert _masked_share(next(report.frames()), visible[0], 480, 640) >= 0.9
    out = cv2.imread(str(tmp_path / "out.png"))
    x1, y1, x2, y2 = visible[0].astype(int)
    assert np.abs(out[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2]).mean() > 5  # pixels really changed


def test_edge_flags_reach_the_settings(tmp_path, astronaut_bgr):
    src = tmp_path / "face.png"
    cv2.imwrite(str(src), astronaut_bgr)
    rc = cli_main([str(src), "-o", str(tmp_path / "o.png"), "--edge-detect", "32", "--edge-reach", "0.25",
                   "--report", str(tmp_path / "r.json"), "-q"])
    assert rc == 0
    settings = json.loads((tmp_path / "r.json").read_text())["settings"]
    assert settings["edge_detect"] == 32 and settings["edge_reach"] == 0.25
    assert cli_main([str(src), "-o", str(tmp_path / "p.png"), "--edge-detect", "-1"]) == 2


def test_second_look_finds_a_small_face_near_where_it_is_expected(astronaut_bgr):
    from anonymize.detectors.centerface import CenterFace
    from anonymize.relook import SecondLook

    # the astronaut's face shrunk to ~24 px tall in a 1280x720 grey frame
    small = cv2.resize(astronaut_bgr, (96, 96))
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[300:396, 600:696] = small
    face = np.array([178, 55, 272, 182], np.float32) * (96 / 512) + np.array([600, 300, 600, 300], np.float32)
    look = SecondLook(CenterFace(threshold=0.1, threads=1), threshold=0.05, pad=2.0)
    found = look.look(frame, face + np.array([4, -3, 4, -3], np.float32))  # predicted a few px off
    assert found is not None
    box, score = found
    assert 0.05 < score <= 1
    from anonymize.regions import iou_matrix
    assert iou_matrix(box[None], face[None])[0, 0] > 0.5
    assert look.look(frame, face + np.array([400, 0, 400, 0], np.float32)) is None  # nothing there


def test_second_look_finds_a_face_cut_by_the_frame_edge(astronaut_bgr):
    from anonymize.detectors.centerface import CenterFace
    from anonymize.relook import SecondLook

    frame, visible = _cut_at_bottom(astronaut_bgr, 0.3)
    found = SecondLook(CenterFace(threshold=0.1, threads=1), threshold=0.05).look(frame, visible[0])
    assert found is not None
    box, _ = found
    assert box[3] <= 480 and box[1] < visible[0][3] - 10  # inside the frame, over the visible part


def test_edge_pass_adds_a_big_face_cut_by_the_edge_once(astronaut_bgr):
    from anonymize.detectors.centerface import CenterFace
    from anonymize.regions import Regions
    from anonymize.regions_source import EdgePass

    frame, visible = _cut_at_bottom(astronaut_bgr, 0.45)
    edge = EdgePass(CenterFace(threshold=0.1, scale=0.5, threads=1, edge=32), min_height=48)
    added = edge.add(frame, Regions.empty())
    assert len(added) == 1 and added.boxes[0, 3] >= 479  # touches the bottom edge
    from anonymize.regions import iou_matrix
    assert iou_matrix(added.boxes, visible)[0, 0] > 0.4
    # a detection already over it: nothing added twice
    assert len(edge.add(frame, Regions(visible))) == 1
    # a whole face away from the edges is the full pass's business
    whole = np.full((720, 1280, 3), 90, np.uint8)
    whole[100:612, 400:912] = astronaut_bgr
    assert len(edge.add(whole, Regions.empty())) == 0
