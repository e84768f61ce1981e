"""Intensity normalisation schemes, one definition shared by training (MONAI) and deployment (plain torch).

A scheme is a small JSON-able dict, so that a plan or a bundle config declares it and an exported model carries it
verbatim. :func:`normalize_channels` applies one scheme per channel (or one for all); the bundles call it through
:class:`pipeline.transforms.NormalizeChannelsd`, the batch job calls it directly, so both run the same code.

Schemes (``"scheme"`` picks one; the other keys are its parameters):

- ``{"scheme": "zscore", "nonzero": true}``: per-case z-score, mean and population std over the non-zero voxels
  (all voxels with ``nonzero: false``); voxels outside the mask are left as they are; a std of 0 divides by 1.
  MONAI ``NormalizeIntensity(nonzero=..., channel_wise=True)``'s definition; MRI, whose scale differs per scan.
- ``{"scheme": "clip_zscore", "lower": l, "upper": u, "mean": m, "std": s}``: clip to ``[l, u]``, then
  ``(x - m) / s`` with dataset-wide values: nnU-Net's CT normalisation (the foreground's 0.5/99.5 percentiles,
  mean and std, measured by ``python -m pipeline plan``).
- ``{"scheme": "window", "a_min": a, "a_max": b, "b_min": 0, "b_max": 1, "clip": true}``: a fixed linear window,
  MONAI ``ScaleIntensityRange``'s definition (a Hounsfield window).
- ``{"scheme": "none"}``: unchanged.

Example:
    >>> import torch
    >>> x = torch.tensor([[[-1000.0, 0.0, 40.0, 3000.0]]])
    >>> normalize_channels(x, {"scheme": "clip_zscore", "lower": -100, "upper": 200, "mean": 50, "std": 50})
    tensor([[[-3.0000, -1.0000, -0.2000,  3.0000]]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["SCHEMES", "apply_scheme", "check_schemes", "normalize_channels"]

#: Scheme name -> its required parameters.
SCHEMES: dict[str, tuple[str, ...]] = {
    "zscore": (),
    "clip_zscore": ("lower", "upper", "mean", "std"),
    "window": ("a_min", "a_max", "b_min", "b_max"),
    "none": (),
}


def check_schemes(schemes: Mapping | Sequence[Mapping], channels: int | None = None) -> list[dict[str, Any]]:
    """Validate and normalise a scheme (or one per channel) into a list of plain dicts.

    Args:
        schemes: one scheme dict for every channel, or a list with one per channel.
        channels: the number of input channels, when known: a list must have that many entries.

    Raises:
        ValueError: unknown scheme, missing parameter, ``std <= 0`` or ``lower >= upper``, or a list whose
            length is not ``channels``; the message names the rule and the value.
    """
    items = [schemes] if isinstance(schemes, Mapping) else list(schemes)
    if not items or not all(isinstance(s, Mapping) for s in items):
        raise ValueError(f"normalization must be a scheme dict or a non-empty list of them, got {schemes!r}")
    if channels is not None and len(items) not in (1, int(channels)):
        raise ValueError(f"normalization must list one scheme for all channels or one per channel "
                         f"({channels}), got {len(items)}")
    out = []
    for index, scheme in enumerate(items):
        name = scheme.get("scheme")
        if name not in SCHEMES:
            raise ValueError(f"normalization scheme {index} must be one of {', '.join(SCHEMES)}, got {name!r}")
        missing = [k for k in SCHEMES[name] if k not in scheme]
        if missing:
            raise ValueError(f"normalization scheme '{name}' needs {', '.join(missing)}, got {dict(scheme)}")
        if name == "clip_zscore" and (float(scheme["std"]) <= 0 or float(scheme["lower"]) >= float(scheme["upper"])):
            raise ValueError(f"clip_zscore needs std > 0 and lower < upper, got {dict(scheme)}")
        out.append(dict(scheme))
    return out


def _zscore(x: torch.Tensor, nonzero: bool) -> torch.Tensor:
    mask = x != 0 if nonzero else torch.ones_like(x, dtype=torch.bool)
    if not bool(mask.any()):
        return x
    values = x[mask]
    std = float(torch.std(values.double(), unbiased=False))
    mean = float(values.double().mean())
    out = x.clone()
    out[mask] = ((values.double() - mean) / (std if std != 0.0 else 1.0)).to(x.dtype)
    return out


def _window(x: torch.Tensor, a0: float, a1: float, b0: float, b1: float, clip: bool) -> torch.Tensor:
    out = (x - a0) / (a1 - a0) * (b1 - b0) + b0 if a1 != a0 else x - a0
    return torch.clamp(out, min(b0, b1), max(b0, b1)) if clip else out


def apply_scheme(x: torch.Tensor, scheme: Mapping[str, Any]) -> torch.Tensor:
    """Apply one (checked) scheme to a whole float tensor: statistics, where the scheme takes any, over all of it.

    Args:
        x: float tensor of any shape.
        scheme: a scheme dict, as returned by :func:`check_schemes`.
    """
    name = scheme["scheme"]
    if name == "zscore":
        return _zscore(x, bool(scheme.get("nonzero", False)))
    if name == "clip_zscore":
        clipped = torch.clamp(x, float(scheme["lower"]), float(scheme["upper"]))
        return (clipped - float(scheme["mean"])) / float(scheme["std"])
    if name == "window":
        return _window(x, float(scheme["a_min"]), float(scheme["a_max"]), float(scheme["b_min"]),
                       float(scheme["b_max"]), bool(scheme.get("clip", False)))
    return x


def normalize_channels(image: torch.Tensor, schemes: Mapping | Sequence[Mapping]) -> torch.Tensor:
    """Normalise a channel-first image ``(C, *spatial)``, each channel by its scheme.

    Args:
        image: float tensor, channel first.
        schemes: one scheme for all channels, or one per channel (see the module docstring).

    Raises:
        ValueError: invalid schemes, or a per-channel list whose length differs from ``C``.
    """
    items = check_schemes(schemes, channels=image.shape[0])
    x = image if image.is_floating_point() else image.float()
    if len(items) == 1:
        items = items * int(x.shape[0])
    return torch.stack([apply_scheme(x[c], items[c]) for c in range(x.shape[0])])
