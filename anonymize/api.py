"""The public Python API. The CLI (and a later HTTP service) are thin fronts over this."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from . import __version__  # one version: the package's
from .config import Options
from .errors import AnonymizeError, InputError
from .paths import check_writes, require_regular_input, shown
from .photo import PHOTO_EXTENSIONS
from .report import FileReport, write_report
from .video import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from .plan import Plan, PlanFile


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


def _check_input(src: Path) -> str:
    require_regular_input(src)
    kind = media_kind(src)
    if kind is None:
        raise InputError(f"{shown(src)}: unsupported file type {shown(src.suffix)!r}")
    return kind


class Anonymizer:
    """Holds the loaded models; call :meth:`file` for each input. Reuse it across many files.

    ``detectors=False`` loads no model until one is needed: enough for :meth:`render`, which
    runs no detector (the models load on the first :meth:`file` or :meth:`detect`).
    """

    def __init__(self, options: Options | None = None, *, detectors: bool = True, **changes):
        from .pipeline import Engine

        self.options = (options or Options()).updated(**changes)
        self._engine = Engine(self.options) if detectors else None

    @property
    def engine(self):
        """The detectors and mask of the one-shot run (:class:`~anonymize.pipeline.Engine`)."""
        if self._engine is None:
            from .pipeline import Engine

            self._engine = Engine(self.options)
        return self._engine

    def file(self, src: Path | str, dst: Path | str | None = None,
             on_frame: Callable[[int], None] | None = None) -> FileReport:
        """Anonymize one photo or video; returns its :class:`FileReport`. Raises AnonymizeError.

        The report is also the file's plan (schema 2): :meth:`render` of it masks the same regions."""
        src = Path(src)
        dst = Path(dst) if dst is not None else default_output(src)
        kind = _check_paths(src, dst)
        return self._live(src, dst, kind, on_frame)

    def detect(self, src: Path | str, on_frame: Callable[[int], None] | None = None) -> FileReport:
        """Detect and track in one photo or video and write nothing: decode -> detect -> track ->
        regions. Returns the file's report, whose entry is its plan; :meth:`plan` (or
        ``write_report`` then :func:`~anonymize.plan.load_plan`) turns it into a :class:`Plan`."""
        src = Path(src)
        return self._live(src, None, _check_input(src), on_frame)

    def plan(self, src: Path | str, on_frame: Callable[[int], None] | None = None) -> "Plan":
        """:meth:`detect` as a :class:`~anonymize.plan.Plan`, ready for :meth:`render` (or for edits)."""
        return plan_of([self.detect(src, on_frame)])

    def _live(self, src: Path, dst: Path | None, kind: str, on_frame) -> FileReport:
        from .masks import MaskNoise, file_seed
        from .pipeline import process_photo, process_video

        report = FileReport(str(src), str(dst) if dst is not None else None, kind)
        start = time.perf_counter()
        report.input_sha256 = _sha256(src)
        noise = MaskNoise(file_seed(self.options.seed, report.input_sha256))
        if kind == "photo":
            process_photo(src, dst, self.engine, report, noise)
        else:
            process_video(src, dst, self.engine, report, noise, on_frame=on_frame)
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def render(self, src: Path | str, plan: "Plan | PlanFile | Path | str", dst: Path | str | None = None,
               on_frame: Callable[[int], None] | None = None) -> FileReport:
        """Mask ``src`` with the regions of ``plan`` (a :class:`Plan`, one of its files, or a plan
        file's path) and write ``dst``: decode -> the plan's regions for each frame -> mask ->
        encode. Runs no detector. The plan's edits apply: tracks marked ``"masked": false`` are
        not masked, ``"mask_frames"`` ranges are masked whole, ``"add"`` boxes are followed
        through the video and masked like faces (one extra decode when there are any).

        Raises InputError (nothing written) when the plan is for another file (sha256), or its
        frame count or size differ from the input's. Encode settings (quality, audio) are this
        Anonymizer's options; the mask's geometry, style and noise are the plan's.
        """
        from .masks import MaskNoise, create_mask
        from .pipeline import render_photo, render_video
        from .plan import PlanFile, load_plan
        from .regions_source import PlanRegions

        src = Path(src)
        dst = Path(dst) if dst is not None else default_output(src)
        kind = _check_paths(src, dst)
        if isinstance(plan, (str, Path)):
            plan = load_plan(plan)
        report = FileReport(str(src), str(dst), kind)
        start = time.perf_counter()
        report.input_sha256 = sha = _sha256(src)
        entry = plan if isinstance(plan, PlanFile) else plan.entry_for(sha)
        if entry.input_sha256 != sha:
            raise InputError(f"{shown(src)}: the plan is for another file (its input sha256 differs)")
        if entry.kind != kind:
            raise InputError(f"{shown(src)}: the plan is for a {entry.kind}, the input is a {kind}")
        style, noise = create_mask(entry.geometry.mask), MaskNoise(entry.noise_seed)
        for t in entry.tracks.values():  # spared tracks stay listed, with "masked": false
            if not t.masked:
                report.note_track(t.id, t.kind, t.first, masked=False)
                report.note_track(t.id, t.kind, t.last, masked=False)
        if kind == "photo":
            render_photo(src, dst, PlanRegions(entry, _added_photo(entry)), style, noise, report)
        else:
            from .ffmpeg_tools import probe
            from .follow import follow_added

            info = probe(src)
            if info.video is None:
                raise InputError(f"{shown(src)}: no video stream")
            added = follow_added(src, info, entry) if entry.add else {}
            render_video(src, dst, info, PlanRegions(entry, added), style, noise, self.options, report, on_frame)
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def write_report(self, path: Path | str, files: Iterable[FileReport]) -> None:
        """Write the JSON report (schema in :mod:`anonymize.report`)."""
        models = self._engine.models() if self._engine is not None else []
        write_report(Path(path), list(files), self.options.as_dict(), models, __version__)


def _sha256(path: Path) -> str:
    from .batch import sha256_file

    return sha256_file(path)


def _added_photo(entry: "PlanFile") -> dict:
    """A photo's "add" boxes: there is nothing to follow, each is a face region of frame 0."""
    from .follow import added_regions

    return added_regions(entry, [{0: a.box} for a in entry.add])


def plan_of(reports: Iterable[FileReport]) -> "Plan":
    """The :class:`~anonymize.plan.Plan` of finished reports (as :func:`~anonymize.plan.load_plan`
    would read it back from the written report)."""
    import json

    from .plan import parse_plan
    from .report import SCHEMA_VERSION

    files = []
    for r in reports:
        entry = r.summary()
        entry["frames"] = list(r.frames())
        files.append(entry)
    return parse_plan(json.dumps({"schema": SCHEMA_VERSION, "files": files}), "plan")


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


__all__ = ["Anonymizer", "anonymize_file", "plan_of", "default_output", "media_kind", "AnonymizeError", "__version__"]
