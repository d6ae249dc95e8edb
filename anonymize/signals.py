"""SIGTERM, SIGHUP and SIGINT stop a run cleanly: they raise :class:`Terminated` in the main thread.

Without this, SIGTERM and SIGHUP kill Python at once: no ``finally`` runs, so ffmpeg children
and ``.NAME.*.partial.EXT`` temporary files are left behind. Raised as an exception instead, the
signal unwinds the run like any error: the video pipeline stops its threads and kills ffmpeg,
:func:`~anonymize.atomic.atomic_output` deletes its temporary file, the batch kills its workers
and prints its summary; then the CLI exits with ``128 + signal number`` (SIGHUP 129, SIGINT 130,
SIGTERM 143), as a shell reports a process killed by that signal.

:class:`Terminated` derives from BaseException, not Exception, so the ``except Exception`` that
keeps one broken file from stopping a batch does not swallow it. Only the first signal raises:
a second one while the run is unwinding is ignored, so the cleanup itself is not cut short
(SIGKILL still stops the process at once; the next run then removes what it left).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: The signals :func:`handle_signals` turns into :class:`Terminated`.
HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Terminated(BaseException):
    """The process was asked to stop by a signal; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(self.name)

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``"SIGTERM"``."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


@contextlib.contextmanager
def handle_signals(signals: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Terminated` in the main thread (the first one
    only; later ones are ignored while the run unwinds). The previous handlers are restored on
    exit. Outside the main thread (where Python cannot install handlers) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[int] = []

    def handler(signum, frame):
        if raised:
            return
        if _in_finalizer(frame):
            # An exception raised in a __del__ is printed ("Exception ignored in ...", with a
            # traceback) and dropped: deliver the signal again a moment later, outside it.
            timer = threading.Timer(0.05, signal.raise_signal, (signum,))
            timer.daemon = True
            timer.start()
            return
        raised.append(signum)
        raise Terminated(signum)

    old = {}
    try:
        for s in signals:
            old[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _in_finalizer(frame, depth: int = 12) -> bool:
    """True when ``frame`` (or one of its ``depth`` callers) is a ``__del__`` method."""
    while frame is not None and depth > 0:
        if frame.f_code.co_name == "__del__":
            return True
        frame, depth = frame.f_back, depth - 1
    return False
