"""The deployment level chosen from validation: the rule, the record beside the model, and its use."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.metrics import compute_dice

from pipeline.deploy import card_from_dict, card_path, file_sha256, read_card, resolve_level, write_card
from pipeline.networks import UNetPlusPlus
from pipeline.training import LevelSelection, choose_level
from pipeline.training.levels import score_levels

FEATURES = (4, 4, 8, 8, 16, 4)


@pytest.mark.parametrize("scores, tolerance, expected", [
    ({1: 0.8333, 2: 0.8701, 3: 0.8736, 4: 0.8734}, 0.002, 3),   # the hippocampus table: L3 ties L4
    ({1: 0.8333, 2: 0.8701, 3: 0.8736, 4: 0.8734}, 0.004, 2),
    ({1: 0.8333, 2: 0.8701, 3: 0.8736, 4: 0.8734}, 0.0, 3),
    ({1: 0.5, 2: 0.6, 3: 0.7}, 0.002, 3),
    ({1: 0.9, 2: 0.8}, 0.0, 1),
])
def test_shallowest_level_within_the_tolerance(scores, tolerance, expected):
    assert choose_level(scores, tolerance) == expected


def test_bad_rule_input():
    with pytest.raises(ValueError, match="at least one level"):
        choose_level({}, 0.0)
    with pytest.raises(ValueError, match="tolerance must be >= 0, got -0.1"):
        choose_level({1: 0.5}, -0.1)


def _cases(count=3, shape=(32, 32, 16)):
    generator = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(count):
        label = torch.zeros(1, 1, *shape)
        label[..., 8:20, 6:24, 4:12] = 1
        label[..., 20:28, 10:20, 6:10] = 2
        cases.append({"image": label + 0.3 * torch.randn(1, 1, *shape, generator=generator), "label": label})
    return cases


def test_score_levels_matches_monai_dice_and_restores_the_network():
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True, level=2).train()
    cases = _cases()
    scores = score_levels(net, cases, SimpleInferer(), "cpu", 3)
    assert sorted(scores) == [1, 2, 3, 4] and all(len(v) == 2 for v in scores.values())
    assert net.level == 2 and net.training, "level and mode restored"
    with torch.no_grad():
        net.eval().level = 3
        per_case = []
        for case in cases:
            pred = torch.nn.functional.one_hot(net(case["image"]).argmax(1), 3).movedim(-1, 1)
            label = torch.nn.functional.one_hot(case["label"][:, 0].long(), 3).movedim(-1, 1)
            per_case.append(compute_dice(pred, label, include_background=False))
    expected = torch.nanmean(torch.cat(per_case), dim=0)
    assert scores[3] == pytest.approx(expected.tolist(), abs=1e-6)


def _card(net, sha, rule="auto", level=None):
    return card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a", "2": "b"},
                           "network": {"depth": 4, "out_channels": 3}, "inference": {"level": level},
                           "training": {"checkpoint_sha256": sha, "level_choice": {"rule": rule}}}, "test card")


@pytest.mark.parametrize("rule", ["auto", "fixed"])
def test_level_selection_records_the_choice_for_the_best_model(tmp_path, rule):
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    write_card(_card(net, file_sha256(tmp_path / "model.pt"), rule, None if rule == "auto" else 1),
               card_path(tmp_path / "model.pt"))
    with torch.no_grad():  # the training's last weights differ from the best model's: the record is the best's
        for p in net.parameters():
            p.add_(1.0)
    validator = SimpleNamespace(data_loader=_cases(), inferer=SimpleInferer(), state=SimpleNamespace(device="cpu"))
    handler = LevelSelection(validator, net, tmp_path, num_classes=3, tolerance=0.01,
                             label_names={"0": "bg", "1": "a", "2": "b"})
    handler(SimpleNamespace())
    record = json.loads((tmp_path / "levels.json").read_text())
    best = UNetPlusPlus(3, 1, 3, features=FEATURES)
    best.load_state_dict(torch.load(tmp_path / "model.pt"))
    scores = score_levels(best, _cases(), SimpleInferer(), "cpu", 3)
    means = {lv: sum(v) / 2 for lv, v in scores.items()}
    assert {int(k): v["mean_dice"] for k, v in record["levels"].items()} == pytest.approx(means)
    assert set(record["levels"]["1"]["dice"]) == {"a", "b"}
    assert record["chosen"] == choose_level(means, 0.01) and record["tolerance"] == 0.01
    assert record["model_sha256"] == file_sha256(tmp_path / "model.pt")
    card = read_card(card_path(tmp_path / "model.pt"))
    assert card.training.level_choice["mean_dice"] == pytest.approx({str(k): v for k, v in means.items()})
    if rule == "auto":
        assert card.level == record["chosen"] and resolve_level("auto", tmp_path / "model.pt", 4) == record["chosen"]
    else:
        assert card.level == 1 and card.training.level_choice["rule"] == "fixed", "a fixed deploy_level is kept"
    assert next(net.parameters()).requires_grad, "the training network is untouched"


def test_level_selection_without_a_card_of_this_model_leaves_cards_alone(tmp_path, caplog):
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    write_card(_card(net, "0" * 64), card_path(tmp_path / "model.pt"))  # another model's card
    validator = SimpleNamespace(data_loader=_cases(1), inferer=SimpleInferer(), state=SimpleNamespace(device="cpu"))
    with caplog.at_level(logging.WARNING):
        LevelSelection(validator, net, tmp_path, num_classes=3)(SimpleNamespace())
    assert (tmp_path / "levels.json").is_file() and read_card(card_path(tmp_path / "model.pt")).level == 4
    assert "has no model card of its own" in caplog.text


def test_level_selection_without_a_best_model_writes_nothing(tmp_path):
    validator = SimpleNamespace(data_loader=[], inferer=SimpleInferer(), state=SimpleNamespace(device="cpu"))
    LevelSelection(validator, torch.nn.Identity(), tmp_path, num_classes=2)(SimpleNamespace())
    assert not (tmp_path / "levels.json").exists()
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        LevelSelection(validator, torch.nn.Identity(), tmp_path, num_classes=2, tolerance=-1)
