"""The resume manifest of an output folder (:class:`Manifest`, its lock) and the clean-up of the
temporary files a killed run left (:func:`remove_stale_partials`, :func:`remove_partials_of`).

Only the driver (:mod:`anonymize.batch.driver`) opens a :class:`Manifest` and appends to it: the
engines' workers return outcomes and never touch it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Iterable

from ..api import __version__
from ..config import Options
from ..errors import DiskFull, EncodeError, InputError, is_disk_full
from ..paths import check_manifest, check_manifest_stat, require_regular_input, shown

MANIFEST_NAME = ".anonymize-manifest.jsonl"
#: The status of the record the driver writes (fsync'd) *before* a file is handed to a worker: an
#: output that exists while its last record says only "started" is one a killed run wrote (renamed
#: into place, not yet recorded as done), so a rerun may replace it; any other unrecorded output
#: is the user's and is refused without -y. Not an outcome: :attr:`Manifest.last` and
#: :func:`read_manifest` leave these records out unless asked.
STARTED = "started"

#: ``atomic_output``'s temporary names: ``.{stem}.{mkstemp's 8 chars}.partial{suffix}``.
_PARTIAL = re.compile(r"^\..*\.[a-z0-9_]{8}\.partial(\.[^.]*)?$")


def _same(a: Path, b: Path | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


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


def read_manifest(path: Path, started: bool = False) -> list[dict]:
    """All complete outcome records ("done", "failed"), in order, and with ``started`` the
    :data:`STARTED` records too; a truncated or garbled line (a killed write) is skipped.
    Raises InputError for a path that is not a regular file or too large to be a manifest."""
    check_manifest(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = _parse_manifest(data)
    return records if started else [r for r in records if r.get("status") != STARTED]


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
        #: the last outcome record of each input (what a rerun's skip decision reads)
        self.last: dict[str, dict] = {}
        for rec in _parse_manifest(data):
            if rec.get("status") != STARTED:
                self.last[rec["input"]] = rec

    def start(self, rel: str) -> None:
        """Record, fsync'd, that the file ``rel`` is about to be processed (:data:`STARTED`):
        written before a worker can rename its output into place."""
        self._write({"input": rel, "status": STARTED})

    def append(self, record: dict) -> None:
        """Append one outcome record and fsync it. Raises :class:`EncodeError` (:class:`DiskFull`
        for a full disk) when it cannot be written; a partly written record is cut off again."""
        self._write(record)
        self.last[record["input"]] = record

    def _write(self, record: dict) -> None:
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

