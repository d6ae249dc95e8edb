"""``--engine``: Ray is imported only when asked for, a missing Ray is a clear exit 2, and the
engine rows are checked like every option. Runs without Ray installed (tests/test_ray.py needs it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

from anonymize.config import RUN_OPTIONS

ROOT = Path(__file__).resolve().parents[1]


def _folder(tmp_path: Path, astronaut_bgr) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.jpg"), cv2.resize(astronaut_bgr, (96, 96)))
    return src


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_ray_is_not_imported_by_a_local_run(tmp_path, astronaut_bgr):
    src = _folder(tmp_path, astronaut_bgr)
    proc = _run(f"import sys; from anonymize.cli import main; rc = main([{str(src)!r}, '-o', "
                f"{str(tmp_path / 'out')!r}, '-q']); print(rc, 'ray' in sys.modules)")
    assert proc.stdout.split() == ["0", "False"], proc.stderr[-2000:]


def test_missing_ray_is_a_clear_exit_2(tmp_path, astronaut_bgr):
    """As if Ray were not installed (``sys.modules['ray'] = None`` makes ``import ray`` fail)."""
    src = _folder(tmp_path, astronaut_bgr)
    out = tmp_path / "out"
    proc = _run(f"import sys; sys.modules['ray'] = None; from anonymize.cli import main; "
                f"sys.exit(main([{str(src)!r}, '-o', {str(out)!r}, '--engine', 'ray', '-q']))")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'needs Ray, which is not installed: pip install "anonymize-protest[ray]"' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(out.rglob("*.jpg"))  # nothing was processed


def test_engine_flags_are_checked(tmp_path, astronaut_bgr, capsys):
    from anonymize.cli import main

    src = _folder(tmp_path, astronaut_bgr)
    assert main([str(src), "-o", str(tmp_path / "o"), "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err
    assert main([str(src), "-o", str(tmp_path / "o"), "--engine", "spark"]) == 2
    assert "invalid choice: 'spark'" in capsys.readouterr().err
    assert RUN_OPTIONS["engine"].default == "local" and RUN_OPTIONS["engine"].choices == ("local", "ray")
    help_text = subprocess.run([sys.executable, "-m", "anonymize", "--help"], cwd=ROOT, capture_output=True,
                               text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout
    assert "--engine {local,ray}" in help_text and "--ray-address ADDR" in help_text
