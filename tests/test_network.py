"""Nothing leaves the machine: real video and photo jobs run with no network and under strace.

Each job runs as a subprocess (``python -m anonymize``) inside a network namespace with no
interface (``unshare -n``) and under ``strace -f -e trace=%network,execve``, with HOME and TMPDIR in
tmp_path and without ``ORT_DISABLE_TELEMETRY`` in its environment (the switch must come from our
code, see anonymize/offline.py). The job must succeed, open no socket other than AF_UNIX, connect
or send to nothing else, look up no name, and leave no telemetry store (onnxruntime's
``~/.cache/Microsoft`` and ``$TMPDIR/.ses``). Skipped where strace or unshare are not available
(.ci/run installs strace).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import face_clip

REPO = Path(__file__).resolve().parents[1]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = [
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)"),
    pytest.mark.skipif(not _unshare_works(), reason="unshare -n (a network namespace) is not permitted here"),
]

#: Address families a socket may have: local IPC only (AF_UNIX; AF_NETLINK is the kernel's
#: interface list, which glibc reads without touching the network).
_LOCAL = ("AF_UNIX", "AF_LOCAL", "AF_NETLINK")


def network_findings(trace: str) -> list[str]:
    """The lines of an ``strace -e trace=network`` log that touch the network: a socket of another
    family than :data:`_LOCAL`, a connect/sendto/sendmsg/bind to a non-local address, any traffic
    to port 53 (a DNS lookup)."""
    found = []
    for line in trace.splitlines():
        m = re.search(r"\b(socket|socketpair)\((AF_\w+|PF_\w+)", line)
        if m and m.group(2).replace("PF_", "AF_") not in _LOCAL:
            found.append(line)
            continue
        m = re.search(r"\b(connect|sendto|sendmsg|sendmmsg|bind)\(", line)
        if m:
            fams = re.findall(r"sa_family=(AF_\w+)", line)
            if any(f not in _LOCAL for f in fams) or "htons(53)" in line:
                found.append(line)
    return found


def test_findings_parser_sees_the_telemetry_lookup():
    """The parser flags what onnxruntime's telemetry did before anonymize/offline.py (lines from
    a real trace) and passes local sockets."""
    leak = [
        '4360  socket(AF_INET6, SOCK_DGRAM, IPPROTO_IP) = 11',
        '4361  connect(11, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '4361  sendto(11, "\\23+\\1\\0\\0\\1\\0\\0\\0\\0\\0\\0\\6mobile\\6events\\4data\\t"..., 50, MSG_NOSIGNAL, NULL, 0) = 50',
    ]
    local = ['4361  socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, 0) = 11',
             '4361  connect(11, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT']
    assert network_findings("\n".join(leak + local)) == leak[:2]


def _run_offline(tmp_path: Path, src: Path, dst: Path, *extra: str) -> tuple[str, Path, Path]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    # CI=true (and TF_BUILD, JENKINS_URL) switch OpenVINO's telemetry off by themselves: a user's
    # machine has none of them, so neither does the run under test
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORT_") and k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    trace = tmp_path / "strace.txt"
    cmd = ["unshare", "-n", "strace", "-f", "-qq", "-e", "trace=%network,execve", "-e", "signal=none", "-o", str(trace),
           sys.executable, "-m", "anonymize", "-q", str(src), "-o", str(dst), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dst.is_file() and dst.stat().st_size > 0
    return trace.read_text(errors="replace"), home, tmp


@pytest.mark.parametrize("kind", ["video", "photo"])
def test_a_real_job_touches_no_network(tmp_path: Path, kind: str, face_png: Path):
    if kind == "video":
        # 3 s, so that a telemetry client started at import has time to look its server up
        src, dst = face_clip(tmp_path, seconds=3.0), tmp_path / "out" / "face.mp4"
    else:
        src, dst = face_png, tmp_path / "out" / "face.png"
    trace, home, tmp = _run_offline(tmp_path, src, dst)
    # strace saw the run, and followed its children (the ffmpeg that decodes and encodes)
    assert "execve(" in trace and (kind == "photo" or re.search(r'execve\("[^"]*ffmpeg', trace)), trace[:2000]
    assert network_findings(trace) == []
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))
    assert not (tmp / ".ses").exists()


def test_openvino_touches_no_network(tmp_path: Path, face_png: Path):
    """``import openvino`` starts OpenVINO's telemetry (a client id under ~/intel, a name lookup)
    unless anonymize/offline.py has blocked it: a photo job on --device openvino, offline."""
    pytest.importorskip("openvino")
    dst = tmp_path / "out" / "face.png"
    trace, home, tmp = _run_offline(tmp_path, face_png, dst, "--device", "openvino")
    assert network_findings(trace) == []
    assert not (home / "intel").exists(), sorted(str(p) for p in home.rglob("*"))
