"""``--engine ray`` on real files: a private local Ray gives the same regions as ``--engine local``;
a loopback cluster started with ``ray start --head`` survives a busy worker killed with SIGKILL
(exit 0, every file done exactly once in the manifest, no partial file). Skipped without Ray."""
from __future__ import annotations

import contextlib
import json
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
import pytest

ray = pytest.importorskip("ray")

from anonymize import batch, ray_cluster  # noqa: E402
from anonymize.cli import main as cli_main  # noqa: E402
from anonymize.errors import InputError  # noqa: E402

from .conftest import face_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTIAL = re.compile(r"\.partial")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, astronaut_bgr) -> Path:
    """A nested folder: five small photos (two levels deep) and one short video."""
    root = tmp_path_factory.mktemp("ray") / "in"
    small = cv2.resize(astronaut_bgr, (160, 160), interpolation=cv2.INTER_AREA)
    for i, rel in enumerate(["a.jpg", "b.png", "day1/c.jpg", "day1/d.jpg", "day1/deep/e.jpg"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(path.suffix, np.roll(small, i * 7, axis=1))
        assert ok
        path.write_bytes(data.tobytes())
    clip = face_clip(tmp_path_factory.mktemp("clip"), "v.mp4", size="192x108", seconds=0.6, audio=False)
    (root / "day1" / "v.mp4").write_bytes(clip.read_bytes())
    return root


def regions(report: Path) -> dict[str, list]:
    """Per input (relative to the folder): every frame's regions, as (kind, x, y, w, h) rounded."""
    data = json.loads(report.read_text())
    out = {}
    for f in data["files"]:
        assert f["status"] == "ok", f
        rel = Path(f["input"]).as_posix().split("/in/", 1)[1]
        out[rel] = [[(r["kind"], round(r["x"], 1), round(r["y"], 1), round(r["w"], 1), round(r["h"], 1))
                     for r in fr["regions"]] for fr in f["frames"]]
    return out


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if PARTIAL.search(p.name)]


def test_local_ray_same_as_local(mixed, tmp_path, capsys):
    """A private Ray on this machine (num_cpus=2): same outputs, same regions, same summary as
    --engine local; a path a node cannot see is refused by the check every node runs."""
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    # one backend for both: with auto, a process runs a picture size it has seen before on OpenVINO
    # bf16 and a first one on onnxruntime, so regions would depend on which files each worker had
    cpu = ["--device", "cpu"]
    assert cli_main([str(mixed), "-o", str(local), "-q", *cpu, "--report", str(tmp_path / "l.json")]) == 0
    err_local = capsys.readouterr().err
    try:
        # ray.init(num_cpus=2) here; the run below uses it (and shuts it down when it ends)
        ray_cluster.connect(None, num_cpus=2)
        assert ray.cluster_resources()["CPU"] == 2
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]  # loopback only
        # lean: the raylet's agents are the stand-ins, Ray's own are not started
        ours = [p for p in _ray_processes(b"") if _descends_from(p, {os.getpid()})]
        argvs = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in ours]
        assert not [a for a in argvs if b"Agent" in a[0] or any(x.endswith(b"agent.py") for x in a[:3])], argvs
        stubs = [p for p, a in zip(ours, argvs) if len(a) > 3 and a[3].endswith(b"ray_agent_stub.py")]
        assert len(stubs) == 2, argvs
        for on_nodes in (None, True):  # the private cluster's check runs here; the tasks' answer is the same
            ray_cluster.check_paths([str(mixed)], [str(tmp_path)], on_nodes=on_nodes)  # every node sees these
            with pytest.raises(InputError, match="node 127.0.0.1: cannot see .*gone.*shared mount"):
                ray_cluster.check_paths([str(tmp_path / "gone")], [str(tmp_path)], on_nodes=on_nodes)
        assert cli_main([str(mixed), "-o", str(on_ray), "-q", *cpu, "--engine", "ray", "--jobs", "2",
                         "--report", str(tmp_path / "r.json")]) == 0
        err_ray = capsys.readouterr().err
        assert ray.is_initialized()  # the caller's ray.init stays the caller's
        want = regions(tmp_path / "l.json")
        assert len(want) == 6 and sum(len(v) for v in want.values()) > 6  # the video has several frames
        assert regions(tmp_path / "r.json") == want
        assert json.loads((tmp_path / "r.json").read_text())["models"]  # the workers' models are named
        summary = [ln for ln in err_ray.splitlines() if " done, " in ln]
        assert summary and summary[0].split(", ")[:4] == \
            [ln for ln in err_local.splitlines() if " done, " in ln][0].split(", ")[:4]
        files = sorted(p.relative_to(on_ray).as_posix() for p in on_ray.rglob("*") if p.is_file())
        assert files == sorted(want)
        recs = batch.read_manifest(batch.manifest_path(on_ray))
        assert sorted(r["input"] for r in recs) == sorted(want) and {r["status"] for r in recs} == {"done"}
        # the service's RayExecutor (anonymize serve --engine ray) runs an upload's job on the same Ray
        from anonymize.service.executor import JobSpec, RayExecutor

        job = tmp_path / "data" / "jobs" / "j1"
        job.mkdir(parents=True)
        (job / "upload.jpg").write_bytes((mixed / "a.jpg").read_bytes())
        (job / "spec.json").write_text(json.dumps({"upload": "upload.jpg", "ext": ".jpg", "kind": "photo",
                                                   "options": {"mask": "solid"}}))
        executor = RayExecutor(tmp_path / "data")
        outcome = executor.submit(JobSpec("j1", job))
        assert outcome.status == "succeeded", outcome
        assert (job / "output.jpg").stat().st_size == outcome.bytes_out > 0
        assert json.loads((job / "report.json").read_text())["files"][0]["region_count"] > 0
        executor.shutdown()
        assert ray.is_initialized()  # not the executor's to stop
        ray.shutdown()
        deadline = time.monotonic() + 10  # the stand-ins end with the raylet
        while [p for p in stubs if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in stubs if Path(f"/proc/{p}").exists() and b"ray_agent_stub" in
                    Path(f"/proc/{p}/cmdline").read_bytes()]
        # a rerun (its own private Ray, shut down when it ends) skips everything, as with --engine local
        assert cli_main([str(mixed), "-o", str(on_ray), "-q", *cpu, "--engine", "ray", "--jobs", "2"]) == 0
        assert "0 done, 6 skipped as already done" in capsys.readouterr().err
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_agent_stub_writes_the_ports_and_ends_with_its_parent(tmp_path):
    """The raylet's agents of a private Ray (anonymize/ray_agent_stub.py, standard library only):
    the dashboard stand-in writes -1 ("not in use") for its three ports, the runtime-env one a
    bound loopback port that refuses connections; each ends when its stdin (the raylet's pipe) closes."""
    stub = ROOT / "anonymize" / "ray_agent_stub.py"
    node = "ab" * 28
    procs = {kind: subprocess.Popen([sys.executable, "-I", "-S", str(stub), kind, f"--session-dir={tmp_path}",
                                     f"--node-id={node}", "--runtime-env-agent-port=0"], stdin=subprocess.PIPE)
             for kind in ("dashboard", "runtime_env")}
    want = ["dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port", "runtime_env_agent_port"]
    deadline = time.monotonic() + 20
    while sorted(p.name.rsplit("_", 1)[0] for p in tmp_path.iterdir()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    ports = {p.name.rsplit("_", 1)[0]: int(p.read_text()) for p in tmp_path.iterdir()}
    assert sorted(ports) == want and all(p.name.endswith(node) for p in tmp_path.iterdir())
    assert [ports[n] for n in want[:3]] == [-1, -1, -1] and ports["runtime_env_agent_port"] > 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", ports["runtime_env_agent_port"])) != 0  # bound, never listening
    assert all(p.poll() is None for p in procs.values())  # alive while the "raylet" is
    for p in procs.values():
        p.stdin.close()
        assert p.wait(10) == 0
    assert subprocess.run([sys.executable, "-I", "-S", str(stub), "dashboard"], capture_output=True).returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_processes(title: bytes) -> list[int]:
    """Processes whose command line starts with ``title`` (Ray titles its workers ``ray::...``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "cmdline").read_bytes().startswith(title):
                    pids.append(int(d.name))
    return pids


def _busy_workers() -> list[int]:
    """Ray worker processes running a file now (Ray titles them ``ray::_ray_job`` while they do)."""
    return _ray_processes(b"ray::_ray_job")


def _all_ray_workers() -> list[int]:
    """Every Ray worker process (busy or idle: ``ray::`` titles)."""
    return _ray_processes(b"ray::")


def _busy_worker(run: subprocess.Popen, timeout: float, accept=lambda pid: True) -> int | None:
    """A Ray worker that ``accept`` takes and that has been inside a file for 0.3 s (models loading
    or masking), while ``run`` runs; None when none is seen within ``timeout`` seconds."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        now = time.monotonic()
        for pid in _busy_workers():
            seen.setdefault(pid, now)
            if now - seen[pid] >= 0.3 and accept(pid):
                return pid
        time.sleep(0.05)
    return None


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Until something listens on 127.0.0.1:``port``; fails when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, f"{what}: ray start exited"
        time.sleep(0.5)
    pytest.fail(f"{what} did not start within {timeout:.0f} s")


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster on loopback, in its own process group and temp folder (stopped by
    killing that group: ``ray stop`` would stop every Ray of this user on the machine)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rayt-", dir="/tmp")  # short: Ray's socket paths must be < 108 chars
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token")  # what a user of a token-auth cluster (Ray's default) sets
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set by our private Ray of the test before
    proc = _start_node(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false"], env, temp)
    try:
        _wait_for_port(port, proc, 90, "the Ray head")
        yield f"127.0.0.1:{port}", env
    finally:
        _stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_sigterm_stops_a_ray_run_cleanly(mixed, tmp_path, cluster):
    """SIGTERM to the driver mid-file: the tasks are cancelled, exit 143 with the summary, as with
    --engine local (Ray's own SIGTERM handler, sys.exit(15), must not replace ours); nothing partial."""
    address, env = cluster
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "anonymize", str(mixed), "-o", str(out), "-q", "--engine", "ray",
                            "--ray-address", address], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 120
    while not _busy_workers() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before a worker was busy"
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr  # not 134: no ray.cancel racing a completing task (see RayEngine.shutdown)
    assert "stopped (SIGTERM); no unfinished file was left" in stderr and " done, " in stderr
    assert "Check failed" not in stderr
    assert not partials(out) and not partials(out.parent)  # no temporary file left
    assert_consistent(out)


def assert_consistent(out: Path) -> None:
    """The manifest and the output folder agree: each record once and done, its output there with
    the recorded hash; every file under a final name is complete (decodes to the last frame)."""
    recs = batch.read_manifest(batch.manifest_path(out))
    assert all(r["status"] == "done" for r in recs) and len(recs) == len({r["input"] for r in recs})
    for r in recs:
        assert batch.sha256_file(out / r["output"]) == r["output_sha256"], r
    for path in (p for p in out.rglob("*") if p.is_file() and p != batch.manifest_path(out)):
        if path.suffix == ".mp4":
            cap = cv2.VideoCapture(str(path))
            frames = 0
            while cap.read()[0]:
                frames += 1
            cap.release()
            assert frames > 1, path  # a video cut short would not open or hold one frame
        else:
            assert cv2.imread(str(path)) is not None, path


def test_cluster_survives_a_killed_worker(mixed, tmp_path, cluster):
    """--ray-address of a loopback cluster; a busy worker SIGKILLed mid-file: its task is retried,
    the run ends with exit 0, every file is done exactly once in the manifest, nothing partial."""
    address, env = cluster
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anonymize", str(mixed), "-o", str(out), "-q", "--engine", "ray",
           "--ray-address", address]
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _busy_worker(run, 120)
    if killed is not None:
        os.kill(killed, signal.SIGKILL)
    try:
        stdout, stderr = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        run.kill()
        raise
    assert killed is not None, "no busy Ray worker was seen"
    assert run.returncode == 0, stderr
    recs = batch.read_manifest(batch.manifest_path(out))
    inputs = [r["input"] for r in recs]
    assert sorted(inputs) == sorted(set(inputs)) and len(inputs) == 6, inputs  # each file once
    assert {r["status"] for r in recs} == {"done"}
    assert not partials(out) and not partials(out.parent)
    assert "6 done, 0 skipped as already done, 0 failed" in stderr


_LOOPBACK_ADDR = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "(::1|::ffff:127\.)')


def outside_findings(trace: str) -> list[str]:
    """Lines of an strace log (``trace=%network``) that reach past loopback: a connect, bind or
    send to an IPv4/IPv6 address other than 127.x / ::1, or anything to port 53 (DNS). Ray talks
    gRPC over loopback TCP, so internet-family sockets themselves are allowed here."""
    found = []
    for line in trace.splitlines():
        if not re.search(r"\b(connect|sendto|sendmsg|sendmmsg|bind)\(", line):
            continue
        if "htons(53)" in line:
            found.append(line)
        elif re.search(r"sa_family=AF_INET6?\b", line) and not _LOOPBACK_ADDR.search(line):
            found.append(line)
    return found


def test_outside_findings_parser():
    assert outside_findings('1 connect(23, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("169.254.169.254")}, 16)')
    assert outside_findings('1 connect(23, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}, 16)')
    assert not outside_findings('1 connect(5, {sa_family=AF_INET6, sin6_port=htons(4), inet_pton(AF_INET6, "::ffff:127.0.0.1", &a)}')
    assert not outside_findings('1 bind(5, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("127.0.0.1")}, 16)')


def test_private_ray_stays_on_loopback(tmp_path, mixed):
    """A real photo job with --engine ray (a private Ray) in a network namespace with only loopback,
    under strace -f: every address Ray's processes connect, bind or send to is loopback; no DNS,
    no cloud-metadata probe (Ray's dashboard process asks 169.254.169.254 unless kept from it)."""
    from .test_network import _unshare_works

    if shutil.which("strace") is None or shutil.which("ip") is None or not _unshare_works():
        pytest.skip("needs strace, ip and unshare -n")
    home = tmp_path / "home"
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="rayn-", dir="/tmp"))  # short: Ray's socket paths must be < 108 chars
    trace = tmp_path / "trace.txt"
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "http_proxy", "https_proxy", "no_proxy"):
        env.pop(k, None)  # what a user's shell has: nothing of ours
    cmd = (f"ip link set lo up && exec strace -f -qq -e trace=%network -e signal=none -o {trace} "
           f"{sys.executable} -m anonymize {mixed / 'a.jpg'} -o {tmp_path / 'out'}/ --engine ray --jobs 1 -q")
    try:
        proc = subprocess.run(["unshare", "-n", "sh", "-c", cmd], env=env, capture_output=True, text=True,
                              timeout=400)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "a.jpg").stat().st_size > 0
    text = trace.read_text(errors="replace")
    assert "127.0.0.1" in text  # strace saw Ray's loopback traffic
    assert outside_findings(text) == []


def test_the_command_with_a_private_ray_leaves_nothing_behind(mixed, tmp_path):
    """``anonymize DIR -o OUT --engine ray`` as a user runs it (its own private Ray; the command
    ends with os._exit once it has left the cluster: anonymize.cli.entry): exit 0, the summary
    printed, every file done once and complete, and no process of its cluster left running. Its
    token (Ray's token authentication) lives in the cluster's environment: nothing is written in the
    home folder, and Ray's note about it is not printed."""
    temp = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))  # short: Ray's socket paths must be < 108 chars
    out, home = tmp_path / "out", tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0", HOME=str(home))
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)  # what a user's shell has
    try:
        proc = subprocess.run([sys.executable, "-m", "anonymize", str(mixed), "-o", str(out), "-q", "--engine", "ray",
                               "--jobs", "2", "--device", "cpu"], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "anonymize: 6 done, 0 skipped as already done, 0 failed" in proc.stderr, proc.stderr[-3000:]
        assert "Token authentication" not in proc.stderr and list(home.iterdir()) == []
        assert_consistent(out)
        assert len(batch.read_manifest(batch.manifest_path(out))) == 6
        deadline = time.monotonic() + 10
        while (left := _ray_processes_under(temp)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, left  # GCS, raylet, the agents' stand-ins and the workers all ended with it
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _ray_processes_under(temp: Path) -> list[bytes]:
    """Command lines of the live processes that name ``temp`` (a cluster's temporary folder) in
    their command line (GCS, raylet, the agents' stand-ins) or environment (workers: ``ray::``
    titles, RAY_TMPDIR inherited)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmd = (d / "cmdline").read_bytes()
                if str(temp).encode() in cmd or str(temp).encode() in (d / "environ").read_bytes():
                    found.append(cmd[:200])
    return found


def _start_node(args: list[str], env: dict, temp: str) -> subprocess.Popen:
    ray_bin = Path(sys.executable).with_name("ray")
    return subprocess.Popen([str(ray_bin), "start", *args, "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                             "--temp-dir", temp, "--block"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    """Whether ``pid``'s parent chain reaches one of ``ancestors``."""
    while pid > 1:
        if pid in ancestors:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_cluster_survives_a_lost_node(mixed, tmp_path):
    """A loopback cluster of a head and a second node (``ray start --address``), one CPU each; while
    a worker of the second node is inside a file, the whole node is lost (SIGKILL to its raylet and
    every process it started): its tasks are retried on the head, the run ends with exit 0, every
    file done exactly once, nothing partial, the manifest and the outputs agree."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rayl-", dir="/tmp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    head = _start_node(["--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false"], env, temp)
    node = None
    try:
        address = f"127.0.0.1:{port}"
        _wait_for_port(port, head, 90, "the Ray head")
        deadline = time.monotonic() + 90
        node = _start_node(["--address", address, "--num-cpus", "1"], env, temp)
        probe = ("import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                 "print(int(ray.cluster_resources().get('CPU', 0)))")
        while time.monotonic() < deadline:  # both nodes registered
            got = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
            if got.stdout.strip() == "2":
                break
            time.sleep(1)
        else:
            pytest.fail("the second node did not join within 90 s")
        node_pids = {int(p) for p in subprocess.run(["pgrep", "-g", str(node.pid)], capture_output=True,
                                                    text=True).stdout.split()}
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "anonymize", str(mixed), "-o", str(out), "-q", "--engine", "ray",
                                "--ray-address", address], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        # a worker of the second node inside a file: then the node is gone (raylet, agents, workers at once)
        lost = _busy_worker(run, 180, accept=lambda pid: _descends_from(pid, node_pids)) is not None
        if lost:
            workers = [p for p in _busy_workers() + _all_ray_workers() if _descends_from(p, node_pids)]
            for p in [*node_pids, *workers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        try:
            _, stderr = run.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
        assert lost, "no busy worker of the second node was seen"
        assert run.returncode == 0, stderr
        recs = batch.read_manifest(batch.manifest_path(out))
        assert sorted(r["input"] for r in recs) == sorted({r["input"] for r in recs}) and len(recs) == 6
        assert not partials(out) and not partials(out.parent)
        assert_consistent(out)
        assert "6 done, 0 skipped as already done, 0 failed" in stderr
    finally:
        if node is not None:
            _stop_group(node)
        _stop_group(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_service_ray_cancel_mid_run(tmp_path):
    """``anonymize serve --engine ray``: a video job deleted mid-run ends cancelled with its worker
    process gone and its folder gone (as with the process executor), without ``ray.cancel`` (whose
    race with a completing task aborted Ray's core worker, i.e. the server); the server keeps
    serving (a photo job after it succeeds) and a SIGTERM mid-run still stops it cleanly.
    ANONYMIZE_TEST_CANCELS sets how many cancels (default 2)."""
    from .test_service import Server, hashes_under, sha256, submit, wait_for, worker_pids

    clip = face_clip(tmp_path, "clip.mp4", seconds=2.0)
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.imread(str(tmp_path / "astro.png")))
    srv = Server(tmp_path / "data", "--engine", "ray", "--workers", "1")
    srv.start()
    try:
        with srv.client(None) as c:
            for _ in range(int(os.environ.get("ANONYMIZE_TEST_CANCELS", "2"))):
                job_id = submit(c, clip).json()["id"]
                folder = srv.data / "jobs" / job_id
                wait_for(c, job_id, ("running",), timeout=240)
                deadline = time.monotonic() + 120
                while (progress := c.get(f"/v1/jobs/{job_id}").json()["progress"]) == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert 0 < progress < 1  # frames are being written: the job is mid-run
                assert worker_pids(folder)  # the Ray task's worker process
                assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
                assert c.get(f"/v1/jobs/{job_id}").status_code == 404
                deadline = time.monotonic() + 20
                while (worker_pids(folder) or f"job {job_id}: cancelled" not in srv.log.read_text()) \
                        and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert not worker_pids(folder)
                assert f"job {job_id}: cancelled" in srv.log.read_text()
                assert not folder.exists()
                assert sha256(clip) not in hashes_under(srv.data)
            job_id = submit(c, photo).json()["id"]  # the server still serves
            job = wait_for(c, job_id, ("succeeded", "failed"), timeout=240)
            assert job["status"] == "succeeded", job
            assert c.get(f"/v1/jobs/{job_id}/output").content[:2] == b"\xff\xd8"
            # SIGTERM mid-run: the job's worker stops through its stop key, the server exits
            job_id = submit(c, clip).json()["id"]
            wait_for(c, job_id, ("running",), timeout=240)
            deadline = time.monotonic() + 120
            while not worker_pids(srv.data / "jobs" / job_id) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert srv.proc.poll() is None
        proc = srv.proc
        srv.stop()
        # Ray's driver re-raises SIGTERM after the server's own shutdown (also before this change);
        # what must not happen is SIGABRT (-6), the core worker's abort
        assert proc.returncode in (0, -signal.SIGTERM), srv.log.read_text()
        assert not worker_pids(srv.data / "jobs" / job_id)
        log = srv.log.read_text()
        assert "Check failed" not in log and "Tried to complete task" not in log, log
    finally:
        srv.stop(signal.SIGKILL)
