"""The public Python API. The CLI (and a later HTTP service) are thin fronts over this."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

from .config import Options
from .errors import AnonymizeError, InputError
from .paths import check_writes, require_regular_input, shown
from .photo import PHOTO_EXTENSIONS
from .report import FileReport, write_report
from .video import VIDEO_EXTENSIONS

__version__ = "0.1.0"


def media_kind(path: Path) -> str | None:
    """"video", "photo" or None, by file extension."""
    ext = Path(path).suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in PHOTO_EXTENSIONS:
        return "photo"
    return None


def default_output(src: Path) -> Path:
    """``NAME.anonymized.EXT`` beside the input."""
    src = Path(src)
    return src.with_name(f"{src.stem}.anonymized{src.suffix}")


def _check_paths(src: Path, dst: Path) -> str:
    # stat only, before anything opens it: a FIFO or /dev/zero named like a video must not hang us
    require_regular_input(src)
    kind = media_kind(src)
    if kind is None:
        raise InputError(f"{shown(src)}: unsupported file type {shown(src.suffix)!r}")
    if media_kind(dst) != kind:
        raise InputError(f"{shown(dst)}: output must be a {kind} file like the input (got {shown(dst.suffix)!r})")
    check_writes([src], [("output", dst)])
    return kind


class Anonymizer:
    """Holds the loaded models; call :meth:`file` for each input. Reuse it across many files."""

    def __init__(self, options: Options | None = None, **changes):
        from .pipeline import Engine

        self.options = (options or Options()).updated(**changes)
        self.engine = Engine(self.options)

    def file(self, src: Path | str, dst: Path | str | None = None,
             on_frame: Callable[[int], None] | None = None) -> FileReport:
        """Anonymize one photo or video; returns its :class:`FileReport`. Raises AnonymizeError."""
        from .pipeline import process_photo, process_video

        src = Path(src)
        dst = Path(dst) if dst is not None else default_output(src)
        kind = _check_paths(src, dst)
        report = FileReport(str(src), str(dst), kind)
        start = time.perf_counter()
        if kind == "photo":
            process_photo(src, dst, self.engine, report)
        else:
            process_video(src, dst, self.engine, report, on_frame=on_frame)
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def write_report(self, path: Path | str, files: Iterable[FileReport]) -> None:
        """Write the JSON report (schema in :mod:`anonymize.report`)."""
        write_report(Path(path), list(files), self.options.as_dict(), self.engine.models(), __version__)


def anonymize_file(src: Path | str, dst: Path | str | None = None, *, report: Path | str | None = None,
                   **options) -> FileReport:
    """Anonymize one file with ``options`` (see :class:`~anonymize.config.Options`).

    Example::

        from anonymize import anonymize_file
        anonymize_file("march.mp4", "march.clean.mp4", report="march.json", mask="solid")
    """
    src = Path(src)
    dst = Path(dst) if dst is not None else default_output(src)
    _check_paths(src, dst)  # before the models load
    if report is not None:
        check_writes([src], [("output", dst), ("report", Path(report))])
    runner = Anonymizer(**options)
    result = runner.file(src, dst)
    if report is not None:
        runner.write_report(report, [result])
    return result


__all__ = ["Anonymizer", "anonymize_file", "default_output", "media_kind", "AnonymizeError", "__version__"]
