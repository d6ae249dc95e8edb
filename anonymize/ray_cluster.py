"""Ray, for ``--engine ray``: connecting (or starting a private local cluster), and checking that
every node sees the files. Ray is an optional extra (``pip install "anonymize-protest[ray]"``),
imported only here and only when asked for.

Local means local: without ``--ray-address`` Ray is started on 127.0.0.1 only (every port it
opens is on loopback: :func:`_loopback_only`), with no dashboard
and no usage statistics (``RAY_USAGE_STATS_ENABLED=0`` is set before Ray is imported, and passed
to every worker), and it is shut down when the run ends. With an address the cluster is someone
else's: we connect to it and leave it running.

Files are never shipped through Ray: every node reads the inputs and writes the outputs on a
filesystem they all see (a shared mount), so :func:`check_paths` runs a small task on every node
before any work and refuses (exit 2) a path a node cannot read or write.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from .errors import InputError

#: What ``pip`` needs for ``--engine ray``.
INSTALL_HINT = 'pip install "anonymize-protest[ray]"'
_NO_TELEMETRY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
                 # the driver keeps our SIGTERM/SIGHUP handling (Ray's C++ handler would abort it, exit 134)
                 "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
_lock = threading.Lock()
#: The environment of a private cluster's processes (not ours: the service's webhooks need the
#: real one). Ray's dashboard process runs even without the dashboard and, usage statistics off or
#: not, asks the cloud metadata address (169.254.169.254) and metadata.google.internal (a DNS
#: lookup) which cloud it runs on. Seen under strace in a network namespace; its HTTP client
#: (requests) honours these, so those requests go to a closed port on loopback and fail there,
#: with no lookup; Ray's own gRPC on loopback is exempt (no_proxy).
_LOOPBACK = "127.0.0.1,localhost,::1"
_NO_HTTP = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
            "no_proxy": _LOOPBACK, "NO_PROXY": _LOOPBACK}


def import_ray() -> Any:
    """The ``ray`` module, with usage statistics off; InputError (exit 2) if it is not installed."""
    os.environ.update(_NO_TELEMETRY)  # read when Ray starts, and inherited by its processes
    try:
        import ray
    except ImportError:
        raise InputError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to the Ray cluster at ``address``, or (None) start a private one on this machine with
    ``num_cpus`` CPUs (loopback only, no dashboard, no usage statistics). Returns (``ray``, whether
    this call connected: False when the caller had already called ``ray.init``, whose cluster is
    then used as it is and left connected). InputError (exit 2) when Ray is missing or the
    cluster cannot be reached."""
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only: see _loopback_only
    ray = import_ray()
    with _lock:
        if ray.is_initialized():
            return ray, False
        handlers = _signal_handlers()  # ray.init replaces SIGTERM's with sys.exit(15): ours stay
        common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                      runtime_env={"env_vars": dict(_NO_TELEMETRY)})
        try:
            if address:
                common.pop("include_dashboard")  # the cluster's own setting; not ours to choose
                ray.init(address=address, **common)
            else:
                _loopback_only(ray)
                saved = {k: os.environ.get(k) for k in _NO_HTTP}
                os.environ.update(_NO_HTTP)  # for Ray's processes started now (see _NO_HTTP)
                try:
                    # "local": always a new private cluster, never one another program started here
                    ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **common)
                finally:
                    _loopback_only(ray, undo=True)
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            where = f"at {address}" if address else "on this machine"
            hint = ("; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token and its "
                    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN" if address else "")
            raise InputError(f"--engine ray: cannot {'reach' if address else 'start'} a Ray cluster {where} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}){hint}") from None
        _restore(handlers)
    return ray, True


def _signal_handlers() -> dict:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}


def _restore(handlers: dict) -> None:
    """Put back the signal handlers of before ``ray.init``: SIGTERM, SIGHUP and Ctrl-C must stop a
    run cleanly (:mod:`anonymize.signals`: tasks cancelled, no temporary file left, summary)."""
    import signal

    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _loopback_only(ray: Any, undo: bool = False) -> None:
    """Make a private cluster bind 127.0.0.1 only. Ray replaces a node address of 127.0.0.1 with
    the machine's outward address (found by a UDP "connect" to 8.8.8.8) and then listens on every
    interface, unless its cluster mode is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when
    Ray is imported; the constant is set too, for a Ray imported before us). Checked with ``ss``:
    every port of the private cluster is on 127.0.0.1."""
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without it: the environment variable alone
        return
    if undo:
        ray_constants.ENABLE_RAY_CLUSTER = _saved.pop("cluster", ray_constants.ENABLE_RAY_CLUSTER)
    else:
        _saved["cluster"] = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False


_saved: dict[str, bool] = {}


def disconnect() -> None:
    """Leave the cluster (a local one we started stops with it)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    """CPUs of the connected cluster (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _check_here(read: list[str], write: list[str]) -> list[str]:
    """On one node: what of ``read`` (folders and files) it cannot read and of ``write`` (folders)
    it cannot write. Runs in a Ray worker."""
    problems = []
    for path in read:
        try:
            os.stat(path)
        except OSError as exc:
            problems.append(f"cannot see {path} ({exc.strerror or exc})")
            continue
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            problems.append(f"cannot read {path}")
    for path in write:
        try:
            os.stat(path)
        except OSError as exc:
            problems.append(f"cannot see {path} ({exc.strerror or exc})")
            continue
        if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
            problems.append(f"cannot write into {path}")
    return problems


def check_paths(read: list[str], write: list[str], timeout_s: float = 120.0) -> None:
    """Before any work: on every alive node of the cluster, a small task checks that ``read`` can
    be read and ``write`` written. InputError (exit 2) naming the node and the path otherwise:
    the files must live on a filesystem every node sees."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=1)(_check_here)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(read, write): n for n in nodes}
    try:
        answers = ray.get(list(refs), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise InputError(f"--engine ray: the nodes did not answer the path check within {timeout_s:.0f} s") from None
    bad = []
    for node, problems in zip(refs.values(), answers):
        bad += [f"node {node.get('NodeManagerAddress', '?')}: {p}" for p in problems]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InputError("--engine ray: " + "; ".join(bad[:3]) + more
                         + "; input and output must be on a filesystem every node sees (a shared mount)")
