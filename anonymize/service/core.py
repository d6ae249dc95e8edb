"""The service without HTTP: the job table, the scheduler threads, retention and callbacks.

Retention fails closed: a job's upload is deleted the moment the job ends (success, failure,
cancel) and at startup for every job that cannot run again; outputs and reports are deleted
``keep_results`` hours after the job ended, and at once on DELETE. Logs name job ids only.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .auth import Keys
from .executor import Executor, JobSpec, Outcome, ProcessExecutor
from .store import Job, JobStore
from . import worker

log = logging.getLogger("anonymize.service")


@dataclass
class Settings:
    """``anonymize serve``'s settings."""

    data: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 2048
    max_duration: float = 0  # seconds of video accepted (0: no limit)
    workers: int = 1
    keep_results: float = 24.0  # hours
    allow_private_callbacks: bool = False


def options_from_json(values: dict) -> dict:
    """Check a job's ``options`` object as the CLI and the API do; returns it in canonical
    form (field names), ValueError for unknown names or values the options table refuses."""
    from anonymize.config import Options

    if not isinstance(values, dict):
        raise ValueError("options must be a JSON object")
    opts = Options.from_mapping(values)
    given = {str(k).lstrip("-").replace("-", "_") for k in values}
    return {k: v for k, v in opts.as_dict().items() if k in given}


class Service:
    """Owns the job table, the executor and the threads that run jobs."""

    def __init__(self, settings: Settings, keys: Keys, executor: Executor | None = None):
        from .webhook import Deliverer

        self.settings = settings
        self.keys = keys
        self.jobs_dir = settings.data / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(settings.data / "jobs.sqlite3")
        self.executor = executor or ProcessExecutor()
        self.deliverer = Deliverer(settings.allow_private_callbacks)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Settle what a crash left, then start the workers and the retention sweeper."""
        self.recover()
        for n in range(self.settings.workers):
            t = threading.Thread(target=self._work, name=f"job-runner-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._sweep, name="retention", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop the workers; jobs that were running go back to the queue for the next start."""
        self._stop.set()
        self.executor.shutdown()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        self.deliverer.stop()
        self.store.close()

    def recover(self) -> None:
        requeued, failed = self.store.recover()
        for job_id in requeued:
            self._reset_folder(job_id)
            log.info("job %s: interrupted by a restart; queued again from the start", job_id)
        for job_id in failed:
            self._end_files(job_id)
            log.info("job %s: interrupted too often; failed", job_id)
        for job in self.store.with_status("queued"):
            if not list(self.folder(job.id).glob("upload.*")):
                self.store.fail(job.id, "the upload was lost before the job ran")
        known = {j.id for j in self.store.with_status("queued", "running", "succeeded", "failed", "cancelled")}
        for folder in self.jobs_dir.iterdir():  # a submit cut short by the crash: no job owns it
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        for job in self.store.with_status("succeeded", "failed", "cancelled"):
            self._end_files(job.id)  # an upload still there after the end (crash between two steps)
        self.sweep_once()

    # ---------------------------------------------------------------- jobs

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def enqueue(self, job: Job) -> Job:
        stored = self.store.add(job)
        if stored.id == job.id:
            log.info("job %s: queued", job.id)
            with self._wake:
                self._wake.notify()
        return stored

    def progress(self, job: Job) -> float:
        if job.status == "succeeded":
            return 1.0
        if job.status != "running":
            return 0.0
        try:
            return max(0.0, min(1.0, float((self.folder(job.id) / worker.PROGRESS).read_text())))
        except (OSError, ValueError):
            return 0.0

    def delete(self, job: Job) -> None:
        """Cancel the job if it runs, and remove its files and its row."""
        self.store.delete(job.id)  # first: a runner that finishes now finds no row to update
        if job.status == "running":
            self.executor.cancel(job.id)
        shutil.rmtree(self.folder(job.id), ignore_errors=True)
        log.info("job %s: deleted", job.id)

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        log.info("job %s: running (start %d)", job.id, job.attempts)
        folder = self.folder(job.id)
        try:
            outcome = self.executor.submit(JobSpec(job.id, folder))
        except Exception as exc:  # the executor itself failed: the job fails, never stays running
            outcome = Outcome("failed", f"could not run the job ({type(exc).__name__})")
        if outcome.status == "interrupted":
            self.store.requeue(job.id)
            log.info("job %s: interrupted by the server stopping; queued again", job.id)
            return
        if outcome.status == "cancelled" or self.store.get(job.id) is None:
            shutil.rmtree(folder, ignore_errors=True)  # DELETE removed the row meanwhile
            self._callback(job, "cancelled", None)
            log.info("job %s: cancelled", job.id)
            return
        self._end_files(job.id)
        ended = self.store.finish(job.id, outcome.status, outcome.error, outcome.bytes_out)
        log.info("job %s: %s", job.id, outcome.status)
        if ended is not None:
            self._callback(ended, ended.status, ended.error)

    def _end_files(self, job_id: str) -> None:
        """At a job's end: the upload and scratch files go (the output and report stay)."""
        folder = self.folder(job_id)
        for p in folder.glob("upload*"):
            p.unlink(missing_ok=True)
        shutil.rmtree(folder / "tmp", ignore_errors=True)
        for p in folder.glob(".*"):  # temporary files of a cut-short write
            if p.is_file():
                p.unlink(missing_ok=True)

    def _reset_folder(self, job_id: str) -> None:
        """Before a job runs again from the start: only its spec and upload stay."""
        folder = self.folder(job_id)
        if not folder.is_dir():
            return
        for p in folder.iterdir():
            if p.name == worker.SPEC or p.name.startswith("upload."):
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # ---------------------------------------------------------------- callbacks and retention

    def public(self, job: Job, status: str | None = None, error: str | None = None) -> dict:
        """The job as the API shows it."""
        status = status or job.status
        out = {"id": job.id, "status": status, "kind": job.kind,
               "progress": 1.0 if status == "succeeded" else self.progress(job),
               "error": error if error is not None else job.error, "created": _iso(job.created),
               "started": _iso(job.started), "finished": _iso(job.finished),
               "options": job.options, "bytes_in": job.bytes_in, "bytes_out": job.bytes_out,
               "expired": job.expired, "attempts": job.attempts}
        if status == "succeeded" and not job.expired:
            out["output"] = f"/v1/jobs/{job.id}/output"
            out["report"] = f"/v1/jobs/{job.id}/report"
        return out

    def _callback(self, job: Job, status: str, error: str | None) -> None:
        if not job.callback_url:
            return
        body = json.dumps(self.public(job, status, error), sort_keys=True).encode()
        self.deliverer.send(job.id, job.callback_url, body, self.keys.secret(job.owner))

    def sweep_once(self) -> int:
        """Delete the outputs and reports of jobs that ended more than keep_results hours ago."""
        cutoff = time.time() - self.settings.keep_results * 3600
        n = 0
        for job in self.store.ended_before(cutoff):
            shutil.rmtree(self.folder(job.id), ignore_errors=True)
            self.store.mark_expired(job.id)
            log.info("job %s: results expired and deleted", job.id)
            n += 1
        return n

    def _sweep(self) -> None:
        every = max(0.5, min(60.0, self.settings.keep_results * 3600 / 4))
        while not self._stop.wait(every):
            try:
                self.sweep_once()
            except Exception as exc:
                log.warning("retention sweep failed (%s)", type(exc).__name__)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
