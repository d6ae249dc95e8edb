"""The HTTP API (FastAPI). The contract is documented in docs/service.md and served at
``/openapi.json``; every route but /healthz and /metrics needs ``Authorization: Bearer KEY``
when the server has keys.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import time
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from . import worker
from .core import Service, options_from_json
from .hosts import LoopbackOnly, is_loopback
from .store import Job, new_job_id
from .upload import UploadError, receive_media
from .webhook import CallbackError, check_url

log = logging.getLogger("anonymize.service")

MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".heic": "image/heic",
               ".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
               ".webm": "video/webm", ".avi": "video/x-msvideo"}
#: Multipart overhead allowed above --max-upload-mb when a Content-Length is announced.
FORM_OVERHEAD = 1 << 20

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Accepted(BaseModel):
    id: str
    status: Status


class JobOut(BaseModel):
    id: str
    status: Status
    kind: Literal["photo", "video"]
    progress: float
    error: str | None
    created: str
    started: str | None
    finished: str | None
    options: dict
    bytes_in: int
    bytes_out: int
    expired: bool
    attempts: int
    output: str | None = None
    report: str | None = None


class Problem(BaseModel):
    detail: str


_ERRORS = {s: {"model": Problem} for s in (400, 401, 404, 413, 415, 422)}

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {
        "schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "the photo or video; its type is read from its content"},
                "options": {"type": "string", "description": 'JSON object of the CLI\'s options, e.g. '
                            '{"marks": "faces,heads", "mask": "solid", "audio": "drop"}'},
                "callback_url": {"type": "string", "description": "http(s) URL POSTed the job's JSON when "
                                 "it ends (signed: X-Anonymize-Signature)"},
            }}}},
}


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def create_app(service: Service) -> FastAPI:
    """The FastAPI app serving ``service``; its lifespan starts and stops the service's workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="anonymize", version="1", lifespan=lifespan,
                  description="Upload a photo or video; get it back with every face masked and its metadata "
                              "removed. See docs/service.md.")
    if is_loopback(service.settings.host):  # DNS rebinding and cross-site requests: see hosts.py
        app.add_middleware(LoopbackOnly)
    bearer = HTTPBearer(auto_error=False, description="one of the server's --keys")
    max_bytes = int(service.settings.max_upload_mb * (1 << 20))

    def owner(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        header = f"Bearer {creds.credentials}" if creds else None
        found = service.keys.check(header)
        if found is None:
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer KEY)",
                                headers={"WWW-Authenticate": "Bearer"})
        return found

    def own_job(job_id: str, who: str = Depends(owner)) -> Job:
        job = service.store.get(job_id, who) if len(job_id) <= 64 else None
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    @app.post("/v1/jobs", status_code=202, response_model=Accepted, responses=_ERRORS,
              openapi_extra={"requestBody": UPLOAD_BODY}, summary="Submit a photo or video")
    async def submit(request: Request, who: str = Depends(owner),
                     idempotency_key: str | None = Header(None, max_length=200)):
        if idempotency_key is not None:
            known = service.store.by_idempotency_key(who, idempotency_key)
            if known is not None:
                return JSONResponse({"id": known.id, "status": known.status}, status_code=202,
                                    headers={"Idempotent-Replayed": "true", "Location": f"/v1/jobs/{known.id}"})
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
            raise HTTPException(413, f"the upload is larger than the limit of {max_bytes} bytes")
        job_id = new_job_id()
        folder = service.folder(job_id)
        folder.mkdir(mode=0o700)
        try:
            job = await _accept(request, job_id, folder, who, idempotency_key)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if job.id != job_id:  # the same key raced in meanwhile: that job stands
            shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202,
                            headers={"Location": f"/v1/jobs/{job.id}"})

    async def _accept(request: Request, job_id: str, folder, who: str, idem: str | None) -> Job:
        try:
            up, kind, ext = await receive_media(request, folder, max_bytes)
        except UploadError as exc:
            raise HTTPException(exc.status, exc.message) from None
        try:
            raw = json.loads(up.fields.get("options") or "{}", parse_constant=_no_constants)
            options = options_from_json(raw)
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, f"options: {exc}") from None
        callback = up.fields.get("callback_url") or None
        if callback is not None:
            try:
                check_url(callback, service.settings.allow_private_callbacks)
            except CallbackError as exc:
                raise HTTPException(422, str(exc)) from None
        upload = folder / f"upload{ext}"
        os.replace(up.path, upload)
        if kind == "video" and service.settings.max_duration > 0:
            await asyncio.to_thread(_check_duration, upload, service.settings.max_duration)
        (folder / worker.SPEC).write_text(json.dumps({"upload": upload.name, "ext": ext, "kind": kind,
                                                      "options": options}))
        job = Job(id=job_id, owner=who, status="queued", kind=kind, ext=ext, options=options,
                  callback_url=callback, idem_key=idem, error=None, created=time.time(), started=None,
                  finished=None, attempts=0, bytes_in=up.size, bytes_out=0, expired=False)
        return service.enqueue(job)

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, summary="A job's state")
    def get_job(job: Job = Depends(own_job)):
        return service.public(job)

    def _result(job: Job, name: str):
        if job.status != "succeeded":
            raise HTTPException(409, f"the job has no result (status: {job.status})")
        path = service.folder(job.id) / name
        if job.expired or not path.is_file():
            raise HTTPException(410, "the result was deleted (--keep-results)")
        return path

    @app.get("/v1/jobs/{job_id}/output", responses={**_ERRORS, 409: {"model": Problem}, 410: {"model": Problem},
                                                     200: {"content": {"application/octet-stream": {}}}},
             response_class=FileResponse, summary="The anonymized file")
    def get_output(job: Job = Depends(own_job)):
        path = _result(job, f"output{job.ext}")
        return FileResponse(path, media_type=MEDIA_TYPES.get(job.ext, "application/octet-stream"),
                            filename=f"{job.id}{job.ext}")

    @app.get("/v1/jobs/{job_id}/report", responses={**_ERRORS, 409: {"model": Problem}, 410: {"model": Problem}},
             summary="The JSON report of what was masked (schema of anonymize.report)")
    def get_report(job: Job = Depends(own_job)):
        return FileResponse(_result(job, "report.json"), media_type="application/json")

    @app.delete("/v1/jobs/{job_id}", status_code=204, responses=_ERRORS,
                summary="Cancel the job if it runs and delete it with all its files")
    def delete_job(job: Job = Depends(own_job)):
        service.delete(job)
        return Response(status_code=204)

    @app.get("/healthz", summary="Liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    def metrics():
        return PlainTextResponse(_metrics(service), media_type="text/plain; version=0.0.4")

    return app


def _check_duration(path, limit: float) -> None:
    from anonymize.errors import AnonymizeError
    from anonymize.ffmpeg_tools import probe

    try:
        duration = probe(path).duration
    except AnonymizeError:
        raise HTTPException(422, "the video cannot be read") from None
    except Exception:
        raise HTTPException(422, "the video cannot be read") from None
    if duration is None or not math.isfinite(duration) or duration > limit:
        raise HTTPException(422, f"the video is longer than the limit of {limit:g} s (or has no duration)")


def _metrics(service: Service) -> str:
    counts = service.store.counts()
    lines = ["# HELP anonymize_jobs Jobs in the job table, by status.", "# TYPE anonymize_jobs gauge"]
    lines += [f'anonymize_jobs{{status="{s}"}} {n}' for s, n in counts.items()]
    lines += ["# HELP anonymize_queue_length Jobs waiting for a worker.", "# TYPE anonymize_queue_length gauge",
              f"anonymize_queue_length {counts['queued']}",
              "# HELP anonymize_workers Jobs that can run at once (--workers).", "# TYPE anonymize_workers gauge",
              f"anonymize_workers {service.settings.workers}",
              "# HELP anonymize_bytes_in_total Bytes of accepted uploads.", "# TYPE anonymize_bytes_in_total counter",
              f"anonymize_bytes_in_total {service.store.counter('bytes_in')}",
              "# HELP anonymize_bytes_out_total Bytes of outputs written.",
              "# TYPE anonymize_bytes_out_total counter",
              f"anonymize_bytes_out_total {service.store.counter('bytes_out')}",
              "# HELP anonymize_callbacks_total Callbacks since the start, by result.",
              "# TYPE anonymize_callbacks_total counter",
              f'anonymize_callbacks_total{{result="delivered"}} {service.deliverer.delivered}',
              f'anonymize_callbacks_total{{result="failed"}} {service.deliverer.failed}']
    return "\n".join(lines) + "\n"
