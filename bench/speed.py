"""Speed and memory: this project's default against a bare ffmpeg transcode and deface 1.5.0.

    python bench/speed.py [--seconds 30] [--runs 3] [--deface-runs 1] [--4k [--4k-seconds 10]] [--photos 30]
    python bench/speed.py --seconds 0 --4k --4k-seconds 2 --runs 1 --deface-runs 0 --photos 0   # 4K only
    python bench/speed.py --seconds 4 --runs 1 --photos 0 --no-marks-row --also "--device cpu"   # issue 20's run

The test clip is 1080p 30 fps with faces and an audio track, made by the shared
``eval/tools/make_video.py`` from a WIDER crowd photo (cached under /tmp/anonymize-bench/speed),
or, without ``../shared``, from the bundled ``sample_media/crowd.mp4`` looped and upscaled.
Rows (medians over ``--runs``):

* ``ffmpeg`` - the floor: a bare transcode at exactly our encoder settings (libx264, the
  ``balanced`` preset's x264 preset and CRF, video only, since we drop audio by default);
* ``anonymize`` - our CLI at its defaults (``anonymize IN -o OUT -q``; marks faces,heads,plates,text);
* ``anonymize --marks faces`` - faces only, to price the other default marks (``--no-marks-row``: skip);
* ``deface`` - deface 1.5.0's CLI with ``--keep-audio`` (its defaults otherwise);
* ``anonymize@COMMIT`` - this project's CLI at its defaults as it was at ``--baseline COMMIT``
  (default 3ecb8c4, the commit before the speed issue 20): its files (``git archive``) in
  /tmp run with ``PYTHONPATH`` pointing at it, in the same venv, so each speed-up is a ratio
  measured in one run (``--baseline ''``: no such row; repeatable: ``--baseline 3ecb8c4
  --baseline main`` adds a row for each, e.g. a branch's speed-up over main next to issue 20's);
* ``--also FLAGS`` - our CLI with other flags, e.g. the opt-in int8 detector (repeatable).

Runs go round-robin (run 1 of every tool, then run 2, ...). Besides wall time each row has CPU
seconds (user + system of the tool and the ffmpeg processes it waits for): on a machine shared
with other jobs the wall time of a tool depends on when it ran, its CPU seconds much less, so
"deface / this (CPU)" is the fairer ratio there.

Peak memory is the largest sum of RSS over the process tree (the tool and its ffmpeg children),
sampled every 50 ms. Photos: seconds per 1080p photo through the warm API, full-quality detection.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EVAL = ROOT.parent / "shared" / "eval"
CACHE = Path("/tmp/anonymize-bench/speed")
CLIP_PHOTO = "2--Demonstration/2_Demonstration_Demonstration_Or_Protest_2_476.jpg"


def ffmpeg() -> str:
    from anonymize.ffmpeg_tools import ffmpeg_exe

    return ffmpeg_exe()


def make_clip(size: str, seconds: float) -> Path:
    """A clip with faces and audio at ``size`` (WxH), 30 fps, cached between runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"clip_{size}_{seconds:g}s.mp4"
    if out.exists():
        return out
    silent = CACHE / f"silent_{size}_{seconds:g}s.mp4"
    if (EVAL / "tools" / "make_video.py").exists():
        subprocess.run([sys.executable, str(EVAL / "tools" / "make_video.py"), str(EVAL / "widerface" / "gt.txt"),
                        str(EVAL / "widerface" / "images"), CLIP_PHOTO, str(silent), "--size", size,
                        "--seconds", str(seconds), "--fps", "30", "--crf", "20"], check=True)
    else:
        w, h = size.split("x")
        subprocess.run([ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(ROOT / "sample_media" / "crowd.mp4"),
                        "-t", str(seconds), "-an", "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-crf", "20",
                        str(silent)], check=True)
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(silent), "-f", "lavfi", "-t", str(seconds), "-i",
                    "anoisesrc=color=pink:amplitude=0.1:sample_rate=48000", "-map", "0:v", "-map", "1:a",
                    "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)], check=True)
    return out


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """Wall seconds, peak tree RSS (bytes) and CPU seconds (user + system, the command and every
    child it waited for, e.g. its ffmpeg processes) of one command. CPU seconds barely move when
    other jobs load the machine, so they compare tools run at different moments more fairly."""
    peak = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    done.set()
    t.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode(errors='replace')[-800:]}")
    return wall, peak, cpu


def frame_count(path: Path) -> int:
    from anonymize.ffmpeg_tools import probe

    return probe(path).estimated_frames() or 0


def baseline_tree(commit: str) -> Path:
    """The files of ``commit`` of this repository under /tmp (``git archive``, made once; unlike a
    worktree it leaves no trace in the repository). A branch name is resolved to its commit first."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], check=True,
                            capture_output=True, text=True).stdout.strip()
    out = CACHE.parent / f"baseline-{commit}"
    if not (out / "anonymize" / "__init__.py").is_file():
        out.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    return out


def video_rows(clip: Path, runs: int, deface_runs: int, work: Path, marks_row: bool = True,
               also: list[str] = (), baseline: list[str] = ()) -> list[dict]:
    from anonymize.video import QUALITY

    preset, crf = QUALITY["balanced"]
    frames = frame_count(clip)
    envs: dict[str, dict] = {}
    tools = {
        "ffmpeg": ([ffmpeg(), "-v", "error", "-y", "-i", str(clip), "-map", "0:V:0", "-c:v", "libx264",
                    "-preset", preset, "-crf", str(crf), str(work / "ffmpeg.mp4")], runs),
        "anonymize": ([sys.executable, "-m", "anonymize", str(clip), "-o", str(work / "ours.mp4"), "-y", "-q"], runs),
        # the cost of the default marks (heads, plates, text) on top of faces
        "anonymize --marks faces": ([sys.executable, "-m", "anonymize", str(clip), "-o", str(work / "faces.mp4"),
                                     "-y", "-q", "--marks", "faces"], runs if marks_row else 0),
        "deface": ([str(Path(sys.executable).with_name("deface")), str(clip), "-o", str(work / "deface.mp4"),
                    "--keep-audio"], deface_runs),
    }
    for k, commit in enumerate(c for c in baseline if c):  # the project before the speed work, same venv, flags
        tools[f"anonymize@{commit}"] = ([sys.executable, "-m", "anonymize", str(clip), "-o",
                                         str(work / f"base{k}.mp4"), "-y", "-q"], runs)
        envs[f"anonymize@{commit}"] = dict(os.environ, PYTHONPATH=str(baseline_tree(commit)))
    for k, flags in enumerate(also):  # --also: our CLI with other flags, e.g. the int8 detector
        tools[f"anonymize {flags}"] = ([sys.executable, "-m", "anonymize", str(clip), "-o", str(work / f"also{k}.mp4"),
                                        "-y", "-q", *flags.split()], runs)
    # round-robin (run 1 of every tool, then run 2, ...) so that a change in the machine's other
    # load during the benchmark falls on every tool alike
    samples: dict[str, list] = {name: [] for name, (_, n) in tools.items() if n > 0}
    for i in range(max(n for _, n in tools.values())):
        for name, (cmd, n) in tools.items():
            if i < n:
                samples[name].append(timed(cmd, envs.get(name)))
                print(f"  {name} run {i + 1}: {samples[name][-1][0]:.1f} s wall, {samples[name][-1][2]:.1f} s CPU",
                      flush=True)
    rows = []
    for name, got in samples.items():
        wall = statistics.median(s[0] for s in got)
        cpu = statistics.median(s[2] for s in got)
        rows.append({"tool": name, "clip": clip.name, "frames": frames, "runs": len(got), "seconds": round(wall, 2),
                     "fps": round(frames / wall, 2), "cpu_s": round(cpu, 1),
                     "peak_mb": round(max(s[1] for s in got) / 2**20)})
        print(json.dumps(rows[-1]), flush=True)
    base = {r["tool"]: r for r in rows}
    for r in rows:
        r["x_ffmpeg"] = round(r["seconds"] / base["ffmpeg"]["seconds"], 2) if "ffmpeg" in base else None
        r["deface_x_slower"] = round(base["deface"]["seconds"] / r["seconds"], 2) if "deface" in base else None
        r["deface_x_cpu"] = round(base["deface"]["cpu_s"] / r["cpu_s"], 2) if "deface" in base else None
        old = base.get(f"anonymize@{baseline[0]}") if baseline and baseline[0] else None
        r["baseline_x"] = round(old["seconds"] / r["seconds"], 2) if old else None
    return rows


def looped_clip(seconds: float) -> Path:
    """The bundled sample clip (a few faces, made by this project) scaled to 1080p once and then
    looped by stream copy (so long clips are made in seconds) to ``seconds``."""
    CACHE.mkdir(parents=True, exist_ok=True)
    base = CACHE / "sample_1920x1080.mp4"
    if not base.exists():
        subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(ROOT / "sample_media" / "crowd.mp4"), "-an",
                        "-vf", "scale=1920:1080", "-c:v", "libx264", "-crf", "20", "-g", "30", str(base)], check=True)
    out = CACHE / f"loop_1920x1080_{seconds:g}s.mp4"
    if not out.exists():
        subprocess.run([ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(base), "-t", str(seconds),
                        "-c", "copy", str(out)], check=True)
    return out


def memory_rows(lengths: list[float], extra: list[str], work: Path) -> list[dict]:
    """Peak memory of our CLI on the same 1080p clip looped to each length: it must not grow.

    ``extra`` are CLI flags that shorten the run (e.g. ``--detect-scale 0.25``): the frame
    buffers, queues and encoder are the same at any detection scale, and what could grow with
    the length of a video (tracker state, the report's frame records, queued frames) is
    exercised the same way."""
    rows = []
    for seconds in lengths:
        clip = looped_clip(seconds)
        wall, peak, cpu = timed([sys.executable, "-m", "anonymize", str(clip), "-o", str(work / "mem.mp4"), "-y", "-q",
                                 "--report", str(work / "mem.json"), *extra])
        frames = frame_count(clip)
        rows.append({"tool": "anonymize " + " ".join(extra), "clip": clip.name, "frames": frames,
                     "seconds": round(wall, 1), "fps": round(frames / wall, 2), "cpu_s": round(cpu, 1), "peak_mb": round(peak / 2**20)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def photo_rows(n: int, work: Path, **options) -> list[dict]:
    """Seconds per photo, each resized to 1920x1080, through one warm Anonymizer(**options)."""
    import cv2

    from anonymize import Anonymizer

    if not (EVAL / "widerface").exists():
        return []
    names = sorted(p for p in (EVAL / "widerface" / "images").rglob("*.jpg"))[:: max(1, 580 // max(n, 1))][:n]
    paths = []
    for i, p in enumerate(names):
        dst = work / f"p{i}.jpg"
        cv2.imwrite(str(dst), cv2.resize(cv2.imread(str(p)), (1920, 1080)))
        paths.append(dst)
    runner = Anonymizer(**options)
    runner.file(paths[0], work / "warm.jpg")
    times = []
    for i, p in enumerate(paths):
        t = time.perf_counter()
        runner.file(p, work / f"o{i}.jpg")
        times.append(time.perf_counter() - t)
    row = {"tool": "anonymize " + " ".join(f"--{k} {v}" for k, v in options.items()), "photos": len(times), "size": "1920x1080",
           "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
    print(json.dumps(row), flush=True)
    return [row]


def markdown(rows: list[dict]) -> str:
    out = ["| clip | tool | fps | seconds | CPU s | x bare ffmpeg | deface / this (wall) | deface / this (CPU) "
           "| baseline / this (wall) | x faces only | peak MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    faces = {r["clip"]: r["seconds"] for r in rows if r["tool"] == "anonymize --marks faces"}
    for r in rows:
        ratio = round(r["seconds"] / faces[r["clip"]], 2) if r["clip"] in faces and r["tool"] == "anonymize" else ""
        out.append(f"| {r['clip']} | {r['tool']} | {r['fps']} | {r['seconds']} | {r['cpu_s']} | {r.get('x_ffmpeg', '')} | "
                   f"{r.get('deface_x_slower') or ''} | {r.get('deface_x_cpu') or ''} | {r.get('baseline_x') or ''} | {ratio} | "
                   f"{r['peak_mb']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--deface-runs", type=int, default=1)
    ap.add_argument("--4k", dest="uhd", action="store_true", help="also a 3840x2160 clip")
    ap.add_argument("--4k-seconds", dest="uhd_seconds", type=float, default=10, help="length of the 4K clip")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--memory", type=lambda t: [float(x) for x in t.split(",")], default=[],
                    help="clip lengths in seconds (e.g. 30,300): peak memory of our CLI on the bundled sample "
                         "clip, scaled to 1080p and looped to each length (see --memory-args)")
    ap.add_argument("--memory-args", default="--marks faces --detect-scale 0.25 --quality fast",
                    help="CLI flags for the --memory runs (default: %(default)s, to keep long clips quick)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-marks-row", dest="marks_row", action="store_false")
    ap.add_argument("--also", action="append", default=[], metavar="FLAGS",
                    help="another video row: our CLI with these flags (repeatable), e.g. "
                         "'--marks faces --detector centerface-int8 --threshold 0.08'")
    ap.add_argument("--photo-also", action="append", default=[], metavar="K=V,...",
                    help="another photo row with these Anonymizer options, e.g. "
                         "photo_detector=centerface-tta-int8,marks=faces")
    ap.add_argument("--baseline", action="append", default=None, metavar="COMMIT",
                    help="also run this project as of COMMIT (git archive under /tmp; repeatable, e.g. "
                         "--baseline 3ecb8c4 --baseline main; the 'baseline / this' ratio is to the first; "
                         "default 3ecb8c4, the commit before issue 20); '' for none")
    ap.add_argument("--no-video", dest="video", action="store_false", help="photos only")
    a = ap.parse_args()
    a.baseline = ["3ecb8c4"] if a.baseline is None else a.baseline
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = []
        if a.video and a.seconds > 0:  # --seconds 0: skip the 1080p clip (e.g. 4K only)
            rows += video_rows(make_clip("1920x1080", a.seconds), a.runs, a.deface_runs, work, a.marks_row, a.also,
                              a.baseline)
        if a.uhd and a.video:
            rows += video_rows(make_clip("3840x2160", a.uhd_seconds), a.runs, a.deface_runs, work, a.marks_row, a.also,
                              a.baseline)
        if a.memory:
            rows += memory_rows(a.memory, a.memory_args.split(), work)
        photos = (photo_rows(a.photos, work) + photo_rows(a.photos, work, marks="faces")) if a.photos else []
        for spec in a.photo_also if a.photos else []:  # e.g. photo_detector=centerface-tta-int8,marks=faces
            photos += photo_rows(a.photos, work, **dict(kv.split("=", 1) for kv in spec.split(",")))
    print(markdown(rows))
    print(f"load average after: {os.getloadavg()}")
    if a.json:
        a.json.write_text(json.dumps({"video": rows, "photos": photos}, indent=1))


if __name__ == "__main__":
    main()
