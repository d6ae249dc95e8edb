"""Stand-ins for the raylet's two agents in a private local Ray (``--engine ray`` without
``--ray-address``): run by the raylet, as a script, in place of Ray's dashboard agent and
runtime-env agent (see ``ray_cluster._lean``).

Ray 2.60's raylet refuses an empty agent command, starts both agents with every node, waits for
each to write its ports into the session folder before the node registers (so they are on the
path of every ``ray.init``), and stops if one exits. The real agents are Python processes that
import Ray, gRPC and aiohttp (0.7 CPU-seconds each here) to serve what a private batch cluster
never asks for: metrics export and the dashboard's per-node API (the dashboard agent), and
runtime environments (the runtime-env agent; ``ray_cluster._init_local`` never sets one, and
the raylet calls the agent only for a non-empty one). So these stand-ins, with the standard
library alone:

- ``dashboard``: write -1 for the metrics agent, metrics export and agent HTTP ports, as Ray's
  own agent does when installed without its dashboard dependencies ("not in use");
- ``runtime_env``: bind a loopback port (never listened on, so a request is refused at once and
  no other program can take the port) and write it;

then wait until the raylet is gone (its end of the stdin pipe closes; and Linux's parent-death
signal), as the agents do. No network beyond that one loopback bind, no threads.
"""
import os
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # this file's folder, the package: none of its modules may shadow another here

import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402


def _options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` arguments (those of Ray's agent command lines) as a dict."""
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def persist_port(session_dir: str, node_id: str, name: str, port: int) -> None:
    """Where Ray's agents write a port: ``{session_dir}/{name}_{node_id}``, the port as text
    (written to a temporary name first, so the raylet never reads half a file)."""
    path = os.path.join(session_dir, f"{name}_{node_id}")
    with open(path + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(path + ".tmp", path)


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the stdin pipe still ends us
        pass


def _wait_for_parent() -> None:
    """Until the raylet is gone: EOF on stdin (the pipe the raylet keeps to each agent), or, where
    stdin is no pipe, the parent's pid changing."""
    import stat

    parent = os.getppid()
    try:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            while os.read(0, 4096):
                pass
            return
    except OSError:
        pass
    while os.getppid() == parent:
        time.sleep(1.0)


def main() -> None:
    kind, opts = (sys.argv[1] if len(sys.argv) > 1 else ""), _options(sys.argv[2:])
    session, node = opts.get("session-dir"), opts.get("node-id")
    if kind not in ("dashboard", "runtime_env") or not session or not node:
        sys.exit(f"ray_agent_stub: usage: dashboard|runtime_env --session-dir=DIR --node-id=ID (got {sys.argv[1:]})")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    _die_with_parent()
    held = None
    if kind == "dashboard":
        for name in ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port"):
            persist_port(session, node, name, -1)
    else:
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.bind(("127.0.0.1", int(opts.get("runtime-env-agent-port") or 0)))
        persist_port(session, node, "runtime_env_agent_port", held.getsockname()[1])
    _wait_for_parent()
    if held is not None:
        held.close()


if __name__ == "__main__":
    main()
