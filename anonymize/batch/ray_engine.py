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
file, whatever the retries.
"""
from __future__ import annotations

import threading
from typing import Any

from .. import ray_cluster
from ..config import Options
from .engines import spool_to_text
from .jobs import Outcome, lost, process_job
from .manifest import remove_partials_of
from .plan import Job

#: Ray retries a task whose worker died this many times before the file counts as failed.
MAX_RETRIES = 3


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

    def check_paths(self, read: list[str], write: list[str]) -> None:
        """Every node must see the inputs and be able to write the outputs (InputError otherwise)."""
        ray_cluster.check_paths(read, write)

    def submit(self, job: Job) -> Outcome:
        ref = self._task.remote(self.options, job, self.prevs.get(job.rel), self.settings)
        with self._lock:
            self._refs[job.rel] = ref
        try:
            return self.ray.get(ref)
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

    def shutdown(self, graceful: bool = False) -> None:
        """Cancel the running tasks. ``graceful``: a KeyboardInterrupt in each first, so it unwinds
        (kills its ffmpeg, deletes its temporary file); then the workers are killed."""
        with self._lock:
            refs = list(self._refs.values())
        if graceful:
            for ref in refs:
                self.ray.cancel(ref, force=False)
            try:
                self.ray.wait(refs, num_returns=len(refs), timeout=20)
            except Exception:  # noqa: BLE001 - cancelled tasks raise on wait in some versions
                pass
        for ref in refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass

    def close(self) -> None:
        """Leave the cluster, if this engine connected (a caller's ``ray.init`` stays theirs)."""
        if self._owned:
            ray_cluster.disconnect()


# --------------------------------------------------------------------------------------------
# inside a Ray worker process

_runners: dict[Options, Any] = {}


def _ray_job(options: Options, job: Job, prev: dict | None, settings: str) -> Outcome:
    """One file, in a Ray worker: the models of this process (loaded once), then :func:`process_job`."""
    from ..api import Anonymizer

    def runner() -> Anonymizer:
        if options not in _runners:
            _runners.clear()  # another run's options: one set of models per process
            _runners[options] = Anonymizer(options)
        return _runners[options]

    # a retry after a killed try: that try's temporary file is unlocked now (its process is gone)
    remove_partials_of([job.dst])
    out = process_job(runner, job, prev, settings)
    out.frames_text = spool_to_text(out)
    if options in _runners:
        out.models = _runners[options].engine.models()
    return out
