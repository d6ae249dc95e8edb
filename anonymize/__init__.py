"""anonymize: irreversibly mask faces in protest video and photos, and strip who/where/when.

Public API::

    from anonymize import anonymize_file, Anonymizer, Options
"""
# First, before any module of ours can import onnxruntime: its telemetry must never start.
from .offline import disable_telemetry as _disable_telemetry

_disable_telemetry()

from .api import Anonymizer, __version__, anonymize_file, default_output, media_kind
from .config import Options
from .errors import (AnonymizeError, DecodeError, DetectError, EncodeError, FFmpegNotFound, InputError,
                     ModelError)
from .report import FileReport

__all__ = ["Anonymizer", "anonymize_file", "default_output", "media_kind", "Options", "FileReport",
           "AnonymizeError", "DecodeError", "DetectError", "EncodeError", "FFmpegNotFound", "InputError",
           "ModelError", "__version__"]
