"""The plan: a schema-2 report read back, so that ``render`` can mask a file without detecting.

A report (:mod:`anonymize.report`) records, for each file, its sha256, frame count, the mask's
geometry settings and noise seed, its tracks, and for every frame the raw (pre-growth) boxes with
their track ids. :func:`load_plan` reads one with strict validation: a hostile or broken file
gives :class:`~anonymize.errors.InputError`, never a traceback or a huge allocation. The edits a
person may make (``"masked": false`` on a track, ``"add"`` boxes, ``"mask_frames"`` ranges) are
read here too; :mod:`anonymize.regions_source` applies them. The schema is documented in
docs/plan-schema.md.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .masks import MASKS, SHAPES
from .regions import Regions

#: Bounds that keep a hostile plan from costing unbounded memory or time.
MAX_PLAN_BYTES = 512 << 20
MAX_FRAMES = 10_000_000
MAX_REGIONS_PER_FRAME = 10_000
MAX_TRACKS = 1_000_000
MAX_EDITS = 100_000
MAX_FILES = 100_000
#: Coordinates beyond this many pixels are refused (no real frame is that large).
MAX_COORD = 1e6
#: An added box is followed at most this many seconds each way (the default; "seconds" in an
#: "add" entry may ask for less or more, up to MAX_FOLLOW_SECONDS).
FOLLOW_SECONDS = 5.0
MAX_FOLLOW_SECONDS = 60.0
KINDS = ("face", "head", "person", "text", "plate", "frame")
SOURCES = ("detected", "tracked", "held", "added")


@dataclass(frozen=True)
class Geometry:
    """How raw boxes become masked regions (see :func:`anonymize.masks.mask_regions`)."""

    mask: str = "blur"
    mask_shape: str = "ellipse"
    mask_scale: float = 1.3
    edge_reach: float = 0.5
    #: pixels added on every side of face regions (video: ``video_margin * min(w, h)``)
    margin: float = 0.0

    def as_dict(self) -> dict:
        return {"mask": self.mask, "mask_shape": self.mask_shape, "mask_scale": self.mask_scale,
                "edge_reach": self.edge_reach, "margin": self.margin}


@dataclass(frozen=True)
class Track:
    id: int
    kind: str
    masked: bool
    first: int
    last: int


@dataclass(frozen=True)
class AddBox:
    """A region a person added: a box at ``frame``, followed forwards and backwards."""

    frame: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    seconds: float = FOLLOW_SECONDS


@dataclass
class PlanFile:
    """One file entry of a plan: everything ``render`` needs for that input."""

    input: str
    kind: str
    input_sha256: str
    width: int
    height: int
    frame_count: int
    noise_seed: int
    geometry: Geometry
    tracks: dict[int, Track]
    #: frame index -> raw regions (boxes before growth, with track ids); frames absent have none
    raw: dict[int, Regions] = field(default_factory=dict)
    add: list[AddBox] = field(default_factory=list)
    mask_frames: list[tuple[int, int]] = field(default_factory=list)

    @property
    def spared(self) -> set[int]:
        """Ids of the tracks marked ``"masked": false``."""
        return {t.id for t in self.tracks.values() if not t.masked}


@dataclass
class Plan:
    schema: int
    files: list[PlanFile]

    def entry_for(self, sha256: str) -> PlanFile:
        """The entry of the input whose sha256 is ``sha256``; InputError when there is none."""
        for f in self.files:
            if f.input_sha256 == sha256:
                return f
        if len(self.files) == 1:
            raise InputError(f"the plan is for another file (input sha256 {self.files[0].input_sha256[:16]}..., "
                             f"this file's {sha256[:16]}...)")
        raise InputError(f"none of the plan's {len(self.files)} files has this input's sha256 ({sha256[:16]}...)")


# --------------------------------------------------------------------------------------------
# reading


class _Bad(Exception):
    """A validation failure; its message names the place in the file."""


def _no_constants(name: str) -> Any:
    raise _Bad(f"{name} is not a number JSON allows")


def load_plan(path: Path | str) -> Plan:
    """Read and validate the plan (a schema-2 report) at ``path``.

    Raises InputError for anything else: a missing or oversized file, bad JSON, wrong types,
    non-finite or out-of-range numbers, and schema-1 reports (they load with
    :func:`parse_plan`'s ``renderable=False`` but cannot be rendered: they lack the raw boxes).
    """
    path = Path(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_PLAN_BYTES:
            raise InputError(f"{path}: the plan is {size} bytes, more than the {MAX_PLAN_BYTES} accepted")
        with open(path, "rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    return parse_plan(data, str(path))


def parse_plan(data: bytes | str, name: str = "plan", renderable: bool = True) -> Plan:
    """Validate a plan given as JSON text (see :func:`load_plan`). ``renderable=False`` also
    accepts schema-1 reports (their entries then have no raw boxes and noise seed)."""
    if len(data) > MAX_PLAN_BYTES:
        raise InputError(f"{name}: the plan is larger than the {MAX_PLAN_BYTES} bytes accepted")
    try:
        doc = json.loads(data, parse_constant=_no_constants)
    except _Bad as exc:
        raise InputError(f"{name}: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{name}: not a JSON report ({str(exc)[:200]})") from None
    try:
        return _plan(doc, renderable)
    except _Bad as exc:
        raise InputError(f"{name}: {exc}") from None
    except RecursionError:
        raise InputError(f"{name}: nested too deeply") from None


def _plan(doc: Any, renderable: bool) -> Plan:
    if not isinstance(doc, dict):
        raise _Bad("not a report (the top level must be an object)")
    schema = doc.get("schema")
    if schema not in (1, 2) or isinstance(schema, bool):
        raise _Bad(f"unknown report schema {schema!r} (this version reads schemas 1 and 2)")
    if schema == 1 and renderable:
        raise _Bad("a schema-1 report cannot be rendered: it lacks the raw boxes, track ids and noise seed "
                   "(run `anonymize detect` again to write a schema-2 plan)")
    files = _list(doc.get("files"), "files", MAX_FILES)
    out = []
    for i, entry in enumerate(files):
        where = f"files[{i}]"
        if not isinstance(entry, dict):
            raise _Bad(f"{where} must be an object")
        if schema == 1:
            out.append(_schema1_file(entry, where))
        elif entry.get("status", "ok") == "ok":
            out.append(_file(entry, where))
    return Plan(schema, out)


def _schema1_file(e: dict, where: str) -> PlanFile:
    return PlanFile(input=_str(e.get("input", ""), f"{where}.input"), kind=_choice(e.get("kind"), ("video", "photo"),
                    f"{where}.kind"), input_sha256="", width=_int(e.get("width", 0), f"{where}.width", 0, 1 << 20),
                    height=_int(e.get("height", 0), f"{where}.height", 0, 1 << 20),
                    frame_count=_int(e.get("frame_count", 0), f"{where}.frame_count", 0, MAX_FRAMES),
                    noise_seed=0, geometry=Geometry(), tracks={})


def _file(e: dict, where: str) -> PlanFile:
    sha = _str(e.get("input_sha256"), f"{where}.input_sha256")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _Bad(f"{where}.input_sha256 must be 64 lowercase hex digits")
    kind = _choice(e.get("kind"), ("video", "photo"), f"{where}.kind")
    width = _int(e.get("width"), f"{where}.width", 1, 1 << 20)
    height = _int(e.get("height"), f"{where}.height", 1, 1 << 20)
    frame_count = _int(e.get("frame_count"), f"{where}.frame_count", 1, MAX_FRAMES if kind == "video" else 1)
    seed = _int(e.get("noise_seed"), f"{where}.noise_seed", 0, (1 << 63) - 1)
    g = e.get("geometry")
    if not isinstance(g, dict):
        raise _Bad(f"{where}.geometry must be an object")
    geometry = Geometry(mask=_choice(g.get("mask"), tuple(MASKS), f"{where}.geometry.mask"),
                        mask_shape=_choice(g.get("mask_shape"), SHAPES, f"{where}.geometry.mask_shape"),
                        mask_scale=_num(g.get("mask_scale"), f"{where}.geometry.mask_scale", 1, 16),
                        edge_reach=_num(g.get("edge_reach"), f"{where}.geometry.edge_reach", 0, 16),
                        margin=_num(g.get("margin"), f"{where}.geometry.margin", 0, MAX_COORD))
    tracks: dict[int, Track] = {}
    for j, t in enumerate(_list(e.get("tracks", []), f"{where}.tracks", MAX_TRACKS)):
        tw = f"{where}.tracks[{j}]"
        if not isinstance(t, dict):
            raise _Bad(f"{tw} must be an object")
        tid = _int(t.get("id"), f"{tw}.id", 0, 1 << 62)
        if tid in tracks:
            raise _Bad(f"{tw}.id {tid} appears twice")
        masked = t.get("masked", True)
        if not isinstance(masked, bool):
            raise _Bad(f"{tw}.masked must be true or false")
        first = _int(t.get("first", 0), f"{tw}.first", 0, frame_count - 1)
        tracks[tid] = Track(tid, _choice(t.get("kind", "face"), KINDS, f"{tw}.kind"), masked, first,
                            _int(t.get("last", first), f"{tw}.last", first, frame_count - 1))
    raw: dict[int, Regions] = {}
    for j, fr in enumerate(_list(e.get("frames", []), f"{where}.frames", frame_count)):
        fw = f"{where}.frames[{j}]"
        if not isinstance(fr, dict):
            raise _Bad(f"{fw} must be an object")
        index = _int(fr.get("index"), f"{fw}.index", 0, frame_count - 1)
        if index in raw:
            raise _Bad(f"{fw}.index {index} appears twice")
        raw[index] = _raw(fr.get("raw", []), f"{fw}.raw", tracks)
    adds = []
    for j, a in enumerate(_list(e.get("add", []), f"{where}.add", MAX_EDITS)):
        aw = f"{where}.add[{j}]"
        if not isinstance(a, dict):
            raise _Bad(f"{aw} must be an object")
        x, y = _num(a.get("x"), f"{aw}.x", -MAX_COORD, MAX_COORD), _num(a.get("y"), f"{aw}.y", -MAX_COORD, MAX_COORD)
        w, h = _num(a.get("w"), f"{aw}.w", 1, MAX_COORD), _num(a.get("h"), f"{aw}.h", 1, MAX_COORD)
        adds.append(AddBox(_int(a.get("frame"), f"{aw}.frame", 0, frame_count - 1), (x, y, x + w, y + h),
                           _num(a.get("seconds", FOLLOW_SECONDS), f"{aw}.seconds", 0, MAX_FOLLOW_SECONDS)))
    ranges = []
    for j, r in enumerate(_list(e.get("mask_frames", []), f"{where}.mask_frames", MAX_EDITS)):
        rw = f"{where}.mask_frames[{j}]"
        if not isinstance(r, list) or len(r) != 2:
            raise _Bad(f"{rw} must be a [first, last] pair")
        first = _int(r[0], f"{rw}[0]", 0, frame_count - 1)
        ranges.append((first, _int(r[1], f"{rw}[1]", first, frame_count - 1)))
    return PlanFile(input=_str(e.get("input", ""), f"{where}.input"), kind=kind, input_sha256=sha, width=width,
                    height=height, frame_count=frame_count, noise_seed=seed, geometry=geometry, tracks=tracks,
                    raw=raw, add=adds, mask_frames=ranges)


def _raw(items: Any, where: str, tracks: dict[int, Track]) -> Regions:
    items = _list(items, where, MAX_REGIONS_PER_FRAME)
    boxes = np.zeros((len(items), 4), np.float32)
    scores, kinds, ids, sources = [], [], [], []
    for k, r in enumerate(items):
        rw = f"{where}[{k}]"
        if not isinstance(r, dict):
            raise _Bad(f"{rw} must be an object")
        box = r.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise _Bad(f"{rw}.box must be [x1, y1, x2, y2]")
        boxes[k] = [_num(v, f"{rw}.box", -MAX_COORD, MAX_COORD) for v in box]
        tid = _int(r.get("track"), f"{rw}.track", -1, 1 << 62)
        if tid >= 0 and tid not in tracks:
            raise _Bad(f"{rw}.track {tid} is not in the file's tracks")
        ids.append(tid)
        scores.append(_num(r.get("score", 1.0), f"{rw}.score", 0, 1))
        kinds.append(_choice(r.get("kind", "face"), KINDS, f"{rw}.kind"))
        sources.append(_choice(r.get("source", "detected"), SOURCES, f"{rw}.source"))
    return Regions(boxes, np.array(scores, np.float32), np.array(kinds, object), np.array(ids, np.int64),
                   np.array(sources, object))


def _list(v: Any, where: str, most: int) -> list:
    if not isinstance(v, list):
        raise _Bad(f"{where} must be a list")
    if len(v) > most:
        raise _Bad(f"{where} has {len(v)} entries, more than the {most} accepted")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _Bad(f"{where} must be a string")
    return v


def _choice(v: Any, choices: tuple[str, ...], where: str) -> str:
    if not isinstance(v, str) or v not in choices:
        raise _Bad(f"{where} must be one of {', '.join(choices)} (got {str(v)[:40]!r})")
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{where} must be an integer")
    if not lo <= v <= hi:
        raise _Bad(f"{where} must be between {lo} and {hi} (got {v})")
    return v


def _num(v: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{where} must be a number")
    try:
        v = float(v)
    except OverflowError:  # an int too large for a float
        raise _Bad(f"{where} must be a finite number between {lo:g} and {hi:g}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise _Bad(f"{where} must be a finite number between {lo:g} and {hi:g}")
    return v
