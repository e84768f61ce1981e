"""``deploy_level`` resolved in one place: a number fixes it, ``auto`` is the card's choice for its own checkpoint."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.deploy import (
    CardError,
    card_from_dict,
    card_level,
    card_path,
    chosen_level,
    file_sha256,
    resolve_level,
    write_card,
)


def _card(level, sha, rule="auto"):
    return card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "network": {"depth": 4},
                           "inference": {"level": level}, "training": {"checkpoint_sha256": sha,
                                                                       "level_choice": {"rule": rule}}}, "t")


def test_auto_reads_the_card_of_this_checkpoint_only(tmp_path, caplog):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert resolve_level("auto", model, 4) == 4 and chosen_level(model) is None, "no card: the full network"
    write_card(_card(3, file_sha256(model)), card_path(model))
    assert chosen_level(model) == 3 and resolve_level("auto", model, 4) == 3 and resolve_level("AUTO", model, 4) == 3
    assert resolve_level(2, model, 4) == 2, "a number fixes the level"
    model.write_bytes(b"retrained")
    with caplog.at_level(logging.INFO, logger="pipeline.deploy.levels"):
        assert resolve_level("auto", model, 4) == 4
    assert "chosen for another checkpoint" in caplog.text
    write_card(_card(2, "0" * 64, rule="fixed"), card_path(model))
    assert card_level(_card(2, "0" * 64, rule="fixed"), model) == 2, "a fixed level holds for any checkpoint"
    card_path(model).write_text("{not json")
    with pytest.raises(ValueError, match="model_card.json': the model card must be valid JSON"):
        resolve_level("auto", model, 4)
    with pytest.raises(CardError):
        chosen_level(model)


@pytest.mark.parametrize("value, match", [("best", "'auto' or a level between 1 and 4, got 'best'"),
                                          (5, "got 5"), (0, "got 0"), (True, "got True")])
def test_resolve_level_names_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_level(value, None, 4)


def test_a_model_trained_before_the_card_keeps_its_levels_json(tmp_path):
    import json

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    (tmp_path / "levels.json").write_text(json.dumps({"model_sha256": file_sha256(model), "chosen": 3}))
    assert chosen_level(model) == 3 and resolve_level("auto", model, 4) == 3
    (tmp_path / "levels.json").write_text(json.dumps({"model_sha256": "0" * 64, "chosen": 3}))
    assert resolve_level("auto", model, 4) == 4, "another model's record"


@pytest.mark.parametrize("chosen", [1, 4])
def test_the_ends_of_the_range_are_levels_too(tmp_path, chosen):
    """Level 1 and the full depth are valid, fixed or chosen; the log names the checkpoint and the full level."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert resolve_level(1, model, 4) == 1 and resolve_level(4, model, 4) == 4
    write_card(_card(chosen, file_sha256(model)), card_path(model))
    assert resolve_level("auto", model, 4) == chosen


def test_another_checkpoint_deploys_the_full_network_and_says_which(tmp_path, caplog):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    card = _card(2, "0" * 64)
    with caplog.at_level(logging.INFO, logger="pipeline.deploy.levels"):
        assert card_level(card, model) == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"the level in the model card was chosen for another checkpoint than {model}: deploying the full network (L4)"]
    assert card_level(card, tmp_path / "absent.pt", sha256="0" * 64) == 2, "the caller's SHA-256 is used as given"
    assert card_level(card, model, sha256="0" * 64) == 2, "... and the file is not read again"
    assert resolve_level("auto", None, 4) == 4, "no checkpoint: no record is looked for"
    depthless = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "network": {},
                                "inference": {"level": None}}, "t")
    assert card_level(depthless, model) == 1, "a card without a depth: a one-level network"


def test_a_damaged_levels_file_is_named_and_ignored(tmp_path, caplog):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    (tmp_path / "levels.json").write_text(json.dumps({"chosen": "two", "model_sha256": file_sha256(model)}))
    with caplog.at_level(logging.WARNING, logger="pipeline.deploy.levels"):
        assert chosen_level(model) is None and resolve_level("auto", model, 4) == 4
    assert caplog.records[0].getMessage() == \
        f"ignoring {tmp_path / 'levels.json'}: invalid literal for int() with base 10: 'two'"
