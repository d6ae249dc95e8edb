"""Batch mode: many files, a mirrored output tree, parallel workers and a resumable manifest.

``anonymize IN_DIR -o OUT_DIR`` plans one :class:`Job` per file (:func:`plan`), then
:func:`execute` processes them with an engine and returns a :class:`Summary` (the CLI,
:mod:`anonymize.cli_batch`, prints it and returns its exit code). One job per module:

- :mod:`.plan`: walking the inputs, pairing every file with its output;
- :mod:`.manifest`: the resume manifest, its lock, the clean-up of a killed run's temporary files;
- :mod:`.jobs`: one file (:func:`process_job` -> :class:`Outcome`);
- :mod:`.engines`: this process, a process pool; :mod:`.ray_engine`: Ray. Each is an
  :class:`anonymize.engine.Executor` (``submit(job) -> Outcome``), the interface the HTTP
  service's executors implement too;
- :mod:`.driver`: submits the jobs, alone writes the fsync'd manifest, writes the report.

Resume: when the output is a folder, every finished file is recorded in a manifest, by default
``.OUT_DIR_NAME.anonymize-manifest.jsonl`` beside ``OUT_DIR`` (not in it: the output folder holds
only outputs and can be published as it is, while the manifest names the inputs). It is
append-only JSON lines, fsync'd after each record, so a kill at any moment leaves a valid prefix
(a truncated last line is ignored, and cut off before the next run appends). A rerun
skips a file whose input sha256 and settings match its last ``done`` record *and* whose output
still exists with the recorded sha256; it redoes failed, changed and missing ones. Before a file
is handed to a worker the driver records that it started, so an output a killed run renamed into
place but had no time to record is known as ours (redone), while any other file already at an
output path is the user's and is refused without ``-y`` (the CLI's ``settle_existing``). Outputs are
renamed into place only when complete (:func:`~anonymize.atomic.atomic_output`), so a killed run
leaves no truncated file under a final name; its hidden ``.NAME.*.partial.EXT`` temporary files
are deleted when the next run starts (a folder batch: all of them in ``OUT_DIR``; any other run:
those of its own output names), unless a live run is writing them (:func:`remove_if_stale`).
SIGTERM, SIGHUP and SIGINT stop a run cleanly (:mod:`anonymize.signals`): workers unwind and
exit, no temporary file is left, the manifest keeps what finished and the summary is printed.
Only the process that holds the manifest's lock writes into ``OUT_DIR``'s bookkeeping; a second
concurrent run on the same folder is refused.
"""
from __future__ import annotations

from ..api import media_kind
from .driver import EXIT_BATCH_FAILED, Summary, cpu_cores, execute, ray_local_cpus, why, worker_plan
from .jobs import FATAL, Outcome, process_job
from .manifest import (_PARTIAL, MANIFEST_NAME, STARTED, Manifest, manifest_path, read_manifest, remove_if_stale,
                       remove_partials_of, remove_stale_partials, settings_hash, sha256_file)
from .plan import Job, Plan, looks_like_media, plan

__all__ = ["EXIT_BATCH_FAILED", "FATAL", "MANIFEST_NAME", "Job", "Manifest", "Outcome", "Plan", "Summary",
           "cpu_cores", "execute", "looks_like_media", "ray_local_cpus", "manifest_path", "media_kind", "plan", "process_job",
           "read_manifest", "remove_if_stale", "STARTED", "remove_partials_of", "remove_stale_partials", "settings_hash",
           "sha256_file", "why", "worker_plan", "_PARTIAL"]
