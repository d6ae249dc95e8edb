"""Batch mode on real files: mirrored trees, --copy-other, failures, resume, --jobs and kill -9."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from anonymize import batch
from anonymize.cli import build_parser
from anonymize.cli import main as cli_main

from .conftest import decode_frames, face_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_bgr(astronaut_bgr) -> np.ndarray:
    return cv2.resize(astronaut_bgr, (128, 128), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """One tiny video (160x90, 0.3 s), copied wherever a test needs one."""
    return face_clip(tmp_path_factory.mktemp("clip"), "clip.mp4", size="160x90", seconds=0.3, audio=False)


def photo(path: Path, bgr: np.ndarray, variant: int = 0) -> Path:
    """A small JPEG/PNG of a real face; ``variant`` changes its bytes (flip / shift)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.roll(bgr, variant * 3, axis=1) if variant else bgr
    ok, data = cv2.imencode(path.suffix if path.suffix.lower() in (".png", ".jpg") else ".jpg", img)
    assert ok
    path.write_bytes(data.tobytes())  # (cv2.imwrite crashes on names that are not UTF-8)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def manifest_of(out: Path) -> list[dict]:
    return batch.read_manifest(batch.manifest_path(out))


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file()}


def assert_decodes(path: Path) -> None:
    """A final-name output is complete: a photo loads fully, a video has frames."""
    if batch.media_kind(path) == "photo":
        with Image.open(path) as im:
            im.load()
    else:
        assert len(decode_frames(path)) > 0, path


# ---------------------------------------------------------------------------------------------


def test_tree_mirrored_odd_names_and_our_own_files_ignored(tmp_path, small_bgr, tiny_clip, capsys):
    src, out = tmp_path / "in put", tmp_path / "out dir"
    names = ["day one/a face.jpg", "day one/ünïcode/b.png", "day one/ünïcode/clip #1 [x].mp4",
             "-dash.jpg", "colon:name.jpg", "new\nline.jpg", "quote's \"&%.png", "UPPER.JPG",
             os.fsdecode(b"bad\xffbyte.jpg")]
    for i, n in enumerate(names):
        if n.endswith(".mp4"):
            (src / n).parent.mkdir(parents=True, exist_ok=True)
            (src / n).write_bytes(tiny_clip.read_bytes())
        else:
            photo(src / n, small_bgr, i)
    (src / "notes.txt").write_text("not media")
    # ours or hidden: never inputs
    photo(src / "day one" / "a face.anonymized.jpg", small_bgr)
    photo(src / ".a face.ab12cd34.partial.jpg", small_bgr)
    photo(src / ".hidden" / "x.jpg", small_bgr)
    (src / ".in put.anonymize-manifest.jsonl").write_text("{}\n")
    rep = tmp_path / "r.json"
    assert cli_main([str(src), "-o", str(out), "-q", "--report", str(rep)]) == 0
    assert files_under(out) == set(names)  # the output folder holds only outputs
    for n in names:
        assert_decodes(out / n)
    records = manifest_of(out)
    assert sorted(r["input"] for r in records) == sorted(names)
    assert all(r["status"] == "done" and r["output"] == r["input"] and len(r["sha256"]) == 64
               and r["size"] == (src / r["input"]).stat().st_size and r["mtime"] > 0
               and len(r["output_sha256"]) == 64 and r["seconds"] >= 0 and r["time"] for r in records)
    report = json.loads(rep.read_text())
    assert {f["status"] for f in report["files"]} == {"ok"} and len(report["files"]) == len(names)
    video = next(f for f in report["files"] if f["kind"] == "video")
    assert video["frames"] and video["frame_count"] == len(video["frames"])
    err = capsys.readouterr().err
    assert f"{len(names)} done" in err and "1 other file(s) left out" in err


def test_copy_other_copies_verbatim_and_never_unsupported_media(tmp_path, small_bgr, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    photo(src / "p.jpg", small_bgr)
    (src / "docs").mkdir()
    (src / "docs" / "notes.txt").write_text("meeting at 5")
    (src / "docs" / "flyer.pdf").write_bytes(b"%PDF-1.4 Author: someone")
    (src / "raw.CR2").write_bytes(b"II*\x00rawdata")  # camera RAW: faces inside, never copied
    (src / "voice.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    photo(src / "sniffed.bin", small_bgr)  # a JPEG under a wrong name: its bytes give it away
    assert cli_main([str(src), "-o", str(out), "-q", "--copy-other"]) == 0
    assert files_under(out) == {"p.jpg", "docs/notes.txt", "docs/flyer.pdf"}
    for n in ("docs/notes.txt", "docs/flyer.pdf"):
        assert (out / n).read_bytes() == (src / n).read_bytes()
    err = capsys.readouterr().err
    assert "not copied, 3 photo/video/audio file(s)" in err and "raw.CR2" in err
    recs = {r["input"]: r for r in manifest_of(out)}
    assert recs["docs/notes.txt"]["action"] == "copy" and recs["p.jpg"]["action"] == "anonymize"
    assert "keep their metadata" in build_parser().format_help().lower().replace("\n", " ")


def test_corrupt_file_mid_batch(tmp_path, small_bgr, tiny_clip, capsys):
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    for i in range(4):
        photo(src / f"{'ac'[i // 2]}{i}.jpg", small_bgr, i)
    (src / "b-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # sorts in the middle
    (src / "v.mp4").write_bytes(tiny_clip.read_bytes())
    assert cli_main([str(src), "-o", str(out), "-q", "--jobs", "2", "--report", str(rep)]) == 8
    assert files_under(out) == {"a0.jpg", "a1.jpg", "c2.jpg", "c3.jpg", "v.mp4"}  # nothing for it, no temp files
    recs = {r["input"]: r for r in manifest_of(out)}
    assert recs["b-broken.jpg"]["status"] == "failed" and recs["b-broken.jpg"]["exit_code"] == 2
    assert recs["b-broken.jpg"]["error"] and recs["b-broken.jpg"]["output_sha256"] is None
    files = json.loads(rep.read_text())["files"]
    assert [(Path(f["input"]).name, f["status"]) for f in files] == [
        ("a0.jpg", "ok"), ("a1.jpg", "ok"), ("b-broken.jpg", "failed"), ("c2.jpg", "ok"), ("c3.jpg", "ok"),
        ("v.mp4", "ok")]
    assert files[2]["error"] and not files[2]["frames"]
    assert len(files[5]["frames"]) == files[5]["frame_count"] > 0  # frames came back from the worker process
    assert all(len(f["frames"]) == 1 and f["frames"][0]["regions"] for f in files if f["kind"] == "photo"
               and f["status"] == "ok")
    err = capsys.readouterr().err
    assert "5 done" in err and "1 failed" in err and "failed: " in err and "b-broken.jpg" in err
    # a rerun retries only the failed file
    assert cli_main([str(src), "-o", str(out), "-q", "--jobs", "2", "--report", str(rep)]) == 8
    assert "0 done, 5 skipped as already done, 1 failed" in capsys.readouterr().err
    statuses = [f["status"] for f in json.loads(rep.read_text())["files"]]
    assert statuses == ["skipped", "skipped", "failed", "skipped", "skipped", "skipped"]
    (src / "b-broken.jpg").unlink()
    assert cli_main([str(src), "-o", str(out), "-q"]) == 0


def test_resume_skips_done_and_redoes_changed_missing_tampered(tmp_path, small_bgr, tiny_clip, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(5):
        photo(src / "sub" / f"p{i}.jpg", small_bgr, i)
    (src / "v.mp4").write_bytes(tiny_clip.read_bytes())
    args = [str(src), "-o", str(out), "-q"]
    assert cli_main(args) == 0
    first, before = manifest_of(out), stamps(out)
    assert len(first) == 6
    capsys.readouterr()

    assert cli_main(args) == 0  # nothing to do
    assert manifest_of(out) == first and stamps(out) == before
    assert "0 done, 6 skipped as already done" in capsys.readouterr().err

    photo(src / "sub" / "p1.jpg", small_bgr, 9)  # changed input
    (out / "sub" / "p2.jpg").unlink()  # missing output
    (out / "sub" / "p3.jpg").write_bytes(b"tampered")  # output no longer what we wrote
    assert cli_main(args) == 0
    new = manifest_of(out)[len(first):]
    assert sorted(r["input"] for r in new) == ["sub/p1.jpg", "sub/p2.jpg", "sub/p3.jpg"]
    after = stamps(out)
    assert {k for k in before if after.get(k) != before[k]} == {"sub/p1.jpg", "sub/p2.jpg", "sub/p3.jpg"}
    assert_decodes(out / "sub" / "p3.jpg")

    # a half-written last record (a kill during the write) is ignored and cut off
    man = batch.manifest_path(out)
    with open(man, "ab") as f:
        f.write(b'{"input": "sub/p0.jpg", "status": "do')
    assert len(manifest_of(out)) == 9
    assert cli_main(args) == 0
    assert man.read_bytes().endswith(b"}\n") and len(manifest_of(out)) == 9 and stamps(out) == after

    # other settings: everything is redone
    assert cli_main(args + ["--mask", "solid"]) == 0
    assert len(manifest_of(out)) == 15


def test_jobs2_same_outputs_as_jobs1(tmp_path, small_bgr, tiny_clip):
    src = tmp_path / "in"
    for i in range(6):
        photo(src / ("x" if i % 2 else "y z") / f"{i}.png", small_bgr, i)
    (src / "x" / "v.mp4").write_bytes(tiny_clip.read_bytes())
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli_main([str(src), "-o", str(one), "-q", "--jobs", "1", "--mask", "solid"]) == 0
    assert cli_main([str(src), "-o", str(two), "-q", "--jobs", "2", "--mask", "solid"]) == 0
    assert files_under(one) == files_under(two) and len(files_under(one)) == 7
    for rel in files_under(one):
        if rel.endswith(".png"):  # lossless and masked solid: the same pixels whoever made them
            assert np.array_equal(np.asarray(Image.open(one / rel)), np.asarray(Image.open(two / rel))), rel
    regions = lambda out: {r["input"]: r["regions"] for r in manifest_of(out)}  # noqa: E731
    assert regions(one) == regions(two)


def test_worker_plan_splits_cores():
    from anonymize import Options

    cores = batch.cpu_cores()
    n, opts = batch.worker_plan(2, Options(), files=10)
    assert n == min(2, cores) and (opts.threads == max(1, cores // 2) if n > 1 else opts.threads == 0)
    assert batch.worker_plan(64, Options(), files=3)[0] == min(3, cores)  # never more than cores or files
    assert batch.worker_plan(2, Options(threads=3), files=10)[1].threads == 3  # explicit stays
    assert batch.settings_hash(Options(threads=1)) == batch.settings_hash(Options(threads=4))
    assert batch.settings_hash(Options()) != batch.settings_hash(Options(mask="solid"))


def test_refusals(tmp_path, small_bgr):
    a, b = photo(tmp_path / "a" / "x.jpg", small_bgr), photo(tmp_path / "b" / "x.jpg", small_bgr)
    out = tmp_path / "out"
    assert cli_main([str(a), str(b), "-o", str(out), "-q"]) == 2  # both would be out/x.jpg
    assert cli_main([str(tmp_path / "a"), "-o", str(tmp_path / "a"), "-q"]) == 2
    assert cli_main([str(a), "--copy-other", "-q"]) == 2
    # two folders: each keeps its name under OUT
    assert cli_main([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "-q"]) == 0
    assert files_under(out) == {"a/x.jpg", "b/x.jpg"}
    # one run at a time per output folder
    held = batch.Manifest(batch.manifest_path(out))
    try:
        assert cli_main([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out), "-q"]) == 2
    finally:
        held.close()
    epilog = build_parser().epilog
    assert "8 some files of a folder batch failed" in epilog


def _live_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) in a process group, from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill9_mid_batch_then_resume(tmp_path, small_bgr, tiny_clip):
    src, out = tmp_path / "in", tmp_path / "out"
    expected = set()
    for i in range(28):
        expected.add(photo(src / f"d{i % 3}" / f"p{i:02d}.jpg", small_bgr, i).relative_to(src).as_posix())
    for i in range(2):
        (src / f"v{i}.mp4").write_bytes(tiny_clip.read_bytes())
        expected.add(f"v{i}.mp4")
    man = batch.manifest_path(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "anonymize", str(src), "-o", str(out), "--jobs", "2", "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # kill at a seeded random moment: after the n-th finished file plus a random delay
        rng = random.Random(1234)
        n, delay = rng.randint(1, 20), rng.uniform(0.0, 0.1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and len(batch.read_manifest(man)) < n:
            time.sleep(0.01)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the workers die with the CLI (no orphan keeps writing into OUT)
        deadline = time.monotonic() + 15
        while _live_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _live_in_group(proc.pid), "worker processes outlived the killed CLI"
    finally:
        if _live_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    run1 = batch.read_manifest(man)
    done1 = {r["input"] for r in run1 if r["status"] == "done"}
    finals = {p for p in files_under(out) if not Path(p).name.startswith(".")}
    for rel in finals:  # whatever sits under a final name is complete
        assert_decodes(out / rel)
    assert done1 <= finals <= expected
    # >= 8 photos and both videos (the smallest files, so the last ones) were still to do
    assert n <= len(done1) < len(expected)
    before = stamps(out)
    stale = out / "d0" / ".p00.abcd1234.partial.jpg"  # as a kill during a write leaves it
    stale.write_bytes(b"\xff\xd8 half a jpeg")

    assert cli_main([str(src), "-o", str(out), "--jobs", "2", "-q"]) == 0
    assert files_under(out) == expected  # exactly one output per input, no temporary files left
    for rel in expected:
        assert_decodes(out / rel)
    final = batch.read_manifest(man)
    assert final[:len(run1)] == run1
    run2 = final[len(run1):]
    done2 = [r["input"] for r in run2 if r["status"] == "done"]
    assert not done1 & set(done2)  # nothing done in run 1 was redone
    assert len(done2) == len(set(done2)) and done1 | set(done2) == expected
    assert all(stamps(out)[rel] == before[rel] for rel in done1)
