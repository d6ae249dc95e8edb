"""The JSON report: what was masked in every frame and what was removed from every file.

Schema (version 1, stable; other tools read it)::

    {"schema": 1, "tool": "anonymize", "version": "...", "settings": {...}, "models": [...],
     "files": [{"input": str, "output": str, "kind": "video"|"photo", "status": "ok"|"failed"|"skipped"|"copied",
                "error": str|null, "width": int, "height": int, "frame_count": int,
                "audio": "dropped"|"kept"|"disguised"|"none", "removed": [str, ...],
                "warnings": [str, ...],
                "frames": [{"index": i, "pts": seconds, "regions": [
                    {"x": .., "y": .., "w": .., "h": .., "shape": "ellipse"|"box",
                     "kind": "face"|"head"|"person"|"text"|"frame", "score": .., "source": "detected"|"tracked"|"held"}]}]}]}

``skipped``: already done by an earlier run of the same batch (manifest); ``copied``: a non-media
file copied verbatim with ``--copy-other``. Region coordinates are the masked area in output pixels; a region at the frame's edge may extend
past it (the masked area is the shape's part inside the frame). ``removed`` names kinds of identifying
data found in the input and not written (never their values); ``warnings`` says what did not stop
a file but needs a look (e.g. a damaged input that ffmpeg decoded with errors). Frames are spooled to a temporary
file while a video runs, so memory does not grow with video length.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .errors import DiskFull, EncodeError, is_disk_full
from .regions import Regions

SCHEMA_VERSION = 1


@dataclass
class FileReport:
    """Outcome of one input file. ``frames()`` replays the per-frame records."""

    input: str
    output: str
    kind: str
    status: str = "ok"
    error: str | None = None
    width: int = 0
    height: int = 0
    frame_count: int = 0
    region_count: int = 0
    audio: str = "none"
    removed: list[str] = field(default_factory=list)
    #: problems that did not stop the file (a damaged input that decoded with errors, ...)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _spool: tempfile.SpooledTemporaryFile | None = field(default=None, repr=False)

    def add_frame(self, index: int, pts: float, regions: Regions, shape: str | Sequence[str]) -> None:
        """Record the regions masked in one output frame (``shape``: one for all, or one per region)."""
        shapes = [shape] * len(regions) if isinstance(shape, str) else list(shape)
        if self._spool is None:
            self._spool = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+")
        self.frame_count += 1
        self.region_count += len(regions)
        rec = {"index": index, "pts": round(pts, 6), "regions": [
            {"x": round(float(b[0]), 1), "y": round(float(b[1]), 1), "w": round(float(b[2] - b[0]), 1),
             "h": round(float(b[3] - b[1]), 1), "shape": str(sh), "kind": str(k), "score": round(float(s), 3),
             "source": str(src)}
            for b, k, s, src, sh in zip(regions.boxes, regions.kinds, regions.scores, regions.sources, shapes)]}
        try:
            self._spool.write(json.dumps(rec, separators=(",", ":")) + "\n")
        except OSError as exc:  # the spool went to the temporary folder, and that is full or broken
            raise _write_error(exc, f"{tempfile.gettempdir()}: cannot spool the report's frames") from exc

    def frames(self) -> Iterator[dict]:
        if self._spool is None:
            return
        self._spool.seek(0)
        for line in self._spool:
            yield json.loads(line)
        self._spool.seek(0, 2)

    def summary(self) -> dict:
        """The file's fields; names that are not UTF-8 written with ``\\xNN`` escapes (valid JSON text)."""
        from .paths import shown

        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        for key in ("input", "output", "error"):
            if isinstance(out[key], str):
                out[key] = shown(out[key])
        return out


def write_report(path: Path, files: list[FileReport], settings: dict, models: list[dict], version: str) -> None:
    """Write the report JSON, streaming each file's frames from its spool."""
    try:
        _write_report(Path(path), files, settings, models, version)
    except OSError as exc:
        raise _write_error(exc, f"{path}: cannot write the report") from exc


def _write_error(exc: OSError, what: str) -> EncodeError:
    if is_disk_full(exc):
        return DiskFull(f"{what}: no space left on the disk")
    return EncodeError(f"{what} ({exc.strerror or exc})")


def _write_report(path: Path, files: list[FileReport], settings: dict, models: list[dict], version: str) -> None:
    from .atomic import atomic_output

    with atomic_output(Path(path)) as tmp, open(tmp, "w") as f:
        head = {"schema": SCHEMA_VERSION, "tool": "anonymize", "version": version, "settings": settings,
                "models": models}
        f.write(json.dumps(head, indent=1)[:-2] + ',\n "files": [')
        for i, fr in enumerate(files):
            f.write(",\n" if i else "\n")
            body = json.dumps(fr.summary(), indent=1)[:-2]
            f.write(body + ',\n "frames": [')
            for j, rec in enumerate(fr.frames()):
                f.write(("," if j else "") + "\n  " + json.dumps(rec, separators=(",", ":")))
            f.write("\n ]}")
        f.write("\n]}\n")
