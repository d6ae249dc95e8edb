"""Write-then-rename, so no half-written file ever sits under a final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import EncodeError
from .paths import check_name_length, name_bytes, name_max, shown

#: What mkstemp and we add around the stem: ".", ".", 8 random characters, ".partial".
_TEMP_OVERHEAD = len("..") + 8 + len(".partial")


def _read_umask() -> int:
    """The process umask, without changing it where /proc tells (os.umask can only read it by
    setting it, which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def temp_affixes(final: Path, limit: int | None = None) -> tuple[str, str]:
    """mkstemp's (prefix, suffix) for ``final``: ``.{stem}.`` and ``.partial{suffix}``, the stem cut
    (at a character boundary) so that the temporary name fits the file system's name limit.
    The final name itself is never changed: :func:`check_name_length` refuses one that is too long.
    """
    final = Path(final)
    limit = name_max(final.parent) if limit is None else limit
    stem = final.stem
    budget = limit - _TEMP_OVERHEAD - name_bytes(final.suffix)
    while stem and name_bytes(stem) > budget:
        stem = stem[:-1]
    return f".{stem}.", f".partial{final.suffix}"


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    The temporary file lives in the target folder (same filesystem, so the rename is atomic) under
    a hidden name that keeps the extension, so tools that pick a format by extension still work.
    On any exception the temporary file is removed and the exception propagates. The final file
    gets the permissions a plainly created file would (0666 minus the umask), not mkstemp's 0600,
    so that e.g. a web server publishing the output folder can read it.

    A final name longer than the file system allows raises InputError; one that fits always gets
    a temporary name that fits too (its stem is shortened). Failing to create the folder or the
    temporary file (read-only folder, no permission, disk full) raises EncodeError.
    """
    final = Path(final)
    check_name_length("output", final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = temp_affixes(final)
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=final.parent)
        _lock_while_written(fd)
    except OSError as exc:
        raise EncodeError(f"{shown(final)}: cannot write in {shown(final.parent)} "
                          f"({exc.strerror or exc})") from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_read_umask())
            os.replace(tmp, final)
        except OSError as exc:
            raise EncodeError(f"{shown(final)}: cannot put the finished file in place ({exc.strerror or exc})") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)


def _lock_while_written(fd: int) -> None:
    """Hold an advisory lock on the temporary file while it is written (its fd stays open until
    the file is renamed or deleted), so that the stale-partial cleanup of another run
    (:func:`anonymize.batch.remove_if_stale`) can tell a live temporary file from one a killed
    run left: the kernel drops the lock when its process dies, even by SIGKILL."""
    with contextlib.suppress(OSError, ImportError):
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
