"""The review page's server: a thin FastAPI front over ``Anonymizer.detect`` / ``render`` and the plan.

Everything lives in one private working folder (created 0700 by :class:`Session`, removed by
:meth:`Session.close`): each uploaded file gets a sub-folder with the upload, its plan, a preview
(the plan rendered), one thumbnail per track and, after Render, the output and its report. The
input is only ever read. Detect and render run one at a time in a worker thread; the page polls
``GET /api/files/{id}`` for progress.

Every request must carry the session's token (``?token=``, the cookie that the first page load
sets from it, or an ``X-Anonymize-Token`` header) and a ``Host`` header naming this server on the
loopback (DNS rebinding: a page of another site that resolves its name to 127.0.0.1 sends its own
name); anything else gets 403 before any route runs (:class:`Guard`).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import re
import stat
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, unquote

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ..config import Options
from ..errors import AnonymizeError
from ..service.upload import UploadError, receive_media

log = logging.getLogger("anonymize.app")

STATIC = Path(__file__).with_name("static")
#: Largest upload accepted (the page is local; the limit only keeps a mistake from filling the disk).
MAX_UPLOAD_BYTES = 64 << 30
#: Long side of a track's thumbnail, pixels.
THUMB_PX = 160
#: Videos a browser plays as they are; others get an H.264 copy for the "original" view.
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".heic": "image/heic",
               ".mp4": "video/mp4", ".webm": "video/webm", ".json": "application/json"}
#: Photo formats browsers do not show (Chromium has no HEIF decoder): the page gets PNG copies.
UNSHOWN_PHOTOS = {".heic", ".heif"}
PLAYABLE = {(".mp4", "h264"), (".mp4", "av1"), (".webm", "vp8"), (".webm", "vp9"), (".webm", "av1")}


class Stopped(Exception):
    """The session closes: the running job stops at its next frame."""


@dataclass
class Item:
    """One uploaded file and what the page knows of it."""

    id: str
    name: str
    kind: str  # video / photo
    ext: str
    folder: Path
    status: str = "queued"  # queued, detecting, ready, rendering, rendered, failed
    progress: float = 0.0
    error: str | None = None
    frame_total: int = 1
    plan: dict | None = None  # the file entry of the detect report (the plan)
    fps: float = 0.0
    version: int = 0  # bumped whenever the preview changes (the page's cache key)
    original: str | None = None  # file name of the media shown as "original"

    @property
    def src(self) -> Path:
        return self.folder / f"input{self.ext}"

    @property
    def out_ext(self) -> str:
        return ".mp4" if self.kind == "video" else self.ext

    @property
    def shown_ext(self) -> str:
        """The preview's extension: the output's, or PNG for a photo format browsers cannot show."""
        return ".png" if self.kind == "photo" and self.ext in UNSHOWN_PHOTOS else self.out_ext

    def show(self, rendered: Path) -> None:
        """Make ``rendered`` the page's preview (a PNG copy of it when browsers cannot show it)."""
        preview = self.folder / f"preview{self.shown_ext}"
        if rendered == preview:
            return
        if self.shown_ext == self.out_ext:
            shutil.copyfile(rendered, preview)
        else:
            _png_copy(rendered, preview)

    def public(self) -> dict:
        """The page's view: status, and once detected the tracks, regions and frame times."""
        out = {"id": self.id, "name": self.name, "kind": self.kind, "status": self.status,
               "progress": round(self.progress, 3), "error": self.error, "version": self.version,
               "rendered": (self.folder / f"output{self.out_ext}").is_file()}
        if self.plan is not None:
            p = self.plan
            out.update(width=p["width"], height=p["height"], frame_count=p["frame_count"], fps=self.fps,
                       tracks=p.get("tracks", []), frames=self._frames())
        return out

    def _frames(self) -> list:
        """``[[pts, [[x, y, w, h, track, shape], ...]], ...]`` per frame: the masked regions."""
        return [[f.get("pts", 0.0), [[r["x"], r["y"], r["w"], r["h"], r.get("track", -1), r.get("shape", "box")]
                                     for r in f.get("regions", [])]] for f in self.plan.get("frames", [])]


#: Working folders are named ``anonymize-app-<pid>-<random>``: the pid lets a later start tell a
#: folder left by a killed app (kill -9, a crash, a power cut) from one in use.
WORKDIR_PREFIX = "anonymize-app-"
_WORKDIR_RE = re.compile(re.escape(WORKDIR_PREFIX) + r"(\d{1,10})-[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or not a pid we can ask about): not ours to judge
    return True


def remove_stale_workdirs(root: Path | str | None = None) -> list[Path]:
    """Remove the working folders that apps killed before they could clean up left in ``root``
    (default: the temporary folder), and return them. Only a folder named with our prefix and a
    pid, a real directory (not a link), owned by this user, whose pid is not running and is not
    ours, is removed; anything else is left alone."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _WORKDIR_RE.fullmatch(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        pid = int(m[1])
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)  # never follows links inside it
        removed.append(Path(entry.path))
    if removed:
        log.info("removed %d working folder(s) left by stopped apps", len(removed))
    return removed


class Session:
    """The working folder, the uploaded items and the one worker thread that detects and renders."""

    def __init__(self, options: Options | None = None, root: Path | str | None = None):
        remove_stale_workdirs(root)
        # mkdtemp creates the folder 0700: other users of the machine cannot list or read it
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=root))
        self.token = secrets.token_urlsafe(24)
        self.options = options or Options()
        self.items: dict[str, Item] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._runner = None
        self._thread = threading.Thread(target=self._work, name="anonymize-app-worker", daemon=True)
        self._thread.start()

    # ---- lifecycle

    def close(self) -> None:
        """Stop the worker (a running job stops at its next frame) and remove the working folder."""
        self._stop.set()
        self._jobs.put(None)
        self._thread.join(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _check_stop(self, n: int = 0) -> None:
        if self._stop.is_set():
            raise Stopped()

    # ---- jobs

    def new_item(self, name: str, kind: str, ext: str) -> Item:
        item_id = secrets.token_hex(8)
        folder = self.workdir / item_id
        folder.mkdir(mode=0o700)
        item = Item(item_id, name, kind, ext, folder)
        with self._lock:
            self.items[item_id] = item
        return item

    def queue_detect(self, item: Item) -> None:
        self._jobs.put(("detect", item, None))

    def queue_render(self, item: Item, edits: dict) -> None:
        item.status, item.progress, item.error = "rendering", 0.0, None
        self._jobs.put(("render", item, edits))

    def _anonymizer(self):
        if self._runner is None:
            from ..api import Anonymizer

            self._runner = Anonymizer(self.options, detectors=False)  # the models load on the first detect
        return self._runner

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            what, item, edits = job
            try:
                if what == "detect":
                    self._detect(item)
                else:
                    self._render(item, edits)
            except Stopped:
                return
            except Exception as exc:  # shown on the page; the server keeps serving the other files
                if not isinstance(exc, AnonymizeError):
                    log.exception("app job failed")
                    exc = f"{type(exc).__name__}: {exc}"
                # a failed render leaves the file as it was (reviewable, its edits can be fixed)
                item.status = "failed" if what == "detect" else "ready"
                item.error = f"{what} failed: {exc}"

    def _counter(self, item: Item, share: float, offset: float):
        count = [0]

        def on_frame(n: int) -> None:
            self._check_stop()
            count[0] += n
            item.progress = min(1.0, offset + share * count[0] / max(1, item.frame_total))
        return on_frame

    def _detect(self, item: Item) -> None:
        from ..ffmpeg_tools import probe

        item.status = "detecting"
        runner = self._anonymizer()
        if item.kind == "video":
            info = probe(item.src)
            item.frame_total = info.estimated_frames() or 1
            v = info.video
            item.fps = float(v.fps) if v is not None and v.fps else 0.0
            item.original = item.src.name if (item.ext, v.codec if v else "") in PLAYABLE else None
        elif item.ext in UNSHOWN_PHOTOS:
            _png_copy(item.src, item.folder / "original.png")  # the "original" view, on this computer only
            item.original = "original.png"
        else:
            item.original = item.src.name
        report = runner.detect(item.src, on_frame=self._counter(item, 0.8, 0.0))
        plan_path = item.folder / "plan.json"
        runner.write_report(plan_path, [report])
        doc = json.loads(plan_path.read_text(encoding="utf-8"))
        entry = doc["files"][0]
        item.frame_total = max(1, entry.get("frame_count", 1))
        self._thumbnails(item, entry)
        if item.original is None:
            self._original_copy(item)
        rendered = item.folder / f"{'preview' if item.shown_ext == item.out_ext else 'detected'}{item.out_ext}"
        runner.render(item.src, plan_path, rendered, on_frame=self._counter(item, 0.2, 0.8))
        item.show(rendered)
        item.plan, item.version, item.progress, item.status = entry, item.version + 1, 1.0, "ready"

    def _render(self, item: Item, edits: dict) -> None:
        from ..plan import parse_plan

        doc = json.loads((item.folder / "plan.json").read_text(encoding="utf-8"))
        entry = doc["files"][0]
        spared = set(edits.get("spared", []))
        for t in entry.get("tracks", []):
            t["masked"] = t["id"] not in spared
        entry["add"] = edits.get("add", [])
        entry["mask_frames"] = edits.get("mask_frames", [])
        text = json.dumps(doc)
        plan = parse_plan(text, "the page's edits")  # validated: InputError shows on the page
        (item.folder / "edited-plan.json").write_text(text, encoding="utf-8")
        runner = self._anonymizer()
        out = item.folder / f"output{item.out_ext}"
        report = runner.render(item.src, plan, out, on_frame=self._counter(item, 1.0, 0.0))
        runner.write_report(item.folder / "report.json", [report])
        item.show(out)
        item.version += 1
        item.progress, item.status = 1.0, "rendered"

    def _thumbnails(self, item: Item, entry: dict) -> None:
        """One crop per track, from the frame where its raw box is largest (faces before heads)."""
        best: dict[int, tuple[float, int, list]] = {}
        for f in entry.get("frames", []):
            for r in f.get("raw", []):
                tid = r.get("track", -1)
                if tid < 0:
                    continue
                x1, y1, x2, y2 = r["box"]
                area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
                if tid not in best or area > best[tid][0]:
                    best[tid] = (area, f["index"], r["box"])
        wanted: dict[int, list[tuple[int, list]]] = {}
        for tid, (_, index, box) in best.items():
            wanted.setdefault(index, []).append((tid, box))
        folder = item.folder / "thumbs"
        folder.mkdir(mode=0o700)
        for index, image in self._frames_at(item, set(wanted)):
            for tid, box in wanted[index]:
                crop = _crop(image, box)
                if crop is not None:
                    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
                    if ok:
                        (folder / f"{tid}.jpg").write_bytes(data.tobytes())

    def _frames_at(self, item: Item, indices: set[int]):
        if not indices:
            return
        if item.kind == "photo":
            from ..photo import read_photo

            yield 0, read_photo(item.src)[0]
            return
        from ..ffmpeg_tools import probe
        from ..video import VideoDecoder

        last = max(indices)
        frames = VideoDecoder(item.src, probe(item.src)).frames()
        try:
            for frame in frames:
                self._check_stop()
                if frame.index in indices:
                    yield frame.index, frame.image
                if frame.index >= last:
                    break
        finally:
            frames.close()

    def _original_copy(self, item: Item) -> None:
        """An H.264 copy of a video the browser cannot play as it is (only for the "original" view)."""
        from ..ffmpeg_tools import run_ffmpeg_checked

        out = item.folder / "original.mp4"
        run_ffmpeg_checked(["-loglevel", "error", "-i", str(item.src), "-map", "0:V:0",
                            "-an", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
                            "-fps_mode", "passthrough", "-y", str(out)])
        item.original = out.name


def _png_copy(src: Path, dst: Path) -> None:
    """``src`` (a photo, e.g. HEIC) as a PNG the browser can show, upright as the pipeline sees it;
    no metadata is carried over (cv2 writes none)."""
    from ..photo import read_photo

    image, _ = read_photo(src)
    if not cv2.imwrite(str(dst), image):
        raise AnonymizeError(f"could not write the page's copy of {src.name}")


def _crop(image: np.ndarray, box: list) -> np.ndarray | None:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    pad = 0.25 * max(x2 - x1, y2 - y1)
    a, b = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    c, d = int(min(w, x2 + pad)), int(min(h, y2 + pad))
    if c - a < 2 or d - b < 2:
        return None
    crop = image[b:d, a:c]
    scale = THUMB_PX / max(crop.shape[:2])
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


# --------------------------------------------------------------------------------------------
# access control


class Guard:
    """ASGI middleware: 403 unless the Host header names this server and the token is given.

    The token may come as ``?token=`` (the URL the CLI prints; the response then sets it as an
    HttpOnly, SameSite=Strict cookie so the page's own requests carry it), as that cookie, or as
    an ``X-Anonymize-Token`` header. A request with an ``Origin`` header from another origin is
    refused too (a form or fetch from another site)."""

    def __init__(self, app, token: str, hosts: set[str], cookie: str):
        self.app, self.token, self.hosts, self.cookie = app, token.encode(), {h.lower() for h in hosts}, cookie

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # the page uses none
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        if host not in self.hosts or (origin is not None and origin.lower() not in {f"http://{h}" for h in self.hosts}):
            return await _forbidden(send, "this page answers only on its own address (Host/Origin refused)")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = self._valid((query.get("token") or [None])[0])
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            cookie = SimpleCookie()
        ok = from_query or self._valid(headers.get("x-anonymize-token")) or (
            self.cookie in cookie and self._valid(cookie[self.cookie].value))
        if not ok:
            return await _forbidden(send, "a valid token is required: open the address `anonymize app` printed")
        if not from_query:
            return await self.app(scope, receive, send)
        set_cookie = f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + [(b"set-cookie", set_cookie)])
            await send(message)
        return await self.app(scope, receive, send_with_cookie)


async def _forbidden(send, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host headers accepted: the bound address and, on the loopback, its usual names."""
    names = {host}
    if host in ("127.0.0.1", "localhost", "::1"):
        names |= {"127.0.0.1", "localhost"}
    return {f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names}


# --------------------------------------------------------------------------------------------
# routes


NO_STORE = {"Cache-Control": "no-store"}


def create_app(session: Session, host: str, port: int) -> Guard:
    """The page's ASGI app for ``session``, served at ``host:port`` (the Host headers accepted)."""
    app = FastAPI(title="anonymize review page", docs_url=None, redoc_url=None, openapi_url=None)

    def item_of(item_id: str) -> Item:
        item = session.items.get(item_id) if len(item_id) <= 32 else None
        if item is None:
            raise HTTPException(404, "no such file")
        return item

    def static(name: str, media: str) -> FileResponse:
        return FileResponse(STATIC / name, media_type=media, headers=NO_STORE)

    @app.get("/")
    def index():
        return static("index.html", "text/html; charset=utf-8")

    @app.get("/static/{name}")
    def asset(name: str):
        kinds = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}
        path = STATIC / name
        if "/" in name or name.startswith(".") or path.suffix not in kinds or not path.is_file():
            raise HTTPException(404, "no such file")
        return static(name, kinds[path.suffix])

    @app.post("/api/files", status_code=202)
    async def upload(request: Request):
        name = unquote(request.headers.get("x-file-name", "upload"))[:200] or "upload"
        tmp = session.workdir / f"incoming-{secrets.token_hex(8)}"
        tmp.mkdir(mode=0o700)
        try:
            try:
                up, kind, ext = await receive_media(request, tmp, MAX_UPLOAD_BYTES)
            except UploadError as exc:
                raise HTTPException(exc.status, exc.message) from None
            item = session.new_item(name, kind, ext)
            up.path.replace(item.src)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        session.queue_detect(item)
        return {"id": item.id, "status": item.status}

    @app.get("/api/files")
    def list_files():
        return [{"id": i.id, "name": i.name, "kind": i.kind, "status": i.status, "progress": round(i.progress, 3),
                 "error": i.error} for i in list(session.items.values())]

    @app.get("/api/files/{item_id}")
    def get_file(item_id: str):
        return JSONResponse(item_of(item_id).public(), headers=NO_STORE)

    @app.post("/api/files/{item_id}/render", status_code=202)
    async def render(item_id: str, request: Request):
        item = item_of(item_id)
        if item.status not in ("ready", "rendered"):
            raise HTTPException(409, f"the file is not ready to render (status: {item.status})")
        try:
            edits = await request.json()
        except ValueError:
            raise HTTPException(422, "the edits must be JSON") from None
        if not isinstance(edits, dict) or not all(isinstance(edits.get(k, []), list)
                                                  for k in ("spared", "add", "mask_frames")):
            raise HTTPException(422, "edits: {spared: [...], add: [...], mask_frames: [...]}")
        session.queue_render(item, edits)
        return {"id": item.id, "status": item.status}

    def _media(item: Item, name: str | None, download: str | None = None) -> FileResponse:
        path = item.folder / name if name else None
        if path is None or not path.is_file():
            raise HTTPException(404, "not there (yet)")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            filename=download, headers=NO_STORE)

    @app.get("/api/files/{item_id}/preview")
    def preview(item_id: str):
        item = item_of(item_id)
        return _media(item, f"preview{item.shown_ext}")

    @app.get("/api/files/{item_id}/original")
    def original(item_id: str):
        item = item_of(item_id)
        return _media(item, item.original)

    @app.get("/api/files/{item_id}/thumb/{track}")
    def thumb(item_id: str, track: int):
        return _media(item_of(item_id), f"thumbs/{int(track)}.jpg")

    @app.get("/api/files/{item_id}/output")
    def output(item_id: str):
        item = item_of(item_id)
        if item.status != "rendered":
            raise HTTPException(409, "press Render first")
        return _media(item, f"output{item.out_ext}", f"{Path(item.name).stem}.anonymized{item.out_ext}")

    @app.get("/api/files/{item_id}/report")
    def report(item_id: str):
        item = item_of(item_id)
        if item.status != "rendered":
            raise HTTPException(409, "press Render first")
        return _media(item, "report.json", f"{Path(item.name).stem}.anonymized.json")

    return Guard(app, session.token, allowed_hosts(host, port), cookie=f"anonymize_app_{port}")
