"""Every bundle config resolves: every _target_ and every pipeline.* reference, every file combination."""

from __future__ import annotations

import json
import pydoc
import re

import pytest
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator

from pipeline.deploy import resolve_level

from .conftest import BUNDLES, NAMES, REPO, check, run_bundle

ALL_CONFIGS = sorted([*BUNDLES.glob("*/configs/*.json"), *(REPO / "configs").rglob("*.json")])
COMBINATIONS = [("train",), ("train", "evaluate"), ("train", "train_2d"), ("train", "multi_gpu_train"),
                ("inference",), ("inference", "train_2d"), ("train", "inference")]
REQUIRED_FILES = ["configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
                  "configs/multi_gpu_train.json", "configs/train_2d.json", "configs/logging.conf", "docs/README.md",
                  "LICENSE"]


def _walk(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found["targets"].add(value)
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    elif isinstance(node, str) and node.startswith("$"):
        found["refs"].update(re.findall(r"\bpipeline(?:\.[A-Za-z_]\w*)+", node))


@pytest.mark.parametrize("bundle", NAMES)
def test_bundle_has_every_file(bundle):
    missing = [f for f in REQUIRED_FILES if not (BUNDLES / bundle / f).is_file()]
    assert missing == []


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_target_and_pipeline_reference_resolves(path):
    found = {"targets": set(), "refs": set()}
    _walk(json.loads(path.read_text()), found)
    locator = ComponentLocator()
    unresolved = []
    for target in sorted(found["targets"]):
        if "." in target:
            if pydoc.locate(target) is None:
                unresolved.append(target)
        elif locator.get_component_module_name(target) is None:
            unresolved.append(target)
    for ref in sorted(found["refs"]):
        if pydoc.locate(ref) is None:
            unresolved.append(ref)
    assert unresolved == []


@pytest.mark.parametrize("bundle", NAMES)
@pytest.mark.parametrize("combo", COMBINATIONS, ids="+".join)
def test_config_combinations_parse_with_the_standard_keys(bundle, combo):
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / f"{n}.json") for n in combo])
    parser.read_meta(str(BUNDLES / bundle / "configs" / "metadata.json"))
    for key in ("bundle_root", "device", "dataset_dir", "network_def", "inferer", "preprocessing", "run"):
        assert key in parser, key
    if "train" in combo:
        assert "train#trainer" in parser and "validate#evaluator" in parser
    if "inference" in combo:
        assert "evaluator" in parser and "dataset" in parser and "inference" in parser
        parser["device"] = "$torch.device('cpu')"
        net = parser.get_parsed_content("network_def")
        assert net.level == resolve_level(parser.get_parsed_content("deploy_level"),
                                          parser.get_parsed_content("ckpt_path"), net.depth)
        if "train_2d" in combo:
            assert parser.get_parsed_content("network_def").spatial_dims == 2
            assert type(parser.get_parsed_content("inferer")).__name__ == "SliceInferer"
    elif "train" in combo:
        assert "training" in parser
    if "evaluate" in combo:
        assert "evaluating" in parser


@pytest.mark.parametrize("bundle", NAMES)
def test_deep_supervision_weights_favour_the_final_head(bundle):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    loss = parser.get_parsed_content("loss")
    net = parser.get_parsed_content("network_def")
    assert net.deep_supervision, "training must use deep supervision"
    assert len(loss.head_weights) == net.depth, "one weight per head"
    assert loss.head_weights[0] == max(loss.head_weights), "the final head (first in UNet++'s list) weighs most"
    assert loss.head_weights == sorted(loss.head_weights, reverse=True)


@pytest.mark.parametrize("bundle", NAMES)
def test_verify_metadata_offline(bundle, tmp_path):
    schema = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
    if not schema.exists():
        pytest.skip(f"MONAI's metadata schema is not available offline: {schema} is absent")
    check(run_bundle("verify_metadata", "--meta_file", str(BUNDLES / bundle / "configs/metadata.json"),
                     "--filepath", str(schema), cwd=tmp_path))


@pytest.mark.parametrize("bundle", NAMES)
def test_metadata_describes_the_network(bundle):
    meta = json.loads((BUNDLES / bundle / "configs/metadata.json").read_text())
    train = json.loads((BUNDLES / bundle / "configs/train.json").read_text())
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == train["num_classes"]
    assert out["channel_def"] == train["label_names"]
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == train["in_channels"]
    assert train["network_def"]["in_channels"] == "@in_channels"
    assert meta["version"] in meta["changelog"]
