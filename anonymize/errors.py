"""Errors the library raises. The CLI maps each to an exit code; the library never exits."""
from __future__ import annotations


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


class ModelError(AnonymizeError):
    """A model file is missing, or its sha256 does not match the registry."""

    exit_code = 6


class FFmpegNotFound(AnonymizeError):
    """No ffmpeg binary: neither on PATH nor from the imageio-ffmpeg wheel."""

    exit_code = 7
