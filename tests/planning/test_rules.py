"""Each planner rule on its own, with the shapes users bring: isotropic MRI, anisotropic MRI, thick-slice CT, 2D."""

from __future__ import annotations

import math

import pytest

from pipeline.planning import rules

from .conftest import CT_STATS, MR_STATS


def test_target_spacing_is_the_median_for_isotropic_data():
    spacing, aniso = rules.target_spacing([[1.0, 1.0, 1.0], [0.9, 1.1, 1.0], [1.2, 1.0, 1.1]],
                                          [[35, 50, 36], [34, 52, 35], [36, 49, 37]])
    assert spacing == [1.0, 1.0, 1.0] and aniso is None


def test_target_spacing_takes_the_10th_percentile_on_an_anisotropic_axis():
    spacings = [[0.6, 0.6, 3.0], [0.6, 0.6, 3.6], [0.7, 0.7, 4.0], [0.6, 0.6, 3.6], [0.65, 0.65, 3.0]]
    shapes = [[320, 320, 24]] * 5
    spacing, aniso = rules.target_spacing(spacings, shapes)
    assert aniso == 2 and spacing[:2] == [0.6, 0.6]
    assert spacing[2] == pytest.approx(3.0)  # the 10th percentile, not the median 3.6


def test_thick_slices_with_many_slices_are_not_anisotropic():
    # 5 mm slices, but as many slices as in-plane voxels: nnU-Net's voxel condition keeps the median
    spacing, aniso = rules.target_spacing([[0.8, 0.8, 5.0], [0.8, 0.8, 3.0]], [[100, 100, 120], [100, 100, 200]])
    assert aniso is None and spacing == [0.8, 0.8, 4.0]


def test_resampled_shape_follows_monai_spacing():
    assert rules.resampled_shape([[35, 50, 36]], [[1.0, 1.0, 1.0]], [1.0, 1.0, 1.0]) == [35, 50, 36]
    assert rules.resampled_shape([[101, 101, 21]], [[0.5, 0.5, 3.0]], [1.0, 1.0, 1.5]) == [51, 51, 41]


@pytest.mark.parametrize("spacing, patch, expected", [
    ([1.0, 1.0, 1.0], [40, 56, 40], [[2, 2, 2]] * 3),  # isotropic MRI: 40 -> 5 stops (< 8)
    ([0.7, 0.7, 2.8], [192, 192, 16], [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]),  # prostate-like
    ([0.8, 0.8, 5.0], [256, 256, 32], [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),  # thick-slice CT
    ([1.0, 1.0], [512, 512], [[2, 2]] * 5),  # 2D: capped at MAX_DEPTH
    ([1.0, 1.0, 1.0], [8, 64, 64], [[2, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]),  # a flat patch stops pooling x
])
def test_pooling_waits_for_coarse_axes_and_keeps_four_voxels(spacing, patch, expected):
    strides = rules.pooling(spacing, patch)
    assert strides == expected
    for d in range(len(patch)):
        assert patch[d] / math.prod(level[d] for level in strides) >= rules.MIN_FEATURE_MAP / 2 or patch[d] < 8


def test_divisible_patch_rounds_up_to_the_stride_product():
    assert rules.divisible_patch([35, 50, 36], [[2, 2, 2]] * 3) == [40, 56, 40]
    assert rules.divisible_patch([190, 190, 15], [[2, 2, 1], [2, 2, 1], [2, 2, 2]]) == [192, 192, 16]


def test_features_double_per_level_up_to_the_cap():
    assert rules.features(3, 16, 256) == [16, 32, 64, 128, 16]
    assert rules.features(5, 32, 320) == [32, 64, 128, 256, 320, 320, 32]


def _linear_cost(patch, strides):  # a cost proportional to the voxels, independent of depth
    return float(math.prod(patch)), float(math.prod(patch))


def test_patch_is_the_median_shape_and_batch_capped_at_5_percent_of_the_dataset():
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0, 1.0, 1.0], rules.Budget(), _linear_cost,
                                          dataset_voxels=208 * 35 * 50 * 36)
    assert choice.patch == [40, 56, 40] and choice.strides == [[2, 2, 2]] * 3
    assert choice.batch == round(0.05 * 208 * 35 * 50 * 36 / (40 * 56 * 40))  # 7, nnU-Net's cap
    assert choice.notes == []


def test_batch_from_the_budget_when_it_binds():
    budget = rules.Budget(macs=4.5 * 40 * 56 * 40)
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0] * 3, budget, _linear_cost, 1e12)
    assert choice.patch == [40, 56, 40] and choice.batch == 4


def test_patch_shrinks_the_axis_largest_relative_to_the_median_first():
    budget = rules.Budget(macs=2 * 40 * 48 * 40)  # two patches of 32x56x40 fit, not two of 40x56x40
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0] * 3, budget, _linear_cost, 1e12)
    assert choice.patch == [32, 56, 40] and choice.batch == 2  # x: 40/35 is the largest ratio to the median
    budget = rules.Budget(macs=2 * 32 * 48 * 32)
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0] * 3, budget, _linear_cost, 1e12)
    assert choice.patch == [32, 48, 32] and choice.batch == 2


def test_patch_never_goes_below_its_floor_and_says_so():
    budget = rules.Budget(macs=1.0)
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0] * 3, budget, _linear_cost, 1e12,
                                          min_patch=[18, 25, 18])
    assert all(p >= f for p, f in zip(choice.patch, [18, 25, 18]))
    assert choice.batch == rules.MIN_BATCH and "does not fit 2 per step" in choice.notes[0]


def test_memory_budget_limits_the_batch():
    budget = rules.Budget(activation_bytes=3 * 40 * 56 * 40 * 5.2)
    choice = rules.choose_patch_and_batch([35, 50, 36], [1.0] * 3, budget, _linear_cost, 1e12)
    assert choice.batch == 3


@pytest.mark.parametrize("name, stats, forced, expected", [
    ("CT", MR_STATS, "auto", "ct"),           # a declared name wins over intensities
    ("T2", CT_STATS, "auto", "mri"),
    ("", CT_STATS, "auto", "ct"),             # air at -1024 in integers: CT
    ("", MR_STATS, "auto", "mri"),
    ("", MR_STATS, "ct", "ct"),               # --modality
    ("FLAIR", MR_STATS, "ct", "ct"),          # --modality for a channel not named CT
])
def test_channel_modality(name, stats, forced, expected):
    assert rules.channel_modality(name, stats, forced)[0] == expected


def test_normalization_per_channel():
    ct, mr = rules.normalization(["ct", "mri"], [CT_STATS, MR_STATS])
    assert ct == {"scheme": "clip_zscore", "lower": -20.0, "upper": 210.0, "mean": 95.0, "std": 40.0}
    assert mr == {"scheme": "zscore", "nonzero": True}


@pytest.mark.parametrize("modality, body, nonzero, expected", [
    ("ct", 0.6, 1.0, (-500.0, 8)),   # body well inside the field of view: crop
    ("ct", 0.95, 1.0, (None, 0)),    # body fills it: cropping buys nothing
    ("mri", 1.0, 0.5, (0.0, 0)),     # skull-stripped brain: crop to the non-zero region
    ("mri", 1.0, 0.9, (None, 0)),
])
def test_foreground_crop(modality, body, nonzero, expected):
    assert rules.foreground_crop(modality, body, nonzero) == expected


def test_dimensionality():
    assert rules.dimensionality(2, [256, 256], None) == "2d"
    assert rules.dimensionality(3, [256, 256, 5], 2) == "2d-slices"
    assert rules.dimensionality(3, [256, 256, 20], 2) == "3d"
    assert rules.dimensionality(3, [40, 56, 40], None) == "3d"


def test_rotation_is_in_plane_for_anisotropic_data():
    assert rules.rotate_range(3, None) == [rules.ROTATION] * 3
    assert rules.rotate_range(3, 2) == [0.0, 0.0, rules.ROTATION]
    assert rules.rotate_range(2, None) == [rules.ROTATION]
    assert rules.mirror_axes("3d") == [0, 1, 2] and rules.mirror_axes("2d-slices") == rules.mirror_axes("2d") == [0, 1]


def test_samples_per_volume():
    assert rules.samples_per_volume(4, [96, 96, 64], [300, 300, 200]) == 2
    assert rules.samples_per_volume(4, [40, 56, 40], [35, 50, 36]) == 1
    assert rules.samples_per_volume(3, [96, 96, 64], [300, 300, 200]) == 1


def test_schedule_fits_the_minutes_and_keeps_validation_below_its_share():
    epochs, interval, minutes = rules.schedule(60, startup_s=60, step_s=1.5, validation_s=60, steps_per_epoch=40)
    assert 0 < minutes * 60 + 60 + 60 <= 3600
    assert epochs * 40 * 1.5 / 60 <= minutes
    assert (epochs // interval) * 60 <= rules.VAL_SHARE * epochs * 40 * 1.5 * 1.01 + 60
    assert rules.schedule(1, startup_s=120, step_s=1.0, validation_s=5, steps_per_epoch=10)[0] == 1


def _centres(first, second, cases):
    return [{"1": list(first), "2": list(second)}] * cases


def test_class_order_counts_reversals_per_axis_and_skips_close_centres():
    cases = _centres([0.0, 18.0, -7.0], [2.0, 0.0, 0.0], 9) + _centres([0.5, 18.0, -7.0], [0.0, 0.0, 0.0], 1)
    order = rules.class_order(cases)
    assert order[1] == (0.0, 10) and order[2] == (0.0, 10), "anterior always ahead and below: one order"
    assert order[0] == (0.0, 9), "0.5 mm apart says nothing about the order along the axis (not compared)"
    cases += _centres([3.0, 18.0, -7.0], [0.0, 0.0, 0.0], 1)
    assert rules.class_order(cases)[0] == (pytest.approx(0.1), 10)


def test_mirror_axes_keep_axes_without_a_class_order():
    hippocampus = _centres([2.0, 18.0, -7.0], [0.0, 0.0, 0.0], 18) + _centres([-2.0, 18.0, -7.0], [0.0, 0.0, 0.0], 2)
    order = rules.class_order(hippocampus)
    assert rules.mirror_axes("3d", order) == [0], "reversed in 10% of cases along x: mirrored; never along y, z"
    few = rules.class_order(hippocampus[:rules.MIRROR_MIN_CASES - 1])
    assert rules.mirror_axes("3d", few) == [0, 1, 2], "too few cases to judge"
    assert rules.mirror_axes("3d", rules.class_order([])) == [0, 1, 2], "one foreground class: no order, every axis"
    flat = rules.class_order([{"1": [0.0, 10.0], "2": [0.0, 0.0]}] * 12, axes=2)
    assert rules.mirror_axes("2d", flat) == [0] and rules.mirror_axes("2d-slices", order) == [0]
