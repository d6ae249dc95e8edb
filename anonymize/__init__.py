"""anonymize: irreversibly mask faces in protest video and photos, and strip who/where/when.

Public API::

    from anonymize import anonymize_file, Anonymizer, Options
"""
# First, before any module of ours can import onnxruntime: its telemetry must never start.
from .offline import disable_telemetry as _disable_telemetry

_disable_telemetry()

from .config import Options  # noqa: E402
from .errors import (AnonymizeError, DecodeError, DetectError, EncodeError, FFmpegNotFound, InputError,  # noqa: E402
                     ModelError)

__version__ = "0.1.0"

#: The public names that need numpy, OpenCV and the pipeline, imported on first use (PEP 562): a
#: command that needs none of them yet (``--help``, or ``--engine ray`` starting its cluster
#: before anything else) does not pay ~0.35 s of imports up front.
_LAZY = {"Anonymizer": "api", "anonymize_file": "api", "default_output": "api", "media_kind": "api",
         "FileReport": "report"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Anonymizer", "anonymize_file", "default_output", "media_kind", "Options", "FileReport",
           "AnonymizeError", "DecodeError", "DetectError", "EncodeError", "FFmpegNotFound", "InputError",
           "ModelError", "__version__"]
