"""The detector interface: one frame in, :class:`~anonymize.regions.Regions` out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from ..regions import Regions


def cpu_session(model: bytes | str, threads: int = 0):
    """An onnxruntime CPU session for ``model`` (serialized bytes or a path), all graph
    optimizations on, ``threads`` intra-op threads (0 = onnxruntime's default), warnings off
    (the shipped graphs carry unused initializers that only produce noise).

    onnxruntime's memory pattern (one pre-planned block for all of a run's intermediate tensors)
    is off: it cost CenterFace's peak memory 2.75 GB instead of 1.6 GB on a 4K frame and 787 MB
    instead of 500 MB at 1080p, for no measurable speed (1.14 s vs 1.14 s per 4K call). The
    memory arena stays on (without it 4K calls took 1.8 s). Idle worker threads do not spin.
    Every session of the package is made here, with onnxruntime's telemetry off
    (:mod:`anonymize.offline`)."""
    from ..offline import onnxruntime

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
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class Detector(ABC):
    """Finds regions to mask in one BGR uint8 frame.

    Implementations must be safe to call from one worker thread at a time, must not keep
    per-video state (the tracker does that), and return boxes in the frame's pixel coordinates.
    """

    #: Registry name, e.g. ``"centerface"``.
    name: str = ""
    #: Kinds of region this detector emits, e.g. ``("face",)``.
    kinds: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, frame: np.ndarray) -> Regions:
        """Return the regions found in ``frame`` (H x W x 3, BGR, uint8)."""

    def models(self) -> list[dict]:
        """Registry entries (name, package, sha256, licence) of the weights this detector uses."""
        return []


#: name -> factory(**options) -> Detector. Filled by the detector modules on import; a module
#: whose optional dependency is missing simply does not register.
DETECTORS: dict[str, Callable[..., Detector]] = {}


def register(name: str):
    """Class decorator adding a detector factory to :data:`DETECTORS`."""

    def deco(cls):
        cls.name = name
        DETECTORS[name] = cls
        return cls

    return deco
