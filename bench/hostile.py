"""Run the hostile corpus (tests/hostile.py) and print a summary table to paste into the README.

    python bench/hostile.py                      # all cases (~400; long: most runs load a model)
    python bench/hostile.py --cases 120          # 120 cases spread over every family
    python bench/hostile.py --family truncate --family names
    python bench/hostile.py --fast               # the subset tests/test_hostile.py runs
    python bench/hostile.py --list               # the case names, nothing run
    python bench/hostile.py --json results.json  # every case's result, for diffing two runs

Each case runs ``python -m anonymize`` in its own folder (cwd, HOME and TMPDIR there), inside
``unshare -n`` where available, and checks the invariants listed in tests/hostile.py. Exit 0 when
every case held every invariant, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import hostile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, help="run this many cases, spread over the families (deterministic)")
    p.add_argument("--family", action="append", help="only this family (repeatable)")
    p.add_argument("--match", help="only cases whose name contains this")
    p.add_argument("--fast", action="store_true", help="only the fast subset (what the unit test runs)")
    p.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    p.add_argument("--time-limit", type=float, help="stop starting new cases after this many seconds")
    p.add_argument("--ignore", action="append", default=[], choices=hostile.INVARIANTS,
                   help="do not count this invariant (repeatable), e.g. --ignore home")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--json", type=Path, help="write every result here")
    p.add_argument("--keep", type=Path, help="build and keep the case folders here (default: a temporary folder)")
    args = p.parse_args(argv)

    cases = hostile.all_cases()
    if args.family:
        unknown = set(args.family) - set(hostile.families(cases))
        if unknown:
            p.error(f"unknown family {sorted(unknown)}; families: {', '.join(hostile.families(cases))}")
        cases = [c for c in cases if c.family in args.family]
    if args.match:
        cases = [c for c in cases if args.match in c.name]
    if args.fast:
        cases = [c for c in cases if c.fast]
    if args.cases:
        cases = hostile.spread(cases, args.cases)
    if args.list:
        for c in cases:
            print(f"{c.name}\taccept={sorted(c.accept)}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0

    with tempfile.TemporaryDirectory(prefix="hostile-") as t:
        root = args.keep or Path(t)
        base, sandbox = hostile.prepare(root)
        print(f"sandbox: netns={sandbox.netns} packets={sandbox.packets} mount={sandbox.mount}; "
              f"{len(cases)} cases, jobs={args.jobs}", file=sys.stderr)
        start = time.monotonic()
        results: list[hostile.Result] = []

        def one(case: hostile.Case) -> hostile.Result | None:
            if args.time_limit and time.monotonic() - start > args.time_limit:
                return None
            r = hostile.run_case(case, base, root, sandbox, keep=args.keep is not None)
            r.failures = [f for f in r.failures if f[0] not in args.ignore]
            mark = "skip" if r.skipped else ("ok" if r.ok else "FAIL " + ",".join(sorted({i for i, _ in r.failures})))
            print(f"[{time.monotonic() - start:6.0f}s] {case.name}: rc={r.rc} {r.seconds}s {mark}", file=sys.stderr,
                  flush=True)
            return r

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = [r for r in pool.map(one, cases) if r is not None]
        elapsed = time.monotonic() - start

    print(f"\n## Hostile corpus: {len(results)} cases in {elapsed / 60:.1f} min\n")
    print(hostile.summary_table(results, sandbox))
    if args.ignore:
        print(f"\n(not counted: {', '.join(args.ignore)})")
    failures = hostile.failure_list(results)
    if failures:
        print("\n### Failures\n")
        print(failures)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1, ensure_ascii=False))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
