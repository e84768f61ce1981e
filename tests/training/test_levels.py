"""The deployment level chosen from validation: the rule, the record beside the model, and its use."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from monai.inferers import SimpleInferer
from monai.metrics import compute_dice

from pipeline.networks import UNetPlusPlus
from pipeline.training import LevelSelection, choose_level, chosen_level, resolve_level
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


def _record(folder, chosen, sha):
    (folder / "levels.json").write_text(json.dumps({"model": "model.pt", "model_sha256": sha, "chosen": chosen}))


def test_resolve_level_reads_the_record_of_this_model_only(tmp_path, caplog):
    from pipeline.inference.outputs import file_sha256

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert resolve_level("auto", model, 4) == 4, "no record: the full network"
    _record(tmp_path, 3, file_sha256(model))
    assert chosen_level(model) == 3 and resolve_level("auto", model, 4) == 3 and resolve_level("AUTO", model, 4) == 3
    assert resolve_level(2, model, 4) == 2, "a number fixes the level"
    model.write_bytes(b"retrained")
    with caplog.at_level(logging.INFO, logger="pipeline.training.levels"):
        assert resolve_level("auto", model, 4) == 4
    assert "belongs to another model" in caplog.text
    (tmp_path / "levels.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="pipeline.training.levels"):
        assert resolve_level("auto", model, 4) == 4
    assert "ignoring" in caplog.text


@pytest.mark.parametrize("value, match", [("best", "'auto' or a level between 1 and 4, got 'best'"),
                                          (5, "got 5"), (0, "got 0"), (True, "got True")])
def test_resolve_level_names_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_level(value, None, 4)


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


def test_level_selection_records_the_choice_for_the_best_model(tmp_path):
    from pipeline.inference.outputs import file_sha256

    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True)
    torch.save(net.state_dict(), tmp_path / "model.pt")
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
    assert resolve_level("auto", tmp_path / "model.pt", 4) == record["chosen"]
    assert next(net.parameters()).requires_grad, "the training network is untouched"


def test_level_selection_without_a_best_model_writes_nothing(tmp_path):
    validator = SimpleNamespace(data_loader=[], inferer=SimpleInferer(), state=SimpleNamespace(device="cpu"))
    LevelSelection(validator, torch.nn.Identity(), tmp_path, num_classes=2)(SimpleNamespace())
    assert not (tmp_path / "levels.json").exists()
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        LevelSelection(validator, torch.nn.Identity(), tmp_path, num_classes=2, tolerance=-1)
