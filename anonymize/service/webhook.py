"""Callbacks: check a callback URL, sign a job's JSON, POST it with retries and backoff.

Signature header: ``X-Anonymize-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` of the
bytes ``"<t>." + body``, keyed with the submitting key's signing secret (:mod:`.auth`).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

log = logging.getLogger("anonymize.service")

#: Seconds before each retry of a delivery that failed (5 tries in all, ~31 s).
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
TIMEOUT = 10.0


class CallbackError(ValueError):
    """A callback URL that is refused."""


def sign(body: bytes, secret: str, t: int | None = None) -> str:
    """The ``X-Anonymize-Signature`` value for ``body``."""
    t = int(time.time()) if t is None else int(t)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(body: bytes, header: str, secret: str, tolerance: float = 300) -> bool:
    """Check a signature header (what a receiver does); refuses one older than ``tolerance`` s."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, t), header.strip())


def _private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_private: bool, resolve: bool = False) -> None:
    """CallbackError unless ``url`` is http(s) with a host; without ``allow_private``, also
    unless its host (resolved when ``resolve``) is a public address (no loopback, private,
    link-local or reserved ranges)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackError("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackError("callback_url must be an http or https URL with a host")
    if len(url) > 2048:
        raise CallbackError("callback_url is too long")
    if allow_private:
        return
    host = parts.hostname
    try:
        addrs = [host] if ipaddress.ip_address(host) else []
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise CallbackError("callback_url must not point to a private or loopback address") from None
        if not resolve:
            return
        try:
            addrs = [ai[4][0] for ai in socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)]
        except OSError:
            raise CallbackError("callback_url's host does not resolve") from None
    if any(_private(a) for a in addrs):
        raise CallbackError("callback_url must not point to a private or loopback address")


class Deliverer:
    """Sends callbacks in background threads, each with its own retries."""

    def __init__(self, allow_private: bool, backoff: tuple[float, ...] = BACKOFF):
        self.allow_private = allow_private
        self.backoff = backoff
        self._stop = threading.Event()
        self.delivered = 0
        self.failed = 0

    def send(self, job_id: str, url: str, body: bytes, secret: str | None) -> None:
        threading.Thread(target=self._run, args=(job_id, url, body, secret), daemon=True,
                         name=f"webhook-{job_id[:8]}").start()

    def _run(self, job_id: str, url: str, body: bytes, secret: str | None) -> None:
        import httpx

        for attempt, wait in enumerate((0.0, *self.backoff)):
            if wait and self._stop.wait(wait):
                return
            try:
                # resolved again at each try: a host that now points inside is refused
                check_url(url, self.allow_private, resolve=True)
                headers = {"Content-Type": "application/json", "User-Agent": "anonymize-service"}
                if secret is not None:
                    headers["X-Anonymize-Signature"] = sign(body, secret)
                res = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT, follow_redirects=False)
                if 200 <= res.status_code < 300:
                    self.delivered += 1
                    log.info("job %s: callback delivered (try %d)", job_id, attempt + 1)
                    return
                log.info("job %s: callback answered %d (try %d)", job_id, res.status_code, attempt + 1)
            except CallbackError as exc:
                log.warning("job %s: callback refused: %s", job_id, exc)
                break
            except Exception as exc:  # network errors: retried
                log.info("job %s: callback failed (%s, try %d)", job_id, type(exc).__name__, attempt + 1)
        self.failed += 1
        log.warning("job %s: callback not delivered", job_id)

    def stop(self) -> None:
        self._stop.set()
