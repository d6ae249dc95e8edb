"""Paths checked before any work: nothing written onto an input, no hang on FIFOs or devices,
long and non-UTF-8 names, and unwritable output folders (issue 15 items 3, 4, 7)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymize import batch
from anonymize.atomic import atomic_output, temp_affixes
from anonymize.cli import main
from anonymize.errors import EncodeError, InputError
from anonymize.paths import (MANIFEST_MAX_BYTES, check_folder_write, check_manifest, check_writes, name_max,
                             require_regular_input, same_file, shown)
from tests.conftest import decode_frames, ff

FAST = ["-q", "--marks", "faces"]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(args: list, timeout: float = 60) -> int:
    """``main(args)`` in a thread: a hang fails the test after ``timeout`` instead of blocking it."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(main([str(a) for a in args])), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"anonymize {args} still running after {timeout} s"
    return result[0]


@pytest.fixture
def photo(tmp_path: Path, astronaut_bgr: np.ndarray) -> Path:
    path = tmp_path / "in.jpg"
    cv2.imwrite(str(path), astronaut_bgr)
    return path


def tiny_video(path: Path) -> Path:
    """A half-second test-pattern clip; made under an ASCII name, then renamed (ff decodes its log)."""
    made = path.with_name("made.mp4")
    ff("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=0.5", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", str(made))
    os.replace(made, path)
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return tiny_video(tmp_path / "clip.mp4")


def leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if ".partial" in n]


# ------------------------------------------------------------------------------------------
# the helpers


def test_same_file_by_path_and_by_inode(tmp_path: Path):
    a = tmp_path / "a.jpg"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.jpg")
    os.symlink(a, tmp_path / "soft.jpg")
    assert same_file(a, tmp_path / "hard.jpg") and same_file(a, tmp_path / "soft.jpg")
    assert same_file(tmp_path / "sub" / ".." / "a.jpg", a)
    assert same_file(tmp_path / "new.json", tmp_path / "." / "new.json")  # neither exists: same path
    (tmp_path / "b.jpg").write_bytes(b"x")
    assert not same_file(a, tmp_path / "b.jpg")
    assert not same_file(a, tmp_path / "new.json")


def test_check_writes_names_both(tmp_path: Path):
    src = tmp_path / "in.jpg"
    src.write_bytes(b"x")
    with pytest.raises(InputError, match=r"--report .*in\.jpg: is the input .*in\.jpg; refusing to overwrite it"):
        check_writes([src], [("--report", src)])
    with pytest.raises(InputError, match=r"--report .*o\.jpg: is also the output .*o\.jpg"):
        check_writes([src], [("output", tmp_path / "o.jpg"), ("--report", tmp_path / "o.jpg")])
    with pytest.raises(InputError, match="FIFO|character device"):
        check_writes([src], [("--manifest", Path("/dev/full"))])
    with pytest.raises(InputError, match="folder"):
        check_writes([src], [("--report", tmp_path)])
    # writing beside the input, into the input's folder, is what default outputs do
    check_writes([src, tmp_path], [("output", tmp_path / "in.anonymized.jpg"), ("--report", tmp_path / "r.json")])
    check_folder_write("--thumbs", tmp_path / "thumbs", [src])
    with pytest.raises(InputError):
        check_folder_write("--thumbs", src, [src])


def test_require_regular_input_never_opens(tmp_path: Path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    for path, what in ((fifo, "FIFO"), (Path("/dev/zero"), "character device"), (tmp_path, "folder")):
        with pytest.raises(InputError, match=what):
            require_regular_input(path)
    with pytest.raises(InputError, match="no such file"):
        require_regular_input(tmp_path / "missing.jpg")
    (tmp_path / "ok.jpg").write_bytes(b"x")
    require_regular_input(tmp_path / "ok.jpg")


def test_manifest_refused_before_reading(tmp_path: Path):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(MANIFEST_MAX_BYTES + 1)
    for path in (big, Path("/dev/full"), Path("/dev/zero")):
        with pytest.raises(InputError):
            check_manifest(path)
        with pytest.raises(InputError):
            batch.read_manifest(path)
        with pytest.raises(InputError):
            batch.Manifest(path)
    assert big.stat().st_size == MANIFEST_MAX_BYTES + 1  # not truncated by the refused open


def test_temp_names_fit_the_name_limit(tmp_path: Path):
    limit = name_max(tmp_path)
    for stem in ("x" * 236, "é" * 118, "a"):  # 240 bytes of name either way, and a short one
        final = tmp_path / f"{stem}.mp4"
        prefix, suffix = temp_affixes(final)
        assert len(os.fsencode(prefix + "abcdefgh" + suffix)) <= limit
        assert batch._PARTIAL.match(prefix + "abcdefgh" + suffix)
        prefix.encode("utf-8")  # cut at a character boundary
        with atomic_output(final) as tmp:
            assert len(os.fsencode(tmp.name)) <= limit
            tmp.write_bytes(b"done")
        assert final.read_bytes() == b"done"
    assert leftovers(tmp_path) == []
    with pytest.raises(InputError, match="choose a shorter name"):
        with atomic_output(tmp_path / ("y" * (limit - 3) + ".mp4")):
            pass


# ------------------------------------------------------------------------------------------
# side files never replace an input or an output


def test_report_on_the_input_photo(photo: Path):
    before = sha(photo)
    assert run_cli([photo, "--report", photo, *FAST]) == 2
    assert sha(photo) == before


def test_report_on_the_input_video(video: Path):
    before = sha(video)
    assert run_cli([video, "--report", video, *FAST]) == 2
    assert sha(video) == before


def test_report_on_the_output(tmp_path: Path, video: Path):
    out = tmp_path / "out.mp4"
    assert run_cli([video, "-o", out, "--report", out, *FAST]) == 2
    assert not out.exists()


def test_report_through_a_link_to_the_input(tmp_path: Path, photo: Path):
    before = sha(photo)
    os.link(photo, tmp_path / "hard.json")
    os.symlink(photo, tmp_path / "soft.json")
    assert run_cli([photo, "--report", tmp_path / "hard.json", *FAST]) == 2
    assert run_cli([photo, "--report", tmp_path / "soft.json", *FAST]) == 2
    assert sha(photo) == before


def test_output_hard_link_to_the_input(tmp_path: Path, photo: Path):
    os.link(photo, tmp_path / "out.jpg")
    assert run_cli([photo, "-o", tmp_path / "out.jpg", *FAST]) == 2


def test_output_folder_holding_the_input_file(tmp_path: Path, photo: Path):
    before = sha(photo)
    assert run_cli([photo, "-o", f"{tmp_path}/", *FAST]) == 2  # would write tmp_path/in.jpg: the input
    assert sha(photo) == before


@pytest.fixture
def in_folder(tmp_path: Path, photo: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo, folder / "a.jpg")
    shutil.copy(photo, folder / "b.jpg")
    return folder


def test_manifest_naming_an_input(tmp_path: Path, in_folder: Path):
    before = sha(in_folder / "a.jpg")
    assert run_cli([in_folder, "-o", tmp_path / "out", "--manifest", in_folder / "a.jpg", *FAST]) == 2
    assert sha(in_folder / "a.jpg") == before
    assert not (tmp_path / "out").exists()


def test_folder_batch_report_on_an_input(tmp_path: Path, in_folder: Path):
    before = sha(in_folder / "b.jpg")
    assert run_cli([in_folder, "-o", tmp_path / "out", "--report", in_folder / "b.jpg", *FAST]) == 2
    assert sha(in_folder / "b.jpg") == before


def test_folder_batch_report_on_the_manifest(tmp_path: Path, in_folder: Path):
    m = tmp_path / "m.jsonl"
    assert run_cli([in_folder, "-o", tmp_path / "out", "--manifest", m, "--report", m, *FAST]) == 2


def test_audit_json_on_the_original(tmp_path: Path, photo: Path):
    out = tmp_path / "out.jpg"
    shutil.copy(photo, out)
    before, before_out = sha(photo), sha(out)
    assert run_cli(["audit", out, "--against", photo, "--json", photo, "-q"]) == 2
    assert run_cli(["audit", out, "--json", out, "-q"]) == 2
    folder = tmp_path / "orig"
    folder.mkdir()
    shutil.copy(photo, folder / "out.jpg")
    assert run_cli(["audit", out, "--against", folder, "--json", folder / "out.jpg", "-q"]) == 2
    assert run_cli(["audit", out, "--against", photo, "--thumbs", photo, "-q"]) == 2
    assert sha(photo) == before and sha(out) == before_out


# ------------------------------------------------------------------------------------------
# FIFOs and devices: refused at once, never read


@pytest.mark.parametrize("name", ["x.mp4", "x.jpg"])
def test_fifo_input_returns_2_at_once(tmp_path: Path, name: str):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    assert run_cli([fifo, *FAST], timeout=20) == 2
    assert run_cli([fifo, "-o", tmp_path / "out", *FAST], timeout=20) == 2


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_link_to_a_device_returns_2(tmp_path: Path, device: str):
    os.symlink(device, tmp_path / "z.mp4")
    assert run_cli([tmp_path / "z.mp4", *FAST], timeout=20) == 2


def test_manifest_on_a_device_or_fifo(tmp_path: Path, photo: Path):
    assert run_cli([photo, "-o", tmp_path / "out", "--manifest", "/dev/full", *FAST], timeout=20) == 2
    os.mkfifo(tmp_path / "m.jsonl")
    assert run_cli([photo, "-o", tmp_path / "out", "--manifest", tmp_path / "m.jsonl", *FAST], timeout=20) == 2
    assert run_cli([photo, "--report", "/dev/full", *FAST], timeout=20) == 2


def test_process_job_does_not_hash_a_fifo(tmp_path: Path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    job = batch.Job(fifo, tmp_path / "out.mp4", "x.mp4", "x.mp4", "out.mp4", "anonymize", "video")
    result: list = []
    t = threading.Thread(target=lambda: result.append(batch.process_job(None, job, None, "s")), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and result[0].status == "failed" and result[0].exit_code == 2


# ------------------------------------------------------------------------------------------
# long and non-UTF-8 names


def test_240_character_output_names(tmp_path: Path, photo: Path, video: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for src, ext in ((photo, ".jpg"), (video, ".mp4")):
        dst = out_dir / ("n" * (240 - len(ext)) + ext)
        assert run_cli([src, "-o", dst, *FAST], timeout=300) == 0
        assert dst.stat().st_size > 0
    assert leftovers(out_dir) == []
    assert len(decode_frames(out_dir / ("n" * 236 + ".mp4"))) == 5
    # a name that is itself too long is refused before any work
    limit = name_max(out_dir)
    assert run_cli([photo, "-o", out_dir / ("n" * (limit - 3) + ".jpg"), *FAST]) == 2


def test_non_utf8_video_name_end_to_end(tmp_path: Path):
    src = tiny_video(Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.mp4")))
    report = tmp_path / "r.json"
    assert run_cli([src, "--report", report, *FAST], timeout=300) == 0
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.anonymized.mp4"))
    assert out.is_file()
    n = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=nb_read_frames", "-of", "csv=p=0", os.fsencode(out)],
                       capture_output=True, check=True).stdout.strip() if shutil.which("ffprobe") else b"5"
    assert int(n) == 5
    text = report.read_bytes().decode("utf-8")  # valid UTF-8 text...
    files = json.loads(text)["files"]
    assert files[0]["input"].endswith("caf\\xe9.mp4") and files[0]["status"] == "ok"  # ...naming the bytes
    assert shown(src).endswith("caf\\xe9.mp4")


# ------------------------------------------------------------------------------------------
# an output folder we cannot write to: EncodeError (5) for photos and videos alike


@contextlib.contextmanager
def unwritable(folder: Path):
    """Make ``folder`` refuse new files. Root ignores permission bits, so as root the folder is
    made immutable (chattr +i, which binds root too) where the file system supports it."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root on a file system without chattr +i: cannot make a folder unwritable")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder_gives_5(tmp_path: Path, photo: Path, video: Path):
    with unwritable(tmp_path / "ro") as ro:
        assert run_cli([photo, "-o", ro / "out.jpg", *FAST], timeout=300) == 5
        assert run_cli([video, "-o", ro / "out.mp4", *FAST], timeout=300) == 5
        assert os.listdir(ro) == []
    with pytest.raises(EncodeError, match="cannot write"):
        with atomic_output(tmp_path / "in.jpg" / "x.jpg"):  # a file where the folder should be
            pass
