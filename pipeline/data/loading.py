"""How many data-loading worker processes a training uses by default, from the machine.

Worker processes run the random transforms beside the training step; on a CPU they share the cores with the
step's own threads, so half the cores (at least one, at most eight) go to loading. With ``device_data`` (the
default on CUDA) the bundles load with no worker process: the cached volumes are on the GPU and the random
transforms run there, in the loader's thread.

Example:
    >>> default_num_workers(cores=2)
    1
    >>> default_num_workers(cores=64)
    8
"""

from __future__ import annotations

import os

__all__ = ["default_num_workers", "usable_cores"]

#: More workers than this only add start-up time and memory for the patch sizes the bundles train.
MAX_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity (``taskset``, a container's cpuset), not the machine's count.

    Example:
        >>> usable_cores() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def default_num_workers(cores: int | None = None) -> int:
    """Half the usable cores, between 1 and :data:`MAX_WORKERS`.

    Args:
        cores: the machine's cores. Defaults to None: the cores this process may run on.
    """
    if cores is None:
        cores = usable_cores()
    return max(1, min(MAX_WORKERS, int(cores) // 2))
