"""The JSON report: what was masked in every frame and what was removed from every file.

Schema (version 2; the report is also the plan ``anonymize render`` reads: docs/plan-schema.md)::

    {"schema": 2, "tool": "anonymize", "version": "...", "settings": {...}, "models": [...],
     "files": [{"input": str, "output": str|null, "kind": "video"|"photo", "status": "ok"|"failed"|"skipped"|"copied",
                "error": str|null, "width": int, "height": int, "frame_count": int,
                "audio": "dropped"|"kept"|"disguised"|"none", "removed": [str, ...],
                "warnings": [str, ...],
                "input_sha256": str, "noise_seed": int, "geometry": {"mask": .., "mask_shape": .., "mask_scale": ..,
                "edge_reach": .., "margin": ..},
                "tracks": [{"id": int, "kind": str, "masked": bool, "first": frame, "last": frame}],
                "add": [], "mask_frames": [],
                "frames": [{"index": i, "pts": seconds, "regions": [
                    {"x": .., "y": .., "w": .., "h": .., "shape": "ellipse"|"box",
                     "kind": "face"|"head"|"person"|"text"|"frame", "score": .., "source": "detected"|"tracked"|"held",
                     "track": int}],
                    "raw": [{"box": [x1, y1, x2, y2], "track": int, "kind": .., "score": .., "source": ..}]}]}]}

Schema 1 (earlier versions) is schema 2 without ``input_sha256``, ``noise_seed``, ``geometry``,
``tracks``, ``add``, ``mask_frames``, the regions' ``track`` and the frames' ``raw``.
``raw`` holds the boxes before head growth, exactly (unrounded), as render needs them.

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

import numpy as np

from .errors import DiskFull, EncodeError, is_disk_full
from .regions import Regions

SCHEMA_VERSION = 2


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
    #: plan fields (schema 2): what ``render`` needs to mask the same regions again
    input_sha256: str | None = None
    noise_seed: int | None = None
    geometry: dict | None = None
    _tracks: dict = field(default_factory=dict, repr=False)
    _spool: tempfile.SpooledTemporaryFile | None = field(default=None, repr=False)

    def add_frame(self, index: int, pts: float, regions: Regions, shape: str | Sequence[str],
                  raw: Regions | None = None) -> None:
        """Record the regions masked in one output frame (``shape``: one for all, or one per region)
        and ``raw``, the boxes they were grown from (with their track ids: the plan)."""
        shapes = [shape] * len(regions) if isinstance(shape, str) else list(shape)
        if self._spool is None:
            self._spool = tempfile.SpooledTemporaryFile(max_size=4 << 20, mode="w+")
        self.frame_count += 1
        self.region_count += len(regions)
        line = _frame_line(index, pts, regions, shapes, raw)
        if raw is not None:
            tracks = self._tracks
            for t, k in zip(raw.track_ids.tolist(), raw.kinds):
                if t < 0:
                    continue
                known = tracks.get(t)
                if known is None:
                    self.note_track(t, str(k), index)
                elif index > known["last"]:  # as note_track does, without its call for every region
                    known["last"] = index
                elif index < known["first"]:
                    known["first"] = index
        try:
            self._spool.write(line + "\n")
        except OSError as exc:  # the spool went to the temporary folder, and that is full or broken
            raise _write_error(exc, f"{tempfile.gettempdir()}: cannot spool the report's frames") from exc

    def note_track(self, track: int, kind: str, index: int, masked: bool = True) -> None:
        """Count frame ``index`` in track ``track`` (the report's ``tracks`` list)."""
        t = self._tracks.get(track)
        if t is None:
            self._tracks[track] = {"id": track, "kind": kind, "masked": masked, "first": index, "last": index}
        else:
            t["first"], t["last"] = min(t["first"], index), max(t["last"], index)

    @property
    def tracks(self) -> list[dict]:
        return [dict(t) for _, t in sorted(self._tracks.items())]

    def frames(self) -> Iterator[dict]:
        for line in self.frame_lines():
            yield json.loads(line)

    def frame_lines(self) -> Iterator[str]:
        """The frame records as the report writes them: each one line of compact JSON."""
        if self._spool is None:
            return
        self._spool.seek(0)
        for line in self._spool:
            yield line.rstrip("\n")
        self._spool.seek(0, 2)

    def summary(self) -> dict:
        """The file's fields; names that are not UTF-8 written with ``\\xNN`` escapes (valid JSON text)."""
        from .paths import shown

        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        if self.input_sha256 is not None:  # a plan: the edits' lists, empty, for a person to fill
            out.update(tracks=self.tracks, add=[], mask_frames=[])
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
            # the spooled lines are already the records as json.dumps(rec, separators=(",", ":")) writes them
            for j, line in enumerate(fr.frame_lines()):
                f.write(("," if j else "") + "\n  " + line)
            f.write("\n ]}")
        f.write("\n]}\n")


def _frame_line(index: int, pts: float, regions: Regions, shapes: list, raw: Regions | None) -> str:
    """One frame's record as ``json.dumps(rec, separators=(",", ":"))`` writes it, where ``rec``
    is ``{"index", "pts", "regions": [{"x", "y", "w", "h", "shape", "kind", "score", "source",
    "track"}], "raw": [{"box", "track", "kind", "score", "source"}]}`` (no "raw" when None).

    Written with %-formatting instead of building a dict per region: a float's ``%r`` is the
    ``float.__repr__`` json writes, an int's its ``int.__repr__``, and the few strings are
    json.dumps'ed once each. Non-finite numbers (json writes NaN, Infinity) take json.dumps itself.
    """
    b = regions.boxes
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]  # float32 differences, as before
    finite = bool(np.isfinite(b).all() and np.isfinite(w).all() and np.isfinite(h).all()
                  and np.isfinite(regions.scores).all())
    if raw is not None:
        finite = finite and bool(np.isfinite(raw.boxes).all() and np.isfinite(raw.scores).all())
    if not finite:
        return json.dumps(_frame_record(index, pts, regions, shapes, raw), separators=(",", ":"))
    text = _json_text
    out = [f'{{"index":{json.dumps(index)},"pts":{json.dumps(round(pts, 6))},"regions":[']
    out.append(",".join([
        '{"x":%r,"y":%r,"w":%r,"h":%r,"shape":%s,"kind":%s,"score":%r,"source":%s,"track":%r}' % (
            round(x, 1), round(y, 1), round(ww, 1), round(hh, 1), text(sh), text(k), round(sc, 3), text(src), t)
        for (x, y, _, _), ww, hh, k, sc, src, sh, t in zip(
            b.tolist(), w.tolist(), h.tolist(), regions.kinds, regions.scores.tolist(), regions.sources, shapes,
            regions.track_ids.tolist())]))
    out.append("]")
    if raw is not None:
        out.append(',"raw":[')
        out.append(",".join([
            '{"box":[%r,%r,%r,%r],"track":%r,"kind":%s,"score":%r,"source":%s}' % (
                x1, y1, x2, y2, t, text(k), sc, text(src))
            for (x1, y1, x2, y2), t, k, sc, src in zip(raw.boxes.tolist(), raw.track_ids.tolist(), raw.kinds,
                                                       raw.scores.tolist(), raw.sources)]))
        out.append("]")
    out.append("}")
    return "".join(out)


def _frame_record(index: int, pts: float, regions: Regions, shapes: list, raw: Regions | None) -> dict:
    """The frame record as a dict (what :func:`_frame_line` writes as text)."""
    # tolist: the same floats as float() of each element; widths and heights are float32 differences
    b = regions.boxes
    rec = {"index": index, "pts": round(pts, 6), "regions": [
        {"x": round(x, 1), "y": round(y, 1), "w": round(w, 1), "h": round(h, 1), "shape": str(sh), "kind": str(k),
         "score": round(s, 3), "source": str(src), "track": t}
        for (x, y, _, _), w, h, k, s, src, sh, t in zip(
            b.tolist(), (b[:, 2] - b[:, 0]).tolist(), (b[:, 3] - b[:, 1]).tolist(), regions.kinds,
            regions.scores.tolist(), regions.sources, shapes, regions.track_ids.tolist())]}
    if raw is not None:
        # a float32 as a Python float prints the shortest decimal that reads back as the same float32
        rec["raw"] = [{"box": box, "track": t, "kind": str(k), "score": s, "source": str(src)}
                      for box, t, k, s, src in zip(raw.boxes.tolist(), raw.track_ids.tolist(), raw.kinds,
                                                   raw.scores.tolist(), raw.sources)]
    return rec


_TEXT: dict = {}


def _json_text(value) -> str:
    """``json.dumps(str(value))``, kept for the few kinds, sources and shapes a report has."""
    text = _TEXT.get(value)
    if text is None:
        text = json.dumps(str(value))
        if len(_TEXT) < 256:
            _TEXT[value] = text
    return text
