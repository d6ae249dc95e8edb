"""Where a video run's time goes, stage by stage (no py-spy needed): timers around each stage.

    python bench/stages.py CLIP [--set KEY=VALUE ...]
    python bench/stages.py /tmp/anonymize-bench/speed/clip_1920x1080_4s.mp4 --set device=cpu

Runs the API once on CLIP (output to a temporary file) with the stage functions wrapped in
timers. Each row is the *exclusive* wall time and the calling thread's CPU time of a stage (nested stages, such as the tracker's
second look inside the tracker, are subtracted from their caller), per frame. Stages on the
main thread run one after another, so their sum is the main thread's time; drawing runs in the
encoder's thread, overlapping detection, and its wall time includes waits for the GIL (its thread
CPU is the honest figure); a model's CPU in its runtime's worker threads is in no thread column. Process CPU (all threads, models included) and the
CPU of the ffmpeg children (decode + encode) close the table.
"""
from __future__ import annotations

import argparse
import functools
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOTAL: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)  # the calling thread's CPU (not a model's worker threads)
CALLS: dict[str, int] = defaultdict(int)
_stack: list[list] = []  # per main-thread nesting: [name, start, child time, cpu start, child cpu]


def timed(name: str, fn):
    """``fn`` with its exclusive wall time added to TOTAL[name]."""
    import threading

    @functools.wraps(fn)
    def wrapper(*a, **k):
        if threading.current_thread() is not threading.main_thread():
            t, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                TOTAL[name] += time.perf_counter() - t
                CPU[name] += time.thread_time() - c
                CALLS[name] += 1
        frame = [name, time.perf_counter(), 0.0, time.thread_time(), 0.0]
        _stack.append(frame)
        try:
            return fn(*a, **k)
        finally:
            _stack.pop()
            spent, cpu = time.perf_counter() - frame[1], time.thread_time() - frame[3]
            TOTAL[name] += spent - frame[2]
            CPU[name] += cpu - frame[4]
            CALLS[name] += 1
            if _stack:
                _stack[-1][2] += spent
                _stack[-1][4] += cpu
    return wrapper


def timed_gen(name: str, fn):
    """A generator function's time (its own work between yields, nested stages excluded)."""
    @functools.wraps(fn)
    def wrapper(*a, **k):
        gen = fn(*a, **k)
        while True:
            frame = [name, time.perf_counter(), 0.0, time.thread_time(), 0.0]
            _stack.append(frame)
            try:
                item = next(gen)
            except StopIteration:
                return
            finally:
                _stack.pop()
                spent, cpu = time.perf_counter() - frame[1], time.thread_time() - frame[3]
                TOTAL[name] += spent - frame[2]
                CPU[name] += cpu - frame[4]
                if _stack:
                    _stack[-1][2] += spent
                    _stack[-1][4] += cpu
            yield item
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an option (as in anonymize.config.Options), e.g. device=cpu, edge_pass=0")
    args = ap.parse_args()
    from anonymize import api, masks, pipeline, regions_source, relook, report, rotation, schedule, track
    from anonymize.config import Options

    changes = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        changes[k] = Options.parse_value(k, v) if hasattr(Options, "parse_value") else _guess(v)
    runner = api.Anonymizer(**changes)
    eng = runner.engine
    if eng.detector is not None:
        eng.detector.detect = timed("face detector (full frame)", eng.detector.detect)
    if eng.between is not None:
        eng.between.detect = timed("face detector (between frames)", eng.between.detect)
    for name, det in eng.mark_detectors.items():
        det.detect = timed(f"marks: {name}", det.detect)
    regions_source.EdgePass.add = timed("edge pass", regions_source.EdgePass.add)
    relook.SecondLook.look = timed("tracker second look", relook.SecondLook.look)
    track.Tracker.push = timed_gen("tracker", track.Tracker.push)
    track.Tracker.flush = timed_gen("tracker", track.Tracker.flush)
    rotation.RotationWatch.__call__ = timed("rotation watch", rotation.RotationWatch.__call__)
    schedule.SceneCuts.__call__ = timed("scene cuts", schedule.SceneCuts.__call__)
    pipeline.grow = timed("mask geometry (grow)", pipeline.grow)
    pipeline.region_shapes = timed("report (shapes)", pipeline.region_shapes)
    report.FileReport.add_frame = timed("report (add_frame)", report.FileReport.add_frame)
    drawn = [0]
    draw = pipeline.draw

    def counted(image, masked, *a, **k):
        drawn[0] += len(masked)
        return draw(image, masked, *a, **k)
    pipeline.draw = timed("drawing (encoder thread)", counted)

    with tempfile.TemporaryDirectory() as tmp:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        rep = runner.file(args.clip, Path(tmp) / ("out" + args.clip.suffix))
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    frames = rep.frame_count if hasattr(rep, "frame_count") else len(rep.frames)
    print(f"{args.clip.name}: {frames} frames, {wall:.1f} s wall, settings {changes or 'defaults'}")
    print(f"{'stage':34} {'wall ms/frame':>13} {'share of wall':>13} {'thread CPU ms/frame':>19}")
    main_sum = 0.0
    for name, t in sorted(TOTAL.items(), key=lambda kv: -kv[1]):
        print(f"{name:34} {1000 * t / frames:13.1f} {100 * t / wall:12.1f}% {1000 * CPU[name] / frames:19.1f}")
        if "encoder thread" not in name:
            main_sum += t
    print(f"{'rest of the main thread':34} {1000 * (wall - main_sum) / frames:13.1f} {100 * (wall - main_sum) / wall:12.1f}%")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"regions drawn: {drawn[0] / frames:.0f} per frame; device: "
          f"{', '.join(sorted({m.get('device', '?') for m in eng.models()}))}")
    print(f"process CPU {cpu:.1f} s ({1000 * cpu / frames:.0f} ms/frame); ffmpeg children CPU "
          f"{ch.ru_utime + ch.ru_stime:.1f} s ({1000 * (ch.ru_utime + ch.ru_stime) / frames:.0f} ms/frame)")


def _guess(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return tuple(v.split(",")) if "," in v else v


if __name__ == "__main__":
    main()
