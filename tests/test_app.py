"""`anonymize app`, the local review page: access control (token, Host, Origin, loopback), its
working folder, no outside URLs, and the whole flow in a real headless Chromium (Playwright
driving Debian's /usr/bin/chromium; skipped when either is absent).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from anonymize.app.cli import prepare  # noqa: E402
from anonymize.app.server import STATIC  # noqa: E402
from anonymize.config import Options  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_media"
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def app_server(options: Options | None = None):
    """A real uvicorn serving the page on 127.0.0.1 (a free port) in a thread."""
    running = prepare("127.0.0.1", 0, options)
    thread = threading.Thread(target=running.server.run, kwargs={"sockets": [running.sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server.started, "uvicorn did not start"
    try:
        yield running
    finally:
        running.server.should_exit = True
        thread.join(timeout=30)
        running.session.close()
        running.sock.close()


def _base(running) -> str:
    return running.url.split("/?")[0]


def test_token_required():
    with app_server() as r:
        base, token = _base(r), r.session.token
        with httpx.Client() as c:
            for path in ("/", "/static/app.js", "/static/app.css", "/api/files"):
                assert c.get(base + path).status_code == 403, path
                assert c.get(f"{base}{path}?token=wrong-{token}").status_code == 403, path
                assert c.get(base + path, headers={"X-Anonymize-Token": token[:-1]}).status_code == 403, path
                c.cookies.set(f"anonymize_app_{r.sock.getsockname()[1]}", "x")
                assert c.get(base + path).status_code == 403
                c.cookies.clear()
            assert c.post(base + "/api/files", files={"file": ("a.jpg", b"\xff\xd8\xff")}).status_code == 403
            first = c.get(r.url)  # the printed URL: the page, and the cookie its own requests then carry
            assert first.status_code == 200 and "<title>" in first.text
            assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
            assert c.get(base + "/static/app.js").status_code == 200  # by the cookie alone
            assert c.get(base + "/api/files").json() == []
        with httpx.Client() as c:  # a fresh client: the header works too
            assert c.get(base + "/api/files", headers={"X-Anonymize-Token": token}).status_code == 200


def test_host_and_origin_checked():
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    with app_server() as r:
        port = r.sock.getsockname()[1]
        hdr = {"X-Anonymize-Token": r.session.token}
        with httpx.Client() as c:
            for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", ""):
                got = c.get(r.url, headers={"Host": host})
                assert got.status_code == 403, host
                assert "set-cookie" not in got.headers
            for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
                assert c.get(_base(r) + "/api/files", headers={**hdr, "Host": host}).status_code == 200
            evil = c.post(_base(r) + "/api/files", headers={**hdr, "Origin": "http://evil.example"},
                          files={"file": ("a.jpg", b"\xff\xd8\xff")})
            assert evil.status_code == 403
            assert r.session.items == {}


def test_binds_loopback_only():
    with app_server() as r:
        host, port = r.sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        assert r.url.startswith(f"http://127.0.0.1:{port}/?token=")
    import socket

    try:  # any address of this machine that is not the loopback must not answer
        others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    except OSError:
        others = set()
    with app_server() as r:
        port = r.sock.getsockname()[1]
        for addr in others:
            if addr.startswith("127."):
                continue
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=2).close()


def test_static_page_fetches_nothing_from_outside():
    files = [p for p in STATIC.iterdir() if p.suffix in (".html", ".js", ".css")]
    assert {p.name for p in files} >= {"index.html", "app.js", "app.css"}
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), p.name
        assert not re.search(r"""(src|href)\s*=\s*["']//|url\(\s*["']?//|@import""", text), p.name
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert "default-src 'self'" in html  # and the browser is told so (CSP)


def test_cli_prints_token_url_and_removes_its_folder(tmp_path):
    """The real command: prints the URL (token in it), serves it, and on Ctrl-C exits 0 with its
    working folder (0700, under TMPDIR) gone; an uploaded photo is gone with it, the input untouched."""
    src = tmp_path / "in" / "crowd.jpg"
    src.parent.mkdir()
    shutil.copyfile(SAMPLE / "crowd.jpg", src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "anonymize", "app", "--no-browser"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        assert m, line
        base, token = m.groups()
        folders = list(tmp.glob("anonymize-app-*"))
        assert len(folders) == 1 and (folders[0].stat().st_mode & 0o777) == 0o700
        with httpx.Client(headers={"X-Anonymize-Token": token}) as c:
            assert c.get(base + "/api/files").status_code == 200
            with open(src, "rb") as f:
                up = c.post(base + "/api/files", files={"file": ("crowd.jpg", f)}, headers={"X-File-Name": "crowd.jpg"})
            assert up.status_code == 202, up.text
            assert any(p.name.startswith("input") for p in folders[0].rglob("*"))  # kept only while it runs
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # stopped by SIGINT, cleanly (anonymize/errors.py's codes)
    assert list(tmp.iterdir()) == []
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


def test_help_lists_app(capsys):
    from anonymize.cli import DESCRIPTION, main

    assert "anonymize app" in DESCRIPTION
    assert main(["app", "--help"]) == 0 and "--no-browser" in capsys.readouterr().out
    assert main(["app", "--mask-scale", "0.1"]) == 2  # the options table's checks, before anything starts
    assert "--mask-scale" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the whole flow in Chromium


def _chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    return sync_api


def _short_clip(dst: Path, frames: int = 30) -> None:
    """The sample clip's first second (keeps the test short on a loaded machine)."""
    from anonymize.ffmpeg_tools import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(SAMPLE / "crowd.mp4"),
                    "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "16",
                    "-pix_fmt", "yuv420p", "-y", str(dst)], check=True)


def _decode(path: Path) -> list[np.ndarray]:
    from anonymize.ffmpeg_tools import probe
    from anonymize.video import VideoDecoder

    return [f.image.astype(np.int16) for f in VideoDecoder(path, probe(path)).frames()]


def _inner(box, frac: float = 0.6):
    """The central part of an (x, y, w, h) box, as slices (the ellipse mask covers it wholly)."""
    x, y, w, h = box
    dx, dy = w * (1 - frac) / 2, h * (1 - frac) / 2
    return slice(int(y + dy), int(y + h - dy)), slice(int(x + dx), int(x + w - dx))


def _diff(a: np.ndarray, b: np.ndarray, box) -> float:
    ys, xs = _inner(box)
    return float(np.abs(a[ys, xs] - b[ys, xs]).mean())


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


#: A person seen from behind (red cap, ears) at frame 15 of the clip: no face, so never masked by
#: a faces-only run; the test draws the added box on it.
ADD_FRAME, ADD_BOX = 15, (1010, 515, 100, 115)
#: Frames the test masks whole (the clip's last three).
WHOLE = (27, 29)


def test_review_flow_in_chromium(tmp_path):
    sync_api = _chromium()
    clip = tmp_path / "clip.mp4"
    _short_clip(clip)
    before = hashlib.sha256(clip.read_bytes()).hexdigest()
    shot = os.environ.get("ANONYMIZE_APP_SCREENSHOT")  # docs/review.png is made with this set
    with app_server(Options(marks=("faces",))) as r, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            outside = []
            page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(_base(r)) else None)
            page.on("dialog", lambda d: d.accept())  # the "did this person consent?" confirmation
            page.goto(r.url)
            page.set_input_files("#pick", str(clip))
            page.wait_for_selector(".card", timeout=150_000)
            item = next(iter(r.session.items.values()))
            plan = item.plan
            regions = {f["index"]: f["regions"] for f in plan["frames"]}
            # spare a face track that no other region touches in any frame (so its pixels stay clear)
            faces = [t["id"] for t in plan["tracks"] if t["kind"] == "face" and t["first"] == 0
                     and t["last"] == plan["frame_count"] - 1]
            spared = next(t for t in faces if not any(
                _overlaps((a["x"], a["y"], a["w"], a["h"]), (b["x"], b["y"], b["w"], b["h"]))
                for rs in regions.values() for a in rs if a["track"] == t for b in rs if b["track"] != t))
            assert not any(_overlaps(ADD_BOX, (a["x"], a["y"], a["w"], a["h"])) for a in regions[ADD_FRAME])
            assert "detection preview" in page.inner_text("#preview-note")  # not taken for the edited result
            page.click(f'.card[data-track="{spared}"] button.spare')
            page.wait_for_selector(f'.card.spared[data-track="{spared}"]')
            # the original, with outlines, then back to the masked preview
            page.click("#view-original")
            assert page.get_attribute("#video", "src").endswith("/original")
            page.click("#view-masked")
            page.locator("#scrub").fill(str(ADD_FRAME))
            page.wait_for_selector(f"#frame-label:has-text('frame {ADD_FRAME} /')")
            bb = page.locator("#overlay").bounding_box()
            sx, sy = bb["width"] / plan["width"], bb["height"] / plan["height"]
            x, y, w, h = ADD_BOX
            page.mouse.move(bb["x"] + x * sx, bb["y"] + y * sy)
            page.mouse.down()
            page.mouse.move(bb["x"] + (x + w / 2) * sx, bb["y"] + (y + h / 2) * sy, steps=4)
            page.mouse.move(bb["x"] + (x + w) * sx, bb["y"] + (y + h) * sy, steps=4)
            page.mouse.up()
            page.wait_for_selector(f"#edit-list li:has-text('box at frame {ADD_FRAME}')")
            page.locator("#scrub").fill(str(WHOLE[0]))
            page.click("#mark-from")
            page.locator("#scrub").fill(str(WHOLE[1]))
            page.click("#mark-to")
            page.wait_for_selector(f"#edit-list li:has-text('whole frames {WHOLE[0]}–{WHOLE[1]}')")
            page.locator("#scrub").fill(str(ADD_FRAME))
            added = page.evaluate("() => state.add")
            assert len(added) == 1 and added[0]["frame"] == ADD_FRAME
            assert abs(added[0]["x"] - x) <= 3 and abs(added[0]["w"] - w) <= 3
            page.click("#render")
            page.wait_for_selector("#dl-output:visible", timeout=150_000)
            page.wait_for_selector("#preview-note:has-text('your last render')")
            if shot:  # the review screen once rendered: the preview shows the edits
                page.wait_for_function("() => document.querySelector('#video').src.includes('v=2') && "
                                       "document.querySelector('#video').readyState >= 2")
                page.locator("#scrub").fill(str(ADD_FRAME))
                page.wait_for_timeout(1500)
                page.screenshot(path=shot, full_page=True)
            with page.expect_download() as got:
                page.click("#dl-output")
            out = tmp_path / "out.mp4"
            got.value.save_as(out)
            with page.expect_download() as got:
                page.click("#dl-report")
            report = json.loads(Path(got.value.path()).read_text())
            assert got.value.suggested_filename == "clip.anonymized.json"
            assert outside == [], outside  # the page fetched nothing from anywhere else
        finally:
            browser.close()
    assert hashlib.sha256(clip.read_bytes()).hexdigest() == before  # the input was never modified

    entry = report["files"][0]
    assert {t["id"]: t["masked"] for t in entry["tracks"]}[spared] is False
    orig, res = _decode(clip), _decode(out)
    assert len(orig) == len(res) == plan["frame_count"]
    rendered = {f["index"]: f["regions"] for f in entry["frames"]}
    # the spared face: unchanged within compression noise, in every frame
    for i in range(WHOLE[0]):
        for a in regions.get(i, []):
            if a["track"] == spared:
                assert _diff(orig[i], res[i], (a["x"], a["y"], a["w"], a["h"])) < 5.0, (i, a)
    # every other region of the plan: still there (the same region) and masked
    for i in range(0, WHOLE[0], 3):
        kept = [(a["x"], a["y"], a["w"], a["h"]) for a in regions.get(i, []) if a["track"] != spared]
        now = [(a["x"], a["y"], a["w"], a["h"]) for a in rendered.get(i, []) if a["source"] != "added"
               and a["kind"] != "frame"]
        assert sorted(kept) == sorted(now), i
        for box in kept:
            if box[2] >= 24 and box[3] >= 24:
                assert _diff(orig[i], res[i], box) > 6.0, (i, box)
    # the added box: followed and masked in the frames around it
    near = range(max(0, ADD_FRAME - 10), min(len(orig), ADD_FRAME + 11))
    for i in near:
        adds = [a for a in rendered.get(i, []) if a["source"] == "added"]
        assert adds, f"frame {i}: the added box was not followed here"
        assert _diff(orig[i], res[i], (adds[0]["x"], adds[0]["y"], adds[0]["w"], adds[0]["h"])) > 6.0, i
    # the frames masked whole: all of it, the spared face too
    for i in range(WHOLE[0], WHOLE[1] + 1):
        assert _diff(orig[i], res[i], (0, 0, plan["width"], plan["height"])) > 6.0, i
        assert _diff(orig[i], res[i], (0, 0, 200, 100)) > 3.0, i  # a corner of sky and placard
    assert entry["mask_frames"] == [] and any(a["kind"] == "frame" for a in rendered[WHOLE[0]])
    ys, xs = _inner(ADD_BOX)
    assert np.abs(orig[ADD_FRAME][ys, xs] - res[ADD_FRAME][ys, xs]).mean() > 6.0


def _wait(c, url: str, until: tuple[str, ...], seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    got = {"status": None}
    while time.monotonic() < deadline:
        got = c.get(url).json()
        if got["status"] in until:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{url}: still {got['status']}")


def test_photo_review_through_the_api():
    """A photo: upload, detect, one thumbnail per track; a render with bad edits is refused (and
    the file stays reviewable); then one track spared and a box added: the spared face keeps its
    pixels, the added box and every other face are masked; output and report download."""
    import cv2

    with app_server(Options(marks=("faces",))) as r, \
            httpx.Client(headers={"X-Anonymize-Token": r.session.token}, timeout=60) as c:
        base = _base(r)
        with open(SAMPLE / "crowd.jpg", "rb") as f:
            up = c.post(base + "/api/files", files={"file": ("x", f)}, headers={"X-File-Name": "crowd.jpg"})
        assert up.status_code == 202, up.text
        url = f"{base}/api/files/{up.json()['id']}"
        d = _wait(c, url, ("ready", "failed"))
        assert d["status"] == "ready", d["error"]
        assert d["kind"] == "photo" and d["frame_count"] == 1 and len(d["tracks"]) >= 5
        for t in d["tracks"]:
            thumb = c.get(f"{url}/thumb/{t['id']}")
            assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        assert c.get(f"{url}/output").status_code == 409  # nothing to save before Render
        regions = d["frames"][0][1]
        spared = next(t["id"] for t in d["tracks"] if not any(
            _overlaps(a[:4], b[:4]) for a in regions if a[4] == t["id"] for b in regions if b[4] != t["id"]))
        box = (390, 258, 150, 70)  # the "NO!" of a placard: no face there (its edges show the blur)
        assert not any(_overlaps(box, a[:4]) for a in regions)
        bad = c.post(f"{url}/render", json={"add": [{"frame": 0, "x": 1, "y": 1, "w": -5, "h": 3}]})
        assert bad.status_code == 202
        d = _wait(c, url, ("ready", "rendered"))
        assert d["status"] == "ready" and "w must be" in d["error"]  # the plan's own validation
        edits = {"spared": [spared], "add": [dict(zip("xywh", box), frame=0)], "mask_frames": []}
        assert c.post(f"{url}/render", json=edits).status_code == 202
        d = _wait(c, url, ("rendered", "ready"))
        assert d["status"] == "rendered", d["error"]
        out = c.get(f"{url}/output")
        assert out.status_code == 200 and 'filename="crowd.anonymized.jpg"' in out.headers["content-disposition"]
        report = c.get(f"{url}/report").json()
    orig = cv2.imread(str(SAMPLE / "crowd.jpg")).astype(np.int16)
    res = cv2.imdecode(np.frombuffer(out.content, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    assert {t["id"]: t["masked"] for t in report["files"][0]["tracks"]}[spared] is False
    for x, y, w, h, track, _ in regions:
        if track == spared:
            assert _diff(orig, res, (x, y, w, h)) < 5.0
        else:
            assert _diff(orig, res, (x, y, w, h)) > 6.0, track
    added = [a for a in report["files"][0]["frames"][0]["regions"] if a["source"] == "added"]
    assert len(added) == 1 and _overlaps(box, (added[0]["x"], added[0]["y"], added[0]["w"], added[0]["h"]))
    assert _diff(orig, res, box) > 6.0


def test_original_view_of_a_video_the_browser_cannot_play(tmp_path):
    """An MKV (or MOV, AVI) is shown as "original" through an H.264 MP4 copy in the working folder."""
    from anonymize.app.server import Item, Session
    from anonymize.ffmpeg_tools import ffmpeg_exe, probe

    src = tmp_path / "in.mkv"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-frames:v", "10", "-c:v", "mpeg4", "-y", str(src)], check=True)
    session = Session()
    try:
        item = session.new_item("in.mkv", "video", ".mkv")
        shutil.copyfile(src, item.src)
        session._original_copy(item)
        copy = item.folder / item.original
        assert copy.name == "original.mp4" and copy.parent == item.folder
        info = probe(copy)
        assert info.video.codec == "h264" and not info.audio
    finally:
        session.close()
    assert not session.workdir.exists()


def test_folders_of_killed_apps_are_removed_at_the_next_start(tmp_path):
    """kill -9 leaves the 0700 working folder behind; the next start removes it, and only it:
    not a folder whose app still runs, not a link, not a folder named otherwise."""
    from anonymize.app.server import Session

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    app = subprocess.Popen([sys.executable, "-m", "anonymize", "app", "--no-browser"],
                           env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("anonymize-app-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = list(tmp_path.glob("anonymize-app-*"))
        assert len(killed) == 1 and f"-{app.pid}-" in killed[0].name
        app.send_signal(signal.SIGKILL)
        app.wait()
        assert killed[0].is_dir()  # what kill -9 leaves
        stale = tmp_path / f"anonymize-app-{dead.pid}-abc_1"
        (stale / "item").mkdir(parents=True)
        (stale / "item" / "frame.png").write_bytes(b"x")
        live = tmp_path / f"anonymize-app-{os.getppid()}-abc"  # a running process's folder
        live.mkdir()
        target = tmp_path / "elsewhere"
        target.mkdir()
        link = tmp_path / f"anonymize-app-{dead.pid}-link"
        link.symlink_to(target, target_is_directory=True)
        other = tmp_path / f"anonymize-app-x{dead.pid}"
        other.mkdir()
        session = Session(root=tmp_path)
        try:
            assert not killed[0].exists() and not stale.exists()
            assert live.is_dir() and link.is_symlink() and target.is_dir() and other.is_dir()
            assert session.workdir.is_dir() and f"-{os.getpid()}-" in session.workdir.name
        finally:
            session.close()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def test_heic_photo_is_shown_as_png(tmp_path):
    """Chromium shows no HEIC: the page gets PNG copies of the original and of the preview; the
    saved output stays HEIC."""
    import cv2
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    heic = tmp_path / "crowd.heic"
    Image.open(SAMPLE / "crowd.jpg").save(heic, quality=90)
    with app_server(Options(marks=("faces",))) as r, \
            httpx.Client(headers={"X-Anonymize-Token": r.session.token}, timeout=60) as c:
        base = _base(r)
        up = c.post(base + "/api/files", files={"file": ("x", heic.read_bytes())}, headers={"X-File-Name": "crowd.heic"})
        assert up.status_code == 202, up.text
        url = f"{base}/api/files/{up.json()['id']}"
        d = _wait(c, url, ("ready", "failed"))
        assert d["status"] == "ready", d["error"]
        for view in ("original", "preview"):
            got = c.get(f"{url}/{view}")
            assert got.status_code == 200 and got.headers["content-type"] == "image/png", view
            image = cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape[:2] == (d["height"], d["width"])
        assert c.post(f"{url}/render", json={"spared": [], "add": [], "mask_frames": []}).status_code == 202
        d = _wait(c, url, ("rendered", "ready"))
        assert d["status"] == "rendered", d["error"]
        assert c.get(f"{url}/preview").headers["content-type"] == "image/png"
        out = c.get(f"{url}/output")
        assert 'filename="crowd.anonymized.heic"' in out.headers["content-disposition"]
        assert out.content[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")
