"""Whole plans for fingerprints of known shapes, and that a plan is a working bundle override."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from pipeline.planning import DeviceSpec, make_plan

from .conftest import BUNDLES, fake_prober, make_fingerprint


def _network_from(plan, bundle="unetpp_mri_segmentation"):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    for key, value in plan.to_config().items():
        parser[key] = value
    parser["device"] = "$torch.device('cpu')"
    return parser


def test_isotropic_mri(cpu):
    calls = []
    plan = make_plan(make_fingerprint([35, 50, 36], [1.0, 1.0, 1.0], cases=200, names=["T1"]), device=cpu,
                     minutes=60, prober=fake_prober(calls=calls))
    o = plan.overrides
    assert o["target_spacing"] == pytest.approx([1.0, 1.0, 1.0], abs=0.05)
    assert o["normalization"] == [{"scheme": "zscore", "nonzero": True}] and o["crop_threshold"] is None
    assert all(level == [2, 2, 2] for level in o["strides"]) and len(o["features"]) == len(o["strides"]) + 2
    assert o["rotate_range"] == [0.26] * 3 and o["modality"] == "MR" and o["channel_names"] == ["T1"]
    assert o["mirror_axes"] == [0, 1, 2], "no class centres in this fingerprint: every axis is mirrored"
    assert o["ds_weights"][0] == 1.0 and len(o["ds_weights"]) == len(o["strides"]) and o["deploy_level"] == "auto"
    assert o["batch_size"] * o["samples_per_volume"] == plan.info["batch"] >= 2
    assert o["minutes"] == 60.0 and o["epochs"] >= plan.info["predicted_epochs"] >= 1
    assert plan.info["expected_minutes"] <= 60.0 and len(calls) == 3  # two calibration probes, one final
    assert calls[-1] == (plan.info["patch"], plan.info["batch"]), "the final probe measures the plan itself"
    assert plan.undecided == [] and plan.configs == ["train"] and plan.bundle == "unetpp_mri_segmentation"


def test_anisotropic_mri_pools_in_plane_first(cpu):
    fp = make_fingerprint([320, 320, 24], [0.6, 0.6, 3.6], cases=30, names=["T2", "ADC"], channels=2)
    plan = make_plan(fp, device=cpu, minutes=600, prober=fake_prober(seconds_per_gmac=0.0005))
    o = plan.overrides
    assert plan.info["aniso_axis"] == 2 and o["target_spacing"][2] < 3.6 * 0.99  # the 10th percentile
    assert o["strides"][0] == [2, 2, 1], "no pooling across thick slices at full resolution"
    assert any(level[2] == 2 for level in o["strides"]), "the slice axis is pooled once in-plane has coarsened"
    assert o["rotate_range"] == [0.0, 0.0, 0.26] and o["in_channels"] == 2 and len(o["normalization"]) == 2


def test_thick_slice_ct_crops_the_body_and_normalises_from_the_foreground(cpu):
    fp = make_fingerprint([256, 256, 40], [0.8, 0.8, 5.0], cases=20, ct=True, names=["CT"], body=0.6)
    plan = make_plan(fp, device=cpu, minutes=60, prober=fake_prober(seconds_per_gmac=0.0005))
    o = plan.overrides
    assert o["normalization"] == [{"scheme": "clip_zscore", "lower": -20.0, "upper": 210.0, "mean": 95.0,
                                   "std": 40.0}]
    assert (o["crop_threshold"], o["crop_margin"]) == (-500.0, 8) and o["modality"] == "CT"
    assert plan.bundle == "unetpp_ct_segmentation", "CT plans suggest the CT bundle's defaults"
    assert o["strides"][0] == [2, 2, 1] and plan.info["aniso_axis"] == 2
    assert all(p <= m + 32 for p, m in zip(plan.info["patch"], plan.info["median_shape"]))


def test_2d_images_plan_a_2d_network(cpu):
    fp = make_fingerprint([256, 256], [0.8, 0.8], cases=50, names=["MRI"])
    plan = make_plan(fp, device=cpu, minutes=30, prober=fake_prober(seconds_per_gmac=0.001))
    o = plan.overrides
    assert o["spatial_dims"] == 2 and len(o["patch_size"]) == 2 and all(len(level) == 2 for level in o["strides"])
    assert o["rotate_range"] == [0.26] and plan.info["dims"] == "2d" and o["mirror_axes"] == [0, 1]


def test_few_thick_slices_plan_2d_on_slices(cpu):
    fp = make_fingerprint([256, 256, 5], [0.8, 0.8, 6.0], cases=40, names=["MRI"], jitter=0.0)
    plan = make_plan(fp, device=cpu, minutes=30, prober=fake_prober(seconds_per_gmac=0.001))
    assert plan.info["dims"] == "2d-slices" and plan.configs == ["train", "train_2d"]
    assert len(plan.overrides["patch_size_2d"]) == 2 and plan.overrides["patch_size"][2] == 1


def test_a_small_budget_shrinks_the_patch_and_says_what_it_gave_up(cpu):
    fp = make_fingerprint([35, 50, 36], [1.0] * 3, cases=200, names=["T1"])
    roomy = make_plan(fp, device=cpu, minutes=600, prober=fake_prober())
    tight = make_plan(fp, device=cpu, minutes=5, prober=fake_prober())
    assert tight.info["patch"] < roomy.info["patch"] or tight.info["batch"] < roomy.info["batch"]
    assert any("steps" in u for u in tight.undecided)


def test_unmeasurable_device_and_guessed_modality_are_named():
    fp = make_fingerprint([35, 50, 36], [1.0] * 3, cases=20)
    absent = DeviceSpec("cuda", False, 8 * 2**30, 2)
    plan = make_plan(fp, device=absent, minutes=60, prober=fake_prober())
    assert plan.overrides["epochs"] == 1000 and plan.overrides["features"][0] == 32
    text = " ".join(plan.undecided)
    assert "no cuda device here to measure the step time" in text and "modality of channel 0 was not declared" in text
    assert "not decided    no cuda device" in plan.to_text()


def test_a_long_label_list_is_shortened_in_the_table(cpu):
    fp = make_fingerprint([35, 50, 36], [1.0] * 3, cases=20, names=["CT"], ct=True)
    fp.labels = {str(i): f"organ{i}" for i in range(105)}
    line = make_plan(fp, device=cpu, minutes=60, prober=fake_prober()).to_text().splitlines()[0]
    assert "organ0, organ1, organ2, organ3, organ4, ... organ104; 105 named" in line and "organ50" not in line


def test_bad_arguments(cpu):
    fp = make_fingerprint([35, 50, 36], [1.0] * 3)
    with pytest.raises(ValueError, match="minutes must be > 0, got 0"):
        make_plan(fp, device=cpu, minutes=0, prober=None)
    with pytest.raises(ValueError, match="modality must be auto, ct or mri, got 'pet'"):
        make_plan(fp, modality="pet", device=cpu, prober=None)
    with pytest.raises(ValueError, match="too small to pool even once"):
        make_plan(make_fingerprint([6, 6, 6], [1.0] * 3), device=cpu, prober=None)


@pytest.mark.parametrize("shape, spacing, channels", [([35, 50, 36], [1.0] * 3, 1),
                                                        ([96, 96, 10], [0.6, 0.6, 3.6], 2)])
def test_the_plan_is_a_working_bundle_override(cpu, shape, spacing, channels):
    fp = make_fingerprint(shape, spacing, cases=20, channels=channels, names=["T1", "T2"][:channels])
    plan = make_plan(fp, device=cpu, minutes=60, prober=fake_prober(seconds_per_gmac=0.002))
    config = json.loads(json.dumps(plan.to_config()))  # as written to plan.json
    assert "plan_info" in config and config["plan_info"]["version"] == 1
    parser = _network_from(plan)
    net = parser.get_parsed_content("network_def")
    assert net.depth == len(config["strides"]) and net.strides == config["strides"]
    loss = parser.get_parsed_content("loss")
    assert len(loss.head_weights) == net.depth
    x = torch.zeros(1, channels, *plan.info["patch"])
    outputs = net.train()(x)
    assert len(outputs) == net.depth and outputs[0].shape[1] == config["num_classes"]
    chain = parser.get_parsed_content("preprocessing")
    assert any(type(t).__name__ == "NormalizeChannelsd" for t in chain)


def test_a_cpu_plan_counts_the_cores_this_process_may_use(monkeypatch):
    # under `taskset -c 0` the plan is for one core (one data worker), not for the machine's count
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    spec = DeviceSpec.resolve("cpu")
    assert spec.cores == 1
    fp = make_fingerprint([35, 50, 36], [1.0] * 3, cases=20, names=["T1"])
    assert make_plan(fp, device=spec, minutes=60, prober=None).overrides["num_workers"] == 1


def test_mirroring_follows_the_order_of_the_classes(cpu):
    fp = make_fingerprint([35, 50, 36], [1.0, 1.0, 1.0], cases=40, names=["T1"])
    for index, case in enumerate(fp.cases):  # "1" always in front of and below "2"; left or right of it by case
        case.label_centroid_mm = {"1": [2.0 if index % 2 else -2.0, 18.0, -7.0], "2": [0.0, 0.0, 0.0]}
    plan = make_plan(fp, device=cpu, minutes=60, prober=fake_prober())
    assert plan.overrides["mirror_axes"] == [0] and not any("mirror" in u for u in plan.undecided)
    assert "mirroring      axes [0] (classes' order reversed along each axis in 0: 50% of 40 cases, 1: 0% of 40" \
        in plan.to_text()
    fp.cases = fp.cases[:4]
    few = make_plan(fp, device=cpu, minutes=60, prober=fake_prober())
    assert few.overrides["mirror_axes"] == [0, 1, 2] and any("too few" in u for u in few.undecided)
