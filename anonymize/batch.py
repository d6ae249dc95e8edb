"""Batch mode: many files, a mirrored output tree, parallel workers and a resumable manifest.

``anonymize IN_DIR -o OUT_DIR`` plans one :class:`Job` per file (:func:`plan`), then :func:`run`
processes them, in this process (``jobs=1``) or in a pool of worker processes that each hold their
own :class:`~anonymize.api.Anonymizer` (``jobs>1``), and prints a summary.

Resume: when the output is a folder, every finished file is recorded in a manifest, by default
``.OUT_DIR_NAME.anonymize-manifest.jsonl`` beside ``OUT_DIR`` (not in it: the output folder holds
only outputs and can be published as it is, while the manifest names the inputs). It is
append-only JSON lines, fsync'd after each record, so a kill at any moment leaves a valid prefix
(a truncated last line is ignored, and cut off before the next run appends). A rerun
skips a file whose input sha256 and settings match its last ``done`` record *and* whose output
still exists with the recorded sha256; it redoes failed, changed and missing ones. Outputs are
renamed into place only when complete (:func:`~anonymize.atomic.atomic_output`), so a killed run
leaves no truncated file under a final name; its hidden ``.NAME.*.partial.EXT`` temporary files
are deleted when the next run starts (a folder batch: all of them in ``OUT_DIR``; any other run:
those of its own output names), unless a live run is writing them (:func:`remove_if_stale`).
SIGTERM, SIGHUP and SIGINT stop a run cleanly (:mod:`anonymize.signals`): workers unwind and
exit, no temporary file is left, the manifest keeps what finished and the summary is printed. Only the process that holds the manifest's lock writes
into ``OUT_DIR``'s bookkeeping; a second concurrent run on the same folder is refused.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .api import Anonymizer, __version__, default_output, media_kind
from .atomic import atomic_output
from .config import Options
from .errors import AnonymizeError, DiskFull, EncodeError, FFmpegNotFound, InputError, ModelError, is_disk_full
from .paths import check_manifest, check_manifest_stat, check_name_length, check_writes, require_regular_input, shown
from .report import FileReport, write_report
from .signals import Terminated

log = logging.getLogger("anonymize")

MANIFEST_NAME = ".anonymize-manifest.jsonl"
#: Exit code when some files of a folder batch failed (single files keep their own codes).
EXIT_BATCH_FAILED = 8
#: Errors that no file can get past: the batch stops and returns their exit code.
FATAL = (ModelError, FFmpegNotFound)

#: ``atomic_output``'s temporary names: ``.{stem}.{mkstemp's 8 chars}.partial{suffix}``.
_PARTIAL = re.compile(r"^\..*\.[a-z0-9_]{8}\.partial(\.[^.]*)?$")

#: Photo/video/audio formats we cannot anonymize. ``--copy-other`` never copies these (they
#: would keep faces, voices and metadata); neither does it copy files whose bytes look like media.
_UNSUPPORTED_MEDIA = frozenset(
    # stills, incl. camera RAW
    ".tif .tiff .gif .bmp .avif .jxl .jp2 .j2k .psd .xcf .ico .svg .tga .dng .cr2 .cr3 .crw .nef .nrw .arw .srf"
    " .sr2 .raf .orf .rw2 .pef .srw .x3f .erf .kdc .mrw .3fr .iiq .thm"
    # video
    " .3gp .3g2 .mts .m2ts .ts .mpg .mpeg .m2v .vob .wmv .asf .flv .f4v .ogv .insv .lrv .mxf .dv .braw .r3d"
    " .rm .rmvb .qt .y4m"
    # audio (voices identify people)
    " .wav .m4a .mp3 .aac .amr .opus .ogg .oga .flac .3ga .caf .aif .aiff .wma .mka".split())


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    src: Path  #: absolute input path
    dst: Path  #: absolute output path
    rel: str  #: manifest key: the path relative to the output folder (= the input's, mirrored)
    shown: str  #: the input as the user would write it (for messages and the report)
    shown_dst: str
    action: str  #: "anonymize" or "copy"
    kind: str  #: "photo", "video" or "other"
    size: int = 0


@dataclass
class Plan:
    jobs: list[Job]
    #: the output folder holding the manifest (None: outputs beside the inputs / one output file)
    out_dir: Path | None = None
    #: a folder was among the inputs: failures make exit code 8
    folder_mode: bool = False
    #: non-media files left out (no ``--copy-other``)
    not_copied: list[str] = field(default_factory=list)
    #: media we cannot anonymize, never copied
    refused: list[str] = field(default_factory=list)
    #: hidden files and folders, our own outputs and temporary files
    ignored: int = 0
    #: the input folders (absolute)
    roots: list[Path] = field(default_factory=list)
    #: the resume manifest (with ``out_dir``)
    manifest: Path | None = None


# --------------------------------------------------------------------------------------------
# planning


def looks_like_media(path: Path) -> bool:
    """True for photo/video/audio files other than the formats we process (by name or bytes)."""
    ext = path.suffix.lower()
    if ext in _UNSUPPORTED_MEDIA:
        return True
    mime = mimetypes.guess_type(path.name, strict=False)[0] or ""
    if mime.split("/")[0] in ("image", "video", "audio"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"\x1a\x45\xdf\xa3", b"II*\x00", b"MM\x00*",
                             b"ID3", b"fLaC", b"OggS", b"#!AMR", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))
            or (head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI ", b"WAVE"))
            or head[4:8] == b"ftyp")


def _is_ours(name: str) -> bool:
    """Hidden files (incl. our manifest and ``.NAME.*.partial.EXT`` temporaries) and our outputs."""
    return name.startswith(".") or ".anonymized." in name


def _same(a: Path, b: Path | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _walk(root: Path, skip: Path | None) -> tuple[list[Path], int]:
    """Files under ``root`` (sorted, not following folder links, leaving out the folder ``skip``),
    and the count of ignored entries."""
    found: list[Path] = []
    ignored = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        kept = []
        for d in dirs:
            full = Path(top, d)
            if d.startswith(".") or os.path.islink(full) or _same(full, skip):
                ignored += 1
            else:
                kept.append(d)
        dirs[:] = sorted(kept)
        for name in sorted(files):
            if _is_ours(name):
                ignored += 1
                continue
            full = Path(top, name)
            if full.is_file():
                found.append(full)
            else:
                ignored += 1  # broken link, socket, ...
    return found, ignored


def _is_dir_target(output: Path | str | None) -> bool:
    return output is not None and (os.path.isdir(output) or str(output).endswith(("/", os.sep)))


def plan(inputs: list[Path], output: Path | str | None, copy_other: bool = False,
         manifest: Path | None = None) -> Plan:
    """Pair every input file with its output.

    One folder with ``-o OUT``: its tree is mirrored into OUT. Several inputs (or an output that
    is an existing folder): each file goes to ``OUT/NAME``, each folder to ``OUT/FOLDER/...``.
    An output given as a str ending in "/" is a folder (pathlib drops the slash, so the CLI passes
    a str). Without ``-o``: ``NAME.anonymized.EXT`` beside each input. With an output folder, progress is
    recorded in ``manifest`` (default :func:`manifest_path`). Raises InputError for missing
    inputs, inputs given directly that are not regular files (FIFOs, devices), two inputs that
    would write the same output, an output folder equal to an input, or an output (or the
    manifest) that is the same file as an input (also through links) or not a regular file.
    """
    inputs = [Path(i) for i in inputs]
    for item in inputs:
        try:
            st = os.stat(item)
        except FileNotFoundError:
            raise InputError(f"{shown(item)}: no such file or folder") from None
        except OSError as exc:  # e.g. a name too long to exist
            raise InputError(f"{shown(item)}: cannot read it ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(st.st_mode):
            require_regular_input(item)  # stat only: a FIFO or /dev/zero named x.mp4 must not hang us
    if output is not None:
        check_name_length("-o", Path(output))  # before anything stats it (ENAMETOOLONG)
    folder_mode = any(i.is_dir() for i in inputs)
    several = len(inputs) > 1 or folder_mode or _is_dir_target(output)
    output = Path(output) if output is not None else None
    if copy_other and (output is None or not several):
        raise InputError("--copy-other needs an output folder (-o OUT_DIR)")
    out_dir = Path(os.path.abspath(output)) if (output is not None and several) else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{output}: exists and is not a folder (several inputs need an output folder)")
    result = Plan([], out_dir, folder_mode)
    if manifest is not None and out_dir is None:
        raise InputError("--manifest needs an output folder (-o OUT_DIR)")
    if out_dir is not None:
        result.manifest = Path(os.path.abspath(manifest)) if manifest is not None else manifest_path(out_dir)
    seen: dict[str, str] = {}

    def add(src: Path, rel: str | None, dst: Path, shown: str, shown_dst: str) -> None:
        kind = media_kind(src)
        action = "anonymize"
        if kind is None:
            if not copy_other:
                result.not_copied.append(shown)
                return
            if looks_like_media(src):
                result.refused.append(shown)
                return
            kind, action = "other", "copy"
        key = rel if rel is not None else str(dst)
        if key in seen:
            raise InputError(f"{seen[key]} and {shown} would both be written to {shown_dst}")
        seen[key] = shown
        try:
            size = src.stat().st_size
        except OSError:
            size = 0
        result.jobs.append(Job(Path(os.path.abspath(src)), Path(os.path.abspath(dst)), rel or src.name, shown,
                               shown_dst, action, kind, size))

    for item in inputs:
        if item.is_dir():
            root = Path(os.path.abspath(item))
            if out_dir is not None and (out_dir == root or _same(root, out_dir)):
                raise InputError(f"{output}: the output folder must not be the input folder")
            files, ignored = _walk(root, out_dir)
            result.ignored += ignored
            result.roots.append(root)
            prefix = "" if len(inputs) == 1 else (root.name + "/")
            for f in files:
                rel = prefix + f.relative_to(root).as_posix()
                label = str(item / f.relative_to(root))  # not `shown`: that name is the function used above
                if out_dir is not None:
                    dst = out_dir / rel
                    add(f, rel, dst, label, str(output / rel))
                elif media_kind(f):
                    add(f, None, default_output(f), label, str(default_output(item / f.relative_to(root))))
                else:
                    result.not_copied.append(label)
        else:
            if out_dir is not None:
                add(item, item.name, out_dir / item.name, str(item), str(output / item.name))
            else:
                dst = output if output is not None else default_output(item)
                add(item, None, dst, str(item), str(dst))
    # no output (nor the manifest) may be an input, e.g. `anonymize in/a.jpg -o in/`, or a hard link to one
    writes = [("output", Path(j.shown_dst)) for j in result.jobs]
    if result.manifest is not None:
        writes.append(("--manifest", result.manifest))
    check_writes([Path(j.shown) for j in result.jobs], writes)
    return result


# --------------------------------------------------------------------------------------------
# the manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file (InputError for anything else: hashing /dev/zero never ends)."""
    require_regular_input(path)
    h = hashlib.sha256()
    # O_NONBLOCK: a file swapped for a FIFO since the check must not block the open
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InputError(f"{shown(path)}: is not a regular file; refusing to read it")
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def settings_hash(options: Options) -> str:
    """Hash of everything that changes an output (not thread counts), plus the tool version."""
    d = {k: v for k, v in options.as_dict().items() if "threads" not in k}
    d["version"] = __version__
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> list[dict]:
    """All complete records, in order; a truncated or garbled line (a killed write) is skipped.
    Raises InputError for a path that is not a regular file or too large to be a manifest."""
    check_manifest(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return _parse_manifest(data)


def _parse_manifest(data: bytes) -> list[dict]:
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line of thousands of "[" (tests/test_fuzz.py)
            continue
        if isinstance(rec, dict) and "input" in rec:
            records.append(rec)
    return records


def manifest_path(out_dir: Path) -> Path:
    """Where the manifest of ``out_dir`` lives by default: ``.OUT_NAME.anonymize-manifest.jsonl``
    beside the folder, not in it, so the output folder holds only outputs and can be published
    as it is (the manifest names the inputs and holds their sizes, dates and hashes)."""
    out_dir = Path(os.path.abspath(out_dir))
    return out_dir.parent / f".{out_dir.name}{MANIFEST_NAME}"


def _lock_exclusive(fd: int) -> None:
    """Lock the open file ``fd`` for this process without waiting (released when it is closed,
    or when the process dies); OSError if another process holds it. POSIX: ``flock``. Windows:
    ``msvcrt.locking`` on one byte far past the end of the file (2 GiB), so that the lock never
    covers the records, which the same run reads through another handle (Windows locks are
    mandatory)."""
    if os.name == "nt":
        import msvcrt

        pos = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, 0x7FFFFFFE, os.SEEK_SET)  # within any CRT's offset range
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        finally:
            os.lseek(fd, pos, os.SEEK_SET)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class Manifest:
    """The append-only record of the finished files of an output folder, locked for one run."""

    def __init__(self, path: Path):
        self.path = Path(path)
        check_manifest(self.path)  # before opening: no FIFO, device or huge file is read into memory
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NONBLOCK: should a FIFO appear after the check, opening it must not block (POSIX);
            # O_BINARY: no newline translation (Windows)
            flags = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | flags, 0o600)
        except OSError as exc:
            raise InputError(f"{shown(self.path)}: cannot write the manifest ({exc.strerror}); "
                             "choose another place with --manifest") from None
        try:
            check_manifest_stat(self.path, os.fstat(self.fd))
        except InputError:
            os.close(self.fd)
            raise
        try:
            _lock_exclusive(self.fd)
        except OSError:
            os.close(self.fd)
            raise InputError(f"{self.path}: another anonymize run is using this manifest and output folder") from None
        # cut a record that a killed run left half-written, so the next record starts on its own line
        size = os.fstat(self.fd).st_size
        data = b""
        if size:
            os.lseek(self.fd, 0, os.SEEK_SET)  # not os.pread: POSIX only
            data = os.read(self.fd, size)
        if data and not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]
            os.ftruncate(self.fd, len(data))
            os.fsync(self.fd)
        self.last: dict[str, dict] = {}
        for rec in _parse_manifest(data):
            self.last[rec["input"]] = rec

    def append(self, record: dict) -> None:
        """Append one record and fsync it. Raises :class:`EncodeError` (:class:`DiskFull` for a
        full disk) when it cannot be written; a partly written record is cut off again."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        start = None
        try:
            start = os.lseek(self.fd, 0, os.SEEK_END)
            view = memoryview(line)
            while view:  # a nearly full disk takes part of a write without an error
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
        except OSError as exc:
            if start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, start)  # no half record for the next one to run into
            if is_disk_full(exc):
                raise DiskFull(f"{self.path}: no space left on the disk for the manifest") from exc
            raise EncodeError(f"{self.path}: cannot write the manifest ({exc.strerror or exc})") from exc
        self.last[record["input"]] = record

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def remove_if_stale(path: Path, before: float | None = None) -> bool:
    """Delete one of our temporary files if no live run is writing it; True if deleted.

    Live means: some process holds its advisory lock (:func:`~anonymize.atomic.atomic_output`
    holds one while writing, and the kernel drops it when that process dies, even by SIGKILL),
    or it was modified at or after ``before`` (the start of this run, when given: spares a file
    another run created a moment ago, before taking its lock). Never follows a link.
    Where there are no advisory locks (Windows), nothing is deleted: a live file is never at risk."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (before is not None and st.st_mtime >= before):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live run holds it
        try:
            if not os.path.samestat(st, os.stat(path, follow_symlinks=False)):
                return False  # replaced since we opened it
            os.unlink(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def remove_stale_partials(out_dir: Path, skip: Iterable[Path] = (), before: float | None = None) -> int:
    """Delete the ``.NAME.*.partial.EXT`` temporary files a killed run left in ``out_dir``
    (not in the folders ``skip``: input folders that happen to lie inside it), sparing those a
    live run is writing (:func:`remove_if_stale`)."""
    skip = list(skip)
    removed = 0
    for top, dirs, files in os.walk(out_dir, followlinks=False):
        dirs[:] = [d for d in dirs if not any(_same(Path(top, d), s) for s in skip)]
        for name in files:
            if _PARTIAL.match(name) and remove_if_stale(Path(top, name), before):
                removed += 1
    return removed


def remove_partials_of(outputs: Iterable[Path], before: float | None = None) -> int:
    """Delete the temporary files a killed run left for these output paths: in each output's
    folder, only ``.STEM.XXXXXXXX.partial.EXT`` for that output's own stem and extension, and
    only where no live run is writing them (:func:`remove_if_stale`)."""
    wanted: dict[Path, list[re.Pattern]] = {}
    for out in outputs:
        out = Path(out)
        pat = re.compile(rf"^\.{re.escape(out.stem)}\.[a-z0-9_]+\.partial{re.escape(out.suffix)}$")
        wanted.setdefault(out.parent, []).append(pat)
    removed = 0
    for folder, pats in wanted.items():
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if (_PARTIAL.match(name) and any(p.match(name) for p in pats)
                    and remove_if_stale(folder / name, before)):
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------
# one file


@dataclass
class Outcome:
    """What happened to one job; crosses the process boundary (picklable)."""

    job: Job
    status: str  #: "done", "skipped", "failed" or "fatal" (a setup error no file can get past)
    record: dict | None = None  #: the manifest record ("done"/"failed")
    report: FileReport | None = None  #: without its frame spool when it crossed processes
    frames_path: str | None = None  #: the report's frames (JSON lines) when they crossed processes
    error: str | None = None
    exit_code: int = 0
    regions: int = 0
    models: list[dict] | None = None
    #: the batch must stop after this file (a full disk: every later file would fail too)
    stop: bool = False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _copy(src: Path, dst: Path) -> str:
    """Copy verbatim (write-then-rename); return the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with atomic_output(dst) as tmp, open(src, "rb") as fi, open(tmp, "wb") as fo:
            while block := fi.read(1 << 20):
                h.update(block)
                fo.write(block)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(f"{dst}: no space left on the disk for the copy") from exc
        raise EncodeError(f"{dst}: could not write the copy ({exc.strerror or exc})") from exc
    return h.hexdigest()


def process_job(runner: Anonymizer | Callable[[], Anonymizer] | None, job: Job, prev: dict | None, settings: str,
                on_frame: Callable[[int], None] | None = None) -> Outcome:
    """Skip (already done), anonymize or copy one file. Never raises for a file's own failure.

    ``runner`` may be a callable that builds the Anonymizer when first needed (so a rerun that
    skips everything loads no model).
    """
    start = time.perf_counter()
    record = {"input": job.rel, "size": None, "mtime": None, "sha256": None, "settings": settings,
              "action": job.action, "kind": job.kind, "status": "failed", "error": None, "exit_code": 0,
              "output": job.rel, "output_sha256": None, "regions": 0, "seconds": 0.0, "time": None}
    report = None
    stop = False
    try:
        try:
            require_regular_input(job.src)  # never hash a FIFO or a device: it would block or never end
            st = os.stat(job.src)
            record.update(size=st.st_size, mtime=round(st.st_mtime, 6), sha256=sha256_file(job.src))
        except OSError as exc:
            raise InputError(f"{job.shown}: cannot read it ({exc.strerror or exc})") from exc
        if (prev and prev.get("status") == "done" and prev.get("sha256") == record["sha256"]
                and prev.get("settings") == settings and prev.get("output_sha256") and job.dst.is_file()
                and sha256_file(job.dst) == prev["output_sha256"]):
            return Outcome(job, "skipped", regions=int(prev.get("regions") or 0))
        if job.action == "copy":
            record["output_sha256"] = _copy(job.src, job.dst)
        else:
            if callable(runner) and not isinstance(runner, Anonymizer):
                runner = runner()
            if runner is None:
                raise AnonymizeError("no anonymizer")
            report = runner.file(job.src, job.dst, on_frame=on_frame)
            record["output_sha256"] = sha256_file(job.dst)
            record["regions"] = report.region_count
        record["status"] = "done"
    except FATAL as exc:
        return Outcome(job, "fatal", error=str(exc), exit_code=exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop the batch
        code = getattr(exc, "exit_code", EncodeError.exit_code if is_disk_full(exc) else 1)
        msg = str(exc) if isinstance(exc, AnonymizeError) else f"{type(exc).__name__}: {exc}"
        # we work on absolute paths; say what the user wrote
        msg = msg.replace(str(job.src), job.shown).replace(shown(job.src), shown(job.shown))
        record.update(error=msg, exit_code=code)
        # an output left from an earlier version of this input is stale now: it must not look current
        if prev and prev.get("output_sha256") and job.dst.is_file():
            with contextlib.suppress(OSError):
                if sha256_file(job.dst) == prev["output_sha256"]:
                    job.dst.unlink()
        report = FileReport(job.shown, job.shown_dst, job.kind, status="failed", error=msg)
        stop = is_disk_full(exc)
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["time"] = _now()
    if report is None:  # a copied file
        report = FileReport(job.shown, job.shown_dst, job.kind, status="copied")
    report.input, report.output = job.shown, job.shown_dst
    report.seconds = record["seconds"]
    return Outcome(job, record["status"], record, report, error=record["error"], exit_code=record["exit_code"],
                   regions=record["regions"], stop=stop)


# --------------------------------------------------------------------------------------------
# worker processes

_worker: dict = {}


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the parent dies (kill -9 of the CLI must not leave workers running)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: workers also stop when their queue breaks
        pass
    if os.getppid() != parent:
        os._exit(1)


def _worker_signal(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """In a worker: SIGTERM/SIGHUP during a job unwind it (:class:`Terminated`; the worker exits
    after, in :func:`_worker_job`); between jobs the worker exits at once (nothing to clean)."""
    if _worker.get("busy") and not _worker.get("stopping"):
        _worker["stopping"] = True
        raise Terminated(signum)
    if not _worker.get("busy"):
        os._exit(128 + signum)


def _worker_init(options: Options, parent: int, frames_dir: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _worker_signal)
    signal.signal(signal.SIGHUP, _worker_signal)
    _die_with_parent(parent)
    try:
        import cv2

        cv2.setNumThreads(max(1, options.threads))
    except Exception:  # noqa: BLE001
        pass
    _worker.update(frames_dir=frames_dir, options=options, runner=None)


def _worker_runner() -> Anonymizer:
    """This worker's Anonymizer (models loaded once per process, on first use)."""
    if _worker["runner"] is None:
        _worker["runner"] = Anonymizer(_worker["options"])
    return _worker["runner"]


def _worker_models() -> list[dict]:
    return _worker_runner().engine.models()


def _worker_job(job: Job, prev: dict | None, settings: str) -> Outcome:
    _worker["busy"] = True
    try:
        out = process_job(_worker_runner, job, prev, settings)
    except Terminated as exc:
        os._exit(exc.exit_code)  # the job has unwound; the parent is stopping the pool
    finally:
        _worker["busy"] = False
    if out.report is not None:
        spool, out.report._spool = out.report._spool, None
        if spool is not None and _worker.get("frames_dir"):
            try:
                fd, name = tempfile.mkstemp(suffix=".jsonl", dir=_worker["frames_dir"])
                with os.fdopen(fd, "w") as f:
                    spool.seek(0)
                    shutil.copyfileobj(spool, f)
                out.frames_path = name
            except OSError as exc:  # the temporary folder is full: the report cannot be complete
                out.stop, out.exit_code = True, EncodeError.exit_code
                out.error = (f"{_worker['frames_dir']}: " + ("no space left on the disk" if is_disk_full(exc)
                             else f"cannot write ({exc.strerror or exc})") + " for the report's frames")
        if spool is not None:
            spool.close()
    return out


# --------------------------------------------------------------------------------------------
# the run


def cpu_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_plan(jobs: int, options: Options, files: int) -> tuple[int, Options]:
    """(worker processes, their options): at most one worker per core and per file, and the
    cores split between them (detector threads = cores // workers unless set explicitly)."""
    cores = cpu_cores()
    n = cores if jobs <= 0 else jobs
    n = max(1, min(n, cores, max(files, 1)))
    if n > 1 and options.threads == 0:
        options = options.updated(threads=max(1, cores // n))
    if n > 1 and options.ffmpeg_threads == 0:
        options = options.updated(ffmpeg_threads=max(1, cores // n))
    return n, options


@dataclass
class Summary:
    done: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    fatal: Outcome | None = None
    seconds: float = 0.0
    #: worker processes' per-file report frames, removed after the report is written
    frames_dir: str | None = None


def run(the_plan: Plan, options: Options, *, jobs: int = 1, report: Path | None = None, quiet: bool = False,
        runner: Anonymizer | None = None) -> int:
    """Process a plan, print the summary to stderr; return the exit code."""
    start = time.perf_counter()
    started = time.time()  # temporary files modified since belong to a live run
    settings = settings_hash(options)
    todo = the_plan.jobs
    manifest = None
    summary = Summary()  # filled as files finish, so an interrupted run still reports them
    try:
        if the_plan.manifest is not None:
            manifest = Manifest(the_plan.manifest)
            stale = remove_stale_partials(the_plan.out_dir, skip=the_plan.roots, before=started)
        else:
            stale = remove_partials_of((j.dst for j in todo), before=started)
        if stale:
            log.warning("removed %d unfinished temporary file(s) of an interrupted run", stale)
        workers, options = worker_plan(jobs, options, sum(j.action == "anonymize" for j in todo))
        if workers <= 1 or len(todo) < 2:
            summary, models, runner = _run_here(todo, options, settings, manifest, quiet, runner, summary)
        else:
            summary, models = _run_pool(todo, options, settings, manifest, quiet, workers, report is not None,
                                        summary)
    except AnonymizeError as exc:
        print(f"anonymize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        why = exc.name if isinstance(exc, Terminated) else "interrupted"
        summary.seconds = time.perf_counter() - start
        if summary.frames_dir:
            shutil.rmtree(summary.frames_dir, ignore_errors=True)
        _print_summary(the_plan, summary)
        again = "resume" if the_plan.manifest is not None else "start again"
        print(f"anonymize: stopped ({why}); no unfinished file was left; run the same command again to {again}",
              file=sys.stderr)
        return exc.exit_code if isinstance(exc, Terminated) else 130
    except BrokenProcessPool:
        print("anonymize: error: a worker process died (out of memory?); finished files are recorded, "
              "run the same command again to resume", file=sys.stderr)
        return 1
    finally:
        if manifest is not None:
            manifest.close()
    summary.seconds = time.perf_counter() - start
    order = {job: i for i, job in enumerate(the_plan.jobs)}  # report and "first failure" in input order
    code = 0
    if summary.fatal is not None:
        code = summary.fatal.exit_code
    elif summary.failed:
        first = min(summary.failed, key=lambda o: order[o.job])
        code = EXIT_BATCH_FAILED if the_plan.folder_mode else first.exit_code
    try:
        if report is not None and summary.fatal is None:
            _write_report(Path(report), summary, order, options, models)
    except (OSError, EncodeError) as exc:
        print(f"anonymize: error: could not write the report: {exc}", file=sys.stderr)
        code = code or EncodeError.exit_code
    finally:
        if summary.frames_dir:
            shutil.rmtree(summary.frames_dir, ignore_errors=True)
    _print_summary(the_plan, summary)
    return code


def _write_report(path: Path, summary: Summary, order: dict, options: Options, models: list[dict]) -> None:
    """The JSON report, files in input order; already-done files have status "skipped"."""
    files = []
    for o in sorted(summary.done + summary.skipped + summary.failed, key=lambda o: order[o.job]):
        if o.status == "skipped":
            files.append(FileReport(o.job.shown, o.job.shown_dst, o.job.kind, status="skipped",
                                    region_count=o.regions))
        else:
            files.append(o.report)
    try:
        write_report(path, files, options.as_dict(), models or [], __version__)
    finally:
        for f in files:
            if f._spool is not None:
                f._spool.close()


def _record(summary: Summary, manifest: Manifest | None, out: Outcome) -> None:
    if out.status == "fatal":
        summary.fatal = summary.fatal or out
        return
    stop = out.error if out.stop else None
    if out.record is not None and manifest is not None:
        try:
            manifest.append(out.record)
        except EncodeError as exc:  # nothing more can be recorded: stop like a fatal error
            stop = stop or str(exc)
    {"done": summary.done, "skipped": summary.skipped, "failed": summary.failed}[out.status].append(out)
    if out.status == "failed":
        log.error("%s: %s", out.job.shown, _why(out))
    if stop and summary.fatal is None:
        summary.fatal = Outcome(out.job, "fatal", error=stop, exit_code=EncodeError.exit_code)


def _run_here(todo: list[Job], options: Options, settings: str, manifest: Manifest | None, quiet: bool,
              runner: Anonymizer | None, summary: Summary | None = None
              ) -> tuple[Summary, list[dict], Anonymizer | None]:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .ffmpeg_tools import probe

    summary = summary if summary is not None else Summary()
    built: list[Anonymizer] = [runner] if runner is not None else []

    def get_runner() -> Anonymizer:
        if not built:
            built.append(Anonymizer(options))  # on first use: a rerun that skips everything loads nothing
        return built[0]

    prevs = manifest.last if manifest else {}
    with logging_redirect_tqdm():
        bar = tqdm(todo, unit="file", disable=quiet or len(todo) < 2, desc="files")
        for job in bar:
            total = None
            if job.kind == "video":
                with contextlib.suppress(AnonymizeError):
                    total = probe(job.src).estimated_frames()
            with tqdm(total=total, unit="frame", desc=job.src.name[:40], disable=quiet or job.kind != "video",
                      leave=len(todo) < 2) as frames:
                out = process_job(get_runner, job, prevs.get(job.rel), settings, on_frame=frames.update)
            _record(summary, manifest, out)
            if summary.fatal:
                break
    return summary, (built[0].engine.models() if built else []), (built[0] if built else None)


def _run_pool(todo: list[Job], options: Options, settings: str, manifest: Manifest | None, quiet: bool,
              workers: int, want_frames: bool, summary: Summary | None = None) -> tuple[Summary, list[dict]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    summary = summary if summary is not None else Summary()
    prevs = manifest.last if manifest else {}
    frames_dir = summary.frames_dir = tempfile.mkdtemp(prefix="anonymize-frames-") if want_frames else None
    # biggest first, so one long video does not run alone at the end
    order = sorted(todo, key=lambda j: (-j.size, j.rel))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(options, os.getpid(), frames_dir))
    models: list[dict] = []
    try:
        with logging_redirect_tqdm():
            bar = tqdm(total=len(order), unit="file", disable=quiet, desc=f"files ({workers} workers)")
            try:
                # a bounded window of submitted jobs: results arrive in completion order
                pending = set()
                it = iter(order)
                for job in it:
                    pending.add(pool.submit(_worker_job, job, prevs.get(job.rel), settings))
                    if len(pending) >= 4 * workers:
                        break
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        out = fut.result()
                        _record(summary, manifest, out)
                        bar.update(1)
                        if out.status == "failed":
                            bar.set_postfix(failed=len(summary.failed))
                    if summary.fatal:
                        break
                    for job in it:
                        pending.add(pool.submit(_worker_job, job, prevs.get(job.rel), settings))
                        if len(pending) >= 4 * workers:
                            break
            finally:
                bar.close()
    except BaseException as exc:
        # on a signal, the workers unwind their jobs (ffmpeg killed, temporary files deleted) first
        _kill_pool(pool, graceful=isinstance(exc, (Terminated, KeyboardInterrupt)))
        # what a worker that had to be killed left behind (the workers are gone: no lock is held
        # for them any more; a live run of another process keeps its own)
        remove_partials_of(j.dst for j in todo)
        if frames_dir:
            shutil.rmtree(frames_dir, ignore_errors=True)
        summary.frames_dir = None
        raise
    if summary.fatal:
        _kill_pool(pool)
    else:
        if want_frames:
            with contextlib.suppress(AnonymizeError):
                models = pool.submit(_worker_models).result()
        pool.shutdown(wait=True)
    if frames_dir:
        for o in summary.done + summary.failed:
            if o.frames_path and o.report is not None:
                o.report._spool = open(o.frames_path, "r+")  # noqa: SIM115 - read by write_report
    return summary, models


def _kill_pool(pool, graceful: bool = False, grace_s: float = 20.0) -> None:
    """Stop the workers. ``graceful``: SIGTERM first, so each unwinds its job (kills its ffmpeg,
    deletes its temporary file) and exits, and wait up to ``grace_s`` for that; then SIGKILL
    whatever is left, and wait until the workers are gone."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    if graceful:
        for p in procs:
            with contextlib.suppress(Exception):
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            with contextlib.suppress(Exception):
                p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(5)


def _why(o: Outcome) -> str:
    err = o.error or ""
    return err[len(o.job.shown) + 2:] if err.startswith(o.job.shown + ": ") else err


def _print_summary(the_plan: Plan, s: Summary) -> None:
    w = sys.stderr.write
    copied = sum(o.job.action == "copy" for o in s.done)
    regions = sum(o.regions for o in s.done)
    parts = [f"{len(s.done)} done" + (f" ({len(s.done) - copied} anonymized, {copied} copied)" if copied else ""),
             f"{len(s.skipped)} skipped as already done", f"{len(s.failed)} failed",
             f"{regions} regions masked", f"{s.seconds:.1f} s"]
    w("anonymize: " + ", ".join(parts) + "\n")
    for o in sorted(s.failed, key=lambda o: o.job.rel):
        w(f"anonymize: failed: {o.job.shown}: {_why(o)} (exit code {o.exit_code})\n")
    if s.fatal is not None:
        w(f"anonymize: stopped: {s.fatal.error}\n")
    if the_plan.refused:
        w(f"anonymize: not copied, {len(the_plan.refused)} photo/video/audio file(s) in formats that cannot be "
          f"anonymized (faces, voices and metadata would be published): "
          + ", ".join(the_plan.refused[:10]) + (" ..." if len(the_plan.refused) > 10 else "") + "\n")
    if the_plan.not_copied:
        w(f"anonymize: {len(the_plan.not_copied)} other file(s) left out (not photos/videos; --copy-other copies "
          "them verbatim)\n")
    if the_plan.manifest is not None and (s.failed or s.fatal):
        w(f"anonymize: finished files are recorded in {the_plan.manifest}; run the same command again to retry "
          "the rest\n")
