"""The data workers' default follows the machine."""

from __future__ import annotations

import pytest

from pipeline.data import default_num_workers
from pipeline.data.loading import MAX_WORKERS


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (8, 4), (16, 8), (128, MAX_WORKERS)])
def test_half_the_cores_between_one_and_the_cap(cores, expected):
    assert default_num_workers(cores) == expected


def test_reads_this_process_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert default_num_workers() == 3


def test_usable_cores_is_the_affinity_not_the_machine(monkeypatch):
    from pipeline.data.loading import usable_cores

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {2, 5})
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert usable_cores() == 2
