"""``--engine ray``: every file is one Ray task, on whichever node has a free CPU.

Ray reuses its worker processes for tasks of the same function, so each worker process keeps one
:class:`~anonymize.api.Anonymizer` (models loaded once per process, like the process pool's
workers), keyed by the options. Each task declares the CPUs it needs (``num_cpus``, and
``num_gpus`` when the options ask for an accelerator), and is retried by Ray on another worker
(``max_retries``) when its worker dies (SIGKILL, out of memory, a node lost). A retry first
deletes the temporary file the dead try left for the same output (its lock died with it), and
writes its output atomically like every other run: no partial output ever has a final name.

The worker returns the :class:`~anonymize.batch.jobs.Outcome`, the report's frames inside it
(the driver's disk may be on another machine); the driver alone writes the manifest, once per
file, whatever the retries. Tasks, not actors: a task runs in a worker Ray prestarted with the
cluster and keeps its models there, where an actor would need a process of its own started on
demand; a dead worker's task is retried all the same. A stopping run never calls ``ray.cancel``
(see :meth:`RayEngine.shutdown`).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from .. import ray_cluster
from ..config import Options
from .engines import spool_to_text
from .jobs import Outcome, lost, process_job
from .manifest import remove_partials_of
from .plan import Job
from ..signals import Terminated

#: Ray retries a task whose worker died this many times before the file counts as failed.
MAX_RETRIES = 3
#: A video task reads its run's stop flag at most this often (seconds).
STOP_POLL_S = 0.25


def task_resources(options: Options) -> dict[str, float]:
    """What one file's task declares: its detector threads as CPUs (1 when unset), and one GPU
    when the options ask for an accelerator (a hook for ``--device``; CPU-only today)."""
    cpus = float(max(1, options.threads))
    device = str(getattr(options, "device", "cpu") or "cpu")
    gpus = 1.0 if device not in ("cpu", "auto") else 0.0
    return {"num_cpus": cpus, "num_gpus": gpus}


class RayEngine:
    """Runs files as Ray tasks; connects on construction (InputError, exit 2, when Ray is missing
    or the cluster cannot be reached), unless the caller already called ``ray.init``."""

    def __init__(self, options: Options, settings: str, prevs: dict[str, dict], *, address: str | None = None,
                 local_cpus: int = 1):
        self.ray, self._owned = ray_cluster.connect(address, num_cpus=local_cpus)
        if options.threads == 0:  # one detector thread per declared CPU, not onnxruntime's "all cores"
            options = options.updated(threads=1)
        if options.ffmpeg_threads == 0:
            options = options.updated(ffmpeg_threads=max(1, options.threads))
        self.options, self.settings, self.prevs = options, settings, prevs
        res = task_resources(options)
        self.capacity = max(1, int(ray_cluster.cluster_cpus() // res["num_cpus"]))
        self._task = self.ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **res)(_ray_job)
        self._lock = threading.Lock()
        self._refs: dict[str, Any] = {}
        self._stopping = False
        #: the key of this run's stop flag in the cluster's key-value store (see :meth:`shutdown`)
        self._stop_key = ray_cluster.new_stop_key("run")
        self._options_ref = self.ray.put(options)  # once, not pickled into every task

    def check_paths(self, read: list[str], write: list[str]) -> None:
        """Every node must see the inputs and be able to write the outputs (InputError otherwise)."""
        ray_cluster.check_paths(read, write)

    def submit(self, job: Job) -> Outcome:
        ref = self._task.remote(self._options_ref, job, self.prevs.get(job.rel), self.settings, self._stop_key)
        with self._lock:
            self._refs[job.rel] = ref
        try:
            while True:  # in steps, so a stopping run's submit threads end (see shutdown)
                try:
                    return self.ray.get(ref, timeout=1.0)
                except self.ray.exceptions.GetTimeoutError:
                    if self._stopping:
                        return Outcome(job, "failed", error=f"{job.shown}: stopped", exit_code=143)
        except self.ray.exceptions.TaskCancelledError:
            raise
        except self.ray.exceptions.RayError as exc:  # its workers died MAX_RETRIES + 1 times
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return lost(job, self.settings, f"{job.shown}: the Ray worker was lost ({type(exc).__name__}: {first})")
        finally:
            with self._lock:
                self._refs.pop(job.rel, None)

    def models(self) -> list[dict]:
        return []  # each outcome carries its models (Outcome.models)

    def shutdown(self, graceful: bool = False, grace_s: float = 20.0) -> None:
        """Stop the running tasks, without ``ray.cancel``: a cancel that meets a task as it
        completes makes Ray's core worker in this process abort (Ray 2.60, task_manager.cc
        "Tried to complete task that was not pending"; ray-project/ray#54846), which would end a
        SIGTERM'd run with SIGABRT and no summary. Instead the run's stop flag goes into the
        cluster's key-value store; each video task reads it between frames and unwinds
        (:class:`~anonymize.signals.Terminated` in the worker: its ffmpeg killed, its temporary
        file deleted), a photo simply ends. ``graceful``: wait up to ``grace_s`` for that. Whatever
        still runs then is killed with the workers when the driver leaves the cluster
        (:meth:`close`: a private cluster stops; on a shared one Ray kills a finished job's
        workers); the driver then deletes what they left (:func:`~anonymize.batch.driver._stop`).
        Outcomes that arrive now are not recorded (the driver has stopped reading them)."""
        with self._lock:
            refs = list(self._refs.values())
        self._stopping = True
        if not ray_cluster.set_stop(self._stop_key):  # a cluster gone already: its workers are gone too
            return
        if graceful and refs:
            try:
                self.ray.wait(refs, num_returns=len(refs), timeout=grace_s)
            except Exception:  # noqa: BLE001 - a lost cluster: nothing to wait for
                pass

    def close(self) -> None:
        """Leave the cluster, if this engine connected (a caller's ``ray.init`` stays theirs)."""
        if self._owned:
            ray_cluster.disconnect()


# --------------------------------------------------------------------------------------------
# inside a Ray worker process

_runners: dict[Options, Any] = {}


def _stop_check(stop_key: bytes):
    """A per-frame callback that raises :class:`~anonymize.signals.Terminated` (SIGTERM) once the
    driver has set the run's stop flag (read at most every :data:`STOP_POLL_S`)."""
    import signal

    last = [time.monotonic()]

    def on_frame(_n: int = 1) -> None:
        now = time.monotonic()
        if now - last[0] < STOP_POLL_S:
            return
        last[0] = now
        if ray_cluster.stop_requested(stop_key):
            raise Terminated(signal.SIGTERM)

    return on_frame


def _ray_job(options: Options, job: Job, prev: dict | None, settings: str, stop_key: bytes | None = None) -> Outcome:
    """One file, in a Ray worker: the models of this process (loaded once), then :func:`process_job`
    (a video stops between frames once the driver set ``stop_key``)."""
    from ..api import Anonymizer

    def runner() -> Anonymizer:
        if options not in _runners:
            _runners.clear()  # another run's options: one set of models per process
            _runners[options] = Anonymizer(options)
        return _runners[options]

    # a retry after a killed try: that try's temporary file is unlocked now (its process is gone)
    remove_partials_of([job.dst])
    try:
        out = process_job(runner, job, prev, settings, on_frame=_stop_check(stop_key) if stop_key else None)
    except Terminated:  # the run is stopping: the file unwound (no output, no temporary file)
        return Outcome(job, "failed", error=f"{job.shown}: stopped", exit_code=143)
    out.frames_text = spool_to_text(out)
    if options in _runners:
        out.models = _runners[options].engine.models()
    return out
