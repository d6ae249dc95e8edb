"""Load check of `anonymize serve` on 127.0.0.1 (issue 18): heavy, run by hand, once.

    PYTHONPATH=$PWD python bench/service_load.py [--photos 20] [--clips 4] [--workers 2]

Starts a server in a subprocess on a free loopback port with a fresh --data and a key, submits
``--photos`` photo jobs at once (one thread each), waits for all, then ``--clips`` 1 s clip jobs
at once; every job must succeed. Prints a table: submit latency (median and worst), jobs per
minute, time to the last job, and the peak RSS of the server and its workers together (sampled
from /proc every 0.2 s). Every request goes to 127.0.0.1; every wait is bounded.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in (proc / "status").read_text().splitlines()}
        except OSError:
            continue
        p = int(proc.name)
        children.setdefault(int(fields.get("PPid", 0)), []).append(p)
        rss[p] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def make_media(folder: Path) -> tuple[Path, Path]:
    from tests.conftest import face_clip

    photo = folder / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return photo, face_clip(folder, "clip.mp4", seconds=1.0)


def run_batch(client: httpx.Client, path: Path, n: int, timeout: float) -> dict:
    def one(_):
        t = time.perf_counter()
        with open(path, "rb") as f:
            res = client.post("/v1/jobs", files={"file": (path.name, f)}, data={"options": json.dumps({"marks": "faces"})})
        res.raise_for_status()
        return res.json()["id"], time.perf_counter() - t

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        submitted = list(pool.map(one, range(n)))
    ids = [i for i, _ in submitted]
    latencies = sorted(l for _, l in submitted)
    done: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(done) < n and time.monotonic() < deadline:
        for job_id in ids:
            if job_id not in done:
                status = client.get(f"/v1/jobs/{job_id}").json()["status"]
                if status in ("succeeded", "failed", "cancelled"):
                    done[job_id] = status
        time.sleep(0.5)
    elapsed = time.perf_counter() - start
    ok = sum(1 for s in done.values() if s == "succeeded")
    return {"jobs": n, "succeeded": ok, "submit_median_ms": statistics.median(latencies) * 1000,
            "submit_max_ms": latencies[-1] * 1000, "seconds": elapsed, "jobs_per_min": ok / elapsed * 60}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900, help="seconds each batch may take")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="service-load-") as tmp:
        tmp = Path(tmp)
        photo, clip = make_media(tmp)
        (tmp / "keys").write_text(KEY + "\n")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "anonymize.service", "--data", str(tmp / "data"),
                                 "--port", str(port), "--keys", str(tmp / "keys"), "--workers", str(args.workers),
                                 "--log-level", "warning"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                  headers={"Authorization": f"Bearer {KEY}"},
                                  limits=httpx.Limits(max_connections=64))
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            threading.Thread(target=sample, daemon=True).start()
            rows = [("photos", run_batch(client, photo, args.photos, args.timeout)),
                    ("1 s clips", run_batch(client, clip, args.clips, args.timeout))]
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\nanonymize serve, --workers {args.workers}, {os.cpu_count()} CPU(s); options {{\"marks\": \"faces\"}}")
    print("| batch | jobs | succeeded | submit median ms | submit max ms | wall s | jobs/min |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['jobs']} | {r['succeeded']} | {r['submit_median_ms']:.0f} | {r['submit_max_ms']:.0f} "
              f"| {r['seconds']:.1f} | {r['jobs_per_min']:.1f} |")
    print(f"peak RSS, server + workers: {peak[0] / 2**20:.0f} MiB")
    return 0 if all(r["succeeded"] == r["jobs"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
