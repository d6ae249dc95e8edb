"""The hostile corpus's fast subset (every mutation family), and checks of the checker itself.

The whole corpus runs with ``python bench/hostile.py``; see tests/hostile.py for the invariants.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import hostile

CASES = hostile.all_cases()
FAST = [c for c in CASES if c.fast]
#: invariants not asserted, comma-separated, e.g. HOSTILE_IGNORE=home (see tests/hostile.py)
IGNORE = {s for s in os.environ.get("HOSTILE_IGNORE", "").split(",") if s}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, hostile.Base, hostile.Sandbox]:
    root = tmp_path_factory.mktemp("hostile")
    base, sandbox = hostile.prepare(root)
    return root, base, sandbox


def test_corpus_is_big_deterministic_and_covers_every_family_fast():
    assert len(CASES) >= 300
    assert [c.name for c in hostile.all_cases()] == [c.name for c in CASES]
    assert set(hostile.families(FAST)) == set(hostile.families(CASES))
    assert hostile.flipped(b"x" * 1000, 7, 16) == hostile.flipped(b"x" * 1000, 7, 16) != b"x" * 1000
    assert all(c.accept and 1 not in c.accept for c in CASES)  # 1 ("other") is never a documented answer


def test_huge_declared_sizes_are_what_they_say():
    import io

    from PIL import Image

    # Pillow refuses them as decompression bombs on open: the size in the header is the declared one
    for data in (hostile.png_declaring(60000, 60000),
                 hostile.jpeg_declaring(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes(), 65500, 65500)):
        with pytest.raises(Image.DecompressionBombError, match=r"\(\d{10} pixels\)"):
            Image.open(io.BytesIO(data))
    with Image.open(io.BytesIO(hostile.png_declaring(60000, 4))) as im:
        assert im.size == (60000, 4)


def test_checker_sees_a_face_left_unmasked_and_not_a_masked_one(corpus, tmp_path):
    _, base, _ = corpus
    for key in ("jpg", "mp4"):
        out = tmp_path / f"out{base[key].suffix}"
        shutil.copy(base[key], out)
        assert [inv for inv, _ in hostile.check_output(out, masked=True)] == ["unmasked"], key
    # the face region painted flat, as --mask solid would
    img = cv2.imread(str(base["jpg"]))
    img[40:200, 160:290] = 90
    cv2.imwrite(str(tmp_path / "masked.png"), img)
    assert hostile.check_output(tmp_path / "masked.png", masked=True) == []
    (tmp_path / "cut.jpg").write_bytes(base.bytes("jpg")[:-3000])
    assert [inv for inv, _ in hostile.check_output(tmp_path / "cut.jpg", masked=True)] == ["incomplete"]
    (tmp_path / "cut.mp4").write_bytes(base.bytes("mp4")[: len(base.bytes("mp4")) * 2 // 3])
    assert [inv for inv, _ in hostile.check_output(tmp_path / "cut.mp4", masked=True)] == ["incomplete"]


def test_checker_catches_a_misbehaving_program(corpus, tmp_path):
    """A stand-in for ``python`` that does everything wrong: each wrong thing is reported."""
    root, base, sandbox = corpus
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\n"
                    "echo junk > .out.abcdefgh.partial.jpg\n"
                    "printf x >> in.jpg\n"
                    "cp in.jpg out.jpg\n"  # after a failure, and unmasked
                    "touch \"$HOME/.trace\"\n"
                    "echo 'Traceback (most recent call last):' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    case = hostile.Case("fake", "fake", hostile._one("in.jpg", lambda b: b.bytes("jpg")), frozenset({2}), ("out.jpg",))
    found = {inv for inv, _ in hostile.run_case(case, base, root, sandbox, python=str(fake)).failures}
    assert found == {"exit", "traceback", "input", "leftover", "unmasked", "home"}, found
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nsleep 30\n")
    sleeper.chmod(0o755)
    case = hostile.Case("sleepy", "fake", hostile._one("in.jpg", b"x"), frozenset({2}), timeout=2)
    assert [inv for inv, _ in hostile.run_case(case, base, root, sandbox, python=str(sleeper)).failures] == ["hang"]
    if sandbox.packets:
        talker = tmp_path / "talker"
        talker.write_text("#!/usr/bin/env python3\nimport socket\n"
                          "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 9))\n")
        talker.chmod(0o755)
        case = hostile.Case("talker", "fake", hostile._one("in.jpg", b"x"), frozenset({0}), timeout=30)
        assert "packets" in {inv for inv, _ in hostile.run_case(case, base, root, sandbox, python=str(talker)).failures}


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_hostile_case(corpus, case):
    root, base, sandbox = corpus
    r = hostile.run_case(case, base, root, sandbox)
    r.failures = [f for f in r.failures if f[0] not in IGNORE]
    if r.skipped:
        pytest.skip(r.skipped)
    assert r.ok, f"rc={r.rc}: " + "; ".join(f"[{inv}] {why}" for inv, why in r.failures) + f"\n{r.stderr_tail}"
