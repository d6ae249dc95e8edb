"""The worker process: ``python -m anonymize.service.worker JOB_FOLDER PARENT_PID``.

Runs one job through :class:`anonymize.api.Anonymizer` exactly as the CLI does, and writes, in
the job's folder, ``output.EXT`` and ``report.json`` (each atomically, so a half-written file is
never under its final name), ``progress`` (a number 0..1, rewritten as frames go by) and, last,
``outcome.json``. Linux: it dies with its parent (PR_SET_PDEATHSIG), even after kill -9: the server,
or under ``--engine ray`` the Ray task that started it.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

SPEC = "spec.json"
OUTCOME = "outcome.json"
PROGRESS = "progress"


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(70)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean_error(text: str, folder: Path) -> str:
    """The library's message without the server's paths (the upload is "the upload")."""
    for p in sorted(folder.glob("upload*"), key=lambda p: -len(str(p))):
        text = text.replace(str(p), "the upload")
    return text.replace(str(folder) + os.sep, "").replace(str(folder), "the job folder")


def run(folder: Path) -> dict:
    """Run the job in ``folder``; returns the outcome (also written to ``outcome.json``)."""
    spec = json.loads((folder / SPEC).read_text())
    src = folder / spec["upload"]
    dst = folder / f"output{spec['ext']}"
    started = time.time()
    try:
        from anonymize.api import Anonymizer
        from anonymize.config import Options
        from anonymize.errors import AnonymizeError

        options = Options.from_mapping(spec["options"])
        total = None
        if spec["kind"] == "video":
            try:
                from anonymize.ffmpeg_tools import probe

                total = probe(src).estimated_frames()
            except Exception:
                total = None
        last, done = [0.0], [0]

        def on_frame(n: int) -> None:  # called with the number of frames just finished
            done[0] += n
            now = time.monotonic()
            if total and now - last[0] > 0.25:
                last[0] = now
                _write_atomic(folder / PROGRESS, f"{min(0.99, done[0] / total):.3f}")

        runner = Anonymizer(options)
        report = runner.file(src, dst, on_frame=on_frame) if spec["kind"] == "video" else runner.file(src, dst)
        report.input, report.output = "upload", f"output{spec['ext']}"
        runner.write_report(folder / "report.json", [report])
        outcome = {"status": "succeeded", "error": None, "bytes_out": dst.stat().st_size}
        _write_atomic(folder / PROGRESS, "1")
    except AnonymizeError as exc:
        outcome = {"status": "failed", "error": _clean_error(str(exc), folder), "code": exc.exit_code}
    except ValueError as exc:  # an option the table refuses (checked at submit too)
        outcome = {"status": "failed", "error": _clean_error(str(exc), folder), "code": 2}
    except Exception as exc:  # a bug: say what kind, never the traceback's paths
        if os.environ.get("ANONYMIZE_WORKER_DEBUG"):  # the server discards a worker's stderr
            import traceback

            traceback.print_exc()
        outcome = {"status": "failed", "error": f"internal error ({type(exc).__name__})", "code": 1}
    outcome["seconds"] = round(time.time() - started, 3)
    _write_atomic(folder / OUTCOME, json.dumps(outcome))
    return outcome


def main(argv: list[str]) -> int:
    folder, parent = Path(argv[0]), int(argv[1])
    _die_with_parent(parent)
    outcome = run(folder)
    return 0 if outcome["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
