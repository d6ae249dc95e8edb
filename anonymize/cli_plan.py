"""The ``anonymize detect`` and ``anonymize render`` commands: detection and drawing, apart.

``anonymize detect INPUT --report PLAN.json`` runs decode -> detect -> track and writes the plan
(a schema-2 report, docs/plan-schema.md); no media is written. ``anonymize render INPUT --plan
PLAN.json -o OUTPUT`` masks INPUT with the plan's regions (and its edits) and runs no detector.
Errors are printed once on stderr as ``anonymize: error: ...``, with the exit codes of
:mod:`anonymize.errors` (2 bad input, a plan for another file, ...).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import TABLE, Option, OptionError, OPTIONS, Options
from .errors import AnonymizeError, InputError
from .paths import check_writes, shown

#: The options that matter to render: the encoder's (the mask itself is the plan's).
RENDER_OPTIONS = ("quality", "crf", "preset", "audio", "ffmpeg_threads", "hwaccel")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"anonymize: error: {message} (see: {self.prog} --help)\n")


def _add(p: argparse.ArgumentParser, row: Option) -> None:
    if row.type is bool:
        p.add_argument(row.flag, dest=row.name, action="store_true", default=row.default, help=row.help)
        return
    default = ",".join(row.default) if row.type is tuple else row.default
    kind = {float: float, int: int}.get(row.type, str)
    choices = row.choices if row.type is str and row.choices else None
    p.add_argument(row.flag, dest=row.name, type=kind, default=default, choices=choices, help=row.help,
                   metavar=row.metavar)


def _options(args: argparse.Namespace, names) -> Options:
    try:
        return Options(**{n: getattr(args, n) for n in names})
    except OptionError as exc:
        flag = OPTIONS[exc.name].flag if exc.name in OPTIONS else exc.name
        raise InputError(f"{flag} {exc.rule} (got {exc.value!r})") from None


def _fail(exc: BaseException) -> int:
    print(f"anonymize: error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)


def _guarded(work) -> int:
    """Run one command's work; map its errors to one printed line and an exit code."""
    try:
        work()
    except (AnonymizeError, ValueError) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
    return 0


def _refuse_existing(path: Path, overwrite: bool, label: str) -> None:
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{label} {shown(path)} exists; use -y to replace it")


def _parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    try:
        return p.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2


def detect_main(argv: list[str]) -> int:
    """``anonymize detect INPUT --report PLAN.json [options]``; returns the exit code."""
    p = _Parser(prog="anonymize detect", description="Detect and track faces (and the other --marks) in one "
                "photo or video and write the plan (a JSON report with tracks and raw boxes) that "
                "`anonymize render` masks from. No media is written.")
    p.add_argument("input", type=Path, metavar="INPUT")
    p.add_argument("--report", type=Path, required=True, metavar="PLAN.json", help="where to write the plan")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace the plan file if it exists")
    names = []
    for row in TABLE:
        if row.cli:
            _add(p, row)
            names.append(row.name)
    args = _parse(p, argv)
    if isinstance(args, int):
        return args

    def work() -> None:
        from .api import Anonymizer

        options = _options(args, names)
        check_writes([args.input], [("--report", args.report)])
        _refuse_existing(args.report, args.overwrite, "--report")
        runner = Anonymizer(options)
        report = runner.detect(args.input)
        runner.write_report(args.report, [report])

    return _guarded(work)


def render_main(argv: list[str]) -> int:
    """``anonymize render INPUT --plan PLAN.json -o OUTPUT [--report R.json]``; returns the exit code."""
    p = _Parser(prog="anonymize render", description="Mask one photo or video with the regions of a plan "
                "written by `anonymize detect` (or by `anonymize --report`), with its edits: tracks marked "
                "\"masked\": false are spared, \"add\" boxes are followed and masked, \"mask_frames\" ranges "
                "are masked whole. Runs no detector. A plan for another file (sha256) or another frame count "
                "is refused (exit 2, nothing written).")
    p.add_argument("input", type=Path, metavar="INPUT")
    p.add_argument("--plan", type=Path, required=True, metavar="PLAN.json")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT")
    p.add_argument("--report", type=Path, metavar="R.json", help="write the report of this render (itself a plan)")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT (and R.json) if they exist")
    for row in TABLE:
        if row.name in RENDER_OPTIONS:
            _add(p, row)
    args = _parse(p, argv)
    if isinstance(args, int):
        return args

    def work() -> None:
        from .api import Anonymizer
        from .plan import load_plan

        options = _options(args, RENDER_OPTIONS)
        writes = [("output", args.output)] + ([("--report", args.report)] if args.report else [])
        check_writes([args.input, args.plan], writes)
        for label, path in writes:
            _refuse_existing(path, args.overwrite, label)
        plan = load_plan(args.plan)
        runner = Anonymizer(options, detectors=False)
        report = runner.render(args.input, plan, args.output)
        if args.report:
            runner.write_report(args.report, [report])

    return _guarded(work)
