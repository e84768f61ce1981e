"""The planner's rules, each a small pure function of the fingerprint (unit-tested one by one).

Spacing, pooling and batch follow nnU-Net (Isensee et al., Nature Methods 2021) where nnU-Net has a rule; what
nnU-Net fixes for a GPU (a memory target, 1000 epochs of 250 steps) is replaced by the user's device and minutes.
Every constant is named here and in the bundle docs ("How the plan is made").

Example:
    >>> target_spacing([[0.7, 0.7, 3.0], [0.6, 0.6, 3.6]], [[300, 300, 20], [320, 320, 24]])
    ([0.65, 0.65, 3.06], 2)
    >>> pooling([0.65, 0.65, 3.06], [192, 160, 20])
    [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ANISOTROPY", "BODY_CROP", "DATASET_FRACTION", "MAX_DEPTH", "MIN_BATCH", "MIN_FEATURE_MAP", "MIN_SLICES_3D",
    "MIN_STEPS", "MIRROR_MIN_CASES", "MIRROR_MIN_REVERSED", "NONZERO_CROP", "ROTATION", "VAL_SHARE", "Budget",
    "PatchChoice", "channel_modality", "choose_patch_and_batch", "class_order", "dimensionality", "divisible_patch",
    "features", "foreground_crop", "mirror_axes", "normalization", "pooling", "resampled_shape", "rotate_range", "samples_per_volume", "schedule", "target_spacing",
]

#: An axis is anisotropic when its spacing exceeds the finest by this factor (and it has that many times fewer
#: voxels): nnU-Net's threshold.
ANISOTROPY = 3.0
#: Smallest edge of a feature map at the bottleneck: an axis is pooled only while it has >= 2x this (nnU-Net).
MIN_FEATURE_MAP = 4
#: Deepest UNet++ planned (its decoder grows with the square of the depth).
MAX_DEPTH = 5
#: A batch covers at most this fraction of the dataset's voxels (nnU-Net's guard against overfitting).
DATASET_FRACTION = 0.05
#: Fewest patches per step.
MIN_BATCH = 2
#: Fewest optimiser steps a budget should hold: the hand-tuned hippocampus run reached 0.860 mean Dice after about
#: 1,100 steps and 0.873 after 2,300; below this, patches and batches shrink before steps do.
MIN_STEPS = 2000
#: 3D needs this many slices along the coarse axis (after resampling); fewer: 2D on slices.
MIN_SLICES_3D = 8
#: CT body crop: Hounsfield threshold and margin (voxels at the target spacing); used when the body's bounding box
#: is below 90% of the image.
BODY_CROP = (-500.0, 8, 0.9)
#: MRI crop to the non-zero region (threshold 0), when that region is below 75% of the image (nnU-Net's 3/4).
NONZERO_CROP = (0.0, 0, 0.75)
#: Rotation range of the random affine (radians): all axes, or only in-plane for anisotropic data.
ROTATION = 0.26
#: Largest share of the training time spent validating (sets val_interval).
VAL_SHARE = 0.1
#: An axis has a direction (and is not mirrored) when the foreground classes' order along it is reversed in fewer
#: than this share of the cases: a mirrored patch would show a layout the data never contains.
MIRROR_MIN_REVERSED = 0.05
#: Cases with two foreground classes whose centres differ along an axis (by >= 1 mm) needed to judge its order.
MIRROR_MIN_CASES = 10


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> tuple[list[float],
                                                                                                   int | None]:
    """Median spacing per axis; on an anisotropic axis, the 10th percentile of that axis' spacings instead.

    nnU-Net's rule: the coarsest median axis is anisotropic when its spacing is more than :data:`ANISOTROPY` times
    the finest and its median size is less than 1/:data:`ANISOTROPY` of the smallest other size. Its target then
    comes from the 10th percentile (resampling thick slices to the median would invent detail for most cases), not
    below the other axes' largest spacing.

    Args:
        spacings: per-case spacings (RAS order).
        shapes: per-case shapes (RAS order).

    Returns:
        ``(target spacing, index of the anisotropic axis or None)``.
    """
    sp, sh = np.asarray(spacings, dtype=float), np.asarray(shapes, dtype=float)
    target, size = np.median(sp, axis=0), np.median(sh, axis=0)
    worst = int(np.argmax(target))
    others = [d for d in range(len(target)) if d != worst]
    if not others:
        return target.tolist(), None
    aniso = target[worst] > ANISOTROPY * min(target[others]) and size[worst] * ANISOTROPY < min(size[others])
    if not aniso:
        return [round(float(t), 6) for t in target], None
    low = float(np.percentile(sp[:, worst], 10))
    target[worst] = max(low, float(max(target[others])))
    return [round(float(t), 6) for t in target], worst


def resampled_shape(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]],
                    target: Sequence[float]) -> list[int]:
    """Median shape after resampling every case to ``target`` (MONAI ``Spacing``'s size rule)."""
    sh, sp = np.asarray(shapes, dtype=float), np.asarray(spacings, dtype=float)
    new = np.round((sh - 1) * sp / np.asarray(target, dtype=float) + 1)
    return [int(v) for v in np.median(new, axis=0)]


def pooling(spacing: Sequence[float], patch: Sequence[int], max_depth: int = MAX_DEPTH) -> list[list[int]]:
    """Per-level strides (2 = pooled, 1 = not), nnU-Net's rule.

    At each level, an axis is pooled when it still has at least ``2 * MIN_FEATURE_MAP`` voxels and its current
    spacing is within 2x of the finest current spacing among such axes (so a thick-slice axis waits until the
    in-plane axes have coarsened to its spacing); a lone poolable axis needs ``3 * MIN_FEATURE_MAP`` voxels. Stops
    when no axis qualifies or at ``max_depth`` levels.

    Args:
        spacing: target spacing.
        patch: patch size in voxels.
        max_depth: most levels. Defaults to :data:`MAX_DEPTH`.
    """
    current, size = [float(s) for s in spacing], [float(p) for p in patch]
    levels: list[list[int]] = []
    while len(levels) < max_depth:
        valid = [d for d in range(len(size)) if size[d] >= 2 * MIN_FEATURE_MAP]
        if not valid:
            break
        finest = min(current[d] for d in valid)
        valid = [d for d in valid if current[d] / finest < 2]
        if len(valid) == 1 and size[valid[0]] < 3 * MIN_FEATURE_MAP:
            break
        stride = [2 if d in valid else 1 for d in range(len(size))]
        for d in valid:
            current[d] *= 2
            size[d] = math.ceil(size[d] / 2)
        levels.append(stride)
    return levels


def divisible_patch(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Round each axis up to a multiple of the product of its strides (every pooling then halves it exactly)."""
    out = []
    for d, p in enumerate(patch):
        k = math.prod(int(s[d]) for s in strides) if strides else 1
        out.append(int(math.ceil(p / k) * k))
    return out


def features(depth: int, base: int, cap: int) -> list[int]:
    """UNet++ features: ``base * 2**level`` up to ``cap`` for levels 0..depth, then the last node's (``base``)."""
    return [min(base * 2 ** i, cap) for i in range(depth + 1)] + [base]


@dataclass
class Budget:
    """What one training step may cost.

    Args:
        macs: most forward multiply-accumulates per step (a time budget: seconds per step / seconds per MAC);
            ``inf`` for none.
        activation_bytes: most bytes of activations per step (device memory); ``inf`` for none.
        bytes_per_element: bytes one activation element costs, backward included. Defaults to 5.2 (fp32, with
            30% for concatenations and workspace); 2.6 under CUDA AMP.
    """

    macs: float = math.inf
    activation_bytes: float = math.inf
    bytes_per_element: float = 5.2

    def batch(self, macs_per_patch: float, elements_per_patch: float) -> int:
        """The largest batch within both budgets (may be 0)."""
        by_time = self.macs / macs_per_patch if macs_per_patch > 0 else math.inf
        by_memory = self.activation_bytes / (elements_per_patch * self.bytes_per_element) if elements_per_patch \
            else math.inf
        value = min(by_time, by_memory)
        return 10**6 if math.isinf(value) else int(value)


@dataclass
class PatchChoice:
    """Args:
        patch: patch size (divisible by the strides).
        strides: per-level strides.
        batch: patches per step.
        macs: forward MACs of one patch.
        elements: activation elements of one patch.
        notes: what the search had to give up.
    """

    patch: list[int]
    strides: list[list[int]]
    batch: int
    macs: float
    elements: float
    notes: list[str] = field(default_factory=list)


def choose_patch_and_batch(median_shape: Sequence[int], spacing: Sequence[float], budget: Budget,
                           cost: Callable[[list[int], list[list[int]]], tuple[float, float]],
                           dataset_voxels: float, min_patch: Sequence[int] | None = None) -> PatchChoice:
    """The largest patch (from the median resampled shape down) that fits a batch of :data:`MIN_BATCH` in the
    budget, then the largest batch that fits, capped at :data:`DATASET_FRACTION` of the dataset (nnU-Net's order:
    patch first, then batch).

    A patch too costly is reduced along the axis that is largest relative to the median shape, one pooling
    multiple at a time (nnU-Net's rule), but not below ``min_patch`` (the typical object's extent) or the
    smallest size the network pools at all.

    Args:
        median_shape: median shape at the target spacing.
        spacing: target spacing.
        budget: per-step limits.
        cost: ``(patch, strides) -> (forward MACs, activation elements)`` of one patch.
        dataset_voxels: voxels of the whole training set at the target spacing.
        min_patch: smallest patch wanted. Defaults to None (``2 * MIN_FEATURE_MAP`` per axis).
    """
    floor = [max(2 * MIN_FEATURE_MAP, int(m)) for m in (min_patch or [0] * len(median_shape))]
    floor = [min(f, int(s)) for f, s in zip(floor, median_shape)]
    patch = [max(int(s), 1) for s in median_shape]
    notes: list[str] = []
    while True:
        strides = pooling(spacing, patch)
        if not strides:  # too small to pool: no network to plan (the caller says so)
            return PatchChoice(patch, [], MIN_BATCH, 0.0, 0.0, notes)
        patch = divisible_patch(patch, strides)
        macs, elements = cost(patch, strides)
        batch = budget.batch(macs, elements)
        if batch >= MIN_BATCH:
            break
        steps = [math.prod(int(s[d]) for s in strides) if strides else 1 for d in range(len(patch))]
        ratios = [p / max(s, 1) if p - k >= f else -1.0 for p, s, f, k in zip(patch, median_shape, floor, steps)]
        axis = int(np.argmax(ratios))
        if ratios[axis] < 0:
            notes.append(f"the smallest patch the rules allow ({'x'.join(map(str, patch))}) does not fit "
                         f"{MIN_BATCH} per step in the budget: training will run fewer than {MIN_STEPS} steps "
                         "(more minutes would help)")
            batch = MIN_BATCH
            break
        patch[axis] -= steps[axis]
    cap = max(MIN_BATCH, round(DATASET_FRACTION * dataset_voxels / math.prod(patch)))
    return PatchChoice(patch, strides, int(min(batch, cap)), macs, elements, notes)


def channel_modality(name: str, stats: dict, forced: str = "auto") -> tuple[str, str]:
    """``("ct" | "mri", why)`` for one channel: a declared name says CT or not; else ``forced``; else intensities
    (integer values with the 0.5th percentile below -500: air in Hounsfield units)."""
    upper = name.upper()
    if upper:
        if upper == "CT" or upper.startswith("CT"):
            return "ct", f"declared '{name}'"
        if forced == "auto":
            return "mri", f"declared '{name}' (not CT)"
    if forced in ("ct", "mri"):
        return forced, "--modality"
    if stats.get("integer") and stats["image"]["p00_5"] < -500:
        return "ct", f"guessed from intensities (0.5th percentile {stats['image']['p00_5']:.0f}, integers)"
    return "mri", "guessed from intensities (no air at -1000 HU)"


def normalization(modalities: Sequence[str], channel_stats: Sequence[dict]) -> list[dict]:
    """One scheme per channel: CT clips to its foreground's 0.5-99.5 percentiles and z-scores with the foreground
    mean and std (nnU-Net's CT normalisation); MRI z-scores each case over its non-zero voxels."""
    schemes = []
    for modality, stats in zip(modalities, channel_stats):
        if modality == "ct":
            fg = stats["foreground"]
            schemes.append({"scheme": "clip_zscore", "lower": round(fg["p00_5"], 4), "upper": round(fg["p99_5"], 4),
                            "mean": round(fg["mean"], 4), "std": round(max(fg["std"], 1e-8), 4)})
        else:
            schemes.append({"scheme": "zscore", "nonzero": True})
    return schemes


def foreground_crop(first_modality: str, body_fraction: float, nonzero_fraction: float) -> tuple[float | None, int]:
    """``(crop_threshold, crop_margin)``: CT crops to the body (above -500 HU) and MRI to its non-zero region,
    each only where that region is small enough to pay (:data:`BODY_CROP`, :data:`NONZERO_CROP`); else no crop."""
    threshold, margin, limit = BODY_CROP if first_modality == "ct" else NONZERO_CROP
    fraction = body_fraction if first_modality == "ct" else nonzero_fraction
    return (threshold, margin) if fraction < limit else (None, 0)


def dimensionality(spatial_dims: int, median_shape: Sequence[int], aniso_axis: int | None) -> str:
    """``"2d"`` for 2D images; ``"2d-slices"`` (a 2D network on axial slices of volumes) when the volumes have fewer
    than :data:`MIN_SLICES_3D` slices along an anisotropic axial axis; else ``"3d"``."""
    if spatial_dims == 2:
        return "2d"
    if aniso_axis == 2 and median_shape[2] < MIN_SLICES_3D:
        return "2d-slices"
    return "3d"


def class_order(centroids: Sequence[Mapping[str, Sequence[float]]], axes: int = 3) -> dict[int, tuple[float, int]]:
    """Per axis, how often the foreground classes lie in the reverse of their usual order along it.

    For every pair of foreground classes in a case whose centres of mass differ by at least 1 mm along the axis,
    the order is compared with that pair's order in most cases.

    Args:
        centroids: per case, label id -> centre of mass in mm along the physical axes (the fingerprint's
            ``label_centroid_mm``).
        axes: spatial axes. Defaults to 3.

    Returns:
        axis -> (share of the comparisons in the reverse order, cases compared), for the axes with any comparison.

    Example:
        >>> class_order([{"1": [0.0, 20.0, 0.0], "2": [1.0, 0.0, 0.0]}] * 12)
        {0: (0.0, 12), 1: (0.0, 12)}
    """
    signs: list[dict[tuple[str, str], list[int]]] = [{} for _ in range(axes)]  # per axis, per class pair
    for case in centroids:
        ids = sorted(case, key=int)
        for i, first in enumerate(ids):
            for second in ids[i + 1:]:
                for axis in range(axes):
                    delta = float(case[first][axis]) - float(case[second][axis])
                    if abs(delta) >= 1.0:
                        signs[axis].setdefault((first, second), []).append(1 if delta > 0 else -1)
    out: dict[int, tuple[float, int]] = {}
    for axis, pairs in enumerate(signs):
        if pairs:
            reversed_ = sum(min(v.count(1), v.count(-1)) for v in pairs.values())
            out[axis] = (reversed_ / sum(len(v) for v in pairs.values()), max(len(v) for v in pairs.values()))
    return out


def mirror_axes(dims: str, order: Mapping[int, tuple[float, int]] | None = None) -> list[int]:
    """Axes mirrored in training and by test-time augmentation: every spatial axis, as nnU-Net does, except an axis
    along which the foreground classes keep one order (reversed in fewer than :data:`MIRROR_MIN_REVERSED` of at least
    :data:`MIRROR_MIN_CASES` cases): there a mirrored patch shows a layout the data never has (the hippocampus's head
    in front of its tail; the liver on the patient's right). With one foreground class, or too few cases to judge,
    every axis is mirrored. ``2d-slices`` mirrors the slices' two axes.

    Args:
        dims: ``3d``, ``2d`` or ``2d-slices`` (:func:`dimensionality`).
        order: the classes' order per axis (:func:`class_order`). Defaults to None (no order known).

    Example:
        >>> mirror_axes("3d", class_order([{"1": [0.0, 20.0, 0.0], "2": [1.0, 0.0, 0.0]}] * 12))
        [2]
    """
    axes = [0, 1, 2] if dims == "3d" else [0, 1]
    directed = {a for a, (share, cases) in (order or {}).items()
                if cases >= MIRROR_MIN_CASES and share < MIRROR_MIN_REVERSED}
    return [a for a in axes if a not in directed]


def rotate_range(spatial_dims: int, aniso_axis: int | None) -> list[float]:
    """Random-affine rotation range: about every axis, or only about the anisotropic axis (in-plane)."""
    if spatial_dims == 2:
        return [ROTATION]
    return [ROTATION if aniso_axis is None or d == aniso_axis else 0.0 for d in range(3)]


def samples_per_volume(batch: int, patch: Sequence[int], median_shape: Sequence[int]) -> int:
    """Patches cut from each loaded volume: 2 when a volume holds at least 4 patches and the batch is even (the
    per-volume cost of the random crop is then shared), else 1."""
    holds = math.prod(median_shape) / max(math.prod(patch), 1)
    return 2 if holds >= 4 and batch % 2 == 0 and batch >= 2 else 1


def schedule(minutes: float, startup_s: float, step_s: float, validation_s: float,
             steps_per_epoch: int) -> tuple[int, int, float]:
    """``(epochs, val_interval, predicted training minutes)`` that fit ``minutes``: validation every k epochs with
    k chosen so that validating takes at most :data:`VAL_SHARE` of the time.

    Args:
        minutes: the budget.
        startup_s: start-up and caching before the first step.
        step_s: seconds per training step.
        validation_s: seconds per validation (all validation cases).
        steps_per_epoch: training steps per epoch.
    """
    epoch_s = max(step_s * steps_per_epoch, 1e-6)
    interval = max(1, math.ceil(validation_s / (VAL_SHARE * epoch_s)))
    usable = max(minutes * 60.0 - startup_s - validation_s, 0.0)  # the final validation must fit too
    epochs = max(1, int(usable // (epoch_s + validation_s / interval)))
    interval = min(interval, epochs)
    return epochs, interval, (epochs * epoch_s + epochs // interval * validation_s) / 60.0
