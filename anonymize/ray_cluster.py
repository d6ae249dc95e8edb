"""Ray, for ``--engine ray``: connecting (or starting a private local cluster), and checking that
every node sees the files. Ray is an optional extra (``pip install "anonymize-protest[ray]"``),
imported only here and only when asked for.

Local means local: without ``--ray-address`` Ray is started on 127.0.0.1 only (every port it
opens is on loopback: :func:`_loopback_only`), lean (no dashboard or its API server, no
autoscaler monitor, no log monitor, the raylet's agents stood in for by
:mod:`anonymize.ray_agent_stub`: :func:`_lean`) and with no usage statistics
(``RAY_USAGE_STATS_ENABLED=0`` is set before Ray is imported, and inherited by every process of
the cluster), and it is shut down when the run ends. The CLI starts it in a background thread as
soon as it has parsed its arguments (:func:`prestart`), so Ray's start overlaps the run's setup. With an address the cluster is someone
else's: we connect to it and leave it running.

Files are never shipped through Ray: every node reads the inputs and writes the outputs on a
filesystem they all see (a shared mount), so :func:`check_paths` runs a small task on every node
before any work and refuses (exit 2) a path a node cannot read or write.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from typing import Any, Iterator

from .errors import InputError

#: What ``pip`` needs for ``--engine ray``.
INSTALL_HINT = 'pip install "anonymize-protest[ray]"'
_NO_TELEMETRY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
                 # the driver keeps our SIGTERM/SIGHUP handling (Ray's C++ handler would abort it, exit 134)
                 "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
_lock = threading.Lock()
#: The environment of a private cluster's processes (not ours: the service's webhooks need the
#: real one). Ray's dashboard process (an API server even without the dashboard; no longer started
#: for a private cluster, :func:`_lean`, but kept from the network all the same) asks, usage
#: statistics off or not, the cloud metadata address (169.254.169.254) and metadata.google.internal (a DNS
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


def prestart(num_cpus: int | None = None) -> None:
    """Start the private local cluster of a coming ``connect(None, num_cpus)`` in a background
    thread now, so Ray's start (seconds) overlaps the work a run does before its first file
    (imports, planning, the manifest). :func:`connect` waits for it and takes it; an error is
    raised there. :func:`disconnect` stops it, finished or not.

    Returns once ``import ray`` has finished in that thread: the caller's own imports would share
    the interpreter with it (one runs at a time) and delay the cluster's processes by as much; while
    those processes start, the thread mostly waits and the caller has the interpreter."""
    global _pending
    with _lock:
        ray = sys.modules.get("ray")
        if _pending is not None or (ray is not None and ray.is_initialized()):
            return  # already under way, or the caller's own ray.init, which connect() uses
        result: dict[str, Any] = {"ready": threading.Event(), "imported": threading.Event()}
        _release.clear()

        def start() -> None:
            try:
                try:
                    ray = import_ray()
                finally:
                    result["imported"].set()
                result["ray"], result["owned"] = _start_local(ray, num_cpus)
            except BaseException as exc:  # noqa: BLE001 - re-raised by connect() in the caller's thread
                result["error"] = exc
            finally:
                result["ready"].set()
            # Ray starts its GCS and raylet with PR_SET_PDEATHSIG: they get SIGKILL when the *thread*
            # that started them ends, so this thread lives until the cluster is shut down
            _release.wait()

        thread = threading.Thread(target=start, name="anonymize-ray-start", daemon=True)
        _pending = (thread, num_cpus, result)
        thread.start()
    result["imported"].wait()


def _take_pending(num_cpus: int | None) -> tuple[Any, bool] | None:
    """(``ray``, owned) of a :func:`prestart` for ``num_cpus`` (waiting for it), or None."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is None:
        return None
    thread, cpus, result = pending
    result["imported"].wait()  # never two threads importing Ray's package at once
    if "error" not in result:
        _warm_imports()  # while the cluster starts (this thread would only wait)
    result["ready"].wait()
    if "error" in result:
        raise result["error"]
    if cpus != num_cpus and result["owned"]:  # started for another size: not this run's cluster
        result["ray"].shutdown()
        _release.set()
        return None
    return result["ray"], result["owned"]


def _warm_imports() -> None:
    """The modules the driver's first ``ray.put`` imports (Ray's serialization add-ons: pydantic,
    starlette when installed, Arrow's hooks: ~0.25 s here), imported ahead, while the private
    cluster starts (after the ``import ray`` of :func:`prestart`: a package half imported by
    another thread would be seen half-initialised)."""
    import importlib

    for name in ("ray._common.pydantic_compat", "starlette.datastructures", "ray._private.arrow_serialization"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - not installed, or not in this Ray: the put imports what it needs
            pass


def cancel_prestart() -> None:
    """Stop the cluster of a :func:`prestart` that no :func:`connect` took (a run that ended
    before its first file: a setup error, a signal)."""
    taken = _take_pending(None)
    if taken is not None and taken[1]:
        taken[0].shutdown()
    _release.set()


_pending: tuple[threading.Thread, int | None, dict] | None = None
#: set when the cluster of a :func:`prestart` is shut down: its starting thread may end then
_release = threading.Event()


def connect(address: str | None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to the Ray cluster at ``address``, or (None) start a private one on this machine with
    ``num_cpus`` CPUs (loopback only, no dashboard, no usage statistics). Returns (``ray``, whether
    this call connected: False when the caller had already called ``ray.init``, whose cluster is
    then used as it is and left connected). InputError (exit 2) when Ray is missing or the
    cluster cannot be reached."""
    if not address:
        taken = _take_pending(num_cpus)
        if taken is not None:
            return taken
    ray = import_ray()
    with _lock:
        if ray.is_initialized():
            return ray, False
        handlers = _signal_handlers()  # ray.init replaces SIGTERM's with sys.exit(15): ours stay
        try:
            if address:
                # No runtime environment for the workers of a cluster not ours: one (it used to carry
                # _NO_TELEMETRY) makes its raylet start every worker of the run through its
                # runtime-env agent, ~1.5 s a run here (12.3-13.4 s vs 10.2-11.9 s on 50 photos). Those
                # variables change nothing a worker sends: in Ray 2.60 only the head's dashboard
                # reports usage (and probes for a cloud), under its owner's settings; our own
                # libraries' telemetry is off in every process that imports anonymize (offline.py).
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                _init_local(ray, num_cpus)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise _cannot(address, exc) from None
        finally:
            _restore(handlers)
    return ray, True


def _cannot(address: str | None, exc: BaseException) -> InputError:
    where = f"at {address}" if address else "on this machine"
    hint = ("; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token and its "
            "token in ~/.ray/auth_token or RAY_AUTH_TOKEN" if address else "")
    return InputError(f"--engine ray: cannot {'reach' if address else 'start'} a Ray cluster {where} "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}){hint}")


def _start_local(ray: Any, num_cpus: int | None) -> tuple[Any, bool]:
    """:func:`_init_local` from a background thread (:func:`prestart`); (``ray``, whether it
    started the cluster)."""
    # ray.init outside the main thread sets no SIGTERM handler (ours stay, as wanted) and says so
    with _quiet("ray._private.worker"), _lock:
        if ray.is_initialized():
            return ray, False
        try:
            _init_local(ray, num_cpus)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise _cannot(None, exc) from None
    return ray, True


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from Ray's logger ``logger`` while inside (its notes are not ours to print)."""
    import logging

    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _init_local(ray: Any, num_cpus: int | None) -> None:
    """``ray.init`` of a private cluster: loopback only, lean (see :func:`_lean`), proxies pointed
    at a closed loopback port for its processes (see ``_NO_HTTP``). The workers inherit this
    process's environment (``_NO_TELEMETRY`` included), so no runtime environment is set: one
    would make the raylet start every worker through its runtime-env agent instead of handing
    out the ones it prestarted (seconds per run here)."""
    import secrets

    global _private
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only: see _loopback_only
    if not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        # Ray turns on token authentication for a new local cluster (no other local user may talk to
        # its loopback ports) and, without a token, writes one to ~/.ray/auth_token, readable by all
        # under the usual umask, and says so on stderr. This run's own token instead, in the
        # environment its cluster's processes inherit and no file: nothing written in the home folder.
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    _loopback_only(ray)
    saved = {k: os.environ.get(k) for k in _NO_HTTP}
    os.environ.update(_NO_HTTP)  # for Ray's processes started now (see _NO_HTTP)
    undo = _lean()
    try:
        # "local": always a new private cluster, never one another program started here; Ray's
        # "Token authentication is enabled for this Ray cluster" is not printed (the token is ours)
        with _quiet("ray._private.authentication.authentication_token_setup"):
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False, configure_logging=False, _system_config=_LEAN_CONFIG)
        _private = True
    finally:
        undo()
        _loopback_only(ray, undo=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Ray settings of a private cluster:
#: - no task events (what a task did, sent to the GCS every second by every worker and the driver,
#:   for the dashboard and the state API, neither of which a private cluster has; their buffer's
#:   flush also made ``ray.shutdown`` 0.36 s instead of 0.13);
#: - a socket to the object store or the raylet that is not there yet is tried again after 10 ms,
#:   not 1 s (in as many more tries: the same 10 s in all). The raylet's object manager connects to
#:   the store its own thread is still opening; about one start in four lost that race by a
#:   few milliseconds and waited a whole second (2.1-2.3 s instead of 1.1-1.3 s for ``ray.init``).
#: - workers at the priority of the local engine's (Ray nices them to 15, below every other
#:   program: on a busy laptop ``--engine ray`` then got less of the machine than ``--engine local``).
_LEAN_CONFIG = {"task_events_report_interval_ms": 0,
                "raylet_client_connect_timeout_milliseconds": 10, "raylet_client_num_connect_attempts": 1000,
                "worker_niceness": 0}


def _lean() -> Any:
    """For the ``ray.init`` of a private cluster: start none of the head's Python services a batch
    never uses: the autoscaler's monitor (one machine, nothing to scale), the log monitor (worker
    logs are not forwarded: ``log_to_driver=False``), the dashboard's API server (no dashboard,
    no job or state API; it is also the process that probes for a cloud metadata service), and
    the raylet's two agents: the dashboard agent (metrics export and the dashboard's per-node
    API, both unused) and the runtime-env agent (no runtime environment is ever set here: see
    :func:`_init_local`): each is started as :mod:`anonymize.ray_agent_stub`, which writes the
    ports the raylet waits for ("not in use") and imports nothing. Each of these is a Python
    process importing Ray at start (0.6-0.7 CPU-seconds each here), on the machine the run's
    workers need, and the agents are on the path of every start (the node registers once they
    have written their ports). GCS and raylet start as always. Ray has no switch for these in
    ``ray.init`` (``ray start`` has ``--no-monitor``/``--include-log-monitor``), so its internals
    are patched for the call; returns the undo. A Ray without these internals starts them all, as before.

    One more patch saves a second on some starts (2 of 5 here): ``ray.init`` waits 0.1 s for
    the raylet to register with the GCS and then asks for the node, and when the raylet is a few
    milliseconds late (it usually needs ~0.11 s) that question waits a whole second inside Ray
    before it asks again. :func:`_quick_get_node` asks the GCS every 5 ms first."""
    try:
        from ray._private import node, parameter, ray_constants, services
    except ImportError:
        return lambda: None
    init, api, start = parameter.RayParams.__init__, node.Node.start_api_server, services.start_ray_process
    get_node = services.get_node

    def lean_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.no_monitor, self.include_log_monitor = True, False

    def no_api_server(self, **kwargs):  # noqa: ARG001 - Node.start_api_server's keywords
        self._webui_url = None

    def stub_agents(command, process_type, *args, **kwargs):
        if process_type == getattr(ray_constants, "PROCESS_TYPE_RAYLET", "raylet"):
            command = [_stub_agent(a) for a in command]
        return start(command, process_type, *args, **kwargs)

    parameter.RayParams.__init__, node.Node.start_api_server = lean_init, no_api_server
    services.start_ray_process = stub_agents
    services.get_node = _quick_get_node(get_node)

    def undo() -> None:
        parameter.RayParams.__init__, node.Node.start_api_server = init, api
        services.start_ray_process, services.get_node = start, get_node

    return undo


def _quick_get_node(get_node: Any, wait_s: float = 5.0, every_s: float = 0.005) -> Any:
    """Ray's ``services.get_node(gcs_address, node_id)``, called once the GCS lists the node
    (asked every ``every_s``, for at most ``wait_s``; then, or if asking fails, Ray's own call
    and its own waits, as before)."""
    import time

    def quick(gcs_address: str, node_id: str):
        try:
            from ray._raylet import GcsClient

            client = GcsClient(address=gcs_address)
            until = time.monotonic() + wait_s
            while time.monotonic() < until:
                if any(getattr(k, "hex", lambda: k)() == node_id for k in client.get_all_node_info(timeout=1)):
                    break
                time.sleep(every_s)
        except Exception:  # noqa: BLE001 - a Ray whose client differs: its own call waits as it always did
            pass
        return get_node(gcs_address, node_id)

    return quick


#: the raylet's flags with the command lines of its agents, and the stand-in of each (see :func:`_lean`)
_AGENT_FLAGS = {"--dashboard_agent_command=": "dashboard", "--runtime_env_agent_command=": "runtime_env"}


def _stub_agent(arg: str) -> str:
    """A raylet argument; an agent's command line becomes :mod:`anonymize.ray_agent_stub`'s, with
    the session folder, node id and port the real agent was given."""
    import shlex
    import subprocess

    flag = next((f for f in _AGENT_FLAGS if arg.startswith(f)), None)
    if flag is None:
        return arg
    given = {k: v for k, _, v in (a[2:].partition("=") for a in shlex.split(arg[len(flag):]) if a.startswith("--"))}
    stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_agent_stub.py")
    keep = [f"--{k}={given[k]}" for k in ("session-dir", "node-id", "runtime-env-agent-port") if given.get(k)]
    # -I -S: the standard library alone (no site-packages, no PYTHONPATH), nothing to import
    return flag + subprocess.list2cmdline([sys.executable, "-I", "-S", stub, _AGENT_FLAGS[flag], *keep])


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
#: Whether the connected cluster is the private one :func:`_init_local` started: its one node is
#: this machine, its processes ours (same user, same mounts), so :func:`check_paths` asks here.
_private = False


def disconnect() -> None:
    """Leave the cluster (a local one we started stops with it)."""
    global _private
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    _private = False
    _release.set()


#: The namespace of the stop flags (a batch run's, a service job's) in the cluster's key-value store.
STOP_NAMESPACE = "anonymize"


def new_stop_key(label: str) -> bytes:
    """A fresh key for one stop flag (unique across runs and servers sharing a cluster)."""
    return f"stop-{label}-{uuid.uuid4().hex}".encode()


def set_stop(key: bytes) -> bool:
    """Raise the stop flag ``key`` in the connected cluster's key-value store; False when the
    cluster is gone already (then so are its workers)."""
    try:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(key, b"1", overwrite=True, namespace=STOP_NAMESPACE)
        return True
    except Exception:  # noqa: BLE001 - a lost cluster
        return False


def stop_requested(key: bytes) -> bool:
    """Whether the flag ``key`` is raised (in a worker: tasks poll it instead of being ``ray.cancel``-ed,
    whose race with a completing task aborts Ray 2.60's core worker); False when the cluster is
    going away (the worker is killed with it)."""
    try:
        from ray.experimental import internal_kv

        return bool(internal_kv._internal_kv_get(key, namespace=STOP_NAMESPACE))
    except Exception:  # noqa: BLE001 - a cluster going away
        return False


def clear_stop(key: bytes) -> None:
    """Remove the flag ``key`` (once nothing polls it)."""
    try:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(key, namespace=STOP_NAMESPACE)
    except Exception:  # noqa: BLE001 - a cluster gone: so is its store
        pass


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


def check_paths(read: list[str], write: list[str], timeout_s: float = 120.0, *,
                on_nodes: bool | None = None) -> None:
    """Before any work: on every alive node of the cluster, a small task checks that ``read`` can
    be read and ``write`` written. InputError (exit 2) naming the node and the path otherwise:
    the files must live on a filesystem every node sees.

    On the private local cluster (``on_nodes`` None: whenever :func:`_init_local` started the
    connected one) the only node is this machine and its workers are this process's children,
    so the same check runs here: the answer a task would give, without the round trip through a
    worker (~0.35 s of a run's start here). ``on_nodes=True`` always sends the tasks."""
    here = _private if on_nodes is None else not on_nodes
    if here:
        _refuse([("127.0.0.1", _check_here(read, write))])
        return
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
    _refuse([(node.get("NodeManagerAddress", "?"), problems) for node, problems in zip(refs.values(), answers)])


def _refuse(answers: list[tuple[str, list[str]]]) -> None:
    """InputError naming each node's problems (``answers``: (node address, problems)), if any."""
    bad = [f"node {node}: {p}" for node, problems in answers for p in problems]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InputError("--engine ray: " + "; ".join(bad[:3]) + more
                         + "; input and output must be on a filesystem every node sees (a shared mount)")
