"""Shared fixtures: real data under ../shared/data (skipped with a reason where absent) and small synthetic sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def ct_mr_examples() -> Path:
    """../shared/data/ct_mr_examples (TotalSegmentator test files)."""
    return _shared("ct_mr_examples")


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    """../shared/data/hippocampus (MSD Task04)."""
    return _shared("hippocampus")


@pytest.fixture(scope="session")
def ct_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small synthetic CT cases (RAS, LPS, LAS stored) in MSD layout."""
    from pipeline.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_ct")
    write_synthetic_dataset(root, modality="ct", cases=6, seed=0, shape=(40, 40, 12))
    return root


@pytest.fixture(scope="session")
def mri_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic MRI cases in MSD layout."""
    from pipeline.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_mri")
    write_synthetic_dataset(root, modality="mri", cases=4, seed=1, shape=(32, 36, 32))
    return root
