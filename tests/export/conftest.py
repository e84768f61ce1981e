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


def trained_checkpoint(tmp_path: Path, tiny_parser, bundle="unetpp_mri_segmentation", overrides=TINY, seed=0):
    """A checkpoint with its card, as a training leaves them: ``tmp_path/models/model.pt`` and
    ``models/model_card.json`` (with a validation record and case ids, which exports must not carry)."""
    from pipeline.deploy import card_path, file_sha256, write_card
    from pipeline.export import bundle_card

    parser = tiny_parser(bundle)
    for key, value in overrides.items():
        parser[key] = value
    card, net = bundle_card(parser)
    torch.manual_seed(seed)
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), models / "model.pt")
    write_card(card.replace(training={"checkpoint_sha256": file_sha256(models / "model.pt"),
                                      "validation": {"val_mean_dice": 0.5},
                                      "dataset": {"source": "/data/site/Task04", "num_cases": 3,
                                                  "train": ["patient_1", "patient_2"], "val": ["patient_3"]}}),
               card_path(models / "model.pt"))
    return models / "model.pt"
