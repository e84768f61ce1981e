"""The network a card describes: rebuilt for export, and for inference.json, which must not prepare or run it
otherwise than it was trained."""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from monai.inferers import SliceInferer, SlidingWindowInferer
from monai.transforms import Orientationd, Spacingd

from pipeline.deploy import card_path, describe_model, file_sha256, write_card
from pipeline.errors import PipelineError
from pipeline.export.network import build_network, network_for_checkpoint
from pipeline.networks import UNetPlusPlus

FEATURES = (4, 4, 8, 8, 16, 4)
CHAIN = [Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=(1.5, 1.5, 2.0))]


def _trained(tmp_path, features=FEATURES):
    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=features)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    card = describe_model(net, CHAIN, SlidingWindowInferer([32, 32, 32], overlap=0.25), {0: "bg", 1: "a", 2: "b"})
    write_card(card.replace(inference={"level": 2}, training={"checkpoint_sha256": file_sha256(tmp_path / "model.pt")}),
               card_path(tmp_path / "model.pt"))
    return tmp_path / "model.pt", net


def test_inference_builds_the_cards_network_at_its_level(tmp_path, caplog):
    model, _ = _trained(tmp_path)
    config_net = functools.partial(UNetPlusPlus, 3, 1, 3, features=(32, 32, 64, 128, 256, 32))
    with caplog.at_level(logging.WARNING):
        net = network_for_checkpoint(model, config_net, "auto", CHAIN, SlidingWindowInferer([40, 56, 40]))
    assert net.features == list(FEATURES) and net.level == 2
    net.load_state_dict(torch.load(model))
    assert "slides [40, 56, 40] windows at overlap 0.25; the model card's are [32, 32, 32] at 0.25" in caplog.text
    assert network_for_checkpoint(tmp_path / "none" / "model.pt", config_net).features[0] == 32, "no card: config's"


def test_inference_refuses_other_preprocessing_or_another_kind_of_inferer(tmp_path):
    model, _ = _trained(tmp_path)
    other = [Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=(1.0, 1.0, 1.0))]
    with pytest.raises(PipelineError) as info:
        network_for_checkpoint(model, UNetPlusPlus, "auto", other)
    assert "model_card.json': the model was trained with preprocessing step 1 {'kind': 'resample', 'pixdim': " \
           "[1.5, 1.5, 2.0]" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PipelineError, match="the model runs as 'sliding_window' and this config's inferer as 'slice'"):
        network_for_checkpoint(model, UNetPlusPlus, "auto", CHAIN, SliceInferer(roi_size=[32, 32]))


def test_a_card_names_only_trusted_networks_with_arguments_that_build(tmp_path):
    from pipeline.deploy import NetworkSpec

    with pytest.raises(PipelineError, match="'c.json': the network must be a class under pipeline.networks."):
        build_network(NetworkSpec(target="os.system", args={}), "c.json")
    with pytest.raises(PipelineError, match="the network must be a torch.nn.Module class"):
        build_network(NetworkSpec(target="pipeline.networks.unetplusplus.math", args={}), "c.json")
    with pytest.raises(PipelineError, match="the network arguments do not build UNetPlusPlus: depth must be"):
        build_network(NetworkSpec(target="pipeline.networks.UNetPlusPlus", args={"depth": 9}), "c.json")
    with pytest.raises(PipelineError, match="does not name the network's class"):
        build_network(NetworkSpec(), "c.json")
