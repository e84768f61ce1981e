"""The model card: its rules are one line each, versions are checked on load, earlier exports are migrated."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from pipeline.deploy import (
    CARD_VERSION,
    FIRST_CARD_VERSION,
    CardError,
    ModelCard,
    card_from_dict,
    load_torchscript,
    parse_card,
    read_card,
    write_card,
)
from pipeline.errors import PipelineError

GOOD = {"card_version": CARD_VERSION, "labels": {"0": "background", "1": "liver", "2": "kidney"},
        "network": {"target": "pipeline.networks.UNetPlusPlus", "args": {"features": [4, 4, 8, 8, 16, 4]},
                    "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "depth": 4},
        "preprocessing": [{"kind": "orient", "axcodes": "RAS"}, {"kind": "resample", "pixdim": [1.5, 1.5, 2.0]}],
        "inference": {"kind": "sliding_window", "roi_size": [96, 96, 64], "overlap": 0.5, "level": 2,
                      "mirror_axes": [0]},
        "modality": "CT", "channels": ["CT"], "training": {"precision": "bf16", "checkpoint_sha256": "ab" * 32}}


def _broken(path, value):
    card = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    node = card
    for p in parents:
        node = node[p]
    node[key] = value
    return card


def test_a_good_card_round_trips_field_by_field(tmp_path):
    card = card_from_dict(copy.deepcopy(GOOD), "m.ts")
    assert isinstance(card, ModelCard) and card.level == 2 and card.inference.mirror_axes == (0,)
    assert card.target_spacing == [1.5, 1.5, 2.0] and card.image_dims == 3 and card.label_ids[2] == "kidney"
    write_card(card, tmp_path / "model_card.json")
    again = read_card(tmp_path / "model_card.json")
    assert again == card and again.to_json() == card.to_json()
    assert json.loads(card.to_json())["card_version"] == FIRST_CARD_VERSION  # no postprocessing: still version 3


def test_defaults_are_the_dataclasses_not_the_readers():
    card = card_from_dict({"card_version": CARD_VERSION, "labels": {"0": "background", "1": "a"}}, "m.ts")
    assert (card.inference.overlap, card.inference.mode, card.inference.sw_batch_size) == (0.5, "gaussian", 1)
    assert card.inference.mirror_axes is None and card.level == 1 and card.export is None


@pytest.mark.parametrize("path, value, rule", [
    ("labels", ["background", "liver"], "'labels' must be an object of label id -> name"),
    ("labels", {"0": "background", "one": "liver", "2": "kidney"},
     "label ids must be whole numbers >= 0, got [\"one\"]"),
    ("labels", {"0": "background", "1": "liver"}, "as many labels as output channels (3)"),
    ("inference.roi_size", [96, 0, 64], "'inference.roi_size' must be whole numbers > 0"),
    ("inference.roi_size", [96, 96], "one per network axis (3)"),
    ("inference.overlap", 1.0, "'inference.overlap' must be >= 0 and < 1, got 1.0"),
    ("inference.level", 5, "'inference.level' must be a level between 1 and the depth (4), got 5"),
    ("inference.kind", "patches", "'inference.kind' must be sliding_window or slice"),
    ("network.in_channels", 0, "'network.in_channels' must be a whole number >= 1"),
    ("network.spatial_dims", 4, "'network.spatial_dims' must be 2 or 3"),
    ("inference.mirror_axes", [0, 3],
     "'inference.mirror_axes' must be a list of the network's spatial axes 0..2, got [0, 3]"),
    ("inference.mirror_axes", "lr", "'inference.mirror_axes' must be a list of the network's spatial axes 0..2"),
    ("preprocessing", [{"kind": "resample", "pixdim": [0, 1, 1]}], "target spacings must be numbers > 0"),
    ("preprocessing", "orient", "'preprocessing' must be a list of step objects"),
    ("network", "unet", "'network' must be an object"),
])
def test_each_rule_is_one_line(path, value, rule):
    with pytest.raises(CardError) as info:
        card_from_dict(_broken(path, value), "models/m.ts")
    message = str(info.value)
    assert message.startswith("'models/m.ts': model card: ") and rule in message and "\n" not in message


def test_not_an_object_or_not_json():
    with pytest.raises(PipelineError, match="a model card must hold a JSON object, got \"list\""):
        parse_card("[1, 2]", "m.ts")
    with pytest.raises(PipelineError, match="'m.ts': the model card must be valid JSON"):
        parse_card("{labels", "m.ts")


def test_a_newer_card_is_refused_in_one_line_naming_the_file_and_both_versions():
    with pytest.raises(CardError) as info:
        card_from_dict(_broken("card_version", CARD_VERSION + 1), "runs/ct/models/model_card.json")
    assert str(info.value) == (f"'runs/ct/models/model_card.json': model card version {CARD_VERSION + 1} is newer "
                               f"than this pipeline reads ({CARD_VERSION}): upgrade the pipeline to use this model")
    with pytest.raises(CardError, match="'card_version' must be a whole number, got '3'"):
        card_from_dict(_broken("card_version", "3"), "m.ts")


def test_a_future_card_in_a_model_file_stops_segment_in_one_line(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 3, 1)), str(tmp_path / "m.ts"),
                   _extra_files={"model_card.json": json.dumps(_broken("card_version", 99))})
    (tmp_path / "in").mkdir()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(tmp_path / "m.ts"), "--input",
                           str(tmp_path / "in"), "--output", str(tmp_path / "out")], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"m.ts': model card version 99 is newer than this pipeline reads ({CARD_VERSION})" in proc.stderr


def test_earlier_exports_are_migrated():
    old = {"metadata_version": 2, "labels": {"0": "background", "1": "anterior", "2": "posterior"}, "modality": "MR",
           "channels": ["T1"], "network": {"class": "UNetPlusPlus", "spatial_dims": 3, "depth": 4, "in_channels": 1,
                                           "out_channels": 3},
           "preprocessing": {"orientation": "RAS", "target_spacing": [1.0, 1.0, 1.0],
                             "steps": [{"kind": "orient", "axcodes": "RAS"},
                                       {"kind": "resample", "pixdim": [1.0, 1.0, 1.0], "mode": "bilinear"}]},
           "inference": {"kind": "sliding_window", "roi_size": [40, 56, 40], "overlap": 0.5, "mode": "gaussian",
                         "sigma_scale": 0.125, "level": 2, "mirror_axes": [0]},
           "validation": {"val_mean_dice": 0.87}, "precision": "fp32", "exported_device": "cpu"}
    card = card_from_dict(old, "old.ts")
    assert card.level == 2 and card.inference.mirror_axes == (0,) and card.channels == ("T1",)
    assert card.preprocessing[1]["pixdim"] == [1.0, 1.0, 1.0] and card.training.validation["val_mean_dice"] == 0.87
    assert card.export.precision == "fp32" and card.network.target == "" and card.network.depth == 4
    with pytest.raises(CardError, match="metadata_version must be 1 or 2"):
        card_from_dict({**old, "metadata_version": 7}, "old.ts")


def test_segment_refuses_a_model_with_a_bad_card_in_one_line(tmp_path):
    module = torch.jit.script(torch.nn.Conv3d(1, 2, 1))
    torch.jit.save(module, str(tmp_path / "m.ts"), _extra_files={"model_card.json": json.dumps(
        _broken("labels", {"0": "background", "x": "liver", "2": "kidney"}))})
    (tmp_path / "in").mkdir()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(tmp_path / "m.ts"), "--input",
                           str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "tpu"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "m.ts': model card: label ids must be whole numbers >= 0" in proc.stderr


def test_a_model_file_without_a_card(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 2, 1)), str(tmp_path / "m.ts"))
    with pytest.raises(PipelineError, match="has no embedded model card: export it with `python -m pipeline export`"):
        load_torchscript(tmp_path / "m.ts")


def test_an_unknown_device_is_one_line():
    from pipeline.deploy import resolve_device

    with pytest.raises(PipelineError, match="device must be auto, cpu or cuda\\[:N\\], got 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("steps, rule", [
    ([{"kind": "normalize"}], "preprocessing step 0: preprocessing step 'normalize' needs 'schemes'"),
    ([{"kind": "orient", "axcodes": "RAS"}, {"kind": "window", "a_min": "x", "a_max": 1, "b_min": 0, "b_max": 1}],
     "preprocessing step 1: preprocessing step 'window' needs 'a_min' as int or float, got 'x'"),
    ([{"kind": "denoise"}], "the preprocessing step 'denoise' is not one this pipeline knows"),
    ([{"kind": "normalize", "schemes": [{"scheme": "zscore"}, {"scheme": "fancy"}]}], "must be one of"),
])
def test_every_step_is_checked_on_load(steps, rule):
    with pytest.raises(CardError) as info:
        card_from_dict({**copy.deepcopy(GOOD), "preprocessing": steps}, "m.ts")
    assert str(info.value).startswith("'m.ts': model card: ") and rule in str(info.value)


def test_records_and_channels_are_checked_and_unknown_export_keys_ignored():
    with pytest.raises(CardError, match="'training.level_choice' must be an object"):
        card_from_dict(_broken("training.level_choice", "auto"), "m.ts")
    with pytest.raises(CardError, match="'channels' must name each of the 1 input channel"):
        card_from_dict(_broken("channels", ["T1", "T2"]), "m.ts")
    card = card_from_dict({**copy.deepcopy(GOOD), "export": {"precision": "fp16", "device": "cuda", "by": "x"}}, "m")
    assert card.export.precision == "fp16" and card.export.device == "cuda" and card.export.format == "torchscript"
    assert card_from_dict({**copy.deepcopy(GOOD), "export": {"format": "onnx"}}, "m").export.format == "onnx"
    with pytest.raises(CardError, match=r"^'m.onnx': model card: 'export.format' must be one of torchscript, onnx, "
                                        r'got "tflite"$'):
        card_from_dict({**copy.deepcopy(GOOD), "export": {"format": "tflite"}}, "m.onnx")


def test_monai_ckpt_export_metadata_is_not_a_card():
    monai_meta = {"version": "0.3.1", "monai_version": "1.6.1", "network_data_format": {}}
    with pytest.raises(CardError, match="'m.ts' holds no model card .* MONAI's ckpt_export"):
        card_from_dict(monai_meta, "m.ts")


def test_migration_of_level_0_and_of_slice_wise_mirror_axes():
    old = {"metadata_version": 2, "labels": {"0": "bg", "1": "a"},
           "network": {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "depth": None},
           "preprocessing": {"steps": []},
           "inference": {"kind": "slice", "roi_size": [32, 32], "spatial_dim": 0, "level": 0, "mirror_axes": [0, 1, 2]}}
    card = card_from_dict(old, "old.ts")
    assert card.inference.level is None and card.level == 1
    assert card.inference.mirror_axes == (0, 1), "volume axes 1 and 2 are the network's 0 and 1 when slicing axis 0"


def test_what_leaves_the_training_machine_has_no_case_ids():
    card = card_from_dict(_broken("training.dataset", {"source": "/data/site_a/Task04", "num_cases": 3,
                                                       "cases_sha256": "ab" * 32, "train": ["p1", "p2"],
                                                       "val": ["p3"]}), "m")
    shared = card.shareable().training.dataset
    assert shared == {"source": "Task04", "num_cases": 3, "cases_sha256": "ab" * 32, "num_train": 2, "num_val": 1}


def test_a_version_2_export_migrates_to_exactly_this_card():
    old = {"metadata_version": 2, "labels": {"0": "background", "1": "anterior", "2": "posterior"},
           "modality": "MR", "channels": ["T1", "T2"],
           "network": {"class": "UNetPlusPlus", "spatial_dims": 3, "depth": 4, "in_channels": 2, "out_channels": 3},
           "preprocessing": {"orientation": "RAS", "steps": [{"kind": "orient", "axcodes": "RAS"}]},
           "inference": {"kind": "sliding_window", "roi_size": [40, 56, 40], "overlap": 0.25, "level": 3,
                         "mirror_axes": [1, 2]},
           "validation": {"val_mean_dice": 0.87}, "bundle": {"name": "mri", "version": "0.2.0"},
           "versions": {"monai": "1.5.1"}, "precision": "fp16", "exported_device": "cuda"}
    assert card_from_dict(old, "old.ts").to_dict() == {
        "card_version": FIRST_CARD_VERSION, "labels": {"0": "background", "1": "anterior", "2": "posterior"},
        "network": {"target": "", "args": {}, "spatial_dims": 3, "in_channels": 2, "out_channels": 3, "depth": 4},
        "preprocessing": [{"kind": "orient", "axcodes": "RAS"}],
        "inference": {"kind": "sliding_window", "roi_size": [40, 56, 40], "overlap": 0.25, "mode": "gaussian",
                      "sigma_scale": 0.125, "sw_batch_size": 1, "spatial_dim": 2, "level": 3, "mirror_axes": [1, 2]},
        "modality": "MR", "channels": ["T1", "T2"],
        "training": {"precision": "", "dataset": {}, "folds": {}, "validation": {"val_mean_dice": 0.87},
                     "level_choice": {}, "checkpoint_sha256": ""},
        "bundle": {"name": "mri", "version": "0.2.0"}, "versions": {"monai": "1.5.1"},
        "export": {"precision": "fp16", "device": "cuda", "format": "torchscript"}}


@pytest.mark.parametrize("inference, dims", [({"roi_size": [32, 48]}, 2), ({}, 3)])
def test_a_bare_version_1_export_takes_the_documented_defaults(inference, dims):
    old = {"metadata_version": 1, "labels": {"0": "bg", "1": "a", "2": "b"}, "inference": inference,
           "preprocessing": [{"kind": "orient", "axcodes": "RAS"}]}
    card = card_from_dict(old, "v1.ts").to_dict()
    assert card["network"] == {"target": "", "args": {}, "spatial_dims": dims, "in_channels": 1, "out_channels": 3,
                               "depth": None}
    assert card["preprocessing"] == [{"kind": "orient", "axcodes": "RAS"}], "a list of steps is taken as it is"
    assert (card["modality"], card["channels"], card["bundle"], card["versions"]) == ("", [], {}, {})
    assert card["export"] == {"precision": "fp32", "device": "cpu", "format": "torchscript"}, "exports before ONNX"
    assert card_from_dict({**old, "preprocessing": {"orientation": "RAS"}}, "v1.ts").preprocessing == ()
    flat = {**old, "inference": {}, "network": {"spatial_dims": 2}}
    assert card_from_dict(flat, "v1.ts").network.spatial_dims == 2, "the recorded dimensions win over the default"


@pytest.mark.parametrize("spatial_dim, axes, expected", [(None, [0, 1, 2, "x"], (0, 1)), (1, [0, 1, 2], (0, 1)),
                                                         (0, [2], (1,))])
def test_slice_wise_mirror_axes_drop_the_slicing_axis(spatial_dim, axes, expected):
    info = {"kind": "slice", "roi_size": [32, 32], "mirror_axes": axes}
    if spatial_dim is not None:  # absent: axis 2, the card's default
        info["spatial_dim"] = spatial_dim
    old = {"metadata_version": 2, "labels": {"0": "bg", "1": "a"}, "inference": info,
           "network": {"spatial_dims": 2, "in_channels": 1, "out_channels": 2}}
    assert card_from_dict(old, "old.ts").inference.mirror_axes == expected


def test_version_1_and_2_are_read_and_nothing_else_is():
    old = {"labels": {"0": "bg", "1": "a"}, "inference": {"roi_size": [8, 8, 8]}}
    assert card_from_dict({**old, "metadata_version": 1}, "m.ts").level == 1
    assert card_from_dict({**old, "metadata_version": 2}, "m.ts").level == 1
    with pytest.raises(CardError) as info:
        card_from_dict(old, "m.ts")
    assert str(info.value) == ("'m.ts' holds no model card (no 'card_version'; a file of MONAI's ckpt_export holds "
                               "the bundle's metadata.json instead): export the model with `python -m pipeline "
                               "export`")


def test_labels_are_ordered_by_id_and_messages_name_the_file():
    card = card_from_dict({"card_version": CARD_VERSION, "labels": {"10": "c", "2": "b", "0": "bg"},
                           "network": {"out_channels": 3}}, "m.ts")
    assert list(card.labels) == ["0", "2", "10"]
    with pytest.raises(CardError, match="^'m.ts': model card: a model card must hold a JSON object"):
        card_from_dict([1], "m.ts")
    with pytest.raises(CardError, match="^'m.ts': model card: "):
        parse_card(json.dumps(_broken("inference.overlap", 2.0)), "m.ts")


def test_defaults_of_modality_and_channels_are_empty():
    card = card_from_dict({"card_version": CARD_VERSION, "labels": {"0": "bg", "1": "a"}}, "m.ts")
    assert (card.modality, card.channels) == ("", ())


def test_replace_takes_changes_to_each_nested_record():
    card = card_from_dict(copy.deepcopy(GOOD), "m.ts")
    changed = card.replace(network={"depth": 3}, inference={"overlap": 0.25}, training={"precision": "fp32"})
    assert (changed.network.depth, changed.network.out_channels) == (3, 3)
    assert (changed.inference.overlap, changed.inference.level) == (0.25, 2)
    assert (changed.training.precision, changed.training.checkpoint_sha256) == ("fp32", "ab" * 32)
    assert card.network.depth == 4, "the card itself is unchanged"


def test_only_the_splits_files_folder_is_dropped_from_the_folds():
    card = card_from_dict(_broken("training.folds", {"fold": 1, "num_folds": 5, "seed": 0,
                                                     "splits_file": "/data/site_a/splits_final.json"}), "m")
    assert card.shareable().training.folds == {"fold": 1, "num_folds": 5, "seed": 0,
                                               "splits_file": "splits_final.json"}
    none = card_from_dict(_broken("training.folds", {"fold": 0, "splits_file": ""}), "m")
    assert none.shareable().training.folds == {"fold": 0, "splits_file": ""}


def test_the_export_section_is_written_only_where_there_is_one():
    card = card_from_dict(copy.deepcopy(GOOD), "m.ts")
    assert "export" not in card.to_dict()
    exported = card.replace(export=card_from_dict({**GOOD, "export": {"precision": "fp16"}}, "m.ts").export)
    assert exported.to_dict()["export"] == {"precision": "fp16", "device": "cpu", "format": "torchscript"}


def test_an_older_card_without_a_migration_is_refused_naming_both_versions():
    with pytest.raises(CardError) as info:
        card_from_dict(_broken("card_version", FIRST_CARD_VERSION - 1), "m.ts")
    assert str(info.value) == (f"'m.ts': model card version {FIRST_CARD_VERSION - 1} is older than this pipeline "
                               f"reads ({FIRST_CARD_VERSION}) and has no migration: export the model again with `pipeline export`")


POST = {"foreground": True, "largest_component_labels": [2]}


def test_a_card_without_postprocessing_loads_and_writes_exactly_as_before():
    card = card_from_dict(copy.deepcopy(GOOD), "m.ts")
    assert not card.postprocessing and card.postprocessing.labels == ()
    out = card.to_dict()
    assert out["card_version"] == FIRST_CARD_VERSION == 3
    assert "postprocessing" not in out["inference"] and "postprocessing_choice" not in out["training"]


def test_postprocessing_round_trips_as_version_4_with_its_validation_numbers(tmp_path):
    choice = {"rule": "nnunet", "tolerance": 0.0, "dice_before": {"1": 0.5, "2": 0.6}}
    data = {**copy.deepcopy(GOOD), "card_version": CARD_VERSION,
            "inference": {**GOOD["inference"], "postprocessing": POST},
            "training": {**GOOD.get("training", {}), "postprocessing_choice": choice}}
    card = card_from_dict(data, "m.ts")
    assert card.postprocessing.foreground and card.postprocessing.labels == (2,)
    write_card(card, tmp_path / "model_card.json")
    again = read_card(tmp_path / "model_card.json")
    assert again == card and json.loads(again.to_json())["card_version"] == CARD_VERSION == 4
    assert again.to_dict()["inference"]["postprocessing"] == POST
    assert again.training.postprocessing_choice == choice


def test_replace_sets_postprocessing_and_the_version_follows():
    card = card_from_dict(copy.deepcopy(GOOD), "m.ts").replace(inference={"postprocessing": POST})
    assert card.to_dict()["card_version"] == 4 and card_from_dict(card.to_dict(), "m.ts") == card


@pytest.mark.parametrize("post, rule", [
    ([1], "'inference.postprocessing' must be an object with 'foreground' (true or false)"),
    ({"foreground": "yes"}, "'inference.postprocessing' must be an object with 'foreground' (true or false)"),
    ({"largest_component_labels": [0]}, "must be distinct foreground label ids of the card [1, 2]"),
    ({"largest_component_labels": [3]}, "largest_component_labels' must be distinct foreground label ids"),
    ({"largest_component_labels": [1, 1]}, "largest_component_labels' must be distinct foreground label ids"),
    ({"largest_component_labels": "1"}, "largest_component_labels' must be distinct foreground label ids"),
])
def test_a_broken_postprocessing_rule_is_one_line(post, rule):
    data = {**copy.deepcopy(GOOD), "card_version": 4, "inference": {**GOOD["inference"], "postprocessing": post}}
    with pytest.raises(CardError) as info:
        card_from_dict(data, "m.ts")
    assert str(info.value).startswith("'m.ts': model card: ") and rule in str(info.value)
    assert "\n" not in str(info.value)


def test_postprocessing_in_a_version_3_card_is_refused():
    data = {**copy.deepcopy(GOOD), "card_version": 3, "inference": {**GOOD["inference"], "postprocessing": POST}}
    with pytest.raises(CardError, match="'inference.postprocessing' needs card_version 4, got 3"):
        card_from_dict(data, "m.ts")


def test_postprocessing_choice_must_be_an_object():
    data = {**copy.deepcopy(GOOD), "training": {"postprocessing_choice": [1]}}
    with pytest.raises(CardError, match="'training.postprocessing_choice' must be an object"):
        card_from_dict(data, "m.ts")
