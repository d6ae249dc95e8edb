"""Errors the library raises. The CLI maps each to an exit code; the library never exits."""
from __future__ import annotations

import errno


class AnonymizeError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class InputError(AnonymizeError):
    """Missing, unreadable or unsupported input, or an output that would overwrite it."""

    exit_code = 2


class DecodeError(AnonymizeError):
    """ffmpeg or the image reader could not decode a frame."""

    exit_code = 3


class DetectError(AnonymizeError):
    """A detector failed on a frame."""

    exit_code = 4


class EncodeError(AnonymizeError):
    """Writing the output failed (including a full disk)."""

    exit_code = 5


class DiskFull(EncodeError):
    """No space left (or the disk quota is used up) where we write: an output, the report, the
    manifest or a temporary file. A batch stops at the first one: every later file would fail too."""


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a full disk or an exceeded quota."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class ModelError(AnonymizeError):
    """A model file is missing, or its sha256 does not match the registry."""

    exit_code = 6


class FFmpegNotFound(AnonymizeError):
    """No ffmpeg binary: neither on PATH nor from the imageio-ffmpeg wheel."""

    exit_code = 7
