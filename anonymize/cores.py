"""How many cores a run may use (no imports beyond the standard library: the CLI asks before it
loads anything heavy)."""
from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask; the machine's count where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ray_local_cpus(jobs: int) -> int:
    """CPUs of the private local Ray of ``--engine ray --jobs N`` (0: every core)."""
    return cpu_cores() if jobs <= 0 else jobs
