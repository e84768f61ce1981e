"""Tiny bundle networks with random weights, saved as checkpoints, for export and deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_parser) -> dict[str, Path]:
    """bundle name -> model.pt of a tiny randomly initialised network (TINY overrides)."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for bundle in ("unetpp_ct_segmentation", "unetpp_mri_segmentation"):
        torch.manual_seed(0)
        net = tiny_parser(bundle).get_parsed_content("network_def")
        out[bundle] = root / f"{bundle}.pt"
        torch.save(net.state_dict(), out[bundle])
    return out
