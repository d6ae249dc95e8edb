"""Where ``--engine ray``'s overhead against ``--engine local`` goes, on the same small photos.

Runs the real CLI (``--jobs 2``, ``-q``) with each engine, ``--repeat`` times alternating, and
while it runs samples ``/proc`` every ``--poll`` seconds: every process descended from the CLI
(Ray's GCS, raylet, its agents, its workers; the pool's workers) with its CPU seconds (user +
system, ``/proc/PID/stat``; the last sample before a process ends, so a process's final
``--poll`` seconds may be missed), and when each output file appears (outputs are renamed into
place when complete, so appearing = done). Prints, per engine, the medians of:

- the timeline: first output (start: imports, planning, engine start, model loads), last output
  (steady state: the files), exit (shutdown: the manifest's close, the cluster's stop);
- CPU seconds per process group (the driver, ``gcs_server``, ``raylet``, the dashboard agent,
  the runtime-env agent, Ray's workers, the pool's workers, other), and in total.

``--base DIR`` (a copy of the code before a change, e.g. ``git archive BASE | tar -x -C DIR``)
adds ``ray@base``: ``--engine ray`` with that code, in the same alternation (before and after in
one run, under the same load).

Inputs: ``--small`` photos of 320 px cut from ``sample_media/crowd.jpg`` (as ``ray_scale.py``).

Usage::

    python bench/ray_profile.py [--small 50] [--repeat 3] [--poll 0.05] [--engines local,ray] [--base DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ray_scale import ENV, photos  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def group(cmd: str, is_root: bool) -> str:
    """The process group a command line belongs to."""
    if is_root:
        return "driver (CLI)"
    for key, name in (("gcs_server", "gcs_server"), ("raylet", "raylet"), ("DashboardAgent", "dashboard agent"),
                      ("dashboard/agent.py", "dashboard agent"), ("RuntimeEnvAgent", "runtime-env agent"),
                      ("runtime_env/agent", "runtime-env agent"), ("ray::", "ray workers"),
                      ("default_worker.py", "ray workers"), ("multiprocessing", "pool workers"),
                      ("dashboard.py", "dashboard"), ("monitor.py", "monitor"), ("log_monitor", "log monitor")):
        if key in cmd:
            return name
    return "other: " + cmd[:60]


def run(src: Path, out: Path, engine: str, poll: float, root: Path = ROOT) -> dict:
    """One CLI run of the code in ``root``, sampled; its timeline and CPU per process group."""
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "anonymize", str(src), "-o", str(out) + "/", "-q", "--jobs", "2", "--engine", engine]
    n_files = sum(1 for _ in src.rglob("*.jpg"))
    env = dict(ENV, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    seen_outputs = 0
    first = last = None
    while proc.poll() is None:
        tree = {proc.pid}
        stats = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                s = _stat(d)
                if s is not None:
                    stats[int(d)] = s
        # descendants of the CLI (a parent before its children in pid order is not guaranteed: iterate)
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree:
            if pid in stats:
                cpu[pid] = stats[pid][1]
                if pid not in names or not names[pid] or names[pid].startswith("/"):
                    names[pid] = _cmdline(pid) or names.get(pid, "")
        if out.exists():
            count = sum(1 for _ in out.rglob("*.jpg"))
            now = time.perf_counter() - t0
            if count and first is None:
                first = now
            if count > seen_outputs:
                seen_outputs, last = count, now
        time.sleep(poll)
    end = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    if seen_outputs < n_files:  # the last files landed between the final sample and the exit
        last = end
    groups: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for pid, sec in cpu.items():
        g = group(names.get(pid, ""), pid == proc.pid)
        groups[g] += sec
        counts[g] += 1
    return {"wall": end, "first": first or end, "last": last or end, "groups": dict(groups), "counts": dict(counts),
            "total": sum(groups.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--base", type=Path, help="a copy of the code before: adds ray@base")
    args = ap.parse_args()
    variants = [(e, e, ROOT) for e in args.engines.split(",")]
    if args.base:
        variants.append(("ray@base", "ray", args.base.resolve()))
    work = Path(tempfile.mkdtemp(prefix="anonymize-ray-prof-"))
    try:
        src = photos(work / "small", args.small, 320, seed=3)
        runs: dict[str, list[dict]] = defaultdict(list)
        for i in range(args.repeat):
            k = i % len(variants)  # each variant in each position in turn
            for label, engine, root in variants[k:] + variants[:k]:
                r = run(src, work / f"out-{engine}", engine, args.poll, root)
                runs[label].append(r)
                print(f"  {label:8s} run {i + 1}: wall {r['wall']:.2f} s, first output {r['first']:.2f} s, "
                      f"last {r['last']:.2f} s; CPU {r['total']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        med = statistics.median
        for engine, rs in runs.items():
            print(f"{engine}: median of {len(rs)}: wall {med(r['wall'] for r in rs):.2f} s = start to first output "
                  f"{med(r['first'] for r in rs):.2f} + files {med(r['last'] - r['first'] for r in rs):.2f} + "
                  f"after the last {med(r['wall'] - r['last'] for r in rs):.2f}; CPU {med(r['total'] for r in rs):.2f} s")
            names = sorted({g for r in rs for g in r["groups"]}, key=lambda g: -med(r["groups"].get(g, 0) for r in rs))
            for g in names:
                print(f"    {g:30s} {med(r['groups'].get(g, 0.0) for r in rs):6.2f} CPU s "
                      f"({max(r['counts'].get(g, 0) for r in rs)} process(es))")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
