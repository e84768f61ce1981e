"""The trainer's model card: written beside model.pt whenever model.pt changes, with the training record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from pipeline.deploy import card_path, describe_model, file_sha256, read_card, write_card
from pipeline.networks import UNetPlusPlus
from pipeline.training import ModelCardWriter, dataset_record

DATALIST = {"train": [{"case": "c1"}, {"case": "c2"}], "val": [{"case": "c3"}],
            "all": [{"case": "c1"}, {"case": "c2"}, {"case": "c3"}]}


def _engine(epoch, best_epoch, dice):
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, best_metric_epoch=best_epoch,
                                                 metrics={"val_mean_dice": dice, "note": "x"}))


def _writer(tmp_path):
    net = UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4))
    card = describe_model(net, [], SlidingWindowInferer([32] * 3), {0: "bg", 1: "a", 2: "b"})
    return net, ModelCardWriter(card, tmp_path, DATALIST, "/data/ds", {"fold": 0, "num_folds": 3, "seed": 0}, "bf16")


def test_the_card_follows_model_pt(tmp_path):
    net, writer = _writer(tmp_path)
    writer(_engine(1, 1, 0.5))
    assert not card_path(tmp_path / "model.pt").exists(), "no model.pt yet: no card"
    torch.save(net.state_dict(), tmp_path / "model.pt")
    writer(_engine(2, 2, 0.6))
    card = read_card(card_path(tmp_path / "model.pt"))
    assert card.training.checkpoint_sha256 == file_sha256(tmp_path / "model.pt")
    assert card.training.validation == {"val_mean_dice": 0.6, "best_epoch": 2} and card.training.precision == "bf16"
    assert card.training.dataset == dataset_record(DATALIST, "/data/ds") and card.training.folds["num_folds"] == 3
    assert card.training.dataset["train"] == ["c1", "c2"] and card.training.dataset["num_cases"] == 3
    stamp = card_path(tmp_path / "model.pt").stat().st_mtime_ns
    writer(_engine(3, 2, 0.55))
    assert card_path(tmp_path / "model.pt").stat().st_mtime_ns == stamp, "model.pt unchanged: card unchanged"
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    writer(_engine(4, 4, 0.7))
    assert read_card(card_path(tmp_path / "model.pt")).training.validation["val_mean_dice"] == 0.7


def test_a_resumed_run_keeps_the_card_of_its_unchanged_model(tmp_path):
    net, writer = _writer(tmp_path)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    writer(_engine(1, 1, 0.6))
    card = read_card(card_path(tmp_path / "model.pt"))
    write_card(card.replace(inference={"level": 2}, training={"level_choice": {"rule": "auto", "chosen": 2}}),
               card_path(tmp_path / "model.pt"))
    _, resumed = _writer(tmp_path)
    resumed(_engine(2, 1, 0.55))  # the restored best is still epoch 1's
    assert read_card(card_path(tmp_path / "model.pt")).level == 2, "the level chosen for this model.pt is kept"


def test_the_card_must_be_a_card(tmp_path):
    with pytest.raises(ValueError, match="card must be a pipeline.deploy.ModelCard, got dict"):
        ModelCardWriter({}, tmp_path)
