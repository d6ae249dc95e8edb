"""Checks on the paths we read and write, done before any work (and before any model loads).

The tool must never touch an input: no side file (``--report``, ``--manifest``, the audit's
``--json``) may land on an input or on another output, and nothing may be written onto a FIFO or
a device. Inputs must be regular files, checked with ``os.stat`` before they are ever opened: a
FIFO blocks the first ``open``, and ``/dev/zero`` or ``/dev/urandom`` never end when hashed.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from .errors import InputError

#: A manifest larger than this is not ours: one record is a few hundred bytes, so even a million
#: files stay far below it. Refused before reading, so a wrong ``--manifest`` cannot fill memory.
MANIFEST_MAX_BYTES = 256 << 20

#: File-name length limit (bytes) when the file system does not say.
DEFAULT_NAME_MAX = 255


def shown(path: Path | str) -> str:
    """``path`` as text that is always valid UTF-8: bytes of a name that are not UTF-8 (kept by
    Python as surrogates) are written as ``\\xNN``, so reports and messages never fail on them."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _keys(path: Path) -> set:
    """What identifies the file ``path`` names: its resolved path, and (device, inode) when it exists."""
    keys: set = {str(Path(os.path.abspath(path)).resolve())}
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return keys
    keys.add((st.st_dev, st.st_ino))
    return keys


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file: the same resolved path, or, when both exist,
    the same device and inode (hard links, symbolic links, bind mounts)."""
    return bool(_keys(Path(a)) & _keys(Path(b)))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_input(path: Path) -> None:
    """Raise InputError unless ``path`` is a regular file (links followed).

    Only ``os.stat`` is used: the file is never opened before this check, so a FIFO (whose
    ``open`` blocks), a device (``/dev/zero`` never ends) or a socket is refused at once.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{shown(path)}: no such file") from None
    except OSError as exc:
        raise InputError(f"{shown(path)}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{shown(path)}: is {_kind(st.st_mode)}, not a regular file; refusing to read it")


def name_max(folder: Path) -> int:
    """The file-name length limit in bytes of the file system holding ``folder`` (or of its
    nearest existing parent: the folder may not exist yet)."""
    folder = Path(os.path.abspath(folder))
    for d in (folder, *folder.parents):
        try:
            return int(os.pathconf(d, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return DEFAULT_NAME_MAX


def name_bytes(name: str) -> int:
    """Length of a file name in bytes, as the file system counts it."""
    return len(os.fsencode(name))


def check_name_length(label: str, path: Path) -> None:
    """InputError when ``path``'s own name is longer than its file system allows."""
    path = Path(path)
    limit = name_max(path.parent)
    if name_bytes(path.name) > limit:
        raise InputError(f"{label} {shown(path)}: the file name is {name_bytes(path.name)} bytes long; "
                         f"this file system allows at most {limit}: choose a shorter name")


def check_writes(reads: Iterable[Path], writes: Iterable[tuple[str, Path]]) -> None:
    """Refuse (InputError) a set of writes that would destroy something.

    ``reads`` are the files (or folders) that will be read; ``writes`` are (label, path) pairs such
    as ``("--report", Path("r.json"))`` or ``("output", dst)``. Refused: a write that is the same
    file as a read (also through links), two writes that are the same file, a write path that
    exists and is not a regular file (a folder, FIFO or device such as ``/dev/full``), and a
    name longer than its file system allows. Writing *into* an input folder is fine (outputs
    beside their inputs are normal); only writing *onto* an input is not.
    """
    read_keys: dict = {}
    for r in reads:
        r = Path(r)
        for k in _keys(r):
            read_keys.setdefault(k, r)
    written: dict = {}
    for label, w in writes:
        w = Path(w)
        try:
            st = os.stat(w)
        except (OSError, ValueError):
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise InputError(f"{label} {shown(w)}: is {_kind(st.st_mode)}, not a regular file; refusing to write to it")
        check_name_length(label, w)
        keys = _keys(w)
        for k in keys:
            if k in read_keys:
                raise InputError(f"{label} {shown(w)}: is the input {shown(read_keys[k])}; refusing to overwrite it")
        for k in keys:
            if k in written:
                other_label, other = written[k]
                raise InputError(f"{label} {shown(w)}: is also the {other_label} {shown(other)}; "
                                 "refusing to write both to one file")
        for k in keys:
            written[k] = (label, w)


def check_folder_write(label: str, folder: Path, reads: Iterable[Path]) -> None:
    """Refuse (InputError) a folder to write new files into (e.g. ``--thumbs``) that exists and is
    not a folder, or that is one of the files read."""
    folder = Path(folder)
    try:
        st = os.stat(folder)
    except (OSError, ValueError):
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{label} {shown(folder)}: exists and is not a folder")
    for r in reads:
        if same_file(folder, Path(r)):
            raise InputError(f"{label} {shown(folder)}: is the input {shown(r)}")


def check_manifest(path: Path) -> None:
    """Refuse (InputError), before reading it, a manifest that exists and is not a regular file or
    is larger than any real manifest (:data:`MANIFEST_MAX_BYTES`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # a new manifest
    except OSError as exc:
        raise InputError(f"{shown(path)}: cannot read the manifest ({exc.strerror or exc})") from None
    check_manifest_stat(path, st)


def check_manifest_stat(path: Path, st: os.stat_result) -> None:
    """:func:`check_manifest` on a stat result already taken (e.g. ``os.fstat`` of the open file)."""
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--manifest {shown(path)}: is {_kind(st.st_mode)}, not a regular file; refusing to use it")
    if st.st_size > MANIFEST_MAX_BYTES:
        raise InputError(f"--manifest {shown(path)}: {st.st_size} bytes is larger than any manifest of ours "
                         f"(at most {MANIFEST_MAX_BYTES >> 20} MiB): not a manifest; refusing to read it")
