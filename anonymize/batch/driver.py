"""The driver of a batch: the one process that owns the manifest.

:func:`execute` cleans what a killed run left, picks an engine (:mod:`anonymize.batch.engines`,
:mod:`anonymize.batch.ray_engine`), submits the jobs to it (from at most ``engine.capacity``
threads: every engine is the same ``submit(job) -> Outcome``), records each outcome in the
fsync'd manifest as it arrives (here, and only here, whatever engine ran the file), writes the
report, and returns a :class:`Summary` with the exit code. It never prints: the CLI
(:mod:`anonymize.cli_batch`) prints the summary.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from ..api import Anonymizer, __version__
from ..config import Options
from ..cores import cpu_cores, ray_local_cpus
from ..errors import AnonymizeError, EncodeError
from ..report import FileReport, write_report
from ..signals import Terminated
from .jobs import Outcome
from .manifest import Manifest, remove_partials_of, remove_stale_partials, settings_hash
from .plan import Job, Plan

log = logging.getLogger("anonymize")

#: Exit code when some files of a folder batch failed (single files keep their own codes).
EXIT_BATCH_FAILED = 8


def worker_plan(jobs: int, options: Options, files: int) -> tuple[int, Options]:
    """(worker processes, their options): at most one worker per core and per file, and the
    cores split between them (detector threads = cores // workers unless set explicitly)."""
    cores = cpu_cores()
    n = cores if jobs <= 0 else jobs
    n = max(1, min(n, cores, max(files, 1)))
    if n > 1 and options.threads == 0:
        options = options.updated(threads=max(1, cores // n))
    if n > 1 and options.ffmpeg_threads == 0:
        options = options.updated(ffmpeg_threads=max(1, cores // n))
    return n, options


@dataclass
class Summary:
    """How a batch went, filled as files finish (an interrupted run still reports them)."""

    done: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    fatal: Outcome | None = None
    seconds: float = 0.0
    #: worker processes' per-file report frames, removed after the report is written
    frames_dir: str | None = None
    #: the exit code of the run (the CLI returns it)
    code: int = 0
    #: stopped by a signal: its name ("SIGTERM"), or "interrupted" (Ctrl-C)
    stopped: str | None = None
    #: an error that ended the run or the report, in one line (the CLI prints it)
    error: str | None = None
    #: a worker process died: finished files are recorded, the rest must be resumed
    broken: bool = False
    #: the engine that ran the files ("here", "processes" or "ray")
    engine: str = "here"
    workers: int = 1


def execute(the_plan: Plan, options: Options, *, jobs: int = 1, report: Path | None = None, quiet: bool = True,
            runner: Anonymizer | None = None, engine: str = "local", ray_address: str | None = None) -> Summary:
    """Process a plan with ``engine`` ("local": this process or ``jobs`` worker processes; "ray":
    one Ray task per file, on the cluster at ``ray_address`` or a private local one with ``jobs``
    CPUs). Returns the :class:`Summary`; raises :class:`~anonymize.errors.AnonymizeError` for a
    setup error before any file (a locked manifest, Ray missing, a node that cannot see the files).
    """
    start = time.perf_counter()
    started = time.time()  # temporary files modified since belong to a live run
    settings = settings_hash(options)
    todo = the_plan.jobs
    manifest = None
    summary = Summary()
    eng = None
    models: list[dict] = []
    try:
        if the_plan.manifest is not None:
            manifest = Manifest(the_plan.manifest)
            stale = remove_stale_partials(the_plan.out_dir, skip=the_plan.roots, before=started)
        else:
            stale = remove_partials_of((j.dst for j in todo), before=started)
        if stale:
            log.warning("removed %d unfinished temporary file(s) of an interrupted run", stale)
        prevs = manifest.last if manifest else {}
        eng = _engine(the_plan, options, settings, prevs, summary, engine=engine, jobs=jobs, report=report,
                      quiet=quiet, runner=runner, ray_address=ray_address)
        _drive(eng, todo, summary, manifest, quiet)
        if summary.engine == "ray":  # a try whose worker was killed after its retry finished elsewhere
            remove_partials_of(j.dst for j in todo)
        if summary.fatal is not None:
            eng.shutdown()
        else:
            models = eng.models() if report is not None else []
            models = models or next((o.models for o in summary.done + summary.failed if o.models), [])
        _close(eng)
    except (KeyboardInterrupt, Terminated) as exc:
        summary.stopped = exc.name if isinstance(exc, Terminated) else "interrupted"
        summary.code = exc.exit_code if isinstance(exc, Terminated) else 130
        _stop(eng, todo, graceful=True)
        return _finish(summary, start)
    except BrokenProcessPool:
        summary.broken, summary.code = True, 1
        summary.error = "a worker process died (out of memory?)"
        _stop(eng, todo)
        return _finish(summary, start)
    except BaseException:  # a setup error (AnonymizeError: exit 2 and the like), or a bug
        _stop(eng, todo)
        _finish(summary, start)
        raise
    finally:
        if manifest is not None:
            manifest.close()
    summary.seconds = time.perf_counter() - start
    order = {job: i for i, job in enumerate(the_plan.jobs)}  # report and "first failure" in input order
    if summary.fatal is not None:
        summary.code = summary.fatal.exit_code
    elif summary.failed:
        first = min(summary.failed, key=lambda o: order[o.job])
        summary.code = EXIT_BATCH_FAILED if the_plan.folder_mode else first.exit_code
    try:
        if report is not None and summary.fatal is None:
            _write_report(Path(report), summary, order, options, models)
    except (OSError, EncodeError) as exc:
        summary.error = f"could not write the report: {exc}"
        summary.code = summary.code or EncodeError.exit_code
    return _finish(summary, start, seconds=summary.seconds)


def _engine(the_plan: Plan, options: Options, settings: str, prevs: dict, summary: Summary, *, engine: str,
            jobs: int, report: Path | None, quiet: bool, runner: Anonymizer | None, ray_address: str | None):
    """The engine for this run (``summary`` learns which, and its frames folder)."""
    from .engines import LocalEngine, PoolEngine

    todo = the_plan.jobs
    if engine == "ray":
        from .ray_engine import RayEngine

        eng = RayEngine(options, settings, prevs, address=ray_address,
                        local_cpus=ray_local_cpus(jobs))
        summary.engine, summary.workers = "ray", eng.capacity
        try:
            eng.check_paths(*_paths_to_check(the_plan))
        except BaseException:
            eng.close()
            raise
        return eng
    if engine != "local":
        raise AnonymizeError(f"unknown engine {engine!r}")
    workers, options = worker_plan(jobs, options, sum(j.action == "anonymize" for j in todo))
    if workers <= 1 or len(todo) < 2:
        return LocalEngine(options, settings, prevs, runner=runner, quiet=quiet, show_bar=len(todo) >= 2)
    frames_dir = summary.frames_dir = tempfile.mkdtemp(prefix="anonymize-frames-") if report is not None else None
    summary.engine, summary.workers = "processes", workers
    return PoolEngine(options, settings, prevs, workers, frames_dir)


def _paths_to_check(the_plan: Plan, at_most: int = 64) -> tuple[list[str], list[str]]:
    """(what every node must read, where it must write): the input folders (or the folders of the
    input files), and the output folders."""
    read = {str(r) for r in the_plan.roots}
    read |= {str(j.src.parent) for j in the_plan.jobs if not any(j.src.is_relative_to(r) for r in the_plan.roots)}
    write = {str(the_plan.out_dir)} if the_plan.out_dir is not None else set()
    if the_plan.out_dir is None:
        write |= {str(j.dst.parent) for j in the_plan.jobs}
    return sorted(read)[:at_most], sorted(write)[:at_most]


def _drive(eng, todo: list[Job], summary: Summary, manifest: Manifest | None, quiet: bool) -> None:
    """Submit every job to ``eng`` and record each outcome as it arrives, until done or fatal."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    n = max(1, min(int(getattr(eng, "capacity", 1)), len(todo)))
    with logging_redirect_tqdm():
        desc = "files" if summary.engine == "here" else f"files ({summary.workers} {summary.engine} workers)"
        bar = tqdm(total=len(todo), unit="file", disable=quiet or len(todo) < 2, desc=desc)
        try:
            if n == 1:
                for job in todo:
                    if not _start(summary, manifest, job):
                        break
                    _record(summary, manifest, eng.submit(job))
                    bar.update(1)
                    if summary.fatal:
                        break
                return
            # biggest first, so one long video does not run alone at the end; at most n at once
            it = iter(sorted(todo, key=lambda j: (-j.size, j.rel)))
            threads = ThreadPoolExecutor(n, thread_name_prefix="anonymize-submit")
            pending: set = set()
            try:
                while True:
                    while len(pending) < n and not summary.fatal and (job := next(it, None)) is not None:
                        if _start(summary, manifest, job):
                            pending.add(threads.submit(eng.submit, job))
                    if not pending:
                        break
                    # a timeout, so a signal reaches this (main) thread promptly
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        out = fut.result()
                        _record(summary, manifest, out)
                        bar.update(1)
                        if out.status == "failed":
                            bar.set_postfix(failed=len(summary.failed))
                    if summary.fatal:
                        break
            finally:
                threads.shutdown(wait=False, cancel_futures=True)
        finally:
            bar.close()


def _start(summary: Summary, manifest: Manifest | None, job: Job) -> bool:
    """Record that ``job`` starts (:meth:`Manifest.start`) before any worker sees it; False (and
    the run stops like a fatal error) when the manifest cannot be written."""
    if manifest is None:
        return True
    try:
        manifest.start(job.rel)
    except EncodeError as exc:
        summary.fatal = summary.fatal or Outcome(job, "fatal", error=str(exc), exit_code=exc.exit_code)
        return False
    return True


def _record(summary: Summary, manifest: Manifest | None, out: Outcome) -> None:
    """One outcome into the summary and (done or failed) the manifest, fsync'd: here alone."""
    if out.status == "fatal":
        summary.fatal = summary.fatal or out
        return
    if out.frames_text is not None and out.report is not None:  # frames carried back by a Ray worker
        spool = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+")  # noqa: SIM115 - read by the report
        spool.write(out.frames_text)
        out.report._spool, out.frames_text = spool, None
    stop = out.error if out.stop else None
    if out.record is not None and manifest is not None:
        try:
            manifest.append(out.record)
        except EncodeError as exc:  # nothing more can be recorded: stop like a fatal error
            stop = stop or str(exc)
    {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed}[out.status].append(out)
    if out.status == "failed":
        log.error("%s: %s", out.job.shown, why(out))
    if stop and summary.fatal is None:
        summary.fatal = Outcome(out.job, "fatal", error=stop, exit_code=EncodeError.exit_code)


def why(o: Outcome) -> str:
    """A failed file's error without the file's name in front."""
    err = o.error or ""
    return err[len(o.job.shown) + 2:] if err.startswith(o.job.shown + ": ") else err


def _close(eng) -> None:
    close = getattr(eng, "close", None)
    if close is not None:
        close()


def _stop(eng, todo: list[Job], graceful: bool = False) -> None:
    """After a signal or an error: stop the engine's workers, then delete what a worker that had
    to be killed left (no lock is held for it any more; a live run of another process keeps its own)."""
    if eng is None:
        return
    try:
        eng.shutdown(graceful=graceful)
    finally:
        try:
            _close(eng)  # Ray: leaving the cluster is what kills a task that did not stop in time
        finally:
            remove_partials_of(j.dst for j in todo)


def _finish(summary: Summary, start: float, seconds: float | None = None) -> Summary:
    summary.seconds = seconds if seconds is not None else time.perf_counter() - start
    if summary.frames_dir:
        shutil.rmtree(summary.frames_dir, ignore_errors=True)
        summary.frames_dir = None
    return summary


def _write_report(path: Path, summary: Summary, order: dict, options: Options, models: list[dict]) -> None:
    """The JSON report, files in input order; already-done files have status "skipped"."""
    files = []
    for o in sorted(summary.done + summary.skipped + summary.failed, key=lambda o: order[o.job]):
        if o.status == "skipped":
            files.append(FileReport(o.job.shown, o.job.shown_dst, o.job.kind, status="skipped",
                                    region_count=o.regions))
        else:
            if o.frames_path and o.report is not None and o.report._spool is None:  # a pool worker's frames
                o.report._spool = open(o.frames_path, "r+")  # noqa: SIM115 - closed below
            files.append(o.report)
    try:
        write_report(path, files, options.as_dict(), models or [], __version__)
    finally:
        for f in files:
            if f._spool is not None:
                f._spool.close()
