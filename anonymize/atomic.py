"""Write-then-rename, so no half-written file ever sits under a final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    The temporary file lives in the target folder (same filesystem, so the rename is atomic) under
    a hidden name that keeps the extension, so tools that pick a format by extension still work.
    On any exception the temporary file is removed and the exception propagates. The final file
    gets the permissions a plainly created file would (0666 minus the umask), not mkstemp's 0600,
    so that e.g. a web server publishing the output folder can read it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    _lock_while_written(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_read_umask())
        os.replace(tmp, final)
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
