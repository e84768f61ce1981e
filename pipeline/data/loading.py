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

__all__ = ["default_num_workers"]

#: More workers than this only add start-up time and memory for the patch sizes the bundles train.
MAX_WORKERS = 8


def default_num_workers(cores: int | None = None) -> int:
    """Half the usable cores, between 1 and :data:`MAX_WORKERS`.

    Args:
        cores: the machine's cores. Defaults to None: the cores this process may run on.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, int(cores) // 2))
