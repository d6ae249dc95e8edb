"""SIGTERM, SIGHUP and SIGINT stop the CLI cleanly; a SIGKILL's leftovers go on the next run.

The CLI runs as a subprocess in its own session (so its process group holds it, its ffmpeg
children and its workers); the signal is sent once its temporary output file has appeared, i.e.
mid-run. Then: the exit code is 128 + the signal, no temporary file is left, nothing is under
the final name, and no process of the group is left running.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anonymize.atomic import atomic_output
from anonymize.batch import cpu_cores, manifest_path, read_manifest, remove_partials_of, remove_stale_partials

from .conftest import face_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """10 s of a face: minutes of work on a loaded machine, so the signal lands mid-run."""
    return face_clip(tmp_path_factory.mktemp("clip"), "long.mp4", seconds=10.0, size="320x180", audio=False)


def _start(*args: str | Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "anonymize", "-q", "--marks", "faces", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if ".partial" in p.name) if folder.exists() else []


def _wait_for_partials(proc: subprocess.Popen, folder: Path, count: int = 1, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(_partials(folder)) < count:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before writing: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no temporary output file appeared")
        time.sleep(0.05)


def _group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes of the process group ``pgid``, as 'pid name' strings."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{stat.parent.name} {name}")
    return found


def _group_gone(pgid: int, grace: float = 5.0) -> list[str]:
    """The group's live members after ``grace`` seconds ([] as soon as there is none): helpers
    such as multiprocessing's resource tracker exit a moment after the main process."""
    deadline = time.monotonic() + grace
    while (members := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def _stop(proc: subprocess.Popen, signum: int, to_group: bool) -> tuple[int, str]:
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not stop within 90 s of the signal")
    return proc.returncode, err


# to_group: a terminal's Ctrl-C and hang-up reach the whole foreground group (ffmpeg too); kill(1)
# and most service managers' first signal reach the main process
@pytest.mark.parametrize(("signum", "code", "to_group"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True),
                                                          (signal.SIGHUP, 129, True)])
def test_a_signal_mid_video_stops_cleanly(tmp_path: Path, long_clip: Path, signum: int, code: int, to_group: bool):
    out = tmp_path / "out"
    proc = _start(long_clip, "-o", out / "long.mp4")
    _wait_for_partials(proc, out)
    time.sleep(0.5)  # into the frames
    rc, err = _stop(proc, signum, to_group)
    assert rc == code, err[-2000:]
    assert _partials(out) == []
    assert not (out / "long.mp4").exists()
    assert _group_gone(proc.pid) == []
    assert f"stopped ({signal.Signals(signum).name})" in err, err[-2000:]
    assert "0 done" in err  # the summary is printed


@pytest.mark.parametrize(("signum", "code", "to_group"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_a_signal_stops_a_pool_and_its_workers_cleanly(tmp_path: Path, long_clip: Path, signum: int, code: int,
                                                       to_group: bool):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        os.link(long_clip, src / name)
    proc = _start(src, "-o", out, "--jobs", "2")
    _wait_for_partials(proc, out, count=min(2, cpu_cores()))  # both workers are writing
    time.sleep(0.5)
    rc, err = _stop(proc, signum, to_group)
    assert rc == code, err[-2000:]
    assert _partials(out) == []
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert _group_gone(proc.pid) == []
    manifest = manifest_path(out)
    if manifest.exists():  # valid: every line a record (none is done)
        lines = [x for x in manifest.read_bytes().split(b"\n") if x.strip()]
        assert len(read_manifest(manifest, started=True)) == len(lines)
        assert all(r["status"] != "done" for r in read_manifest(manifest, started=True))


def test_a_rerun_after_sigkill_removes_the_stale_partial(tmp_path: Path):
    clip = face_clip(tmp_path, "short.mp4", seconds=1.0, size="320x180", audio=False)
    out = tmp_path / "out"
    proc = _start(clip, "-o", out / "short.mp4")
    _wait_for_partials(proc, out)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of everything: nothing is cleaned up
    proc.communicate()
    stale = _partials(out)
    assert len(stale) == 1
    rerun = _start(clip, "-o", out / "short.mp4")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-2000:]
    assert _partials(out) == []
    assert (out / "short.mp4").is_file()
    assert "removed 1 unfinished temporary file" in err


def _old_file(path: Path) -> Path:
    path.write_bytes(b"x")
    os.utime(path, (time.time() - 60, time.time() - 60))
    return path


def test_only_dead_leftovers_of_the_same_output_name_are_removed(tmp_path: Path):
    dst = tmp_path / "x.mp4"
    dead = _old_file(tmp_path / ".x.abc123_z.partial.mp4")
    other_name = _old_file(tmp_path / ".x.b.abc123_z.partial.mp4")  # output x.b.mp4's
    other_ext = _old_file(tmp_path / ".x.abc123_z.partial.mkv")
    not_ours = _old_file(tmp_path / ".x.abc123_z.mp4")
    with atomic_output(dst) as live:  # a live run writing the same name holds its lock
        live.write_bytes(b"y")
        os.utime(live, (time.time() - 60, time.time() - 60))
        assert remove_partials_of([dst], before=time.time()) == 1
        assert live.exists()
        assert remove_stale_partials(tmp_path, before=time.time()) == 2  # the folder batch's sweep
        assert live.exists()
    assert not dead.exists() and not other_name.exists() and not other_ext.exists()
    assert not_ours.exists() and dst.read_bytes() == b"y"


def test_a_new_unlocked_partial_is_spared(tmp_path: Path):
    """A temporary file modified after this run started may be another run's, caught between
    its creation and its lock: it is left alone."""
    before = time.time() - 5
    fresh = tmp_path / ".x.abc123_z.partial.mp4"
    fresh.write_bytes(b"x")
    assert remove_partials_of([tmp_path / "x.mp4"], before=before) == 0
    assert fresh.exists()


def test_a_signal_that_lands_in_a_finalizer_is_delivered_after_it():
    """Python drops an exception raised in ``__del__`` (printing "Exception ignored" and a
    traceback): the SIGHUP that reached a finished run during garbage collection did just that."""
    from anonymize.signals import Terminated, handle_signals

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGHUP)  # the handler runs here, inside __del__
            for _ in range(1000):
                pass

    with pytest.raises(Terminated) as caught:
        with handle_signals():
            Finalized()  # collected at once
            time.sleep(2)  # the signal comes again, outside the finalizer
    assert caught.value.exit_code == 129
