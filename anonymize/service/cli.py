"""``anonymize serve``: check the settings, then run the FastAPI app under uvicorn."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from .auth import Keys
from .hosts import is_loopback

log = logging.getLogger("anonymize.service")


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text!r})")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (got {text!r})")
    return value


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to 64 (got {text!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anonymize serve", description=(
        "An HTTP service: POST /v1/jobs a photo or video, GET its anonymized output. "
        "Contract: docs/service.md and /openapi.json."))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1); any other than "
                   "loopback needs --keys")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 = any free port)")
    p.add_argument("--data", type=Path, required=True, help="folder of the job table, uploads and results")
    p.add_argument("--keys", type=Path, help="file of API keys, one per line (clients send Authorization: "
                   "Bearer KEY; each key sees only its own jobs)")
    p.add_argument("--max-upload-mb", type=_positive, default=2048, metavar="N",
                   help="largest upload accepted, in MiB (default: 2048); larger ones get 413 at once")
    p.add_argument("--max-duration", type=_non_negative, default=0, metavar="S",
                   help="longest video accepted, in seconds (default: 0 = no limit); longer ones get 422")
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="jobs run at once, each in its own worker process (default: 1)")
    p.add_argument("--keep-results", type=_non_negative, default=24, metavar="HOURS",
                   help="hours outputs and reports are kept after their job ends (default: 24)")
    p.add_argument("--private-callbacks", choices=("allow", "forbid"),
                   help="callbacks to loopback and private addresses (default: allow when bound to loopback, "
                        "forbid otherwise)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    from anonymize.cli import add_option
    from anonymize.config import RUN_TABLE

    for row in RUN_TABLE:  # --engine local|ray, --ray-address: the same rows as the batch's
        add_option(p, row)
    return p


def serve_main(argv: list[str]) -> int:
    """Run ``anonymize serve ARGS``; returns the exit code (2 for bad settings)."""
    from .core import Service, Settings

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"anonymize serve: error: {exc.name} is not installed; pip install 'anonymize[service]'",
              file=sys.stderr)
        return 2
    loopback = is_loopback(args.host)
    try:
        keys = Keys.from_file(args.keys) if args.keys else Keys(None)
    except (OSError, ValueError) as exc:
        print(f"anonymize serve: error: --keys: {exc}", file=sys.stderr)
        return 2
    if not loopback and not keys.enabled:
        print(f"anonymize serve: error: refusing to listen on {args.host} without --keys (anyone could use it); "
              "bind to 127.0.0.1 or give --keys FILE", file=sys.stderr)
        return 2
    try:
        args.data.mkdir(parents=True, exist_ok=True)
        args.data.chmod(0o700)
    except OSError as exc:
        print(f"anonymize serve: error: --data: {exc.strerror or exc}", file=sys.stderr)
        return 2
    private = args.private_callbacks == "allow" if args.private_callbacks else loopback
    settings = Settings(data=args.data, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                        max_duration=args.max_duration, workers=args.workers, keep_results=args.keep_results,
                        allow_private_callbacks=private)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("anonymize serve: %(message)s"))
    log.addHandler(handler)
    log.setLevel(getattr(logging, args.log_level.upper()))
    log.propagate = False

    import uvicorn

    from .app import create_app

    executor = None
    if args.engine == "ray":
        from anonymize.errors import InputError

        from .executor import RayExecutor

        try:
            executor = RayExecutor(args.data, address=args.ray_address, local_cpus=args.workers)
        except InputError as exc:
            print(f"anonymize serve: error: {exc}", file=sys.stderr)
            return 2
    elif args.ray_address:
        print("anonymize serve: error: --ray-address needs --engine ray", file=sys.stderr)
        return 2
    service = Service(settings, keys, executor)
    app = create_app(service)
    # No access log: it would hold client addresses and URLs. uvicorn's own messages stay at warning.
    config = uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_level="warning",
                            lifespan="on", server_header=False, proxy_headers=False)
    server = uvicorn.Server(config)
    log.info("listening on %s:%d (%d worker(s), %s)", args.host, args.port, settings.workers,
             f"{len(keys)} key(s)" if keys.enabled else "no keys")
    server.run()
    return 0


def main() -> None:
    sys.exit(serve_main(sys.argv[1:]))
