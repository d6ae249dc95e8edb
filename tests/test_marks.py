"""Marks beyond faces through the whole pipeline: text/plates, heads and persons are detected,
tracked, masked as boxes or ellipses, and reported with their kind; ``--marks`` selects them."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from anonymize import Anonymizer
from anonymize.cli import main as cli_main
from anonymize.config import Options
from anonymize.masks import reach_edges, widen
from anonymize.regions import Regions

from .conftest import decode_frames, ff

SIGN = "CALL 0176 5550 1234"


def _scene(h: int = 540, w: int = 960) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A real face (the astronaut) beside a white sign with a phone number; returns the BGR image
    and the sign's text box (x1, y1, x2, y2)."""
    img = np.full((h, w, 3), (90, 110, 100), np.uint8)
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    side = min(400, h - 40)
    img[20:20 + side, 20:20 + side] = cv2.resize(face, (side, side))
    mid = h // 2 + 40
    cv2.rectangle(img, (470, mid - 40), (940, mid + 40), (245, 245, 245), -1)
    (tw, th), _ = cv2.getTextSize(SIGN, cv2.FONT_HERSHEY_SIMPLEX, 1.1, 3)
    org = (485, mid + th // 2)
    cv2.putText(img, SIGN, org, cv2.FONT_HERSHEY_SIMPLEX, 1.1, (20, 20, 20), 3, cv2.LINE_AA)
    return img, (org[0], org[1] - th, org[0] + tw, org[1] + 4)


def _changed(a: np.ndarray, b: np.ndarray, box) -> float:
    """Share of the box's pixels that differ between two images."""
    x1, y1, x2, y2 = box
    return float((np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).max(axis=2) > 20).mean())


def test_marks_option_parsing():
    assert Options(marks="faces, text,TEXT").marks == ("faces", "text")
    assert Options(marks=("plates",)).as_dict()["marks"] == "plates"
    for bad in ("", "faces,tattoos"):
        with pytest.raises(ValueError):
            Options(marks=bad)


def _photo(tmp_path: Path, marks: str) -> tuple[np.ndarray, tuple, np.ndarray, list[dict]]:
    """The scene as a PNG through the pipeline with ``marks``: (input, text box, output, regions)."""
    img, text_box = _scene()
    src = tmp_path / "sign.png"
    cv2.imwrite(str(src), img)
    rep = Anonymizer(seed=0, marks=marks).file(src, tmp_path / "out.png")
    return img, text_box, cv2.imread(str(tmp_path / "out.png")), next(rep.frames())["regions"]


def test_photo_text_masked_as_box_and_reported(tmp_path):
    img, text_box, out, regions = _photo(tmp_path, "faces,text")
    kinds = {r["kind"] for r in regions}
    assert {"face", "text"} <= kinds
    assert all(r["shape"] == "box" for r in regions if r["kind"] == "text")
    assert all(r["shape"] == "ellipse" for r in regions if r["kind"] == "face")
    # the dark glyphs are gone: the sign's text area holds no near-black pixels any more
    x1, y1, x2, y2 = text_box
    assert (img[y1:y2, x1:x2].max(axis=2) < 60).mean() > 0.05
    assert (out[y1:y2, x1:x2].max(axis=2) < 60).mean() == 0.0
    face = max((r for r in regions if r["kind"] == "face"), key=lambda r: r["w"])
    cx, cy = face["x"] + face["w"] / 2, face["y"] + face["h"] / 2  # the face too: its inner part is redrawn
    inner = (int(cx - face["w"] / 4), int(cy - face["h"] / 4), int(cx + face["w"] / 4), int(cy + face["h"] / 4))
    assert 20 < cx < 420 and 20 < cy < 420
    assert _changed(img, out, inner) > 0.3


def test_marks_faces_only_leaves_text(tmp_path):
    img, text_box, out, regions = _photo(tmp_path, "faces")
    assert {r["kind"] for r in regions} == {"face"}
    assert _changed(img, out, text_box) < 0.02


def test_video_text_masked_in_every_frame_between_sparse_detections(tmp_path):
    """Text detection runs on every 5th frame only; the tracker must cover the frames between and
    follow the sign as it moves."""
    img, (x1, y1, x2, y2) = _scene(360, 960)
    png = tmp_path / "scene.png"
    cv2.imwrite(str(png), img)
    src = tmp_path / "pan.mp4"
    # the scene pans 120 px to the left over 2 s (a handheld camera following a march)
    ff("-loop", "1", "-framerate", "30", "-t", "2", "-i", str(png), "-vf",
       "crop=840:360:'120*t/2':0,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", str(src))
    out = tmp_path / "out.mp4"
    rep = Anonymizer(seed=0, marks="faces,text", marks_every=5).file(src, out)
    frames = decode_frames(out)
    assert len(frames) == 60
    text_frames = [f for f in rep.frames() if any(r["kind"] == "text" for r in f["regions"])]
    assert len(text_frames) == 60
    assert {r["source"] for f in text_frames for r in f["regions"] if r["kind"] == "text"} >= {"detected", "tracked"}
    for i, frame in enumerate(frames):
        dx = round(120 * (i / 30) / 2)  # crop offset at this frame
        sign = frame[y1 + 2:y2 - 2, x1 - dx + 2:x2 - dx - 2]
        assert (sign.max(axis=2) < 60).mean() < 0.005, f"frame {i}: dark glyphs visible"


def test_heads_and_persons_masked(tmp_path):
    img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    src = tmp_path / "astronaut.png"
    cv2.imwrite(str(src), img)
    rep = Anonymizer(seed=0, marks="heads,persons").file(src, tmp_path / "out.png")
    regions = next(rep.frames())["regions"]
    heads = [r for r in regions if r["kind"] == "head"]
    persons = [r for r in regions if r["kind"] == "person"]
    assert heads and persons and not [r for r in regions if r["kind"] == "face"]
    assert all(r["shape"] == "box" for r in persons)
    # the head region lies on the astronaut's head (face centre about (250, 150) in the 512 px image)
    assert any(r["x"] < 250 < r["x"] + r["w"] and r["y"] < 150 < r["y"] + r["h"] for r in heads)


def test_default_marks_and_models_listed(tmp_path):
    runner = Anonymizer(seed=0)
    assert runner.options.marks == ("faces", "heads", "plates", "text")
    names = {m["name"] for m in runner.engine.models()}
    assert {"centerface", "ppocr-det-v6s", "ssdlite-person"} <= names


def test_cli_marks_flag(tmp_path):
    img, _ = _scene()
    src = tmp_path / "sign.jpg"
    cv2.imwrite(str(src), img)
    rc = cli_main([str(src), "-o", str(tmp_path / "o.jpg"), "--marks", "text", "--report", str(tmp_path / "r.json"), "-q"])
    assert rc == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["settings"]["marks"] == "text"
    assert {r["kind"] for r in data["files"][0]["frames"][0]["regions"]} == {"text"}
    assert cli_main([str(src), "-o", str(tmp_path / "p.jpg"), "--marks", "tattoos"]) == 2


def test_reach_edges_grows_only_faces_cut_by_the_edge():
    r = Regions(np.array([[-2, 100, 38, 140], [2, 200, 42, 240], [300, 100, 340, 140], [590, 440, 650, 482]],
                         np.float32), kinds=["face"] * 4)
    grown = reach_edges(r, 640, 480).boxes
    assert grown[0].tolist() == [-22, 100, 38, 140]  # cut by the left edge: 20 px (half its width) past it
    assert grown[1].tolist() == [2, 200, 42, 240]  # near the edge but not cut: unchanged (area on photos)
    assert grown[2].tolist() == [300, 100, 340, 140]  # mid-frame: unchanged
    assert grown[3].tolist() == [590, 440, 680, 503]  # cut by the right and bottom edges
    assert reach_edges(r, 640, 480, reach=0).boxes.tolist() == r.boxes.tolist()
    text = Regions(np.array([[-5, 0, 10, 10]], np.float32), kinds=["text"])
    assert reach_edges(text, 640, 480).boxes.tolist() == [[-5, 0, 10, 10]]


def test_widen_grows_faces_only_by_the_margin():
    r = Regions(np.array([[10, 10, 30, 40], [50, 50, 90, 60]], np.float32), kinds=["face", "text"])
    assert widen(r, 6).boxes.tolist() == [[4, 4, 36, 46], [50, 50, 90, 60]]
    assert widen(r, 0).boxes.tolist() == r.boxes.tolist()
