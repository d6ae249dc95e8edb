"""One file: :func:`process_job` skips, anonymizes or copies it and says how it went
(:class:`Outcome`, picklable: it crosses process and Ray boundaries). Never writes the manifest.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..api import Anonymizer
from ..atomic import atomic_output
from ..errors import AnonymizeError, DiskFull, EncodeError, FFmpegNotFound, InputError, ModelError, is_disk_full
from ..paths import require_regular_input, shown
from ..report import FileReport
from .manifest import sha256_file
from .plan import Job

#: Errors that no file can get past: the batch stops and returns their exit code.
FATAL = (ModelError, FFmpegNotFound)


@dataclass
class Outcome:
    """What happened to one job; crosses process and Ray boundaries (picklable)."""

    job: Job
    status: str  #: "done", "skipped", "failed" or "fatal" (a setup error no file can get past)
    record: dict | None = None  #: the manifest record ("done"/"failed")
    report: FileReport | None = None  #: without its frame spool when it crossed processes
    frames_path: str | None = None  #: the report's frames (JSON lines) when they crossed processes
    #: the report's frames (JSON lines) carried in the outcome (Ray: the driver's disk may be far away)
    frames_text: str | None = None
    error: str | None = None
    exit_code: int = 0
    regions: int = 0
    models: list[dict] | None = None
    #: the batch must stop after this file (a full disk: every later file would fail too)
    stop: bool = False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _copy(src: Path, dst: Path) -> str:
    """Copy verbatim (write-then-rename); return the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with atomic_output(dst) as tmp, open(src, "rb") as fi, open(tmp, "wb") as fo:
            while block := fi.read(1 << 20):
                h.update(block)
                fo.write(block)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(f"{dst}: no space left on the disk for the copy") from exc
        raise EncodeError(f"{dst}: could not write the copy ({exc.strerror or exc})") from exc
    return h.hexdigest()


def process_job(runner: Anonymizer | Callable[[], Anonymizer] | None, job: Job, prev: dict | None, settings: str,
                on_frame: Callable[[int], None] | None = None) -> Outcome:
    """Skip (already done), anonymize or copy one file. Never raises for a file's own failure.

    ``runner`` may be a callable that builds the Anonymizer when first needed (so a rerun that
    skips everything loads no model).
    """
    start = time.perf_counter()
    record = {"input": job.rel, "size": None, "mtime": None, "sha256": None, "settings": settings,
              "action": job.action, "kind": job.kind, "status": "failed", "error": None, "exit_code": 0,
              "output": job.rel, "output_sha256": None, "regions": 0, "seconds": 0.0, "time": None}
    report = None
    stop = False
    try:
        try:
            require_regular_input(job.src)  # never hash a FIFO or a device: it would block or never end
            st = os.stat(job.src)
            record.update(size=st.st_size, mtime=round(st.st_mtime, 6), sha256=sha256_file(job.src))
        except OSError as exc:
            raise InputError(f"{job.shown}: cannot read it ({exc.strerror or exc})") from exc
        if (prev and prev.get("status") == "done" and prev.get("sha256") == record["sha256"]
                and prev.get("settings") == settings and prev.get("output_sha256") and job.dst.is_file()
                and sha256_file(job.dst) == prev["output_sha256"]):
            return Outcome(job, "skipped", regions=int(prev.get("regions") or 0))
        if job.action == "copy":
            record["output_sha256"] = _copy(job.src, job.dst)
        else:
            if callable(runner) and not isinstance(runner, Anonymizer):
                runner = runner()
            if runner is None:
                raise AnonymizeError("no anonymizer")
            report = runner.file(job.src, job.dst, on_frame=on_frame)
            record["output_sha256"] = sha256_file(job.dst)
            record["regions"] = report.region_count
        record["status"] = "done"
    except FATAL as exc:
        return Outcome(job, "fatal", error=str(exc), exit_code=exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop the batch
        code = getattr(exc, "exit_code", EncodeError.exit_code if is_disk_full(exc) else 1)
        msg = str(exc) if isinstance(exc, AnonymizeError) else f"{type(exc).__name__}: {exc}"
        # we work on absolute paths; say what the user wrote
        msg = msg.replace(str(job.src), job.shown).replace(shown(job.src), shown(job.shown))
        record.update(error=msg, exit_code=code)
        # an output left from an earlier version of this input is stale now: it must not look current
        if prev and prev.get("output_sha256") and job.dst.is_file():
            with contextlib.suppress(OSError):
                if sha256_file(job.dst) == prev["output_sha256"]:
                    job.dst.unlink()
        report = FileReport(job.shown, job.shown_dst, job.kind, status="failed", error=msg)
        stop = is_disk_full(exc)
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["time"] = _now()
    if report is None:  # a copied file
        report = FileReport(job.shown, job.shown_dst, job.kind, status="copied")
    report.input, report.output = job.shown, job.shown_dst
    report.seconds = record["seconds"]
    return Outcome(job, record["status"], record, report, error=record["error"], exit_code=record["exit_code"],
                   regions=record["regions"], stop=stop)



def lost(job: Job, settings: str, error: str, exit_code: int = 1) -> Outcome:
    """The outcome of a file whose worker was lost for good (an engine's error, not the file's):
    failed, recorded as such, redone by the next run."""
    record = {"input": job.rel, "size": None, "mtime": None, "sha256": None, "settings": settings,
              "action": job.action, "kind": job.kind, "status": "failed", "error": error, "exit_code": exit_code,
              "output": job.rel, "output_sha256": None, "regions": 0, "seconds": 0.0, "time": _now()}
    report = FileReport(job.shown, job.shown_dst, job.kind, status="failed", error=error)
    return Outcome(job, "failed", record, report, error=error, exit_code=exit_code)
