"""The card is read off the objects a bundle builds: network arguments, transforms, inferer, flips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from pipeline.deploy import describe_model, mirror_axes
from pipeline.networks import UNetPlusPlus

REPO = Path(__file__).resolve().parents[2]
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


def _card(parser: ConfigParser):
    return describe_model(parser.get_parsed_content("network_def"), parser.get_parsed_content("preprocessing"),
                          parser.get_parsed_content("inferer"), parser.get_parsed_content("label_names"),
                          augmentation=parser.get_parsed_content("augmentation"), bundle_meta=parser.get("_meta_"),
                          deploy_level=parser.get_parsed_content("deploy_level"))


@pytest.mark.parametrize("bundle, kinds", [
    ("unetpp_ct_segmentation", ["orient", "resample", "crop_foreground", "normalize"]),
    ("unetpp_mri_segmentation", ["orient", "resample", "normalize"]),
])
def test_the_card_is_read_off_the_bundle_objects(bundle, kinds, tiny_parser):
    parser = tiny_parser(bundle)
    card = _card(parser)
    assert [s["kind"] for s in card.preprocessing] == kinds
    assert card.preprocessing[0] == {"kind": "orient", "axcodes": "RAS"}
    assert card.target_spacing == parser.get_parsed_content("target_spacing")
    assert (card.inference.kind, list(card.inference.roi_size), card.inference.overlap, card.inference.mode,
            card.inference.level) == ("sliding_window", TINY["patch_size"], 0.5, "gaussian", None)
    assert card.inference.mirror_axes == tuple(parser.get_parsed_content("mirror_axes"))
    assert card.training.level_choice == {"rule": "auto"} and card.level == 4
    assert dict(card.labels) == parser.get_parsed_content("label_names")
    meta = json.loads((REPO / "bundles" / bundle / "configs/metadata.json").read_text())
    assert card.bundle == {"name": meta["name"], "version": meta["version"]}
    assert card.network.target == "pipeline.networks.unetplusplus.UNetPlusPlus"
    assert card.network.args["features"] == TINY["features"] and card.network.depth == 4
    assert (card.network.in_channels, card.network.out_channels) == (1, 3)
    assert card.modality in ("CT", "MR") and card.channels
    assert {"torch", "monai", "pipeline", "python"} <= set(card.versions) and all(card.versions.values())
    (scheme,) = card.preprocessing[-1]["schemes"]
    if bundle == "unetpp_ct_segmentation":
        assert (scheme["scheme"], scheme["a_min"], scheme["a_max"], scheme["clip"]) == ("window", -175, 250, True)
        assert card.preprocessing[2]["threshold"] == -500.0
    else:
        assert scheme == {"scheme": "zscore", "nonzero": True}


@pytest.mark.parametrize("bundle", ["unetpp_ct_segmentation", "unetpp_mri_segmentation"])
@pytest.mark.parametrize("extra", [(), ("train_2d",)], ids=["3d", "2d"])
def test_mirror_axes_are_read_off_the_flips_that_train(bundle, extra, tiny_parser):
    """The bundle's mirror_axes gate the flips; the card reads the flips themselves, so TTA mirrors what trained."""
    for axes in ([0], [1, 2], []):
        parser = tiny_parser(bundle, *(("train", *extra) if extra else ()))
        parser["mirror_axes"] = axes
        dims = 2 if extra else 3
        assert _card(parser).inference.mirror_axes == tuple(a for a in axes if a < dims)


def test_mirror_axes_of_every_flip_kind():
    from monai.transforms import RandAxisFlipd, RandFlipd, RandRotate90d

    assert mirror_axes([RandFlipd("image", prob=0.5, spatial_axis=[0, 2])], 3) == (0, 2)
    assert mirror_axes([RandFlipd("image", prob=0.5, spatial_axis=None)], 3) == (0, 1, 2)
    assert mirror_axes([RandFlipd("image", prob=0.0, spatial_axis=1)], 3) == ()
    assert mirror_axes([RandAxisFlipd("image", prob=0.5)], 2) == (0, 1)
    assert mirror_axes([RandRotate90d("image", prob=0.5)], 3) == (), "a rotation is not a mirroring"


def test_a_fixed_level_and_explicit_inputs():
    from monai.inferers import SliceInferer

    net = UNetPlusPlus(2, 2, 3, features=(4, 4, 8, 8, 16, 4))
    card = describe_model(net, [], SliceInferer(roi_size=[32, 32], sw_batch_size=4, spatial_dim=2),
                          {0: "bg", 1: "a", 2: "b"}, modality="MR", channels=["T1", "T2"], deploy_level=2)
    assert (card.level, card.inference.kind, card.inference.sw_batch_size, card.image_dims) == (2, "slice", 4, 3)
    assert card.training.level_choice == {"rule": "fixed"} and card.channels == ("T1", "T2")
    assert card.inference.mirror_axes is None, "no augmentation given: not known"


def test_what_cannot_be_deployed_is_named():
    from monai.inferers import SimpleInferer, SlidingWindowInferer
    from monai.transforms import GaussianSmoothd

    net = UNetPlusPlus(3, 1, 2, features=(4, 4, 8, 8, 16, 4))
    with pytest.raises(ValueError, match="uses GaussianSmoothd: it has no deployment equivalent"):
        describe_model(net, [GaussianSmoothd(keys="image", sigma=1.0)], SlidingWindowInferer([32] * 3),
                       {0: "bg", 1: "a"})
    with pytest.raises(ValueError, match="cannot deploy a model with inferer SimpleInferer"):
        describe_model(net, [], SimpleInferer(), {0: "bg", 1: "a"})
    with pytest.raises(ValueError, match="as many labels as output channels"):
        describe_model(net, [], SlidingWindowInferer([32] * 3), {0: "bg", 1: "a", 2: "b"})
    with pytest.raises(ValueError, match="deploy_level must be 'auto' or a level"):
        describe_model(net, [], SlidingWindowInferer([32] * 3), {0: "bg", 1: "a"}, deploy_level="best")


def test_network_arguments_rebuild_the_same_network():
    from monai.inferers import SlidingWindowInferer

    from pipeline.export import build_network

    torch.manual_seed(0)
    net = UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4), strides=[(2, 2, 1), 2, 2, 2], deep_supervision=True)
    card = describe_model(net, [], SlidingWindowInferer([32] * 3), {0: "bg", 1: "a", 2: "b"})
    again = build_network(card.network)
    again.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.inference_mode():
        assert torch.equal(again.eval()(x), net.eval()(x)) and again.strides == net.strides
