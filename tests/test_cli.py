"""The options table, Options' checks and the command line built from them (run in-process)."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymize import batch, models
from anonymize.cli import build_parser, main, show_progress
from anonymize.config import (FACE_DETECTORS, GROUPS, MARKS, MASKS, OPTIONS, QUALITIES, TABLE, OptionError,
                              Options)

from .conftest import face_clip

ROOT = Path(__file__).resolve().parents[1]
#: one face detector, no text/head detectors: the quickest real run
FAST = ["--marks", "faces", "--photo-detector", "centerface"]


@pytest.fixture
def face(tmp_path, astronaut_bgr) -> Path:
    """A small real face photo in its own folder."""
    path = tmp_path / "in" / "face.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), cv2.resize(astronaut_bgr, (160, 160), interpolation=cv2.INTER_AREA))
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def model_calls() -> tuple[int, int]:
    """How often model weights were looked up so far (any model load goes through model_path)."""
    info = models.model_path.cache_info()
    return info.hits, info.misses


# ---------------------------------------------------------------------------------------------
# the table and Options


def test_table_and_options_fields_agree():
    fields = {f.name: f for f in dataclasses.fields(Options)}
    assert set(fields) == set(OPTIONS) and len(TABLE) == len(OPTIONS)
    defaults = Options()
    for row in TABLE:
        assert fields[row.name].default == row.default, row.name
        assert getattr(defaults, row.name) == row.default, row.name
        assert row.group in GROUPS, row.name
        assert row.help, row.name
        if row.type is float:
            assert row.min is not None and row.max is not None, f"{row.name} needs both bounds"
        if row.choices and row.default is not None:
            assert set(row.default if row.type is tuple else [row.default]) <= set(row.choices), row.name


def test_static_choices_equal_the_registries():
    from anonymize.detectors import DETECTORS
    from anonymize.masks import MASKS as MASK_REGISTRY
    from anonymize.pipeline import MARK_DETECTORS
    from anonymize.video import QUALITY

    # the audit's independent detector is not a masking detector: it is left out of --detector
    faces = {name for name, cls in DETECTORS.items() if "face" in getattr(cls, "kinds", ()) and name != "retinaface-audit"}
    assert set(FACE_DETECTORS) == faces
    assert set(MASKS) == set(MASK_REGISTRY)
    assert set(QUALITIES) == set(QUALITY)
    assert set(MARKS) == set(MARK_DETECTORS) | {"faces"}


@pytest.mark.parametrize("name", [r.name for r in TABLE if r.type is float])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_options_refuse_non_finite_numbers(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be .*finite.*\(got {value!r}\)$"):
        Options(**{name: value})


def test_options_messages_and_bounds():
    with pytest.raises(ValueError, match=r"^mask_scale must be a finite number >= 1 and <= 4 \(got nan\)$"):
        Options(mask_scale=float("nan"))
    refused = dict(mask_scale=[0.99, 4.01], threshold=[0, 1], photo_threshold=[0.0, 1.0], pad=[-0.1, 65],
                   detect_scale=[1e-9, 0.049, 4.1], detect_every=[0, 31, 2.5, True], between_scale=[0.01, 1.5, -1],
                   hold_before=[-1, 11], hold_after=[10.5], max_gap=[-0.1], video_margin=[-0.01, 0.21],
                   edge_reach=[-1, 2.1], edge_detect=[-1, 513], crf=[-1, 52], threads=[-1, 257],
                   ffmpeg_threads=[300], marks_every=[0, 31], seed=[-1], mask=["foo", "Blur"],
                   detector=["foo", "person"], photo_detector=["foo"], mask_shape=["circle"], audio=["mute"],
                   on_error=["skip"], quality=["best"], preset=["turbo"], marks=["", "faces,tattoos", ",", "faces,,"],
                   keep_audio=["yes"])
    for name, values in refused.items():
        for v in values:
            with pytest.raises(OptionError) as info:
                Options(**{name: v})
            assert info.value.name == name and str(info.value).startswith(f"{name} must be ")
    # the edges that are allowed, and the off value of between_scale
    ok = Options(mask_scale=4, threshold=0.999, pad=0, detect_scale=0.05, detect_every=30, between_scale=0,
                 hold_before=10, crf=0, threads=256, edge_detect=512, video_margin=0.2, seed=7, preset="slow")
    assert ok.between_scale == 0 and isinstance(ok.mask_scale, float) and ok.crf == 0
    assert Options(detect_every=np.int64(3)).detect_every == 3 and type(Options(detect_every=3.0).detect_every) is int
    # existing rules kept
    assert Options(marks="faces, text,TEXT").marks == ("faces", "text")
    assert Options(keep_audio=True).audio == "keep"
    assert Options(between_scale=0.5).updated(crf=None, mask=None).mask == "blur"  # None keeps, except nullables
    with pytest.raises(ValueError):
        Options().updated(pad=float("inf"))


def test_from_mapping():
    o = Options.from_mapping({"marks": "faces,heads", "mask": "solid", "audio": "drop"})
    assert (o.marks, o.mask, o.audio) == (("faces", "heads"), "solid", "drop")
    o = Options.from_mapping({"mask-scale": "2", "--hold-after": 1, "keep_audio": "true", "crf": "", "seed": "3",
                              "marks": ["text"], "detect_every": 2.0})
    assert (o.mask_scale, o.hold_after, o.audio, o.crf, o.seed, o.marks, o.detect_every) == (
        2.0, 1.0, "keep", None, 3, ("text",), 2)
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        Options.from_mapping({"bogus": 1})
    with pytest.raises(ValueError, match="given twice"):
        Options.from_mapping({"mask_scale": 2, "mask-scale": 2})
    for bad in ({"mask_scale": float("nan")}, {"mask-scale": "nan"}, {"pad": "inf"}, {"pad": "two"},
                {"detect_scale": 1e-9}, {"threshold": None}, {"keep_audio": "maybe"}, {"marks": 3}):
        with pytest.raises(ValueError):
            Options.from_mapping(bad)


# ---------------------------------------------------------------------------------------------
# the command line: refusals happen before any work


FAIL_OPEN = [("--mask-scale", v) for v in ("nan", "inf", "-inf", "0.5", "4.5")] + [
    ("--pad", "nan"), ("--pad", "-1"), ("--pad", "1000"), ("--video-margin", "nan"), ("--video-margin", "0.5"),
    ("--detect-scale", "1e-9"), ("--detect-scale", "nan"), ("--detect-scale", "10"), ("--hold-before", "nan"),
    ("--hold-after", "inf"), ("--hold-before", "-1"), ("--max-gap", "nan"), ("--threshold", "0"),
    ("--threshold", "nan"), ("--photo-threshold", "1"), ("--edge-reach", "inf"), ("--edge-detect", "1e6"),
    ("--between-scale", "0.01"), ("--detect-every", "0"), ("--detect-every", "31"), ("--marks-every", "0"),
    ("--crf", "52"), ("--threads", "-1"), ("--ffmpeg-threads", "1000"), ("--jobs", "-1"), ("--marks", ""),
    ("--marks", "faces,tattoos")]


@pytest.mark.parametrize("flag,value", FAIL_OPEN)
def test_bad_numbers_exit_2_before_any_work(tmp_path, face, capsys, flag, value):
    before, calls = tree(tmp_path), model_calls()
    assert main([str(face), "-o", str(tmp_path / "out/"), f"{flag}={value}"]) == 2  # "=": argparse takes "-inf" for a flag
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"anonymize: error: {flag} must be "), err
    assert tree(tmp_path) == before and model_calls() == calls


@pytest.mark.parametrize("flag", ["--mask", "--detector", "--photo-detector", "--audio", "--mask-shape",
                                  "--quality", "--preset", "--on-error", "--log-level"])
def test_unknown_names_exit_2_at_once(tmp_path, face, capsys, flag):
    before, calls = tree(tmp_path), model_calls()
    start = time.perf_counter()
    assert main([str(face), flag, "foo"]) == 2
    assert time.perf_counter() - start < 5  # generous: no model may load (checked next)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("foo") == 1 and err.startswith("anonymize: error: "), err
    assert tree(tmp_path) == before and model_calls() == calls


def test_unknown_mask_in_a_fresh_process_fails_fast_and_once(tmp_path, face):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "anonymize", str(face), "--mask", "foo"], env=env,
                         capture_output=True, text=True, timeout=60)
    took = time.perf_counter() - start
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "invalid choice: 'foo'" in res.stderr
    assert took < 5, f"{took:.1f} s"  # imports only (a model load takes several seconds more)


def test_help_is_grouped_and_lists_audit(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "anonymize audit" in text
    sections = {}
    for block in re.split(r"\n(?=\S[^\n]*:\n)", text):
        title, _, body = block.partition(":\n")
        sections[title.strip()] = body
    for group in GROUPS:
        assert group in sections, group
    for row in TABLE:
        if row.cli:
            assert re.search(rf"^\s+{re.escape(row.flag)}\b", sections[row.group], re.M), row.flag
    for flag in ("-y, --overwrite", "-n, --no-overwrite", "--dry-run", "-o OUTPUT"):
        assert flag in sections["input and output"]
    assert "-j N, --jobs N" in sections["performance"]
    assert "seed" not in text  # API only
    assert main(["--version"]) == 0 and "anonymize" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# outputs


def test_output_folder_with_slash_is_created(tmp_path, face):
    out = tmp_path / "new" / "deeper"
    assert main([str(face), "-o", str(out) + "/", "-q", *FAST]) == 0
    assert sorted(tree(out)) == ["face.png"]


def test_existing_output_refused_skipped_or_replaced(tmp_path, face, capsys):
    out = tmp_path / "o.png"
    assert main([str(face), "-o", str(out), "-q", *FAST]) == 0
    first = out.read_bytes()
    capsys.readouterr()
    calls = model_calls()
    assert main([str(face), "-o", str(out), "-q", *FAST]) == 2
    assert capsys.readouterr().err == f"anonymize: error: {out} exists; use -y to replace it (or -n to skip it)\n"
    assert main([str(face), "-o", str(out), "-q", "-n", *FAST]) == 0
    assert "skipped 1 input(s) whose output exists (-n)" in capsys.readouterr().err
    assert out.read_bytes() == first and model_calls() == calls  # nothing loaded, nothing written
    assert main([str(face), "-o", str(out), "-q", "-y", "--mask", "solid", *FAST]) == 0
    assert out.read_bytes() != first
    assert main([str(face), "-o", str(out), "-y", "-n"]) == 2  # one or the other
    # beside the input: the same rule
    assert main([str(face), "-q", *FAST]) == 0
    assert main([str(face), "-q", *FAST]) == 2


def test_existing_files_in_a_new_output_folder(tmp_path, face, capsys):
    src, out = face.parent, tmp_path / "out"
    cv2.imwrite(str(src / "two.png"), cv2.imread(str(face))[:, ::-1])
    out.mkdir()
    (out / "two.png").write_bytes(b"the user's own file")
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 2
    assert "out/two.png exists; use -y" in capsys.readouterr().err
    assert tree(out) == {"two.png": b"the user's own file"} and not batch.manifest_path(out).exists()
    assert main([str(src), "-o", str(out), "-q", "-n", *FAST]) == 0
    assert (out / "two.png").read_bytes() == b"the user's own file" and (out / "face.png").is_file()
    err = capsys.readouterr().err
    assert "skipped 1 input(s) whose output exists (-n)" in err and "1 done" in err
    # -n again: the user's file is still skipped; what the manifest recorded is skipped as already done
    assert main([str(src), "-o", str(out), "-q", "-n", *FAST]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 input(s) whose output exists (-n)" in err and "0 done, 1 skipped as already done" in err
    assert (out / "two.png").read_bytes() == b"the user's own file"
    # without -n or -y the user's file is still refused, although the folder has a manifest now:
    # the manifest never recorded two.png as started, so that file is not ours
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 2
    assert "out/two.png exists; use -y" in capsys.readouterr().err
    assert (out / "two.png").read_bytes() == b"the user's own file"
    assert main([str(src), "-o", str(out), "-q", "-y", *FAST]) == 0
    assert "1 done, 1 skipped as already done" in capsys.readouterr().err
    assert (out / "two.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_redoes_an_output_a_killed_run_did_not_record(tmp_path, face, capsys):
    """A kill after a worker renamed its output into place and before the driver recorded it as
    done leaves an output whose last record says "started": the same command (no -y) redoes it."""
    src, out = face.parent, tmp_path / "out"
    cv2.imwrite(str(src / "two.png"), cv2.imread(str(face))[:, ::-1])
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 0
    man = batch.manifest_path(out)
    records = batch.read_manifest(man, started=True)
    assert [r["status"] for r in records if r["input"] == "two.png"] == ["started", "done"]
    # the state that kill leaves: two.png's "done" record never written
    kept = [r for r in records if not (r["input"] == "two.png" and r["status"] == "done")]
    man.write_text("".join(json.dumps(r) + "\n" for r in kept))
    (out / "two.png").write_bytes((out / "two.png").read_bytes())  # a new inode and time: not skipped by accident
    capsys.readouterr()
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 0
    assert "1 done, 1 skipped as already done" in capsys.readouterr().err
    assert [r["status"] for r in batch.read_manifest(man) if r["input"] == "two.png"] == ["done"]


def test_dry_run_writes_and_loads_nothing(tmp_path, face, capsys):
    before, calls = tree(tmp_path), model_calls()
    assert main([str(face.parent), "-o", str(tmp_path / "new") + "/", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{face} -> {tmp_path / 'new' / 'face.png'} (anonymize)\n"
    assert "nothing was written" in err
    assert main([str(face), "--dry-run", "-y"]) == 0
    assert capsys.readouterr().out == f"{face} -> {face.with_name('face.anonymized.png')} (anonymize)\n"
    assert tree(tmp_path) == before and not (tmp_path / "new").exists() and model_calls() == calls
    face.with_name("face.anonymized.png").write_bytes(b"x")
    assert main([str(face), "--dry-run", "-y"]) == 0
    assert "(anonymize, replacing the output)" in capsys.readouterr().out
    assert main([str(face), "--dry-run", "-n"]) == 0
    assert "(skip: output exists)" in capsys.readouterr().out
    assert main([str(face), "--dry-run"]) == 2  # the real run would refuse: so does the dry run


# ---------------------------------------------------------------------------------------------
# messages


def test_progress_only_on_a_terminal_or_when_asked(tmp_path, capsys, monkeypatch):
    clip = face_clip(tmp_path, "clip.mp4", size="160x90", seconds=0.3, audio=False)
    assert main([str(clip), "-o", str(tmp_path / "a.mp4"), "--marks", "faces"]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err and err.startswith("anonymize: 1 done")  # stderr is not a terminal: no bar
    assert main([str(clip), "-o", str(tmp_path / "b.mp4"), "--marks", "faces", "--progress"]) == 0
    assert "clip.mp4: 100%|" in capsys.readouterr().err
    # a real terminal: bars unless -q
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            parse = build_parser().parse_args
            assert show_progress(parse(["x"])) and not show_progress(parse(["x", "-q"]))
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        assert not show_progress(parse(["x"])) and show_progress(parse(["x", "--progress"]))
    finally:
        os.close(master)
        os.close(slave)
    assert main([str(clip), "--progress", "-q"]) == 2  # one or the other


def test_log_level(tmp_path, face, capsys):
    src, out = face.parent, tmp_path / "out"
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 0
    stale = out / ".face.abcd1234.partial.png"
    stale.write_bytes(b"half")
    assert main([str(src), "-o", str(out), "-q", "--log-level", "error", *FAST]) == 0
    assert "removed" not in capsys.readouterr().err and not stale.exists()
    stale.write_bytes(b"half")
    assert main([str(src), "-o", str(out), "-q", *FAST]) == 0
    err = capsys.readouterr().err
    assert "removed 1 unfinished temporary file(s)" in err and "file(s) to do" not in err
    assert main([str(src), "-o", str(out), "-q", "-v", *FAST]) == 0
    err = capsys.readouterr().err
    assert f"anonymize: 1 file(s) to do; output: {out}" in err and "options:" not in err
    assert main([str(src), "-o", str(out), "-q", "-vv", *FAST]) == 0
    assert "anonymize: options: {" in capsys.readouterr().err
    main([str(src), "-o", str(out), "-q", "-vv", "--dry-run"])
    assert logging.getLogger("anonymize").level == logging.DEBUG
    main([str(src), "-o", str(out), "-q", "-v", "--dry-run"])
    assert logging.getLogger("anonymize").level == logging.INFO
