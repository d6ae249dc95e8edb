"""Where jobs run, behind one small interface (:class:`Executor`), so another engine (Ray, a
queue of machines) can take the place of :class:`ProcessExecutor` later.

:class:`ProcessExecutor` runs each job in a fresh worker process on this machine
(:mod:`anonymize.service.worker`), in its own process group so a cancel also ends its ffmpeg
children, and killed with the server (the worker asks Linux for it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import worker


@dataclass
class Outcome:
    """How a job ended: ``status`` succeeded, failed, cancelled, or interrupted (the server is
    stopping: the job goes back to the queue)."""

    status: str
    error: str | None = None
    bytes_out: int = 0


@dataclass
class JobSpec:
    """What an executor is given: the job's id and its folder (``spec.json`` and the upload)."""

    id: str
    folder: Path


class Executor(Protocol):
    def submit(self, job: JobSpec) -> Outcome:
        """Run ``job`` to its end and return how it ended (blocks the calling thread)."""

    def cancel(self, job_id: str) -> bool:
        """Stop a job that was claimed to run (its submit returns ``cancelled``, also when its
        process has not started yet); False if no process of it runs now."""

    def shutdown(self) -> None:
        """Stop every running job (their submits return ``interrupted``)."""


class ProcessExecutor:
    """One worker process per job; at most as many at once as threads call :meth:`submit`."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        self._stopping = False

    def submit(self, job: JobSpec) -> Outcome:
        tmp = job.folder / "tmp"
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
        with self._lock:
            if self._stopping:
                return Outcome("interrupted")
            if job.id in self._cancelled:  # cancelled between its claim and now
                self._cancelled.discard(job.id)
                return Outcome("cancelled", "cancelled")
            proc = subprocess.Popen([self.python, "-m", "anonymize.service.worker", str(job.folder), str(os.getpid())],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=env, start_new_session=True, close_fds=True)
            self._running[job.id] = proc
        try:
            proc.wait()
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                cancelled = job.id in self._cancelled
                self._cancelled.discard(job.id)
                stopping = self._stopping
            _kill_group(proc.pid)  # any ffmpeg child left behind
        if cancelled:
            return Outcome("cancelled", "cancelled")
        try:
            data = json.loads((job.folder / worker.OUTCOME).read_text())
        except (OSError, ValueError):
            if stopping:
                return Outcome("interrupted")
            return Outcome("failed", f"the worker process ended without a result (exit {proc.returncode})")
        return Outcome(data["status"], data.get("error"), int(data.get("bytes_out") or 0))

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            self._cancelled.add(job_id)  # also when its process is not started yet: it never will be
            proc = self._running.get(job_id)
        if proc is None:
            return False
        _kill_group(proc.pid)
        return True

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self._running.values())
        for proc in procs:
            _kill_group(proc.pid)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
