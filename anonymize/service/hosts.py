"""Loopback means loopback: refuse requests that reach a loopback server under another name.

A web page the user opens can make their browser talk to ``127.0.0.1``. Two attacks follow:
DNS rebinding (the page's own name is re-pointed at 127.0.0.1, so the browser treats the
service as same-origin and can read jobs and results; without ``--keys`` every request is the
one anonymous owner) and cross-site requests (a form POST submits a job). Both carry a name
other than the loopback's, the first in ``Host``, the second in ``Origin``; programs (curl,
httpx, the Python client) send a loopback ``Host`` and no ``Origin``. So on a loopback bind a
request is answered only when ``Host`` names the loopback and ``Origin``, if any, does too.

A server bound elsewhere needs ``--keys`` (every request then carries a key a web page does
not have) and may sit behind a proxy with any name, so it checks neither header.
"""
from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

#: Names under which a loopback server is reached (compared without the port).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback(host: str) -> bool:
    """True for an address to bind that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(value: str) -> str:
    """The host part of a ``Host`` header value (``[::1]:8000`` -> ``::1``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def loopback_request(host: str | None, origin: str | None) -> bool:
    """True when a request's ``Host`` (and ``Origin``, when sent) name the loopback."""
    if host is None or _hostname(host) not in LOOPBACK_NAMES:
        return False
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_NAMES
    except ValueError:
        return False


class LoopbackOnly:
    """ASGI middleware: 403 for an HTTP request whose Host or Origin is not the loopback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan (the service speaks no websocket)
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if loopback_request(headers.get("host"), headers.get("origin")):
            return await self.app(scope, receive, send)
        body = json.dumps({"detail": "this server answers only requests addressed to the loopback "
                                     "(Host/Origin refused)"}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
