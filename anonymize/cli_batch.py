"""The CLI side of a batch: run it (:func:`anonymize.batch.execute`), print its summary, return
its exit code. The library returns a :class:`~anonymize.batch.Summary`; only this prints."""
from __future__ import annotations

import sys
from pathlib import Path

from .batch import Plan, Summary, execute, why
from .config import Options
from .errors import AnonymizeError


def run_batch(the_plan: Plan, options: Options, *, jobs: int = 1, report: Path | None = None, quiet: bool = False,
              engine: str = "local", ray_address: str | None = None) -> int:
    """Process a plan, print the summary to stderr; return the exit code."""
    if ray_address and engine != "ray":
        print("anonymize: error: --ray-address needs --engine ray", file=sys.stderr)
        return 2
    try:
        summary = execute(the_plan, options, jobs=jobs, report=report, quiet=quiet, engine=engine,
                          ray_address=ray_address)
    except AnonymizeError as exc:
        print(f"anonymize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if summary.broken:
        print(f"anonymize: error: {summary.error}; finished files are recorded, run the same command again to "
              "resume", file=sys.stderr)
        return summary.code
    if summary.error and summary.stopped is None:
        print(f"anonymize: error: {summary.error}", file=sys.stderr)
    print_summary(the_plan, summary)
    if summary.stopped is not None:
        again = "resume" if the_plan.manifest is not None else "start again"
        print(f"anonymize: stopped ({summary.stopped}); no unfinished file was left; run the same command again "
              f"to {again}", file=sys.stderr)
    return summary.code


def print_summary(the_plan: Plan, s: Summary) -> None:
    """The lines a batch ends with: counts, failures, what was left out, where the manifest is."""
    w = sys.stderr.write
    copied = sum(o.job.action == "copy" for o in s.done)
    regions = sum(o.regions for o in s.done)
    parts = [f"{len(s.done)} done" + (f" ({len(s.done) - copied} anonymized, {copied} copied)" if copied else ""),
             f"{len(s.skipped)} skipped as already done", f"{len(s.failed)} failed",
             f"{regions} regions masked", f"{s.seconds:.1f} s"]
    w("anonymize: " + ", ".join(parts) + "\n")
    for o in sorted(s.failed, key=lambda o: o.job.rel):
        w(f"anonymize: failed: {o.job.shown}: {why(o)} (exit code {o.exit_code})\n")
    if s.fatal is not None:
        w(f"anonymize: stopped: {s.fatal.error}\n")
    if the_plan.refused:
        w(f"anonymize: not copied, {len(the_plan.refused)} photo/video/audio file(s) in formats that cannot be "
          f"anonymized (faces, voices and metadata would be published): "
          + ", ".join(the_plan.refused[:10]) + (" ..." if len(the_plan.refused) > 10 else "") + "\n")
    if the_plan.not_copied:
        w(f"anonymize: {len(the_plan.not_copied)} other file(s) left out (not photos/videos; --copy-other copies "
          "them verbatim)\n")
    if the_plan.manifest is not None and (s.failed or s.fatal):
        w(f"anonymize: finished files are recorded in {the_plan.manifest}; run the same command again to retry "
          "the rest\n")
