"""Ports for the servers the tests start (``mlflow server``, ``mlflow models serve``).

A port the OS hands out for port 0 and then releases can go to the other pytest worker's server before ours binds
it, and a health check would then answer from the wrong server. So each xdist worker picks from its own block
below Linux's ephemeral range (32768 and up), where the OS hands out nothing by itself, and checks it is free.

Example:
    >>> port = worker_port()                                                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import socket

_FIRST, _BLOCK = 20000, 2000


def worker_port() -> int:
    """A free port in this worker's block (``gw0``: 20000-21999, ``gw1``: 22000-23999, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = _FIRST + (index % 6) * _BLOCK
    for port in random.sample(range(start, start + _BLOCK), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + _BLOCK - 1}")
