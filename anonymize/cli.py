"""Command line: parse, check, call the batch runner, map errors to exit codes. No logic of its own.

The flags of the anonymizing options are built from :data:`anonymize.config.TABLE` (flag, type,
default, choices, help text and help group), and :class:`~anonymize.config.Options` checks every
value right after parsing, so a bad value fails at once with exit code 2, before any model loads.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Only light modules at import: ``--help`` and ``--engine ray`` (whose cluster starts right after
# parsing, :func:`_main`) need nothing heavy first; the batch, numpy and OpenCV load when used.
from . import __version__
from .config import (GROUP_AUDIO, GROUP_IO, GROUP_PERF, GROUPS, RUN_OPTIONS, RUN_TABLE, TABLE, Option, OptionError,
                     OPTIONS, Options)
from .errors import AnonymizeError, InputError
from .paths import check_writes
from .signals import Terminated, handle_signals

if TYPE_CHECKING:
    from . import batch

log = logging.getLogger("anonymize")

DESCRIPTION = """\
Irreversibly mask every face in videos and photos and strip metadata (offline).

commands:
  anonymize INPUT... [-o OUTPUT] [options]      anonymize photos, videos and folders
  anonymize audit OUTPUT... [--against INPUT]   re-check anonymized outputs with another detector
                                                (see: anonymize audit --help)
  anonymize detect INPUT --report PLAN.json     write the plan (what would be masked), no media
  anonymize render INPUT --plan PLAN.json -o OUTPUT   mask from a (reviewed) plan, no detector
  anonymize serve --data DIR [--keys FILE]      the HTTP service
  anonymize app [--port N] [--no-browser]       the review page in the browser (local only)
"""

EPILOG = """\
folders: 'anonymize IN_DIR -o OUT_DIR' mirrors the tree of IN_DIR into OUT_DIR (recursive; hidden
files and folders, *.anonymized.* files and our own temporary files are ignored). Files that are
not photos/videos are left out unless --copy-other. Finished files are recorded in a manifest,
.OUT_DIR_NAME.anonymize-manifest.jsonl beside OUT_DIR (not in it, so OUT_DIR holds only outputs;
the manifest names the inputs and holds their sizes, dates and hashes); running the same command
again skips files already done (same input, same settings, output unchanged) and redoes failed,
changed or missing ones, so an interrupted run (even kill -9) is resumed by running it again.

existing outputs: an output file that already exists is refused (exit 2) unless -y (replace it)
or -n (skip its input, with a note). Outputs that an output folder's manifest recorded as done
are the manifest's to decide: skipped when unchanged, redone otherwise; so are those a killed run
wrote after recording that it started them (running the same command again resumes). Any other
existing output in that folder is refused like any other.

exit codes: 0 every file done (or already done); for one file, or a list of files, the code of
the (first) failure: 2 bad input or option (missing, unsupported, corrupt, would overwrite the
input or an existing output), 3 decode, 4 detect, 5 encode (incl. disk full), 6 model missing or
sha256 mismatch, 7 no ffmpeg, 1 other; 8 some files of a folder batch failed (the others are
written; see the summary, the manifest and --report). 5 (disk full), 6 and 7 stop a batch.
129 SIGHUP, 130 SIGINT (Ctrl-C), 143 SIGTERM: stopped cleanly, nothing unfinished left.

report statuses: ok (anonymized), copied (--copy-other), skipped (already done), failed.
"""

#: Notes under a help group's title.
GROUP_NOTES = {
    GROUP_AUDIO: "metadata (EXIF, GPS, dates, device, titles, chapters, subtitles) is always removed",
}
#: Flags of the CLI alone (not anonymizing options): checked like the table's rows.
JOBS = Option("jobs", int, 1, "files processed in parallel, each worker with its own model (0 = one per CPU "
              "core; at most one per core, the cores are split between the workers)", GROUP_PERF,
              min=0, max=256, metavar="N")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _help(row: Option) -> str:
    text = row.help
    if row.choices and row.type is str and len(",".join(row.choices)) > 30 and not all(
            c in text for c in row.choices):
        text += f"; one of {', '.join(row.choices)}"  # too long for the usage line: listed here
    if row.default is None or row.type is bool:
        return text
    shown = ",".join(row.default) if row.type is tuple else row.default
    return f"{text} (default: {shown})"


def add_option(group, row: Option) -> None:
    """Add the flag of one table row to ``group``: type, default, choices and help from the row."""
    if row.type is bool:
        group.add_argument(row.flag, dest=row.name, action="store_true", default=row.default, help=_help(row))
        return
    default = ",".join(row.default) if row.type is tuple else row.default
    kind = {float: float, int: int}.get(row.type, str)
    metavar = row.metavar or kind.__name__.upper()
    if row.choices and row.type is str:
        metavar = None if len(",".join(row.choices)) <= 30 else "NAME"  # None: argparse shows {a,b,c}
    choices = row.choices if row.type is str and row.choices else None  # (a tuple row's value is a list)
    group.add_argument(row.flag, dest=row.name, type=kind, default=default, choices=choices,
                       metavar=metavar, help=_help(row))


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (the usage takes 16: --help shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="anonymize", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {g: p.add_argument_group(g, GROUP_NOTES.get(g)) for g in GROUPS}
    io = groups[GROUP_IO]
    io.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                    help="video/photo files or folders (searched recursively)")
    io.add_argument("-o", "--output", metavar="OUTPUT",  # a str: pathlib would drop a trailing "/"
                    help="output file (one input) or folder (several inputs, a folder, an existing folder or a "
                         "name ending in /: created if missing); default: NAME.anonymized.EXT beside each input")
    existing = io.add_mutually_exclusive_group()
    existing.add_argument("-y", "--overwrite", action="store_true", help="replace output files that exist")
    existing.add_argument("-n", "--no-overwrite", action="store_true",
                          help="skip inputs whose output file exists (a note lists them)")
    io.add_argument("--dry-run", action="store_true",
                    help="print what would be done (input -> output, action) and exit; loads and writes nothing")
    io.add_argument("--report", type=Path, help="write a JSON report of every masked region here")
    io.add_argument("--copy-other", action="store_true",
                    help="with -o OUT_DIR: copy files that are not photos/videos verbatim, so they KEEP THEIR "
                         "METADATA (documents, notes...). Photo/video/audio formats we cannot anonymize (RAW, "
                         "TIFF, GIF, 3GP, MTS, audio...) are never copied")
    io.add_argument("--manifest", type=Path,
                    help="with -o OUT_DIR: where to record finished files for resuming "
                         "(default: .OUT_DIR_NAME.anonymize-manifest.jsonl beside OUT_DIR)")
    for row in TABLE:
        if row.cli:
            add_option(groups[row.group], row)
    groups[GROUP_PERF].add_argument("-j", "--jobs", type=int, default=JOBS.default, metavar=JOBS.metavar,
                                    help=_help(JOBS))
    for row in RUN_TABLE:  # --engine, --ray-address
        add_option(groups[row.group], row)
    msg = p.add_argument_group("messages")
    msg.add_argument("-v", "--verbose", action="count", default=0, help="say more (-vv: debug messages)")
    msg.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default: warning; -v info, -vv debug)")
    bars = msg.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true",
                      help="show progress bars even when stderr is not a terminal (default: only on a terminal)")
    bars.add_argument("-q", "--quiet", action="store_true", help="no progress bars (the summary is still printed)")
    msg.add_argument("--version", action="version", version=f"anonymize {__version__}")
    return p


def plan(inputs: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """Pair each input photo/video with its output path (see :func:`anonymize.batch.plan`)."""
    from . import batch

    return [(j.src, j.dst) for j in batch.plan(inputs, output).jobs]


# --------------------------------------------------------------------------------------------
# checks


def options_from_args(args: argparse.Namespace) -> Options:
    """The :class:`Options` of the parsed flags; a refused value raises InputError naming its flag."""
    try:
        JOBS.check(args.jobs)
        for row in RUN_TABLE:
            row.check(getattr(args, row.name))
        return Options(**{row.name: getattr(args, row.name) for row in TABLE if row.cli})
    except OptionError as exc:
        flag = (OPTIONS.get(exc.name) or RUN_OPTIONS.get(exc.name) or JOBS).flag
        raise InputError(f"{flag} {exc.rule} (got {exc.value!r})") from None


def existing_outputs(the_plan: batch.Plan) -> list[batch.Job]:
    """The jobs whose output exists and is not one the folder's manifest knows as ours.

    An output the manifest recorded as done is the manifest's to decide
    (:func:`anonymize.batch.process_job`): skipped when input, settings and output are unchanged,
    redone otherwise. One whose input was recorded as started (:data:`batch.STARTED`) and never
    finished was written by a killed run between the rename and the record: redone as well, so
    running the same command again resumes. Any other existing output is the user's."""
    from . import batch

    ours = set()
    if the_plan.manifest is not None:
        ours = {r["input"] for r in batch.read_manifest(the_plan.manifest, started=True)
                if r.get("status") in ("done", batch.STARTED)}
    return [j for j in the_plan.jobs if os.path.lexists(j.dst) and j.rel not in ours]


def _names(jobs: list[batch.Job], at_most: int = 3) -> str:
    shown = ", ".join(j.shown_dst for j in jobs[:at_most])
    return shown + (f" and {len(jobs) - at_most} more" if len(jobs) > at_most else "")


def settle_existing(the_plan: batch.Plan, args: argparse.Namespace) -> list[batch.Job]:
    """Apply -y / -n / the default to the outputs that exist; returns the jobs skipped (-n).

    ``-y``: they are replaced. ``-n``: their jobs leave the plan. Default: InputError (exit 2).
    Outputs the folder's manifest knows as ours are not among them (:func:`existing_outputs`)."""
    clash = existing_outputs(the_plan)
    if not clash or args.overwrite:
        return []
    if args.no_overwrite:
        skip = set(clash)
        the_plan.jobs = [j for j in the_plan.jobs if j not in skip]
        return clash
    if len(clash) == 1:
        raise InputError(f"{clash[0].shown_dst} exists; use -y to replace it (or -n to skip it)")
    raise InputError(f"{len(clash)} outputs exist ({_names(clash)}); use -y to replace them (or -n to skip them)")


def print_plan(jobs: list[batch.Job], the_plan: batch.Plan, skipped: list[batch.Job]) -> None:
    """``--dry-run``: one line per input on stdout, ``INPUT -> OUTPUT (action)``, in plan order."""
    from . import batch

    known = {}
    if the_plan.manifest is not None:
        known = {r["input"]: r for r in batch.read_manifest(the_plan.manifest)}
    for job in jobs:
        if job in skipped:
            action = "skip: output exists"
        elif known.get(job.rel, {}).get("status") == "done":
            action = "done before: skipped if unchanged, else redone"
        elif os.path.lexists(job.dst):
            action = f"{job.action}, replacing the output"
        else:
            action = job.action
        print(f"{job.shown} -> {job.shown_dst} ({action})")
    for name in the_plan.refused:
        print(f"{name}: not copied (a photo/video/audio format that cannot be anonymized)")
    for name in the_plan.not_copied:
        print(f"{name}: left out (not a photo/video; --copy-other copies it verbatim)")
    print(f"anonymize: dry run: {len(jobs) - len(skipped)} to do, {len(skipped)} skipped; nothing was written",
          file=sys.stderr)


# --------------------------------------------------------------------------------------------
# messages


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (callers and tests replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(args: argparse.Namespace) -> None:
    """``anonymize: message`` lines on stderr at the level of --log-level or -v/-vv."""
    name = args.log_level or ("debug" if args.verbose >= 2 else "info" if args.verbose else "warning")
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()  # on the root logger, so tqdm can route it around its bars
        handler.setFormatter(logging.Formatter("anonymize: %(message)s"))
        root.addHandler(handler)
    log.setLevel(getattr(logging, name.upper()))


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: --progress forces them, -q turns them off, else only on a terminal."""
    if args.quiet:
        return False
    if args.progress:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _fail(exc: Exception) -> int:
    print(f"anonymize: error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", 2)


# --------------------------------------------------------------------------------------------


#: Set when a batch run with ``--engine ray`` has returned (see :func:`entry`).
_batch_left_ray = False


def entry() -> None:
    """The ``anonymize`` command (and ``python -m anonymize``): :func:`main`, then exit with its code.

    A batch run with ``--engine ray`` that has ended and left Ray (every output closed and renamed,
    the manifest fsync'd, a private cluster shut down) ends with ``os._exit`` once the log and the
    standard streams are flushed: the interpreter's teardown of the ~900 modules loaded with Ray is
    ~0.4 s of CPU here (clearing module dictionaries, nothing of ours) that would only delay the
    shell. Every other command, and a Ray still connected, takes the normal exit."""
    code = main()
    ray = sys.modules.get("ray")
    if _batch_left_ray and ray is not None and not ray.is_initialized():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
                pass
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    SIGTERM, SIGHUP and SIGINT stop it cleanly (exit 143, 129, 130)."""
    with handle_signals():
        try:
            return _main(argv)
        except Terminated as exc:  # raised outside the batch's run, which handles its own
            print(f"anonymize: stopped by {exc.name}", file=sys.stderr)
            return exc.exit_code


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["audit"]:  # `anonymize audit OUT [--against IN]`
        from .audit import main as audit_main

        return audit_main(argv[1:])
    if argv[:1] == ["serve"]:  # `anonymize serve --data DIR [...]` (anonymize/service)
        from .service.cli import serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["app"]:  # `anonymize app [--port N] [--no-browser]` (anonymize/app)
        from .app.cli import app_main

        return app_main(argv[1:])
    if argv[:1] in (["detect"], ["render"]):  # `anonymize detect IN --report PLAN` / `render IN --plan PLAN -o OUT`
        from . import cli_plan

        return (cli_plan.detect_main if argv[0] == "detect" else cli_plan.render_main)(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    setup_logging(args)
    if args.engine == "ray" and not args.ray_address and not args.dry_run:
        from . import ray_cluster
        from .cores import ray_local_cpus

        # Ray's start (seconds) overlaps the imports and the planning below; the run's connect()
        # takes the cluster. prestart returns once Ray is imported: the cluster's processes start
        # at once, instead of after an import that shared the interpreter with ours (~0.3 s here).
        ray_cluster.prestart(ray_local_cpus(args.jobs))
        try:
            return _run(args)
        finally:
            ray_cluster.cancel_prestart()  # only a cluster no run took (it ended before its first file)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from . import batch

    try:
        options = options_from_args(args)
        the_plan = batch.plan(args.inputs, args.output, copy_other=args.copy_other, manifest=args.manifest)
        if not the_plan.jobs:
            raise InputError("no video or photo files found")
        if args.report is not None:  # the report must not replace an input, an output or the manifest
            check_writes([Path(j.shown) for j in the_plan.jobs], [
                ("--report", args.report), *(("output", Path(j.shown_dst)) for j in the_plan.jobs),
                *([("--manifest", the_plan.manifest)] if the_plan.manifest is not None else [])])
        planned = list(the_plan.jobs)
        skipped = settle_existing(the_plan, args)
    except (AnonymizeError, ValueError) as exc:
        return _fail(exc)
    if args.dry_run:
        print_plan(planned, the_plan, skipped)
        return 0
    if skipped:
        print(f"anonymize: skipped {len(skipped)} input(s) whose output exists (-n): {_names(skipped)}",
              file=sys.stderr)
    if not the_plan.jobs:
        return 0
    log.info("%d file(s) to do; output: %s%s", len(the_plan.jobs), the_plan.out_dir or "beside each input / -o",
             f"; manifest: {the_plan.manifest}" if the_plan.manifest else "")
    log.debug("options: %s", options.as_dict())
    if the_plan.out_dir is not None:
        try:
            the_plan.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _fail(InputError(f"{args.output}: cannot create the output folder ({exc.strerror or exc})"))
    from .cli_batch import run_batch

    global _batch_left_ray
    try:
        return run_batch(the_plan, options, jobs=args.jobs, report=args.report, quiet=not show_progress(args),
                         engine=args.engine, ray_address=args.ray_address)
    finally:
        _batch_left_ray = args.engine == "ray"
