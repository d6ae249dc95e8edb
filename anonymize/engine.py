"""The one small interface every place that runs jobs goes through: an :class:`Executor`.

``submit(job) -> outcome`` runs one job to its end and says how it ended; it blocks the calling
thread and may be called from several threads at once (up to :attr:`Executor.capacity`, the
jobs it can run at the same time). The folder batch (:mod:`anonymize.batch.engines`: in this
process, a process pool, Ray) and the HTTP service (:mod:`anonymize.service.executor`: a worker
process per job, Ray) each implement it for their own job and outcome types, so a new engine
(Ray today) serves both: ``anonymize IN -o OUT --engine ray`` and ``anonymize serve --engine ray``.
"""
from __future__ import annotations

from typing import Protocol, TypeVar

J = TypeVar("J", contravariant=True)
O = TypeVar("O", covariant=True)  # noqa: E741 - the outcome type

#: Engines a run can use (``--engine``): this machine's processes, or a Ray cluster.
ENGINES = ("local", "ray")


class Executor(Protocol[J, O]):
    """Runs jobs of one kind (``J``) and returns their outcomes (``O``)."""

    #: jobs it can run at once (callers submit from at most this many threads)
    capacity: int

    def submit(self, job: J) -> O:
        """Run ``job`` to its end and return how it ended (blocks the calling thread)."""

    def shutdown(self, graceful: bool = False) -> None:
        """Stop the running jobs and release the workers; ``graceful``: let each unwind first
        (kill its ffmpeg, delete its temporary file). Blocked :meth:`submit` calls return or raise."""
