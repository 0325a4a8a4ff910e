"""Leaf: how many worker processes or threads to start on this machine."""

from __future__ import annotations

import os


def worker_count(n_jobs: int | None, n_tasks: int) -> int:
    """Workers to start: ``n_jobs`` (None or negative: every usable core), at most the tasks.

    Parameters
    ----------
    n_jobs
        What the user asked for.
    n_tasks
        Units of work there are.

    Returns
    -------
    At least 1.
    """
    # The cores this process may use (a cgroup or taskset can grant fewer than the machine has).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    wanted = cores if n_jobs is None or n_jobs < 0 else int(n_jobs)
    return max(1, min(wanted, n_tasks))
