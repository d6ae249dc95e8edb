"""A folder of 200 mixed files, ``--jobs 2``, killed with SIGKILL at random moments and resumed.

Issue 5's target: the folder runs to completion with ``--jobs 2``, and after a ``kill -9`` at a
random moment a rerun finishes it with no file processed twice, none lost, none truncated.

The folder is made from the project's own sample media (``sample_media/crowd.jpg`` and
``crowd.mp4``; no shared data): photos cut from the still at seeded sizes and places (JPEG, PNG,
WebP), short video clips cut from the clip (MP4 and MOV, with audio), nested three levels deep
under names with spaces, accents, CJK and shell-unfriendly characters, plus text files the batch
must leave out. It is kept in ``--work`` and reused.

Then, with the real CLI (``python -m anonymize IN -o OUT --jobs 2 -q``, a new process each time):

1. one uninterrupted run: its time T and exit code; every output checked (below);
2. ``--kills`` trials, each into a fresh output folder: the CLI is sent SIGKILL (the CLI process
   alone, as ``kill -9 PID`` does) at a seeded uniform moment in (0.05 T, 0.95 T); then every file
   under a final name must be complete, no worker may outlive the CLI, and a plain rerun must
   finish the folder.

Checked after each finished folder: exactly one output per media input at its mirrored path, no
text file and no temporary file left; every photo decodes fully and every video has as many frames
as its input; in the manifest no input is ``done`` twice (nothing processed twice), the files
done before the kill were not redone and their outputs not rewritten (inode and mtime), and every
input is ``done`` (none lost). (Outputs are not compared byte for byte with the uninterrupted run:
the masks' noise is drawn afresh on every run.)

Usage::

    python bench/batch_kill.py [--files 200] [--kills 3] [--seed 0] [--work /tmp/anonymize-bench/batch]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anonymize import batch  # noqa: E402
from anonymize.ffmpeg_tools import ffmpeg_exe, probe  # noqa: E402
from anonymize.video import VideoDecoder  # noqa: E402

DIRS = ["", "2026-11-28 march", "2026-11-28 march/phone A (Ana)", "città/ñandú", "デモ/夜", "odd #1 & 'q'/[x]"]


def make_folder(root: Path, files: int, seed: int) -> list[str]:
    """The mixed input folder; returns the media files' relative paths. Reused when complete."""
    done = root / ".complete.json"
    if done.is_file() and json.loads(done.read_text())["files"] == files:
        return json.loads(done.read_text())["media"]
    rng = random.Random(seed)
    still = cv2.imread(str(ROOT / "sample_media" / "crowd.jpg"))
    clip = ROOT / "sample_media" / "crowd.mp4"
    media = []
    videos = max(files // 8, 1)
    for i in range(files):
        sub = root / rng.choice(DIRS)
        sub.mkdir(parents=True, exist_ok=True)
        if i < videos:
            name = f"clip {i:03d} {rng.choice(['é', 'ü', '—', ' '])}.{rng.choice(['mp4', 'mov'])}"
            start, length = rng.uniform(0, 3.0), rng.choice([0.5, 0.75, 1.0])
            width = rng.choice([320, 480, 640])
            subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-ss", f"{start:.2f}", "-i", str(clip), "-t", str(length),
                            "-vf", f"scale={width}:-2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                            str(sub / name)], check=True)
        else:
            w = rng.randint(320, 960)
            h = rng.randint(240, 720)
            x, y = rng.randint(0, still.shape[1] - w), rng.randint(0, still.shape[0] - h)
            ext = rng.choice(["jpg", "jpg", "png", "webp"])
            name = f"photo {i:03d}{rng.choice(['', ' (1)', '_final', ' ß'])}.{ext}"
            ok, data = cv2.imencode(f".{ext}", still[y:y + h, x:x + w])
            assert ok
            (sub / name).write_bytes(data.tobytes())
        media.append((sub / name).relative_to(root).as_posix())
        if i % 25 == 0:
            (sub / f"notes {i}.txt").write_text("not media: left out of the output\n")
    done.write_text(json.dumps({"files": files, "media": media}))
    return media


def frames(path: Path) -> int:
    dec = VideoDecoder(path, probe(path)).frames()
    try:
        return sum(1 for _ in dec)
    finally:
        dec.close()


@lru_cache(maxsize=None)
def input_frames(path: Path) -> int:
    """Frame count of an input video: inputs never change, so each is decoded once per bench run."""
    return frames(path)


def complete(path: Path, src: Path | None = None) -> bool:
    """Is this output whole: a photo that decodes fully, a video with its input's frame count?"""
    if batch.media_kind(path) == "photo":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
            return True
        except Exception:
            return False
    try:
        n = frames(path)
    except Exception:
        return False
    return n > 0 and (src is None or n == input_frames(src))


def outputs(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def alive_in_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def start(src: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "anonymize", str(src), "-o", str(out), "--jobs", "2", "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def check_finished(src: Path, out: Path, media: list[str], problems: list[str]) -> list[dict]:
    """The checks on a finished folder; returns the manifest."""
    got = outputs(out)
    if got != set(media):
        problems.append(f"outputs differ from inputs: missing {sorted(set(media) - got)[:5]}, "
                        f"extra {sorted(got - set(media))[:5]}")
    for rel in sorted(got & set(media)):
        if not complete(out / rel, src / rel):
            problems.append(f"incomplete output {rel}")
    records = batch.read_manifest(batch.manifest_path(out))
    done = [r["input"] for r in records if r["status"] == "done"]
    if len(done) != len(set(done)):
        problems.append(f"processed twice: {sorted({d for d in done if done.count(d) > 1})[:5]}")
    if set(done) != set(media):
        problems.append(f"not done: {sorted(set(media) - set(done))[:5]}")
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/anonymize-bench/batch"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    src = args.work / f"in-{args.files}-seed{args.seed}"
    media = make_folder(src, args.files, args.seed)
    kinds = {k: sum(batch.media_kind(Path(m)) == k for m in media) for k in ("photo", "video")}
    print(f"{len(media)} media files ({kinds['photo']} photos, {kinds['video']} videos) in {src}", flush=True)
    problems: list[str] = []
    full = args.work / "out-full"
    shutil.rmtree(full, ignore_errors=True)
    batch.manifest_path(full).unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = start(src, full)
    _, err = proc.communicate()
    total = time.monotonic() - t0
    print(f"uninterrupted: exit {proc.returncode}, {total:.0f} s ({total / len(media):.2f} s per file)", flush=True)
    if proc.returncode != 0:
        problems.append(f"uninterrupted run exit {proc.returncode}: {err.decode()[-500:]}")
    check_finished(src, full, media, problems)
    rng = random.Random(args.seed + 100)
    trials = []
    for k in range(args.kills):
        out = args.work / f"out-kill{k}"
        shutil.rmtree(out, ignore_errors=True)
        batch.manifest_path(out).unlink(missing_ok=True)
        at = rng.uniform(0.05, 0.95) * total
        proc = start(src, out)
        time.sleep(at)
        os.kill(proc.pid, signal.SIGKILL)  # the CLI alone, as `kill -9 PID`
        proc.wait(30)
        deadline = time.monotonic() + 20
        while alive_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = alive_in_group(proc.pid)
        if orphans:
            problems.append(f"kill {k}: workers outlived the CLI")
            os.killpg(proc.pid, signal.SIGKILL)
        before = batch.read_manifest(batch.manifest_path(out))
        done_before = {r["input"] for r in before if r["status"] == "done"}
        finals = {r for r in outputs(out) if not r.split("/")[-1].startswith(".")}
        partials = len(outputs(out)) - len(finals)
        truncated = [r for r in finals if not complete(out / r, src / r)]
        if truncated:
            problems.append(f"kill {k}: truncated under a final name: {truncated[:5]}")
        if not done_before <= finals:
            problems.append(f"kill {k}: done in the manifest but no output: {sorted(done_before - finals)[:5]}")
        stamp = stamps(out)
        t1 = time.monotonic()
        rerun = start(src, out)
        _, err = rerun.communicate()
        if rerun.returncode != 0:
            problems.append(f"kill {k}: rerun exit {rerun.returncode}: {err.decode()[-500:]}")
        records = check_finished(src, out, media, problems)
        redone = {r["input"] for r in records[len(before):] if r["status"] == "done"} & done_before
        if redone:
            problems.append(f"kill {k}: redone after resume: {sorted(redone)[:5]}")
        after = stamps(out)
        rewritten = [r for r in done_before if after.get(r) != stamp.get(r)]
        if rewritten:
            problems.append(f"kill {k}: outputs rewritten: {rewritten[:5]}")
        trial = {"kill_at_s": round(at, 1), "done_before_kill": len(done_before), "final_names_at_kill": len(finals),
                 "temporary_files_at_kill": partials, "truncated": len(truncated), "orphan_workers": orphans,
                 "rerun_s": round(time.monotonic() - t1, 1), "rerun_exit": rerun.returncode,
                 "redone": len(redone)}
        trials.append(trial)
        print(f"kill {k} at {at:.0f} s: {len(done_before)} done, {len(finals)} under final names, {partials} temporary, "
              f"{len(truncated)} truncated; rerun exit {rerun.returncode} in {trial['rerun_s']:.0f} s, "
              f"{len(redone)} redone", flush=True)
    print("\nproblems:" if problems else "\nno problems: every folder finished, nothing processed twice, lost or truncated")
    for line in problems:
        print("  " + line)
    if args.json:
        args.json.write_text(json.dumps({"files": len(media), **kinds, "uninterrupted_s": round(total, 1),
                                         "trials": trials, "problems": problems}, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
