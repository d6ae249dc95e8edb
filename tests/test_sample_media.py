"""The README's main command on the bundled sample: every face in every frame is masked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from anonymize.cli import main as cli_main
from anonymize.ffmpeg_tools import probe

from .conftest import ffmpeg_info, packet_times

SAMPLES = Path(__file__).resolve().parents[1] / "sample_media"


def region_mask(regions: list[dict], height: int, width: int) -> np.ndarray:
    """Rasterise report regions (ellipse inscribed in the box, or the box), clipped to the frame."""
    mask = np.zeros((height, width), bool)
    yy, xx = np.mgrid[0:height, 0:width]
    for r in regions:
        x1, y1, x2, y2 = r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]
        if r["shape"] == "ellipse":
            cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max(r["w"] / 2, 0.5), max(r["h"] / 2, 0.5)
            mask |= ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1
        else:
            mask[max(int(y1), 0):int(np.ceil(y2)), max(int(x1), 0):int(np.ceil(x2))] = True
    return mask


def covered(boxes: list[list[int]], mask: np.ndarray) -> list[float]:
    return [float(mask[y:y + h, x:x + w].mean()) for x, y, w, h, *_ in boxes]


def test_sample_video_every_face_frame_masked(tmp_path):
    out, rep = tmp_path / "crowd.mp4", tmp_path / "r.json"
    assert cli_main([str(SAMPLES / "crowd.mp4"), "-o", str(out), "--report", str(rep), "--quiet"]) == 0
    truth = json.loads((SAMPLES / "crowd.json").read_text())
    report = json.loads(rep.read_text())["files"][0]
    assert len(report["frames"]) == truth["num_frames"] == len(packet_times(out))
    worst = []
    for gt, fr in zip(truth["frames"], report["frames"]):
        mask = region_mask(fr["regions"], truth["height"], truth["width"])
        worst += covered(gt["boxes"], mask)
    assert len(worst) > 800
    assert min(worst) >= 0.8, f"{sum(c < 0.8 for c in worst)} face-frames left visible"
    info = ffmpeg_info(out)
    for secret in ("52.52", "location", "make", "model", "creation_time", "title"):
        assert secret not in info.lower()
    assert probe(out).audio == []


def test_sample_photo_every_face_masked(tmp_path):
    out, rep = tmp_path / "crowd.jpg", tmp_path / "r.json"
    assert cli_main([str(SAMPLES / "crowd.jpg"), "-o", str(out), "--report", str(rep), "--quiet"]) == 0
    truth = json.loads((SAMPLES / "crowd_photo.json").read_text())
    frame = json.loads(rep.read_text())["files"][0]["frames"][0]
    boxes = truth["boxes"]
    assert len(boxes) == 9
    mask = region_mask(frame["regions"], 1080, 1920)
    assert min(covered(boxes, mask)) >= 0.8
    assert b"ExamplePhone" not in out.read_bytes()
