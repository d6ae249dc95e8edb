"""The report's frame lines, written with %-formatting since issue 20, are the bytes json.dumps wrote."""
from __future__ import annotations

import json

import numpy as np

from anonymize import report
from anonymize.regions import Regions
from anonymize.report import FileReport, write_report


def _regions(rng: np.random.Generator, n: int, odd: bool = False) -> Regions:
    boxes = rng.uniform(-500, 4000, (n, 4)) * rng.choice([1e-4, 1.0, 1e3], (n, 1))
    if odd and n:
        boxes[0, 0] = -0.0
        boxes[-1, 2] = 1e30  # float32 finite, its width huge
    scores = rng.random(n).astype(np.float32)
    kinds = rng.choice(["face", "head", "text", "frame", "plate", "persön"], n)
    sources = rng.choice(["detected", "tracked", "held", "added"], n)
    return Regions(boxes.astype(np.float32), scores, np.array(kinds, object), rng.integers(-1, 10**6, n),
                   np.array(sources, object))


def test_frame_lines_are_json_dumps_of_the_record() -> None:
    rng = np.random.default_rng(20)
    for i in range(60):
        masked, raw = _regions(rng, int(rng.integers(0, 30)), odd=i % 3 == 0), _regions(rng, int(rng.integers(0, 30)))
        shapes = list(rng.choice(["ellipse", "box"], len(masked)))
        pts = float(rng.uniform(0, 1e4)) if i % 2 else i / 29.97
        for r in (raw, None):
            want = json.dumps(report._frame_record(i, pts, masked, shapes, r), separators=(",", ":"))
            assert report._frame_line(i, pts, masked, shapes, r) == want


def test_non_finite_numbers_are_written_as_json_writes_them() -> None:
    boxes = np.array([[0, 0, np.inf, 10], [np.nan, 1, 2, 3], [1, 2, 3, 4]], np.float32)
    r = Regions(boxes, [0.5, np.nan, 1.0])
    line = report._frame_line(3, 0.1, r, ["box"] * 3, r)
    assert line == json.dumps(report._frame_record(3, 0.1, r, ["box"] * 3, r), separators=(",", ":"))
    assert "Infinity" in line and "NaN" in line


def test_written_report_is_the_one_json_dumps_wrote(tmp_path) -> None:
    """write_report copies the spooled lines: the same bytes as loading and dumping each again."""
    rng = np.random.default_rng(4)
    rep = FileReport("in.mp4", "out.mp4", "video")
    for i in range(25):
        masked, raw = _regions(rng, int(rng.integers(0, 20))), _regions(rng, int(rng.integers(0, 20)))
        rep.add_frame(i, i / 30, masked, "ellipse", raw=raw)
    path = tmp_path / "r.json"
    write_report(path, [rep], {"a": 1}, [], "test")
    text = path.read_text()
    lines = [line.strip().rstrip(",") for line in text.splitlines() if line.startswith('  {"index"')]
    assert lines == [json.dumps(rec, separators=(",", ":")) for rec in rep.frames()]
    assert len(json.loads(text)["files"][0]["frames"]) == 25
    first = {t: min(i for i, rec in enumerate(rep.frames()) if any(x["track"] == t for x in rec["raw"]))
             for t in {x["track"] for rec in rep.frames() for x in rec["raw"] if x["track"] >= 0}}
    assert {t["id"]: t["first"] for t in rep.tracks} == first
