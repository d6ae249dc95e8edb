"""``anonymize app [--port N] [--host 127.0.0.1] [--no-browser] [options]``: start the local review page.

The options are those of ``anonymize`` (from :data:`anonymize.config.TABLE`): what is detected and
how it is masked, for every file reviewed on the page.

It binds 127.0.0.1 on a free port (unless ``--port``), prints the address with the session's
random token and opens it in the browser. Ctrl-C (or SIGTERM) stops it; the working folder, with
every upload, plan and output, is removed then.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Running:
    """A bound, not yet serving page: ``server.run(sockets=[sock])`` serves it."""

    server: object  # uvicorn.Server
    session: object  # anonymize.app.server.Session
    sock: socket.socket
    url: str


def prepare(host: str = "127.0.0.1", port: int = 0, options=None) -> Running:
    """Bind ``host:port`` (port 0: a free one), make the session and the uvicorn server.

    The socket is bound here, before the URL is printed, so the port cannot be taken meanwhile."""
    import uvicorn

    from .server import Session, create_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    port = sock.getsockname()[1]
    session = Session(options)
    app = create_app(session, host, port)
    # No access log: it would print every URL, token included. uvicorn's own messages stay at warning.
    config = uvicorn.Config(app, access_log=False, log_level="warning", lifespan="off", server_header=False)
    shown = f"[{host}]" if ":" in host else host
    return Running(uvicorn.Server(config), session, sock, f"http://{shown}:{port}/?token={session.token}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anonymize app", description="Start the local review page: choose photos "
                                "and videos, see what was found, spare people who consented, add what was missed, "
                                "then render and save. It answers only on this computer, to the address it prints "
                                "(which holds a random access key).")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; anything else makes the page reachable from "
                        "other machines, protected only by the token)")
    p.add_argument("--no-browser", action="store_true", help="print the address only, do not open a browser")
    from ..cli_plan import _add
    from ..config import TABLE

    for row in TABLE:  # the anonymizing options, as for `anonymize` (what is detected, the mask)
        if row.cli:
            _add(p, row)
    return p


def app_main(argv: list[str]) -> int:
    """Run ``anonymize app``; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if not 0 <= args.port <= 65535:
        print("anonymize: error: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    from ..cli_plan import _options
    from ..config import TABLE
    from ..errors import InputError

    try:
        options = _options(args, [row.name for row in TABLE if row.cli])
    except InputError as exc:
        print(f"anonymize: error: {exc}", file=sys.stderr)
        return 2
    try:
        running = prepare(args.host, args.port, options)
    except OSError as exc:
        print(f"anonymize: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"anonymize: warning: {args.host} is not the loopback: other machines can reach the page",
              file=sys.stderr)
    print(f"anonymize app: open {running.url}\n(Ctrl-C stops it; its working files are removed then)", flush=True)
    if not args.no_browser:
        threading.Thread(target=webbrowser.open, args=(running.url,), daemon=True).start()
    try:
        running.server.run(sockets=[running.sock])
    finally:
        running.session.close()
        running.sock.close()
    return 0
