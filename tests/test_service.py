"""`anonymize serve`: a real server (uvicorn in a subprocess on 127.0.0.1), real uploads of real
media, a real webhook receiver, kill -9 and restart. Every request goes to 127.0.0.1 only.

The photo is skimage's astronaut (a real face); the clip is conftest's 1 s clip of it. Options
{"marks": "faces"} keep the jobs short. Still, each job loads the models in its own worker
process, so these tests take a few minutes on a busy machine.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from anonymize.service.auth import Keys, signing_secret
from anonymize.service.cli import serve_main
from anonymize.service.hosts import loopback_request
from anonymize.service.upload import sniff
from anonymize.service.webhook import CallbackError, check_url, sign, verify

from .conftest import face_clip

ROOT = Path(__file__).resolve().parents[1]
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
FACES = json.dumps({"marks": "faces"})
#: The astronaut's face in skimage's 512x512 photo (x0, y0, x1, y1), as CenterFace finds it.
FACE_BOX = (180, 60, 250, 150)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashes_under(folder: Path) -> set[str]:
    """The content hash of every file under ``folder``."""
    return {sha256(p) for p in folder.rglob("*") if p.is_file()}


def worker_pids(folder: Path) -> list[int]:
    """Live worker processes of jobs under ``folder`` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = next(l for l in (proc / "status").read_text().splitlines() if l.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if b"anonymize.service.worker" in cmd and any(str(folder).encode() in c for c in cmd) and "Z" not in state:
            found.append(int(proc.name))
    return found


class Server:
    """``anonymize serve`` in a subprocess on 127.0.0.1, with a fresh port each start."""

    def __init__(self, data: Path, *args: str, keys: Path | None = None):
        self.data, self.args, self.keys = data, list(args), keys
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}.log"

    def start(self) -> "Server":
        self.port = free_port()
        cmd = [sys.executable, "-m", "anonymize.service", "--data", str(self.data), "--port", str(self.port),
               *(["--keys", str(self.keys)] if self.keys else []), *self.args]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url("/healthz"), timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("server did not start: " + self.log.read_text())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self, key: str | None = KEY_A) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url(""), headers=headers, timeout=30)


def submit(client: httpx.Client, path: Path, options: str | None = FACES, name: str | None = None,
           headers: dict | None = None, **fields) -> httpx.Response:
    data = dict(fields)
    if options is not None:
        data["options"] = options
    with open(path, "rb") as f:
        return client.post("/v1/jobs", files={"file": (name or path.name, f, "application/octet-stream")},
                           data=data, headers=headers or {})


def wait_for(client: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = client.get(f"/v1/jobs/{job_id}")
        assert res.status_code == 200, res.text
        job = res.json()
        if job["status"] in statuses:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


class Receiver:
    """A webhook receiver on 127.0.0.1 that records each POST and answers 500 the first ``fail`` times."""

    def __init__(self, fail: int = 0):
        self.calls: list[tuple[dict, bytes]] = []
        self.fail = fail
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append((dict(self.headers), body))
                code = 500 if len(outer.calls) <= outer.fail else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.calls) >= n, f"{len(self.calls)} callbacks, expected {n}"

    def close(self) -> None:
        self.httpd.shutdown()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    photo = folder / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(__import__("skimage.data").data.astronaut(), cv2.COLOR_RGB2BGR))
    clip = face_clip(folder, "clip.mp4", seconds=1.0)
    bad = folder / "truncated.jpg"  # a JPEG's first bytes, then nothing a decoder can use
    bad.write_bytes(photo.read_bytes()[:600])
    return {"photo": photo, "clip": clip, "bad": bad}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# test keys\n{KEY_A}\n\n{KEY_B}\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys_file):
    """One server for the request-level tests: 2 workers, a 0.5 MiB upload limit."""
    data = tmp_path_factory.mktemp("srv") / "data"
    srv = Server(data, "--workers", "2", "--max-upload-mb", "0.5", keys=keys_file).start()
    yield srv
    srv.stop()


# ------------------------------------------------------------------------------------------ unit


def test_sniff_reads_the_content_not_the_name(media):
    assert sniff(media["photo"].read_bytes()[:64]) == ("photo", ".jpg")
    assert sniff(media["clip"].read_bytes()[:64]) == ("video", ".mp4")
    assert sniff(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()[:64]) == ("photo", ".png")
    assert sniff(b"%PDF-1.7\n" + bytes(60)) is None
    assert sniff(b"\x00\x00\x00\x18ftyp3gp4" + bytes(50)) is None  # 3GP: refused like the CLI does


def test_signature_round_trip_and_tamper():
    body = b'{"id": "x", "status": "succeeded"}'
    header = sign(body, "s3cret")
    assert verify(body, header, "s3cret")
    assert not verify(body + b" ", header, "s3cret")
    assert not verify(body, header, "other")
    assert not verify(body, sign(body, "s3cret", t=time.time() - 3600), "s3cret")  # replayed later


def test_callback_urls():
    check_url("https://example.org/hook", allow_private=False)
    for url in ("ftp://example.org/x", "file:///etc/passwd", "http:///nohost", "javascript:alert(1)"):
        with pytest.raises(CallbackError):
            check_url(url, allow_private=True)
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/", "http://[::1]/",
                "http://169.254.169.254/latest", "http://192.168.0.1/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(CallbackError):
            check_url(url, allow_private=False)
        check_url(url, allow_private=True)


def test_keys_are_hashed_and_checked(keys_file):
    keys = Keys.from_file(keys_file)
    assert len(keys) == 2
    assert keys.check(f"Bearer {KEY_A}") and keys.check(f"Bearer {KEY_B}")
    assert keys.check(f"Bearer {KEY_A}") != keys.check(f"Bearer {KEY_B}")
    assert keys.check("Bearer wrong-key-0123456789") is None
    assert keys.check(KEY_A) is None  # no "Bearer "
    assert KEY_A not in repr(vars(keys))


def test_refuses_public_address_without_keys(tmp_path, capsys):
    assert serve_main(["--host", "0.0.0.0", "--data", str(tmp_path / "d")]) == 2
    assert "without --keys" in capsys.readouterr().err
    short = tmp_path / "keys"
    short.write_text("short\n")
    assert serve_main(["--data", str(tmp_path / "d"), "--keys", str(short)]) == 2
    assert serve_main(["--data", str(tmp_path / "d"), "--workers", "0"]) == 2
    assert serve_main(["--data", str(tmp_path / "d"), "--max-upload-mb", "nan"]) == 2


def test_loopback_names():
    assert loopback_request("127.0.0.1:8000", None) and loopback_request("localhost", None)
    assert loopback_request("[::1]:8000", "http://[::1]:8000") and loopback_request("127.0.0.1", "http://localhost:9")
    assert not loopback_request(None, None)
    assert not loopback_request("attacker.example:8000", None)  # DNS rebinding: the page's own name
    assert not loopback_request("127.0.0.1.attacker.example", None)
    assert not loopback_request("127.0.0.1:8000", "http://attacker.example")  # a cross-site form or fetch
    assert not loopback_request("127.0.0.1:8000", "null")  # sandboxed frames and file: pages


def test_loopback_server_refuses_other_names(server, media):
    """A browser page that rebinds its own name to 127.0.0.1 sends that name as Host; a cross-site
    form sends its Origin: both get 403 before any route runs, even with a valid key, and no job
    is made. The loopback's own names (and programs sending no Origin) are served."""
    with server.client() as c:
        before = sorted(server.data.rglob("*"))
        for headers in ({"Host": f"attacker.example:{server.port}"},
                        {"Origin": "http://attacker.example"},
                        {"Host": f"attacker.example:{server.port}", "Origin": f"http://attacker.example:{server.port}"}):
            for method, path in (("GET", "/v1/jobs/x"), ("GET", "/healthz"), ("POST", "/v1/jobs")):
                files = {"file": ("a.jpg", media["photo"].read_bytes(), "image/jpeg")} if method == "POST" else None
                r = c.request(method, path, headers=headers, files=files)
                assert r.status_code == 403, (headers, method, path, r.status_code)
        assert sorted(server.data.rglob("*")) == before
        assert c.get("/healthz", headers={"Host": f"localhost:{server.port}"}).status_code == 200
        assert c.get("/v1/jobs/x", headers={"Origin": f"http://127.0.0.1:{server.port}"}).status_code == 404


def test_cli_dispatches_serve(capsys):
    from anonymize.cli import main

    assert main(["serve", "--help"]) == 0
    assert "--max-upload-mb" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ server


def test_photo_job_end_to_end(server, media):
    """Submit, poll, fetch output and report; a signed webhook; other keys see nothing; no copy
    of the upload is left; logs hold no file name."""
    hook = Receiver(fail=1)  # the first delivery fails: the retry must come
    try:
        with server.client(KEY_A) as a, server.client(KEY_B) as b, server.client(None) as anon, \
                server.client("wrong-key-0123456789") as wrong:
            res = submit(a, media["photo"], name="secret-name-of-a-protester.png", callback_url=hook.url,
                         options=json.dumps({"marks": "faces", "mask": "solid"}))
            assert res.status_code == 202, res.text
            job_id = res.json()["id"]
            assert res.json()["status"] == "queued"
            assert res.headers["location"] == f"/v1/jobs/{job_id}"
            for who in (anon, wrong):
                assert who.get(f"/v1/jobs/{job_id}").status_code == 401
                assert submit(who, media["photo"]).status_code == 401
            for path in ("", "/output", "/report"):
                assert b.get(f"/v1/jobs/{job_id}{path}").status_code == 404
            assert b.delete(f"/v1/jobs/{job_id}").status_code == 404
            job = wait_for(a, job_id, ("succeeded", "failed"))
            assert job["status"] == "succeeded", job["error"]
            assert job["progress"] == 1.0 and job["kind"] == "photo" and job["error"] is None
            assert job["options"] == {"marks": "faces", "mask": "solid"}
            out = a.get(f"/v1/jobs/{job_id}/output")
            assert out.status_code == 200 and out.headers["content-type"] == "image/jpeg"
            img = cv2.imdecode(np.frombuffer(out.content, np.uint8), cv2.IMREAD_COLOR)
            src = cv2.imread(str(media["photo"]))
            x0, y0, x1, y1 = FACE_BOX
            face = img[y0:y1, x0:x1].astype(float)
            assert face.std() < 8, "the face is not solid-masked"  # solid: one flat colour
            assert np.abs(img[400:, :100].astype(float) - src[400:, :100]).mean() < 6  # background kept
            report = a.get(f"/v1/jobs/{job_id}/report").json()
            assert report["files"][0]["region_count"] >= 1
            assert report["files"][0]["input"] == "upload"
            # the webhook: retried after a 500, signed with the key's secret, the job's JSON
            hook.wait(2)
            headers, body = hook.calls[-1]
            assert verify(body, headers["X-Anonymize-Signature"], signing_secret(KEY_A))
            assert not verify(body, headers["X-Anonymize-Signature"], signing_secret(KEY_B))
            sent = json.loads(body)
            assert sent["id"] == job_id and sent["status"] == "succeeded"
            # zero copies of the upload anywhere under --data
            assert sha256(media["photo"]) not in hashes_under(server.data)
            metrics = httpx.get(server.url("/metrics")).text
            assert 'anonymize_jobs{status="succeeded"}' in metrics
            values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#"))
            assert int(values["anonymize_bytes_in_total"]) >= media["photo"].stat().st_size
            assert int(values["anonymize_bytes_out_total"]) >= len(out.content)
            assert int(values['anonymize_callbacks_total{result="delivered"}']) >= 1
            log = server.log.read_text()
            assert "secret-name" not in log and "solid" not in log and job_id in log
            # our lines only (no access log): no client address, no URL
            assert all(line.startswith("anonymize serve: ") for line in log.splitlines()), log
            # DELETE removes everything; then 404
            assert a.delete(f"/v1/jobs/{job_id}").status_code == 204
            assert a.get(f"/v1/jobs/{job_id}").status_code == 404
            assert not (server.data / "jobs" / job_id).exists()
    finally:
        hook.close()


def test_idempotent_resubmit(server, media):
    with server.client(KEY_A) as a, server.client(KEY_B) as b:
        key = {"Idempotency-Key": "upload-42"}
        first = submit(a, media["bad"], headers=key)
        again = submit(a, media["bad"], headers=key)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        other = submit(b, media["bad"], headers=key)  # keys are per API key
        assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
        for client, res in ((a, first), (b, other)):
            job = wait_for(client, res.json()["id"], ("succeeded", "failed"))
            # a truncated JPEG: a failed job with a clear error, without the server's paths
            assert job["status"] == "failed"
            assert job["error"] and str(server.data) not in job["error"]
            assert client.get(f"/v1/jobs/{job['id']}/output").status_code == 409
        assert sha256(media["bad"]) not in hashes_under(server.data)


def test_refused_uploads(server, media, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(media["photo"].read_bytes()[:64] + os.urandom(1 << 20))
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(os.urandom(4096))
    with server.client(KEY_A) as a:
        assert submit(a, big).status_code == 413  # its Content-Length is over the limit: refused at once

        def chunks():  # no Content-Length: refused as soon as the stream passes the limit
            yield (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n\r\n"
                   + media["photo"].read_bytes()[:64])
            for _ in range(64):
                yield os.urandom(64 << 10)
            yield b"\r\n--B--\r\n"

        try:
            res = a.post("/v1/jobs", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"})
            assert res.status_code == 413
        except httpx.HTTPError:
            pass  # the server answered 413 and closed while the client was still sending
        assert submit(a, noise).status_code == 415
        assert submit(a, media["photo"], options=None, name="x.txt").status_code == 202  # the name does not count
        for bad in ('{"mask": "none"}', '{"nope": 1}', '{"mask_scale": NaN}', '{"mask-scale": 9}', '[1]', '{'):
            res = submit(a, media["photo"], options=bad)
            assert res.status_code == 422, (bad, res.text)
        assert submit(a, media["photo"], callback_url="ftp://example.org/x").status_code == 422
        assert a.post("/v1/jobs", data={"options": "{}"}).status_code in (400, 415)
    # nothing of a refused upload stays: only the accepted job's folder
    assert len(list((server.data / "jobs").iterdir())) <= 3
    assert sha256(big) not in hashes_under(server.data) and sha256(noise) not in hashes_under(server.data)


def test_delete_mid_run(server, media):
    with server.client(KEY_A) as a:
        job_id = submit(a, media["clip"]).json()["id"]
        wait_for(a, job_id, ("running",), timeout=240)
        deadline = time.monotonic() + 120
        while (progress := a.get(f"/v1/jobs/{job_id}").json()["progress"]) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0 < progress < 1  # frames are being written: the job is mid-run
        assert worker_pids(server.data / "jobs" / job_id)
        assert a.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert a.get(f"/v1/jobs/{job_id}").status_code == 404
        deadline = time.monotonic() + 20
        while worker_pids(server.data / "jobs" / job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker_pids(server.data / "jobs" / job_id)
        time.sleep(1.0)
        assert not (server.data / "jobs" / job_id).exists()
        assert sha256(media["clip"]) not in hashes_under(server.data)


def test_openapi_documents_the_contract(server):
    doc = httpx.get(server.url("/openapi.json")).json()
    post = doc["paths"]["/v1/jobs"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"file", "options", "callback_url"} <= set(
        post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"])
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/output", "/v1/jobs/{job_id}/report", "/healthz",
            "/metrics"} <= set(doc["paths"])
    assert "delete" in doc["paths"]["/v1/jobs/{job_id}"]


def test_schemathesis_no_server_errors(server):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(server.url("/openapi.json"))
    failures = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=schema.as_strategy())
    def check(case):
        res = case.call(headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
        if res.status_code >= 500:
            failures.append((case.method, case.formatted_path, res.status_code, res.text[:200]))

    check()
    assert not failures, failures


def test_kill9_and_restart(tmp_path, keys_file, media):
    """kill -9 mid-job: the worker dies with the server; after a restart the running job runs
    again from the start, the queued one runs too, and none stays running."""
    srv = Server(tmp_path / "data", "--workers", "1", keys=keys_file).start()
    try:
        with srv.client(KEY_A) as a:
            running = submit(a, media["clip"]).json()["id"]
            queued = submit(a, media["photo"]).json()["id"]
            wait_for(a, running, ("running",))
            time.sleep(1.0)
            assert worker_pids(srv.data)
            srv.stop(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while worker_pids(srv.data) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker_pids(srv.data), "a worker outlived its server"
        srv.start()
        with srv.client(KEY_A) as a:
            for job_id in (running, queued):
                job = wait_for(a, job_id, ("succeeded", "failed"))
                assert job["status"] == "succeeded", job["error"]
            assert a.get(f"/v1/jobs/{running}").json()["attempts"] == 2  # run again from the start
            assert a.get(f"/v1/jobs/{queued}").json()["attempts"] == 1
            out = a.get(f"/v1/jobs/{running}/output")
            assert out.status_code == 200 and out.headers["content-type"] == "video/mp4"
            assert out.content[4:8] == b"ftyp"
        assert not worker_pids(srv.data)
        hashes = hashes_under(srv.data)
        assert sha256(media["clip"]) not in hashes and sha256(media["photo"]) not in hashes
    finally:
        srv.stop()


def test_results_expire(tmp_path, media):
    """--keep-results: outputs and reports are deleted after that many hours (here ~2 s)."""
    srv = Server(tmp_path / "data", "--keep-results", "0.0005", "--max-duration", "0.5").start()  # no keys
    try:
        with srv.client(None) as c:
            res = submit(c, media["clip"])  # 1 s: longer than --max-duration
            assert res.status_code == 422 and "longer than" in res.json()["detail"]
            job_id = submit(c, media["photo"]).json()["id"]
            assert wait_for(c, job_id, ("succeeded", "failed"))["status"] == "succeeded"
            deadline = time.monotonic() + 20
            while (srv.data / "jobs" / job_id).exists() and time.monotonic() < deadline:
                time.sleep(0.3)
            assert not (srv.data / "jobs" / job_id).exists()
            assert c.get(f"/v1/jobs/{job_id}/output").status_code == 410
            assert c.get(f"/v1/jobs/{job_id}").json()["expired"] is True
    finally:
        srv.stop()


def test_startup_settles_what_a_crash_left(tmp_path):
    """At startup: a job interrupted too often fails and loses its upload, a queued job without
    its upload fails, a folder no job owns (a submit cut short) is removed, an ended job's
    leftover upload is deleted."""
    from anonymize.service.core import Service, Settings
    from anonymize.service.store import MAX_ATTEMPTS, Job, JobStore

    data = tmp_path / "data"
    store = JobStore((data.mkdir() or data) / "jobs.sqlite3")

    def job(job_id: str, status: str, attempts: int = 0) -> Job:
        j = Job(id=job_id, owner="anonymous", status=status, kind="photo", ext=".jpg", options={},
                callback_url=None, idem_key=None, error=None, created=time.time(), started=None,
                finished=time.time() if status == "succeeded" else None, attempts=attempts, bytes_in=1,
                bytes_out=0, expired=False)
        store.add(j)
        folder = data / "jobs" / job_id
        folder.mkdir(parents=True)
        return folder

    (job("tired", "running", MAX_ATTEMPTS) / "upload.jpg").write_bytes(b"\xff\xd8\xff one")
    (job("again", "running", 1) / "upload.jpg").write_bytes(b"\xff\xd8\xff two")
    (data / "jobs" / "again" / ".output.x.partial.jpg").write_bytes(b"half")
    job("lost", "queued")
    (job("done", "succeeded") / "upload.jpg").write_bytes(b"\xff\xd8\xff three")
    (data / "jobs" / "orphan").mkdir()
    (data / "jobs" / "orphan" / "upload.part").write_bytes(b"\xff\xd8\xff four")
    store.close()
    service = Service(Settings(data=data), Keys(None))
    try:
        service.recover()
        status = {j: service.store.get(j).status for j in ("tired", "again", "lost", "done")}
        assert status == {"tired": "failed", "again": "queued", "lost": "failed", "done": "succeeded"}
        assert "interrupted" in service.store.get("tired").error
        assert "upload was lost" in service.store.get("lost").error
        left = sorted(str(p.relative_to(data / "jobs")) for p in (data / "jobs").rglob("*") if p.is_file())
        assert left == ["again/upload.jpg"]  # only the job that will run again keeps its upload
    finally:
        service.store.close()
