"""A deployed model's metadata is checked at load: one line naming the file and the rule."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.export.model_metadata import check_model_metadata, parse_model_metadata

GOOD = {"labels": {"0": "background", "1": "liver", "2": "kidney"},
        "network": {"spatial_dims": 3, "in_channels": 1, "out_channels": 3},
        "inference": {"kind": "sliding_window", "roi_size": [96, 96, 64], "overlap": 0.5},
        "preprocessing": {"target_spacing": [1.5, 1.5, 2.0],
                          "steps": [{"kind": "resample", "pixdim": [1.5, 1.5, 2.0]}]}}


def _broken(path, value):
    meta = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    node = meta
    for p in parents:
        node = node[p]
    node[key] = value
    return meta


def test_good_metadata_passes():
    assert check_model_metadata(copy.deepcopy(GOOD), "m.ts") == GOOD


@pytest.mark.parametrize("path, value, rule", [
    ("labels", ["background", "liver"], "'labels' must be an object of label id -> name"),
    ("labels", {"0": "background", "one": "liver", "2": "kidney"},
     "label ids must be whole numbers >= 0, got [\"one\"]"),
    ("labels", {"0": "background", "1": "liver"}, "as many labels as output channels (3)"),
    ("inference.roi_size", [96, 0, 64], "'inference.roi_size' must be whole numbers > 0"),
    ("inference.roi_size", [96, 96], "one per spatial axis (3)"),
    ("inference.overlap", 1.0, "'inference.overlap' must be >= 0 and < 1, got 1.0"),
    ("network.in_channels", 0, "'network.in_channels' must be a whole number >= 1"),
    ("inference.mirror_axes", [0, 3], "'inference.mirror_axes' must be a list of spatial axes 0..2, got [0, 3]"),
    ("inference.mirror_axes", "lr", "'inference.mirror_axes' must be a list of spatial axes 0..2"),
    ("preprocessing.target_spacing", [1.5, -1, 2], "target spacings must be numbers > 0"),
    ("preprocessing.steps", [{"kind": "resample", "pixdim": [0, 1, 1]}], "target spacings must be numbers > 0"),
    ("preprocessing.steps", "orient", "'preprocessing.steps' must be a list of objects"),
    ("network", "unet", "'network' must be an object"),
])
def test_each_rule_is_one_line(path, value, rule):
    with pytest.raises(PipelineError) as info:
        check_model_metadata(_broken(path, value), "models/m.ts")
    message = str(info.value)
    assert message.startswith("'models/m.ts': embedded metadata: ") and rule in message and "\n" not in message


def test_not_an_object_or_not_json():
    with pytest.raises(PipelineError, match="metadata.json must hold a JSON object, got \"list\""):
        parse_model_metadata("[1, 2]", "m.ts")
    with pytest.raises(PipelineError, match="'m.ts': embedded metadata.json must be valid JSON"):
        parse_model_metadata("{labels", "m.ts")


def test_segment_refuses_a_model_with_bad_metadata_in_one_line(tmp_path):
    module = torch.jit.script(torch.nn.Conv3d(1, 2, 1))
    torch.jit.save(module, str(tmp_path / "m.ts"), _extra_files={"metadata.json": json.dumps(
        _broken("labels", {"0": "background", "x": "liver", "2": "kidney"}))})
    (tmp_path / "in").mkdir()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(tmp_path / "m.ts"), "--input",
                           str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--device", "tpu"], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "m.ts': embedded metadata: label ids must be whole numbers >= 0" in proc.stderr


def test_an_unknown_device_is_one_line(tmp_path):
    from pipeline.export.torchscript import resolve_device

    with pytest.raises(PipelineError, match="device must be auto, cpu or cuda\\[:N\\], got 'tpu'"):
        resolve_device("tpu")
