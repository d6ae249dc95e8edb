"""The batch's engines, each an :class:`~anonymize.engine.Executor` of ``submit(job) -> Outcome``:

- :class:`LocalEngine`: in this process, one file at a time (progress bar per video's frames);
- :class:`PoolEngine`: a pool of worker processes on this machine, each with its own models;
- :class:`~anonymize.batch.ray_engine.RayEngine` (``--engine ray``): one Ray task per file.

An engine runs files and returns outcomes; it never writes the manifest (the driver,
:mod:`anonymize.batch.driver`, alone does) and never prints.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..api import Anonymizer
from ..config import Options
from ..errors import AnonymizeError, EncodeError, is_disk_full
from ..signals import Terminated
from .jobs import Outcome, process_job
from .manifest import remove_partials_of
from .plan import Job


def spool_to_text(out: Outcome) -> str | None:
    """Take the report's frame spool out of ``out`` (a spool cannot cross processes) as text."""
    if out.report is None or out.report._spool is None:
        return None
    spool, out.report._spool = out.report._spool, None
    try:
        spool.seek(0)
        return spool.read()
    finally:
        spool.close()


class LocalEngine:
    """Files one at a time in this process; the models load on the first file that needs them (a
    rerun that skips everything loads nothing)."""

    capacity = 1

    def __init__(self, options: Options, settings: str, prevs: dict[str, dict], runner: Anonymizer | None = None,
                 quiet: bool = True, show_bar: bool = False):
        self.options, self.settings, self.prevs = options, settings, prevs
        self.runner = runner
        self.quiet, self.show_bar = quiet, show_bar

    def _runner(self) -> Anonymizer:
        if self.runner is None:
            self.runner = Anonymizer(self.options)
        return self.runner

    def submit(self, job: Job) -> Outcome:
        from tqdm import tqdm

        from ..ffmpeg_tools import probe

        total = None
        if job.kind == "video" and not self.quiet:
            with contextlib.suppress(AnonymizeError):
                total = probe(job.src).estimated_frames()
        with tqdm(total=total, unit="frame", desc=job.src.name[:40], disable=self.quiet or job.kind != "video",
                  leave=not self.show_bar) as frames:
            return process_job(self._runner, job, self.prevs.get(job.rel), self.settings, on_frame=frames.update)

    def models(self) -> list[dict]:
        return self.runner.engine.models() if self.runner is not None else []

    def shutdown(self, graceful: bool = False) -> None:  # noqa: ARG002 - nothing runs elsewhere
        pass


class PoolEngine:
    """A pool of ``workers`` spawned processes on this machine, each with its own Anonymizer (models
    loaded once per process). Report frames come back through files in ``frames_dir``."""

    def __init__(self, options: Options, settings: str, prevs: dict[str, dict], workers: int,
                 frames_dir: str | None = None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.settings, self.prevs, self.capacity, self.frames_dir = settings, prevs, workers, frames_dir
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=(options, os.getpid(), frames_dir))
        # Start every worker now, from this (the main) thread: the pool starts its processes from
        # the thread that submits, and Linux's PR_SET_PDEATHSIG (workers die with their parent)
        # fires when that *thread* ends, e.g. one of the driver's submit threads.
        for fut in [self.pool.submit(os.getpid) for _ in range(workers)]:
            fut.result()

    def submit(self, job: Job) -> Outcome:
        return self.pool.submit(_worker_job, job, self.prevs.get(job.rel), self.settings).result()

    def models(self) -> list[dict]:
        with contextlib.suppress(AnonymizeError):
            return self.pool.submit(_worker_models).result()
        return []

    def close(self) -> None:
        """The run is over: let the workers exit."""
        self.pool.shutdown(wait=True)

    def shutdown(self, graceful: bool = False) -> None:
        _kill_pool(self.pool, graceful=graceful)


def _kill_pool(pool, graceful: bool = False, grace_s: float = 20.0) -> None:
    """Stop the workers. ``graceful``: SIGTERM first, so each unwinds its job (kills its ffmpeg,
    deletes its temporary file) and exits, and wait up to ``grace_s`` for that; then SIGKILL
    whatever is left, and wait until the workers are gone."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    if graceful:
        for p in procs:
            with contextlib.suppress(Exception):
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(5)


# --------------------------------------------------------------------------------------------
# inside a pool worker process

_worker: dict = {}


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the parent dies (kill -9 of the CLI must not leave workers running)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: workers also stop when their queue breaks
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """In a worker: SIGTERM/SIGHUP during a job unwind it (:class:`Terminated`; the worker exits
    after, in :func:`_worker_job`); between jobs the worker exits at once (nothing to clean)."""
    if _worker.get("busy") and not _worker.get("stopping"):
        _worker["stopping"] = True
        raise Terminated(signum)
    if not _worker.get("busy"):
        os._exit(128 + signum)


def _worker_init(options: Options, parent: int, frames_dir: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGHUP, _worker_signal)
    _die_with_parent(parent)
    try:
        import cv2

        cv2.setNumThreads(max(1, options.threads))
    except Exception:  # noqa: BLE001
        pass
    _worker.update(frames_dir=frames_dir, options=options, runner=None)


def _worker_runner() -> Anonymizer:
    """This worker's Anonymizer (models loaded once per process, on first use)."""
    if _worker["runner"] is None:
        _worker["runner"] = Anonymizer(_worker["options"])
    return _worker["runner"]


def _worker_models() -> list[dict]:
    return _worker_runner().engine.models()


def _worker_job(job: Job, prev: dict | None, settings: str) -> Outcome:
    _worker["busy"] = True
    try:
        out = process_job(_worker_runner, job, prev, settings)
    except Terminated as exc:
        os._exit(exc.exit_code)  # the job has unwound; the parent is stopping the pool
    finally:
        _worker["busy"] = False
    if out.report is not None:
        spool, out.report._spool = out.report._spool, None
        if spool is not None and _worker.get("frames_dir"):
            try:
                fd, name = tempfile.mkstemp(suffix=".jsonl", dir=_worker["frames_dir"])
                with os.fdopen(fd, "w") as f:
                    spool.seek(0)
                    shutil.copyfileobj(spool, f)
                out.frames_path = name
            except OSError as exc:  # the temporary folder is full: the report cannot be complete
                out.stop, out.exit_code = True, EncodeError.exit_code
                out.error = (f"{_worker['frames_dir']}: " + ("no space left on the disk" if is_disk_full(exc)
                             else f"cannot write ({exc.strerror or exc})") + " for the report's frames")
        if spool is not None:
            spool.close()
    return out

