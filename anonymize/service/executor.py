"""Where jobs run, behind the one small interface of every engine
(:class:`anonymize.engine.Executor`: ``submit(job) -> outcome``, here with ``cancel``), the same
one the folder batch's engines implement.

:class:`ProcessExecutor` runs each job in a fresh worker process on this machine
(:mod:`anonymize.service.worker`), in its own process group so a cancel also ends its ffmpeg
children, and killed with the server (the worker asks Linux for it). :class:`RayExecutor`
(``anonymize serve --engine ray``) runs each job as one Ray task on a cluster whose nodes all
see ``--data`` (a shared mount).
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
    """:class:`anonymize.engine.Executor` of :class:`JobSpec` -> :class:`Outcome`, plus ``cancel``."""

    def submit(self, job: JobSpec) -> Outcome:
        """Run ``job`` to its end and return how it ended (blocks the calling thread)."""

    def cancel(self, job_id: str) -> bool:
        """Stop a job that was claimed to run (its submit returns ``cancelled``, also when its
        process has not started yet); False if no process of it runs now."""

    def shutdown(self, graceful: bool = False) -> None:
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

    def shutdown(self, graceful: bool = False) -> None:  # noqa: ARG002 - a job restarts from scratch anyway
        with self._lock:
            self._stopping = True
            procs = list(self._running.values())
        for proc in procs:
            _kill_group(proc.pid)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)


class RayExecutor:
    """One Ray task per job (``anonymize serve --engine ray``): the task runs
    :func:`anonymize.service.worker.run` on the job's folder, on whichever node has a free CPU, so
    ``--data`` must be on a filesystem every node sees (checked on every node at start). A task
    whose worker dies is retried by Ray; a cancel kills it."""

    def __init__(self, data: Path, address: str | None = None, local_cpus: int = 1, num_cpus: float = 1.0):
        from anonymize import ray_cluster

        self.ray, self._owned = ray_cluster.connect(address, num_cpus=local_cpus)
        ray_cluster.check_paths([str(data)], [str(data)])
        self.capacity = max(1, int(ray_cluster.cluster_cpus() // num_cpus))
        self._task = self.ray.remote(num_cpus=num_cpus, max_retries=3, retry_exceptions=False)(_ray_run)
        self._lock = threading.Lock()
        self._running: dict[str, object] = {}
        self._cancelled: set[str] = set()
        self._stopping = False

    def submit(self, job: JobSpec) -> Outcome:
        with self._lock:
            if self._stopping:
                return Outcome("interrupted")
            if job.id in self._cancelled:
                self._cancelled.discard(job.id)
                return Outcome("cancelled", "cancelled")
            ref = self._task.remote(str(job.folder))
            self._running[job.id] = ref
        try:
            data = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - cancelled, or its workers kept dying
            data = {"status": "failed", "error": f"the Ray task ended without a result ({type(exc).__name__})"}
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                cancelled = job.id in self._cancelled
                self._cancelled.discard(job.id)
                stopping = self._stopping
        if cancelled:
            return Outcome("cancelled", "cancelled")
        if stopping and data.get("status") != "succeeded":
            return Outcome("interrupted")
        return Outcome(data["status"], data.get("error"), int(data.get("bytes_out") or 0))

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            self._cancelled.add(job_id)
            ref = self._running.get(job_id)
        if ref is None:
            return False
        self.ray.cancel(ref, force=True)
        return True

    def shutdown(self, graceful: bool = False) -> None:  # noqa: ARG002
        with self._lock:
            self._stopping = True
            refs = list(self._running.values())
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        if self._owned:
            from anonymize import ray_cluster

            ray_cluster.disconnect()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)


def _ray_run(folder: str) -> dict:
    """In a Ray worker: one service job, its scratch files in the job's own folder."""
    import tempfile

    tmp = Path(folder) / "tmp"
    tmp.mkdir(exist_ok=True)
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), str(tmp)
    try:
        return worker.run(Path(folder))
    finally:
        tempfile.tempdir = saved[1]
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
