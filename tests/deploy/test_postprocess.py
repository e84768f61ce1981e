"""Keep-the-largest-connected-component postprocessing (pipeline.deploy.postprocess): the operation and the rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.deploy.postprocess import Postprocessing, apply, choose, dice_per_class


def _map() -> np.ndarray:
    """Class 1: a big blob (27 voxels) and a small one (1 voxel); class 2: two blobs (8 and 1 voxels), the big one
    touching class 1's big blob (so the foreground's largest union component holds both)."""
    m = np.zeros((11, 9, 7), np.uint8)
    m[1:4, 1:4, 1:4] = 1          # class 1, large
    m[9, 7, 5] = 1                # class 1, small, isolated
    m[4:6, 1:3, 1:3] = 2          # class 2, large, touching class 1's large blob
    m[8, 1, 5] = 2                # class 2, small, isolated
    return m


def test_a_class_keeps_only_its_largest_blob_and_other_classes_are_untouched():
    m = _map()
    out = apply(m, Postprocessing(labels=(1,)))
    assert (out == 1).sum() == 27 and out[9, 7, 5] == 0
    assert np.array_equal(out == 2, m == 2)  # class 2 is not listed
    assert (m == 1).sum() == 28  # the input is not changed


def test_foreground_as_a_whole_keeps_the_largest_union_component():
    m = _map()
    out = apply(m, Postprocessing(foreground=True))
    assert out[9, 7, 5] == 0 and out[8, 1, 5] == 0  # both isolated blobs lie outside the largest union component
    assert (out == 1).sum() == 27 and (out == 2).sum() == 8  # the union keeps both classes' touching blobs


def test_a_diagonal_neighbour_is_connected_as_in_monai():
    m = np.zeros((5, 5, 5), np.uint8)
    m[0, 0, 0] = m[1, 1, 1] = 1   # corner-connected: one component under full connectivity
    m[4, 4, 4] = 1
    assert apply(m, Postprocessing(labels=(1,))).sum() == 2


def test_a_torch_map_comes_back_as_torch_with_its_dtype():
    m = torch.as_tensor(_map())
    out = apply(m, Postprocessing(labels=(1, 2)))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and int((out > 0).sum()) == 35


def test_no_decision_returns_the_map_as_it_is():
    m = _map()
    assert apply(m, Postprocessing()) is m


@pytest.mark.parametrize("seed, shape", [(0, (17, 13, 9)), (1, (33, 31)), (2, (9, 9, 9))])
def test_it_matches_monais_keep_largest_connected_component(seed, shape):
    pytest.importorskip("skimage", reason="MONAI's KeepLargestConnectedComponent needs scikit-image")
    from monai.transforms import KeepLargestConnectedComponent

    rng = np.random.default_rng(seed)
    m = (rng.integers(0, 3, shape) * (rng.random(shape) > 0.6)).astype(np.uint8)
    for k in (1, 2):
        ref = KeepLargestConnectedComponent(applied_labels=[k], independent=True)(m[None])[0]
        assert np.array_equal(apply(m, Postprocessing(labels=(k,))), np.asarray(ref))
    ref = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=False)(m[None])[0]
    assert np.array_equal(apply(m, Postprocessing(foreground=True)), np.asarray(ref))


def _case(spurious_1: bool, split_2: bool) -> tuple[np.ndarray, np.ndarray]:
    """A reference with class 1 (a 64-voxel blob) touching class 2 (27 voxels), optionally a second, separate blob of
    class 2 (8 voxels), and a prediction equal to it plus, where asked, a spurious 8-voxel class 1 blob far away."""
    ref = np.zeros((20, 20, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    ref[2:5, 6:9, 2:5] = 2
    if split_2:
        ref[14:16, 10:12, 2:4] = 2  # a real second component of class 2: keeping the largest loses it
    pred = ref.copy()
    if spurious_1:
        pred[16:18, 2:4, 5:7] = 1
    return pred, ref


def test_choose_keeps_for_the_class_it_helps_and_not_for_the_one_it_hurts():
    pairs = [_case(True, True), _case(True, True)]
    choice = choose([p for p, _ in pairs], [r for _, r in pairs], [1, 2])
    # the foreground as a whole removes class 1's spurious blob (1: 128/136 -> 1) but also class 2's real second blob
    # (2: 1 -> 54/62): the mean drops (0.971 -> 0.935), so it is not kept
    assert choice.dice_before == pytest.approx({"1": 128 / 136, "2": 1.0})
    assert choice.dice_foreground == pytest.approx({"1": 1.0, "2": 54 / 62})
    assert not choice.decision.foreground
    assert 1 in choice.decision.labels and 2 not in choice.decision.labels
    assert choice.dice_after["1"] == 1.0 and choice.dice_after["2"] == choice.dice_before["2"]


def test_the_foreground_decision_comes_first_and_the_classes_build_on_it():
    pred, ref = _case(True, False)  # only a spurious class 1 blob: the foreground step removes it
    choice = choose([pred], [ref], [1, 2])
    assert choice.decision.foreground and choice.dice_foreground["1"] == 1.0
    # on top of the foreground decision nothing drops, so both classes are kept (ties keep, as nnU-Net's >=)
    assert choice.decision.labels == (1, 2) and choice.dice_per_label == {"1": 1.0, "2": 1.0}
    record = choice.record()
    assert record["rule"] == "nnunet" and record["dice_before"]["1"] < 1.0 and record["dice_after"]["1"] == 1.0


def test_the_foreground_is_rejected_where_it_removes_a_true_structure():
    pred, ref = _case(False, True)  # class 2's real second blob lies apart: the union's largest drops it
    choice = choose([pred], [ref], [1, 2])
    assert not choice.decision.foreground and choice.decision.labels == (1,)
    assert choice.dice_after == choice.dice_before == {"1": 1.0, "2": 1.0}


def test_tolerance_accepts_a_small_drop():
    pred, ref = _case(False, True)
    drop = 1.0 - choose([pred], [ref], [1, 2]).dice_per_label["2"]
    assert 2 in choose([pred], [ref], [1, 2], tolerance=drop + 1e-9).decision.labels


@pytest.mark.parametrize("call, message", [
    (lambda: choose([np.zeros(3)], [np.zeros(3)], [1], tolerance=-0.1), "tolerance must be >= 0, got -0.1"),
    (lambda: choose([np.zeros(3)], [np.zeros(3)], [0]), "must hold a foreground label (> 0), got [0]"),
    (lambda: dice_per_class([np.zeros(3)], [], [1]), "must be non-empty and pair up, got 1 and 0"),
    (lambda: dice_per_class([np.zeros(3)], [np.zeros(4)], [1]), "same shape, got (3,) and (4,)"),
])
def test_bad_arguments_are_refused_naming_the_value(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


def test_a_class_absent_from_both_counts_as_perfect():
    assert dice_per_class([np.zeros((3, 3))], [np.zeros((3, 3))], [1]) == {"1": 1.0}
