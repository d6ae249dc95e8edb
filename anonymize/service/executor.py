"""Where jobs run, behind the one small interface of every engine
(:class:`anonymize.engine.Executor`: ``submit(job) -> outcome``, here with ``cancel``), the same
one the folder batch's engines implement.

:class:`ProcessExecutor` runs each job in a fresh worker process on this machine
(:mod:`anonymize.service.worker`), in its own process group so a cancel also ends its ffmpeg
children, and killed with the server (the worker asks Linux for it). :class:`RayExecutor`
(``anonymize serve --engine ray``) runs each job as one Ray task on a cluster whose nodes all
see ``--data`` (a shared mount); the task runs the same worker process, and is stopped through a
stop key in the cluster's key-value store, never ``ray.cancel``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import ray_cluster
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


#: A Ray task reads its job's stop key (and whether its worker process ended) this often (seconds).
STOP_POLL_S = 0.25
#: How long a cancel or a stopping server waits for a stopped task to report before giving up on it.
STOP_GRACE_S = 30.0


class RayExecutor:
    """One Ray task per job (``anonymize serve --engine ray``): the task runs the job's worker
    process (:mod:`anonymize.service.worker`, in its own process group, as
    :class:`ProcessExecutor` does) on whichever node has a free CPU, so ``--data`` must be on a
    filesystem every node sees (checked on every node at start). A task whose Ray worker dies is
    retried by Ray (the worker process dies with it).

    Cancel and shutdown never call ``ray.cancel``: a force-cancel that meets a task as it completes
    aborts Ray's core worker in this process (Ray 2.60, task_manager.cc "Tried to complete task
    that was not pending", ray-project/ray#54846), which here would take the whole server down.
    Instead each submit has a stop key in the cluster's key-value store; the task polls it while
    its worker process runs and, once set, kills the worker's process group itself and returns
    ``cancelled`` (the server then deletes the job's folder, as with :class:`ProcessExecutor`)."""

    def __init__(self, data: Path, address: str | None = None, local_cpus: int = 1, num_cpus: float = 1.0,
                 grace_s: float = STOP_GRACE_S):
        self.ray, self._owned = ray_cluster.connect(address, num_cpus=local_cpus)
        ray_cluster.check_paths([str(data)], [str(data)])
        self.capacity = max(1, int(ray_cluster.cluster_cpus() // num_cpus))
        self._task = self.ray.remote(num_cpus=num_cpus, max_retries=3, retry_exceptions=False)(_ray_run)
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._running: dict[str, tuple[object, bytes]] = {}  # job id -> (its task, its stop key)
        self._stop_at: dict[str, float] = {}  # job id -> when its stop key was set (monotonic)
        self._cancelled: set[str] = set()
        self._stopping = False

    def submit(self, job: JobSpec) -> Outcome:
        with self._lock:
            if self._stopping:
                return Outcome("interrupted")
            if job.id in self._cancelled:
                self._cancelled.discard(job.id)
                return Outcome("cancelled", "cancelled")
            key = ray_cluster.new_stop_key(f"job-{job.id}")  # per try: a requeued job starts afresh
            ref = self._task.remote(str(job.folder), key)
            self._running[job.id] = (ref, key)
        try:
            data = self._wait(job.id, ref)
        except Exception as exc:  # noqa: BLE001 - its workers kept dying, or the cluster is gone
            data = {"status": "failed", "error": f"the Ray task ended without a result ({type(exc).__name__})"}
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self._stop_at.pop(job.id, None)
                cancelled = job.id in self._cancelled
                self._cancelled.discard(job.id)
                stopping = self._stopping
            ray_cluster.clear_stop(key)
        if cancelled:
            return Outcome("cancelled", "cancelled")
        if stopping and data.get("status") != "succeeded":
            return Outcome("interrupted")
        if data.get("status") == "cancelled":  # its stop key was set, by no cancel of ours: cannot be
            return Outcome("failed", "the Ray task was stopped")
        return Outcome(data["status"], data.get("error"), int(data.get("bytes_out") or 0))

    def _wait(self, job_id: str, ref: object) -> dict:
        """The task's result; a stopped task that has not reported within ``grace_s`` is given
        up on (its worker process is killed by the task, or with its Ray worker) rather than
        force-cancelled."""
        while True:
            try:
                return self.ray.get(ref, timeout=1.0)
            except self.ray.exceptions.GetTimeoutError:
                with self._lock:
                    since = self._stop_at.get(job_id)
                if since is not None and time.monotonic() - since > self.grace_s:
                    return {"status": "failed", "error": "the stopped Ray task did not report"}

    def _stop(self, job_id: str) -> bool:
        """Set ``job_id``'s stop key, if it runs; False if it does not."""
        with self._lock:
            entry = self._running.get(job_id)
            if entry is None:
                return False
            self._stop_at.setdefault(job_id, time.monotonic())
        ray_cluster.set_stop(entry[1])
        return True

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            self._cancelled.add(job_id)  # also when its task is not started yet: it never will be
        return self._stop(job_id)

    def shutdown(self, graceful: bool = False) -> None:  # noqa: ARG002 - a job restarts from scratch anyway
        """Stop every running task (through its stop key) and wait up to ``grace_s`` for them to
        end, then leave the cluster if this executor joined it (a private cluster stops, and its
        workers with it)."""
        with self._lock:
            self._stopping = True
            running = {job_id: ref for job_id, (ref, _key) in self._running.items()}
        for job_id in running:
            self._stop(job_id)
        if running:
            try:
                self.ray.wait(list(running.values()), num_returns=len(running), timeout=self.grace_s)
            except Exception:  # noqa: BLE001 - a lost cluster: nothing to wait for
                pass
        if self._owned:
            ray_cluster.disconnect()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)


def _ray_run(folder: str, stop_key: bytes | None = None) -> dict:
    """In a Ray worker: one service job, in a worker process of its own process group (scratch
    files in the job's folder; it dies with this Ray worker), polled every :data:`STOP_POLL_S`;
    once ``stop_key`` is set, the group is killed and the job is ``cancelled``."""
    import anonymize

    def stopped() -> bool:
        return stop_key is not None and ray_cluster.stop_requested(stop_key)

    job = Path(folder)
    if stopped():  # cancelled before it started: never start it
        return {"status": "cancelled", "error": "cancelled"}
    tmp = job / "tmp"
    tmp.mkdir(exist_ok=True)
    (job / worker.OUTCOME).unlink(missing_ok=True)  # a retry after a killed try: that try's result is none
    # the worker imports the same anonymize as this task, whatever this worker's working directory
    path = os.pathsep.join(p for p in (str(Path(anonymize.__file__).resolve().parents[1]),
                                       os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1", PYTHONPATH=path)
    proc = subprocess.Popen([sys.executable, "-m", "anonymize.service.worker", folder, str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True, close_fds=True)
    try:
        while True:
            try:
                proc.wait(timeout=STOP_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if stopped():
                    _kill_group(proc.pid)
                    proc.wait()
                    return {"status": "cancelled", "error": "cancelled"}
    finally:
        _kill_group(proc.pid)  # any ffmpeg child left behind (and the worker, if this task is unwinding)
    try:
        return json.loads((job / worker.OUTCOME).read_text())
    except (OSError, ValueError):
        return {"status": "failed", "error": f"the worker process ended without a result (exit {proc.returncode})"}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
