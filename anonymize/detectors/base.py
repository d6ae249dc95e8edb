"""The detector interface: one frame in, :class:`~anonymize.regions.Regions` out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from ..regions import Regions


def cpu_session(model: bytes | str, threads: int = 0, device: str = "cpu"):
    """A session for ``model`` (serialized bytes or a path) on ``device`` (default: onnxruntime's
    CPU provider), ``threads`` intra-op threads: :func:`anonymize.runtime.session`, through which
    every model of the package runs (onnxruntime's telemetry off, :mod:`anonymize.offline`)."""
    from ..runtime import session

    return session(model, threads, device)


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
