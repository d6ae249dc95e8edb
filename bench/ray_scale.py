"""``--engine ray``: scaling with workers, overhead against ``--engine local``, kill -9 of a worker,
and what a cluster would do for 1,000 hours of 1080p footage.

1. **Scaling** (in one run): a private local Ray with one single-CPU worker, then with two; each
   warmed (models loaded in every worker) and then timed on the same ``--files`` photos. Files per
   hour of each and their ratio (2.0 = perfect).
1b. **Start** (part "start"): Ray's own cost, twice: a private Ray of 2 CPUs started, a trivial
   task on each of its workers, shut down.
2. **Overhead**: the same ``--small`` small photos through the real CLI, ``--jobs 2``: with
   ``--engine local`` (the process pool), ``--engine ray`` (its own private Ray, started and
   stopped by the run), and ``--engine ray --ray-address`` of a loopback cluster already up.
   Wall time of the whole command (what a user waits; ``--repeat`` pairs, local and ray
   alternating, the median of the pairs' ratios and their range), and of the files alone (``execute``; Ray
   started and its workers warm; local: pool start and model loads included, as in every run).
3. **kill -9**: the CLI with ``--engine ray --jobs 2`` on photos and a video while ``--kills`` busy
   workers (``ray::_ray_job`` processes) are killed with SIGKILL; then every file must be ``done``
   exactly once in the manifest, every output must decode, no temporary file may be left.
4. **Estimate**: seconds per 1080p frame of one single-CPU worker (a ``--seconds`` 1080p clip made
   from ``sample_media/crowd.mp4``), then arithmetic: 1,000 h x 3600 s x 30 fps frames, over N
   nodes of ``--node-cpus`` single-CPU workers at the scaling efficiency measured in 1.

Inputs come from the project's own sample media (no shared data), made in a temporary folder.

Usage::

    python bench/ray_scale.py [--files 16] [--small 50] [--repeat 5] [--kills 2] [--seconds 1] [--node-cpus 16]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anonymize import batch, ray_cluster  # noqa: E402
from anonymize.config import Options  # noqa: E402
from anonymize.ffmpeg_tools import ffmpeg_exe  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           RAY_USAGE_STATS_ENABLED="0",
           RAY_AUTH_MODE="token")


def photos(folder: Path, n: int, width: int, seed: int = 0) -> Path:
    """``n`` photos cut from the sample still at seeded places, ``width`` px wide (16:9), nested."""
    img = cv2.imread(str(ROOT / "sample_media" / "crowd.jpg"))
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    for i in range(n):
        cw = int(rng.integers(w // 3, w))
        ch = cw * 9 // 16
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = cv2.resize(img[y:y + ch, x:x + cw], (width, width * 9 // 16), interpolation=cv2.INTER_AREA)
        path = folder / f"set{i % 3}" / f"p{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), crop)
    return folder


def clip(path: Path, seconds: float, size: str) -> Path:
    """A clip of the sample video, scaled to ``size``, ``seconds`` long (looped if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(ROOT / "sample_media" / "crowd.mp4"),
                    "-t", str(seconds), "-vf", f"scale={size}", "-an", "-c:v", "libx264", "-preset", "veryfast",
                    str(path)], check=True)
    return path


def timed_execute(src: Path, out: Path, options: Options, **kw) -> tuple[float, batch.Summary]:
    shutil.rmtree(out, ignore_errors=True)
    batch.manifest_path(out).unlink(missing_ok=True)
    the_plan = batch.plan([src], str(out) + "/")
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    summary = batch.execute(the_plan, options, quiet=True, **kw)
    took = time.perf_counter() - t
    assert summary.code == 0 and not summary.failed, (summary.code, summary.error, summary.failed)
    return took, summary


def scaling(work: Path, files: int, options: Options) -> dict:
    """Files per hour with 1 and 2 single-CPU Ray workers (warm), on the same photos."""
    src, warm = photos(work / "scale", files, 640, seed=1), photos(work / "warm", 2, 640, seed=2)
    result = {}
    for k in (1, 2):
        t0 = time.perf_counter()
        ray_cluster.connect(None, num_cpus=k)
        start = time.perf_counter() - t0
        timed_execute(warm, work / f"warm-out{k}", options, engine="ray")  # every worker loads its models
        took, _ = timed_execute(src, work / f"scale-out{k}", options, engine="ray")
        ray_cluster.disconnect()
        result[k] = {"seconds": took, "files_per_hour": files / took * 3600, "ray_start_s": start}
        print(f"  {k} worker(s): {files} files in {took:.1f} s = {result[k]['files_per_hour']:.0f} files/hour "
              f"(Ray start {start:.1f} s)", flush=True)
    result["ratio"] = result[2]["files_per_hour"] / result[1]["files_per_hour"]
    return result


def _pid() -> int:
    return os.getpid()


def start_cost(runs: int) -> list[tuple[float, float, float]]:
    """Ray's own cost, ``runs`` times: a private local Ray (2 CPUs) started, one trivial task on
    each of its 2 workers, shut down (seconds of each)."""
    ray = ray_cluster.import_ray()
    rows = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ray_cluster.connect(None, num_cpus=2)
        t1 = time.perf_counter()
        f = ray.remote(num_cpus=1)(_pid)
        ray.get([f.remote(), f.remote()])
        t2 = time.perf_counter()
        ray_cluster.disconnect()
        rows.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
        print(f"  start {rows[-1][0]:.2f} s, first task on 2 workers {rows[-1][1]:.2f} s, shutdown "
              f"{rows[-1][2]:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def cli(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "anonymize", *args], env=ENV, capture_output=True, text=True,
                          timeout=1800)
    return time.perf_counter() - t, proc


def overhead(work: Path, small: int, options: Options, repeat: int = 1) -> dict:
    """The same small photos: --engine local vs --engine ray, --jobs 2 (whole CLI, and warm files
    only). The CLI pair runs ``repeat`` times, local and ray alternating, so both meet the same load;
    the ratio of each pair, their median and spread."""
    src = photos(work / "small", small, 320, seed=3)
    res: dict = {"local": {}, "ray": {}, "pairs": []}
    for i in range(repeat):
        pair = {}
        for engine in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            out = work / f"small-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            batch.manifest_path(out).unlink(missing_ok=True)
            took, proc = cli([str(src), "-o", str(out) + "/", "-q", "--jobs", "2", "--engine", engine])
            assert proc.returncode == 0, proc.stderr[-2000:]
            pair[engine] = took
        res["pairs"].append(pair)
        print(f"  pair {i + 1}: local {pair['local']:.1f} s, ray {pair['ray']:.1f} s "
              f"({pair['ray'] / pair['local'] - 1:+.0%}; load {os.getloadavg()[0]:.1f})", flush=True)
    ratios = sorted(p["ray"] / p["local"] - 1 for p in res["pairs"])
    res["overhead_cli_s"] = ratios[len(ratios) // 2]
    res["local"]["cli_s"] = sorted(p["local"] for p in res["pairs"])[repeat // 2]
    res["ray"]["cli_s"] = sorted(p["ray"] for p in res["pairs"])[repeat // 2]
    # the realistic archive case: a cluster that is already up (`ray start --head`), the CLI
    # connecting with --ray-address (each run still starts its own workers and loads their models)
    with head(2) as address:
        out = work / "small-ray-address"
        took, proc = cli([str(src), "-o", str(out) + "/", "-q", "--jobs", "2", "--engine", "ray",
                          "--ray-address", address])
        assert proc.returncode == 0, proc.stderr[-2000:]
        res["ray-address"] = {"cli_s": took}
    # the files alone: engines started and warm (local: the pool's start and model loads are in
    # the timing as they are per run; ray: a cluster that is up, workers warm)
    ray_cluster.connect(None, num_cpus=2)
    timed_execute(photos(work / "warm2", 2, 320, seed=4), work / "warm2-out", options, engine="ray")
    res["ray"]["files_s"], _ = timed_execute(src, work / "small-ray-warm", options, engine="ray")
    ray_cluster.disconnect()
    res["local"]["files_s"], _ = timed_execute(src, work / "small-local-warm", options, engine="local", jobs=2)
    res["overhead_files_s"] = res["ray"]["files_s"] / res["local"]["files_s"] - 1
    res["overhead_address"] = res["ray-address"]["cli_s"] / res["local"]["cli_s"] - 1
    print(f"  {small} photos, --jobs 2, {repeat} pair(s): ray (private, started by the run) vs local: median "
          f"{res['overhead_cli_s']:+.0%} (range {ratios[0]:+.0%} .. {ratios[-1]:+.0%}); median CLI local "
          f"{res['local']['cli_s']:.1f} s, ray {res['ray']['cli_s']:.1f} s; ray --ray-address of a running "
          f"cluster {res['ray-address']['cli_s']:.1f} s ({res['overhead_address']:+.0%} on the median local); "
          f"files alone: local {res['local']['files_s']:.1f} s, ray warm {res['ray']['files_s']:.1f} s "
          f"({res['overhead_files_s']:+.0%})", flush=True)
    return res


@contextlib.contextmanager
def head(cpus: int):
    """A one-node Ray cluster on loopback (``ray start --head --block`` in its own process group
    and temp folder, stopped by killing that group); yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rayb-", dir="/tmp")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port),
                             "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                             "--include-dashboard=false", "--temp-dir", temp, "--block"], env=ENV,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        time.sleep(2)  # the raylet registers after the GCS port opens
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def busy_workers() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::_ray_job"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def kill_trial(work: Path, kills: int) -> dict:
    """--engine ray --jobs 2 while ``kills`` busy workers are SIGKILLed: nothing lost, doubled, partial."""
    src = photos(work / "kill", 16, 640, seed=5)
    clip(src / "set0" / "walk.mp4", 2, "640:360")
    out = work / "kill-out"
    shutil.rmtree(out, ignore_errors=True)
    batch.manifest_path(out).unlink(missing_ok=True)
    run = subprocess.Popen([sys.executable, "-m", "anonymize", str(src), "-o", str(out) + "/", "-q", "--jobs", "2",
                            "--engine", "ray"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    seen: dict[int, float] = {}
    last_kill = 0.0
    while run.poll() is None and len(killed) < kills:
        now = time.monotonic()
        for pid in busy_workers():
            seen.setdefault(pid, now)
            if pid not in killed and now - seen[pid] > 0.5 and now - last_kill > 3:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                last_kill = now
                break
        time.sleep(0.05)
    _, stderr = run.communicate(timeout=1800)
    recs = batch.read_manifest(batch.manifest_path(out))
    inputs = [r["input"] for r in recs]
    media = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    partial = [p.name for p in out.rglob("*") if re.search(r"\.partial", p.name)]
    undecodable = [p.name for p in out.rglob("*.jpg") if cv2.imread(str(p)) is None]
    res = {"exit": run.returncode, "killed": len(killed), "files": len(media), "records": len(recs),
           "lost": sorted(set(media) - {r["input"] for r in recs if r["status"] == "done"}),
           "twice": sorted({i for i in inputs if inputs.count(i) > 1}), "partial": partial,
           "undecodable": undecodable}
    print(f"  {len(killed)} busy worker(s) killed; exit {run.returncode}; {len(media)} files, {len(recs)} records; "
          f"lost {res['lost']}, twice {res['twice']}, partial {partial}, undecodable {undecodable}", flush=True)
    if run.returncode:
        print(stderr[-2000:])
    return res


def estimate(work: Path, seconds: float, node_cpus: int, efficiency: float, options: Options) -> dict:
    """Seconds per 1080p frame of one single-CPU Ray worker, and the arithmetic for 1,000 hours."""
    src = work / "hd"
    shutil.rmtree(src, ignore_errors=True)
    clip(src / "hd.mp4", seconds, "1920:1080")
    frames = int(round(seconds * 30))
    ray_cluster.connect(None, num_cpus=1)
    timed_execute(photos(work / "warm3", 1, 640, seed=6), work / "warm3-out", options, engine="ray")
    took, _ = timed_execute(src, work / "hd-out", options, engine="ray")
    ray_cluster.disconnect()
    per_frame = took / frames
    total_frames = 1000 * 3600 * 30
    worker_hours = total_frames * per_frame / 3600
    print(f"  1080p: {frames} frames in {took:.1f} s = {per_frame:.2f} s per frame per single-CPU worker")
    print(f"  1,000 h of 1080p30 = {total_frames:,} frames x {per_frame:.2f} s = {worker_hours:,.0f} worker-hours")
    rows = []
    for nodes in (1, 10, 50, 100, 500):
        workers = nodes * node_cpus
        hours = worker_hours / (workers * efficiency)
        rows.append((nodes, workers, hours))
        print(f"  {nodes:4d} node(s) x {node_cpus} CPUs = {workers:5d} workers at {efficiency:.0%} efficiency: "
              f"{hours:,.0f} h ({hours / 24:,.1f} days)")
    return {"per_frame_s": per_frame, "worker_hours": worker_hours, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=16, help="photos (640 px) of the scaling runs")
    ap.add_argument("--small", type=int, default=50, help="small photos (320 px) of the overhead runs")
    ap.add_argument("--repeat", type=int, default=5, help="local/ray CLI pairs of the overhead runs")
    ap.add_argument("--kills", type=int, default=2, help="busy workers killed in the kill -9 trial")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of the 1080p clip of the estimate")
    ap.add_argument("--node-cpus", type=int, default=16, help="CPUs per node in the estimate")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: scaling,start,overhead,kill,estimate")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    options = Options(threads=1, ffmpeg_threads=1)
    work = Path(tempfile.mkdtemp(prefix="anonymize-ray-bench-"))
    try:
        ratio = 1.0
        if "scaling" not in skip:
            print("scaling:", flush=True)
            ratio = scaling(work, args.files, options)["ratio"]
            print(f"  ratio 2 workers / 1 worker: {ratio:.2f}")
        if "start" not in skip:
            print("Ray's own cost:", flush=True)
            start_cost(2)
        if "overhead" not in skip:
            print("overhead:", flush=True)
            overhead(work, args.small, options, args.repeat)
        if "kill" not in skip:
            print("kill -9:", flush=True)
            kill_trial(work, args.kills)
        if "estimate" not in skip:
            print("estimate:", flush=True)
            estimate(work, args.seconds, args.node_cpus, min(1.0, ratio / 2), options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
