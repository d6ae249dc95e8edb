"""One session factory for every model: which runtime and device runs the ONNX graphs.

``--device`` (:data:`anonymize.config.DEVICES`) picks where the detectors run:

* ``cpu``: onnxruntime's CPU provider, always there; the reference every other path is judged by.
* ``cuda``: onnxruntime's TensorRT or CUDA provider (``onnxruntime-gpu``, the ``[cuda]`` extra).
* ``coreml``: onnxruntime's CoreML provider (Apple Silicon; in the macOS onnxruntime wheels).
* ``directml``: onnxruntime's DirectML provider (``onnxruntime-directml``, Windows).
* ``openvino``: the OpenVINO runtime (``openvino``, the ``[openvino]`` extra) compiling the ONNX
  model for its CPU plugin, in bf16 where the CPU computes bf16 natively (AMX or AVX-512 BF16)
  and fp32 elsewhere; or onnxruntime's OpenVINO provider (``onnxruntime-openvino``) when that is
  what is installed.
* ``auto`` (the default): the first entry of :data:`AUTO_ORDER` that is installed and builds a
  session (OpenVINO only on CPUs with bf16 units: :data:`AUTO_OPENVINO_PRECISIONS`), else the CPU.

A device that is asked for but not installed, or whose session fails to build, is never an
error: the model runs on onnxruntime's CPU instead (the output is the same, only slower) and one
log line (logger ``anonymize``, warning for an explicit device, info for ``auto``) says why, once
per process and reason. The device each model actually ran on is recorded in the report
(``models[i]["device"]``, e.g. ``"openvino-cpu-bf16"``, ``"onnxruntime-cpu"``).

Only the inference runtime changes with the device; every detector's pre- and post-processing
stays the same. The OpenVINO runtime is used through ``Core.read_model``/``compile_model`` only,
which open no connection (its telemetry lives in the model converter, ``openvino.tools.ovc``,
which we never import; ``tests/test_network.py`` watches a real run's system calls).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from .config import DEVICES

log = logging.getLogger("anonymize")

#: ``auto``'s order of preference, fastest first. Measured, not guessed: CenterFace on the bundled
#: crowd photo at 1920x1088, 2 threads (``python bench/backends.py --rounds 3``, 2 Dec 2026, on
#: this project's 2-core AMD EPYC VM (Zen 4: AVX-512 BF16 and VNNI, no AMX) under load 13 from
#: other jobs; ms per call, median of 3 / best):
#:
#: ===============================  ===========  =================================================
#: runtime                          ms           vs onnxruntime fp32
#: ===============================  ===========  =================================================
#: onnxruntime CPU fp32 (``cpu``)   1035 / 899   the reference
#: OpenVINO CPU bf16                 951 / 825   same 9 faces; heatmap within 0.019; WIDER 60
#:                                               photos (t=0.1): >= 16 px 95.9 % both, < 16 px
#:                                               90.1 vs 89.7 % (bench/detector_recall.py)
#: OpenVINO CPU bf16, dynamic shape 1181 / 1148  (why a model is compiled per input shape)
#: OpenVINO CPU fp32                1594 / 1554  slower: ``auto`` skips it (AUTO_OPENVINO_PRECISIONS)
#: onnxruntime int8 model            363 / 348   another model (``--detector centerface-int8``),
#:                                               not a device: its recall differs (heatmap 0.19)
#: ===============================  ===========  =================================================
#:
#: Again at load 5.5 (``--rounds 5``): onnxruntime fp32 1192 / 1074, OpenVINO bf16 700 / 536,
#: dynamic 701 / 640, OpenVINO fp32 1156 / 1008, onnxruntime int8 557 / 438: the per-call ratio
#: moves with the machine's load (1.1x to 1.7x for bf16).
#:
#: The issue's earlier figures on an Intel Xeon with AMX (580 ms onnxruntime fp32, 345 ms OpenVINO
#: bf16) put OpenVINO bf16 ahead by more there. GPUs come first where present: a discrete GPU
#: beats any CPU path by an order of magnitude (CUDA figures are not yet measured here: see
#: bench/gpu_check.sh). CoreML and DirectML are not measured either (no such hardware here): they
#: come after OpenVINO, which ``auto`` takes only on the bf16 CPUs where it was measured faster,
#: and before the plain CPU provider, which any GPU is expected to beat; to be measured.
AUTO_ORDER: tuple[str, ...] = ("cuda", "openvino", "coreml", "directml")

#: OpenVINO CPU precisions that ``auto`` uses (bf16: CPUs with AMX or AVX-512 BF16): fp32
#: OpenVINO was slower than onnxruntime fp32 in the table above, and bf16 on AVX-512 BF16 without
#: AMX (this Zen 4) was 1.1-1.7x faster per call (by load) and, in a run under load 26, no faster
#: end to end (bench/speed.py, 1080p crowd, 4 s: 99.2 CPU s vs 96.5; see the rerun below). On AMX Xeons
#: the issue measured 345 vs 580 ms per call (1.7x); not re-measured here (no AMX machine). At 4K
#: (bench/speed.py --4k --4k-seconds 0.5) OpenVINO bf16 took 45.9 CPU s vs 59.9-63.2 and 2.6 GB
#: peak vs 2.1 GB. Rerun at 1080p at load 5.5 -> 2.9 (02:05): ``--device openvino`` 96.5 CPU s,
#: 2.03 fps, 1132 MB vs ``--device cpu`` 125.6 CPU s and the commit before issue 20 129.2 CPU s,
#: 1.62 fps, 862 MB: 1.3x less CPU on video. Photos (the TTA detector's passes each a new input
#: size) measured 2.6x slower through OpenVINO's dynamic-shape model, so sizes not yet repeated run
#: on onnxruntime (:class:`OpenVinoSession`); with that, ``auto`` takes OpenVINO bf16 here too.
AUTO_OPENVINO_PRECISIONS = ("bf16",)

#: onnxruntime execution providers behind each device, in order of preference.
_ORT_PROVIDERS = {
    "cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
    "coreml": ("CoreMLExecutionProvider",),
    "directml": ("DmlExecutionProvider",),
    "openvino": ("OpenVINOExecutionProvider",),
}

#: Reasons already logged (one line per process and reason, not one per model).
_logged: set[str] = set()


def _note(reason: str, explicit: bool) -> None:
    if reason in _logged:
        return
    _logged.add(reason)
    (log.warning if explicit else log.info)(reason)


class Session:
    """A model ready to run: ``run(output_names, feeds)`` and ``get_inputs()`` as onnxruntime's
    ``InferenceSession`` has them, plus :attr:`device`, the runtime and device it runs on."""

    #: e.g. "onnxruntime-cpu", "onnxruntime-cuda", "openvino-cpu-bf16"
    device: str = ""

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def get_inputs(self) -> list[Any]:
        raise NotImplementedError


class OrtSession(Session):
    """An onnxruntime ``InferenceSession`` (any provider)."""

    def __init__(self, session, device: str):
        self._s, self.device = session, device

    def run(self, output_names, feeds):
        return self._s.run(output_names, feeds)

    def get_inputs(self):
        return self._s.get_inputs()


class _Input:
    def __init__(self, name: str):
        self.name = name


class OpenVinoSession(Session):
    """An ONNX model on the OpenVINO runtime's CPU plugin, for the input sizes that repeat.

    The graphs have symbolic spatial sizes. A model compiled for the exact input shape is fastest
    (CenterFace 1080p bf16), and compiling takes about a second; OpenVINO's dynamic-shape model
    serves any size but slowly (photos through it ran 2.6x slower than on onnxruntime). A video
    feeds one size for its whole length, a photo's test-time passes a few sizes once each. So
    every size runs on a model compiled for it (the last :attr:`CACHE` such sizes are kept); only
    a size OpenVINO cannot compile runs on an onnxruntime CPU session. :attr:`STATIC_AFTER` is 1
    on purpose: the result for an input then depends on the input alone. It was 3 (a size ran on
    onnxruntime fp32 until it had come three times), and then what a process found depended on
    what it had seen before: the same photo twice in one process gave 5 regions, then 4; a batch
    with --jobs 2 differed from --jobs 1 and ``detect`` from the one-shot run (tests/test_batch.py,
    tests/test_plan.py, run with OpenVINO by .ci/run). Compiling costs ~1-2.5 s wall per new size
    and model (sample_media/crowd.jpg, TTA passes: 3.9 s for the first photo, then 0.9-1.3 s, vs
    1.8-3.5 s on onnxruntime). :attr:`device` says which ran: ``openvino-cpu-<precision>`` once a
    size was compiled, else ``onnxruntime-cpu``.
    ``static_shapes=False`` (for bench/backends.py): OpenVINO's dynamic model for every size."""

    CACHE = 4
    STATIC_AFTER = 1

    def __init__(self, model: str | bytes, threads: int, precision: str, static_shapes: bool = True):
        import openvino as ov

        self._core = ov.Core()
        if isinstance(model, (bytes, bytearray)):
            self._model = self._core.read_model(bytes(model), b"")  # ONNX bytes: the frontend is picked by content
        else:
            self._model = self._core.read_model(str(model))
        self._config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                        "NUM_STREAMS": 1}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._inputs = [_Input(p.get_any_name()) for p in self._model.inputs]
        self._outputs = [p.get_any_name() for p in self._model.outputs]
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()
        self._seen: dict[tuple, int] = {}
        self._static = static_shapes
        self._precision = precision
        self._used_openvino = False
        self._dynamic = None
        self._fallback = None
        if static_shapes:
            self._fallback = ort_cpu_session(model, threads)
        else:
            self._dynamic = self._core.compile_model(self._model, "CPU", self._config).create_infer_request()

    @property
    def device(self) -> str:
        return f"openvino-cpu-{self._precision}" if self._used_openvino else "onnxruntime-cpu"

    def _request(self, feeds: dict[str, np.ndarray]):
        """The compiled model for these inputs, or None: run them on onnxruntime."""
        if not self._static:
            return self._dynamic
        key = tuple((k, v.shape) for k, v in sorted(feeds.items()))
        req = self._compiled.get(key)
        if req is not None:
            self._compiled.move_to_end(key)
            return req
        self._seen[key] = n = self._seen.get(key, 0) + 1
        if n < self.STATIC_AFTER:
            if len(self._seen) > 64:  # many one-off sizes (a folder of photos): forget them
                self._seen = {key: n}
            return None
        model = self._model.clone()
        model.reshape({k: list(v.shape) for k, v in feeds.items()})
        try:
            req = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        except Exception as exc:  # a size OpenVINO cannot take: onnxruntime keeps it
            _note(f"OpenVINO could not compile a model for {key} ({exc.__class__.__name__}); onnxruntime runs it",
                  explicit=True)
            self._seen[key] = -(1 << 30)
            return None
        self._compiled[key] = req
        if len(self._compiled) > self.CACHE:
            self._compiled.popitem(last=False)
        return req

    def run(self, output_names, feeds):
        req = self._request(feeds)
        if req is None:
            return self._fallback.run(output_names, feeds)
        self._used_openvino = True
        req.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        names = self._outputs if output_names is None else output_names
        # copies: the request's output tensors are overwritten by its next call
        return [np.array(req.get_tensor(n).data) for n in names]

    def get_inputs(self):
        return list(self._inputs)


def ort_cpu_session(model: bytes | str, threads: int = 0) -> OrtSession:
    """An onnxruntime CPU session for ``model`` (serialized bytes or a path), all graph
    optimizations on, ``threads`` intra-op threads (0 = onnxruntime's default), warnings off
    (the shipped graphs carry unused initializers that only produce noise).

    onnxruntime's memory pattern (one pre-planned block for all of a run's intermediate tensors)
    is off: it cost CenterFace's peak memory 2.75 GB instead of 1.6 GB on a 4K frame and 787 MB
    instead of 500 MB at 1080p, for no measurable speed (1.14 s vs 1.14 s per 4K call). The
    memory arena stays on (without it 4K calls took 1.8 s). Idle worker threads do not spin."""
    return _ort_session(model, threads, ["CPUExecutionProvider"], "onnxruntime-cpu")


def _ort_options(threads: int):
    from .offline import onnxruntime

    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
    # Idle intra-op threads sleep instead of spinning: the spinning threads burn a core that the
    # decoder, the mask drawing and the encoder need (bench/speed.py, 1080p 4 s, quiet 2-core
    # machine: 97.6 CPU s instead of 110.8, 1.91 fps instead of 1.83; under load the gap is wider).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort, opts


def _ort_session(model: bytes | str, threads: int, providers: list, device: str) -> OrtSession:
    ort, opts = _ort_options(threads)
    return OrtSession(ort.InferenceSession(model, opts, providers=providers), device)


def ort_providers() -> list[str]:
    """onnxruntime's available execution providers (its import is telemetry-free)."""
    from .offline import onnxruntime

    return list(onnxruntime().get_available_providers())


def openvino_precision() -> str | None:
    """The precision OpenVINO's CPU plugin should compute in here ("bf16" where the CPU has bf16
    units, else "f32"), or None when the ``openvino`` package is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "f32"


def _try(device: str, model: bytes | str, threads: int, auto: bool = False) -> tuple[Session | None, str]:
    """A session on ``device``, or (None, why not). ``auto``: only where the measured table says
    the device beats onnxruntime's CPU provider."""
    if device == "openvino":
        precision = openvino_precision()
        if auto and precision is not None and precision not in AUTO_OPENVINO_PRECISIONS:
            return None, (f"OpenVINO is installed but this CPU has no bf16 units, and OpenVINO {precision} was "
                          "measured slower than onnxruntime's CPU provider; --device openvino still uses it "
                          "(bench/README.md)")
        if precision is not None:
            try:
                return OpenVinoSession(model, threads, precision), ""
            except Exception as exc:  # a model the runtime cannot compile: the CPU provider can
                return None, f"OpenVINO could not compile the model ({exc.__class__.__name__}: {str(exc)[:200]})"
    providers = [p for p in _ORT_PROVIDERS[device] if p in ort_providers()]
    if not providers:
        hint = {"cuda": "pip install 'anonymize-protest[cuda]' (onnxruntime-gpu) and an NVIDIA driver",
                "coreml": "onnxruntime's macOS wheel on Apple hardware",
                "directml": "pip install onnxruntime-directml (Windows)",
                "openvino": "pip install 'anonymize-protest[openvino]'"}[device]
        return None, f"device {device} is not installed ({hint})"
    try:
        s = _ort_session(model, threads, providers + ["CPUExecutionProvider"], f"onnxruntime-{device}")
    except Exception as exc:  # a provider present but unusable (no driver, no GPU)
        return None, f"device {device} failed to start ({exc.__class__.__name__}: {str(exc)[:200]})"
    used = s._s.get_providers()
    if not used or used[0] not in providers:  # onnxruntime silently fell back to the CPU
        return None, f"device {device} is installed but onnxruntime did not use it (providers: {', '.join(used)})"
    return s, ""


def session(model: bytes | str, threads: int = 0, device: str = "cpu") -> Session:
    """A session for ``model`` (an ONNX path or serialized bytes) on ``device`` (one of
    :data:`~anonymize.config.DEVICES`), ``threads`` intra-op threads (0 = the runtime's default).

    Falls back to onnxruntime's CPU with one log line when ``device`` (or, for ``auto``, every
    entry of :data:`AUTO_ORDER`) is not installed or cannot run the model; raises ValueError only
    for a name that is not a device."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    if device == "cpu":
        return ort_cpu_session(model, threads)
    why = []
    for name in (AUTO_ORDER if device == "auto" else (device,)):
        s, reason = _try(name, model, threads, auto=device == "auto")
        if s is not None:
            return s
        why.append(reason)
    if device == "auto":
        _note("device auto: no accelerated runtime found, running on the CPU with onnxruntime ("
              + "; ".join(why) + ")", explicit=False)
    else:
        _note(f"{why[0]}; running on the CPU with onnxruntime instead", explicit=True)
    return ort_cpu_session(model, threads)
