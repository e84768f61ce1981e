"""The preprocessing steps a deployed model repeats: each defined once, from training transform to deployment.

A step class names the training transforms it mirrors (by class name, so this module needs no MONAI), reads its
parameters off such an instantiated transform (:meth:`Step.describe`, used by the export), and applies them to
a plain tensor with the exact inverse for the network's output (:meth:`Step.apply`, :meth:`Step.invert`, used
by the batch job). Adding a transform to the deployable set is one class here; the model card and the
batch job both read this registry. Intensity schemes and the foreground test are not copies either: the
training transforms (``NormalizeChannelsd``, ``ForegroundThreshold``) and these steps call the same functions.

Geometry follows MONAI: ``Orientationd`` (nibabel's orientation maths), ``Spacingd`` (output size
``round((n - 1) * s_in / s_out + 1)``, linear sampling at voxel positions, border padding), ``CropForegroundd``
(bounding box of the foreground over all channels plus a margin, clipped to the image). Tests compare every step
with MONAI on real and synthetic images, and the inverse with ``Invertd``.

Example:
    >>> steps = describe_transforms(parser.get_parsed_content("preprocessing"))   # doctest: +SKIP
    >>> [s["kind"] for s in steps]                                                 # doctest: +SKIP
    ['orient', 'resample', 'normalize']
    >>> build_steps(steps)[0].apply(image, affine)                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from pipeline.deploy.foreground import ForegroundThreshold
from pipeline.deploy.intensity import apply_scheme, check_schemes, normalize_channels
from pipeline.io.integrity import check_fits

__all__ = ["NEUTRAL", "STEPS", "Step", "build_steps", "describe_transforms", "resample_axes"]

#: Training transforms with no effect on the values a deployment must reproduce.
NEUTRAL = ("LoadImaged", "EnsureChannelFirstd", "EnsureTyped")
#: kind -> step class (filled by subclassing :class:`Step`).
STEPS: dict[str, type[Step]] = {}

Array = torch.Tensor


class Step:
    """One deployable preprocessing step.

    Args:
        params: the step's parameters as recorded in a model card (``kind`` may be included).
    """

    kind: ClassVar[str] = ""
    #: class names of the training transforms this step reproduces
    mirrors: ClassVar[tuple[str, ...]] = ()
    #: parameters a recorded step must hold, with the types their values must have
    required: ClassVar[tuple[tuple[str, tuple[type, ...]], ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        STEPS[cls.kind] = cls

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = {k: v for k, v in params.items() if k != "kind"}
        for name, kinds in self.required:
            value = self.params.get(name)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise ValueError(f"preprocessing step '{self.kind}' needs '{name}' as "
                                 f"{' or '.join(k.__name__ for k in kinds)}, got {value!r}")

    @classmethod
    def describe(cls, transform: object) -> dict[str, Any]:
        """The parameters of an instantiated training transform (one of :attr:`mirrors`).

        Raises:
            ValueError: a setting of that transform that this step cannot reproduce.
        """
        raise NotImplementedError

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        """``(C, *spatial)`` tensor and its RAS affine -> (tensor, affine, undo info or None)."""
        raise NotImplementedError

    def invert(self, probs: Array, info: Any) -> Array:
        """Map ``(K, *spatial)`` probabilities back through this step (only steps that return undo info)."""
        return probs


def _apply_ornt(x: Array, transform: np.ndarray) -> Array:
    """nibabel's ``apply_orientation`` on the spatial axes of a channel-first tensor."""
    for axis, flip in enumerate(transform[:, 1]):
        if flip == -1:
            x = torch.flip(x, dims=[axis + 1])
    order = [0] + [int(np.where(transform[:, 0] == k)[0][0]) + 1 for k in range(transform.shape[0])]
    return x.permute(order)


class Orient(Step):
    """Reorient to ``axcodes`` (``Orientationd``)."""

    kind, mirrors = "orient", ("Orientationd",)
    required = (("axcodes", (str,)),)

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        return {"axcodes": str(transform.ornt_transform.axcodes)}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        dims = x.ndim - 1
        codes = tuple(self.params["axcodes"])[:dims]
        current = io_orientation(affine)[:dims]  # 2D grids carry a unit third axis in their 4x4 affine
        transform = ornt_transform(current, axcodes2ornt(codes))
        undo = ornt_transform(axcodes2ornt(codes), current)
        shape = tuple(x.shape[1:])
        full = np.vstack([transform, [[dims, 1.0]] * (3 - dims)]) if dims < 3 else transform
        return _apply_ornt(x, transform), affine @ inv_ornt_aff(full, (*shape, 1)[:3]), undo

    def invert(self, probs: Array, info: Any) -> Array:
        return _apply_ornt(probs, info)


def resample_axes(x: Array, ratios: list[float], out_shape: list[int]) -> Array:
    """Linear sampling of a channel-first tensor at positions ``i * ratio`` (voxel units) along each spatial axis,
    border-padded, to ``out_shape``: MONAI ``Spacing``'s grid for an axis-aligned zoom."""
    dims = x.ndim - 1
    in_shape = list(x.shape[1:])
    if in_shape == list(out_shape) and all(abs(r - 1.0) < 1e-9 for r in ratios):
        return x
    axes = []
    for d in range(dims):
        pos = torch.arange(out_shape[d], dtype=torch.float64) * ratios[d]
        axes.append((pos * (2.0 / max(in_shape[d] - 1, 1)) - 1.0).float())
    grids = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack(list(reversed(grids)), dim=-1)[None]  # grid_sample wants (x=last axis, ..., first axis)
    return F.grid_sample(x[None].float(), grid.to(x.device), mode="bilinear", padding_mode="border",
                         align_corners=True)[0]


def _mm(spacing: np.ndarray) -> str:
    return "x".join(f"{v:.3g}" for v in spacing)


class Resample(Step):
    """Resample to ``pixdim`` mm (``Spacingd``, linear for the image)."""

    kind, mirrors = "resample", ("Spacingd",)
    required = (("pixdim", (list, tuple)),)

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        mode = str(transform.mode[0])
        if mode not in ("bilinear", "linear", "GridSampleMode.BILINEAR", "1"):
            raise ValueError(f"cannot export Spacingd with image mode '{mode}': deployment resamples linearly")
        return {"pixdim": [float(v) for v in transform.spacing_transform.pixdim], "mode": "bilinear"}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        dims = x.ndim - 1
        spacing_in = np.linalg.norm(affine[:3, :3], axis=0)[:dims]
        spacing_out = np.asarray(self.params["pixdim"], dtype=float)[:dims]
        shape_in = list(x.shape[1:])
        shape_out = [int(np.round((n - 1) * si / so + 1.0)) for n, si, so in zip(shape_in, spacing_in, spacing_out)]
        ratios = (spacing_out / spacing_in).tolist()
        # the resampled channels and the sampling grid (one coordinate per axis), before they are allocated
        check_fits(float(np.prod(shape_out, dtype=np.float64)) * 4 * (x.shape[0] + dims), None,
                   f"resampling the {'x'.join(map(str, shape_in))} grid at {_mm(spacing_in)} mm to "
                   f"{_mm(spacing_out)} mm (a {'x'.join(map(str, shape_out))} grid)")
        new_affine = affine.copy()
        new_affine[:3, :dims] = affine[:3, :dims] / spacing_in * spacing_out
        return resample_axes(x, ratios, shape_out), new_affine, (shape_in, ratios)

    def invert(self, probs: Array, info: Any) -> Array:
        shape_in, ratios = info
        return resample_axes(probs, [1.0 / r for r in ratios], list(shape_in))


class CropForeground(Step):
    """Crop to the bounding box of ``x > threshold`` (any channel) plus ``margin`` (``CropForegroundd`` with a
    :class:`~pipeline.transforms.ForegroundThreshold`); the inverse pads with zeros."""

    kind, mirrors = "crop_foreground", ("CropForegroundd",)

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        cropper = transform.cropper
        if not isinstance(cropper.select_fn, ForegroundThreshold):
            raise ValueError(f"cannot export CropForegroundd with select_fn {cropper.select_fn!r}: use "
                             "pipeline.transforms.ForegroundThreshold so the threshold can be recorded")
        if not cropper.allow_smaller or np.any(np.asarray(cropper.k_divisible) != 1):
            raise ValueError("cannot export CropForegroundd with allow_smaller=False or k_divisible > 1: "
                             "deployment crops inside the image only")
        margin = cropper.margin
        return {"threshold": cropper.select_fn.threshold,
                "margin": [int(m) for m in margin] if isinstance(margin, (list, tuple)) else int(margin)}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        mask = ForegroundThreshold(self.params.get("threshold"))(x).any(dim=0)
        shape = list(x.shape[1:])
        margin = self.params.get("margin", 0)
        margins = list(margin) if isinstance(margin, (list, tuple)) else [int(margin)] * len(shape)
        if not bool(mask.any()):  # nothing above the threshold: keep the whole image
            return x, affine, None
        start, end = [], []
        for d in range(len(shape)):
            other = tuple(k for k in range(len(shape)) if k != d)
            idx = torch.nonzero(mask.any(dim=other) if other else mask).flatten()
            start.append(max(int(idx[0]) - margins[d], 0))
            end.append(min(int(idx[-1]) + 1 + margins[d], shape[d]))
        if start == [0] * len(shape) and end == shape:
            return x, affine, None
        new_affine = affine.copy()
        new_affine[:3, 3] = affine[:3, : len(shape)] @ np.asarray(start, dtype=float) + affine[:3, 3]
        return x[(slice(None), *(slice(s, e) for s, e in zip(start, end)))], new_affine, (shape, start, end)

    def invert(self, probs: Array, info: Any) -> Array:
        shape, start, end = info
        out = torch.zeros((probs.shape[0], *shape), dtype=probs.dtype, device=probs.device)
        out[(slice(None), *(slice(s, e) for s, e in zip(start, end)))] = probs
        return out


class Normalize(Step):
    """Per-channel intensity schemes (``NormalizeChannelsd``; see :mod:`pipeline.deploy.intensity`)."""

    kind, mirrors = "normalize", ("NormalizeChannelsd",)
    required = (("schemes", (list, tuple, dict)),)

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        self.schemes = check_schemes(self.params["schemes"])

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        return {"schemes": [dict(s) for s in transform.schemes]}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        return normalize_channels(x, self.schemes), affine, None


class ZScore(Step):
    """MONAI ``NormalizeIntensityd`` (per-case z-score), for bundles that use it directly."""

    kind, mirrors = "zscore", ("NormalizeIntensityd",)

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        n = transform.normalizer
        if n.subtrahend is not None or n.divisor is not None:
            raise ValueError("cannot export NormalizeIntensityd with a fixed subtrahend/divisor: use "
                             "pipeline.transforms.NormalizeChannelsd with a clip_zscore scheme")
        return {"nonzero": bool(n.nonzero), "channel_wise": bool(n.channel_wise)}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        scheme = {"scheme": "zscore", "nonzero": bool(self.params.get("nonzero", False))}
        if self.params.get("channel_wise", False):
            return normalize_channels(x, scheme), affine, None
        return apply_scheme(x.float(), scheme), affine, None


class Window(Step):
    """MONAI ``ScaleIntensityRanged`` (a fixed linear window, e.g. Hounsfield units to [0, 1])."""

    kind, mirrors = "window", ("ScaleIntensityRanged",)
    required = tuple((name, (int, float)) for name in ("a_min", "a_max", "b_min", "b_max"))

    @classmethod
    def describe(cls, transform: Any) -> dict[str, Any]:
        s = transform.scaler
        return {"a_min": float(s.a_min), "a_max": float(s.a_max), "b_min": float(s.b_min), "b_max": float(s.b_max),
                "clip": bool(s.clip)}

    def apply(self, x: Array, affine: np.ndarray) -> tuple[Array, np.ndarray, Any]:
        return apply_scheme(x.float(), {"scheme": "window", **self.params}), affine, None


def _names(transform: object) -> list[str]:
    return [c.__name__ for c in type(transform).__mro__]


def describe_transforms(transforms: Iterable[object]) -> list[dict[str, Any]]:
    """``[{"kind": ..., **params}, ...]`` for an instantiated training chain (neutral transforms skipped).

    Raises:
        ValueError: a transform with no deployable step, naming it and the supported ones.
    """
    steps = []
    for t in transforms:
        names = _names(t)
        if any(n in NEUTRAL for n in names):
            continue
        step = next((cls for cls in STEPS.values() if any(n in cls.mirrors for n in names)), None)
        if step is None:
            supported = ", ".join(m for cls in STEPS.values() for m in cls.mirrors)
            raise ValueError(f"cannot export a model whose preprocessing uses {type(t).__name__}: it has no "
                             f"deployment equivalent in pipeline.deploy.steps (supported: {supported})")
        steps.append({"kind": step.kind, **step.describe(t)})
    return steps


def build_steps(described: Iterable[Mapping[str, Any]]) -> list[Step]:
    """Step objects from recorded step dicts.

    Args:
        described: the steps as a model card records them.

    Raises:
        ValueError: a kind this version does not know (the model came from a newer pipeline), or a step without a
            parameter it needs.

    Example:
        >>> [type(s).__name__ for s in build_steps([{"kind": "orient", "axcodes": "RAS"}])]
        ['Orient']
    """
    out = []
    for params in described:
        kind = params.get("kind")
        if kind not in STEPS:
            raise ValueError(f"the preprocessing step '{kind}' is not one this pipeline knows ({', '.join(STEPS)}): "
                             "the model comes from a newer pipeline; upgrade to use it")
        out.append(STEPS[kind](params))
    return out
