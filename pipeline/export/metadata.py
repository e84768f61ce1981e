"""What a deployment needs to know, read off the bundle's own objects (one source of truth).

The preprocessing a deployed model must repeat is not restated anywhere: :func:`deployment_metadata` walks the
instantiated transform chain of the bundle config (``@preprocessing``) and the inferer (``@inferer``) and
records each step's parameters through :mod:`pipeline.inference.steps` (orientation, target spacing, foreground
crop, per-channel intensity normalisation), with the ROI size, overlap and blending. A transform without a
deployable step stops the export with an error naming it, rather than deploying a model whose input would be
prepared differently.

Example:
    >>> meta = deployment_metadata(parser.get_parsed_content("preprocessing"),       # doctest: +SKIP
    ...                            parser.get_parsed_content("inferer"), labels={0: "background", 1: "liver"})
    >>> meta["preprocessing"]["target_spacing"]                                      # doctest: +SKIP
    [1.5, 1.5, 2.0]
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Iterable, Mapping
from typing import Any

import monai
import torch
from monai.inferers import SliceInferer, SlidingWindowInferer

from pipeline import __version__
from pipeline.inference.steps import describe_transforms

__all__ = ["METADATA_VERSION", "deployment_metadata"]

#: Version of the metadata layout (bump when keys change meaning). 2: per-channel ``normalize`` steps.
METADATA_VERSION = 2


def _preprocessing(transforms: Iterable[object]) -> dict[str, Any]:
    steps = describe_transforms(transforms)
    orient = next((s["axcodes"] for s in steps if s["kind"] == "orient"), None)
    spacing = next((s["pixdim"] for s in steps if s["kind"] == "resample"), None)
    return {"orientation": orient, "target_spacing": spacing, "steps": steps}


def _inferer(inferer: object) -> dict[str, Any]:
    if not isinstance(inferer, SlidingWindowInferer):
        raise ValueError(f"cannot export with inferer {type(inferer).__name__}: SlidingWindowInferer or "
                         "SliceInferer expected")
    info = {"kind": "slice" if isinstance(inferer, SliceInferer) else "sliding_window",
            "roi_size": [int(r) for r in inferer.roi_size], "overlap": float(inferer.overlap),
            "mode": str(inferer.mode), "sigma_scale": float(inferer.sigma_scale)}
    if isinstance(inferer, SliceInferer):
        info["spatial_dim"] = int(inferer.spatial_dim)
    return info


def deployment_metadata(preprocessing: Iterable[object], inferer: object, labels: Mapping, *,
                        network: torch.nn.Module | None = None, modality: str = "", channels: Iterable[str] = (),
                        bundle: Mapping | None = None, level: int | None = None,
                        mirror_axes: Iterable[int] | None = None, extra: Mapping | None = None) -> dict[str, Any]:
    """The JSON-able description embedded next to an exported model.

    Args:
        preprocessing: the bundle's instantiated deterministic transforms (``@preprocessing``).
        inferer: the bundle's inferer (``@inferer``).
        labels: label id -> name.
        network: the network, for depth, dimensions and channel counts. Defaults to None.
        modality: e.g. ``"CT"``, ``"MR"``. Defaults to ``""``.
        channels: input channel names in order. Defaults to ``()``.
        bundle: bundle metadata (``name``, ``version``). Defaults to None.
        level: the inference level exported. Defaults to None (the network's).
        mirror_axes: the spatial axes the training mirrored (the bundle's ``mirror_axes``), which test-time
            augmentation mirrors too; recorded as ``inference.mirror_axes``. Defaults to None (not recorded:
            every axis).
        extra: merged in last (e.g. the checkpoint path, metrics). Defaults to None.

    Raises:
        ValueError: a transform or inferer without a deployment equivalent.
    """
    meta: dict[str, Any] = {
        "metadata_version": METADATA_VERSION,
        "labels": {str(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))},
        "modality": modality,
        "channels": list(channels),
        "preprocessing": _preprocessing(preprocessing),
        "inference": _inferer(inferer),
        "bundle": {"name": (bundle or {}).get("name", ""), "version": (bundle or {}).get("version", "")},
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "pipeline": __version__,
                     "python": platform.python_version()},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if network is not None:
        meta["network"] = {"class": type(network).__name__, "spatial_dims": getattr(network, "spatial_dims", None),
                           "depth": getattr(network, "depth", None),
                           "in_channels": _first_in_channels(network),
                           "out_channels": len(meta["labels"])}
        meta["inference"]["level"] = int(level if level is not None else getattr(network, "level", 0) or 0)
    elif level is not None:
        meta["inference"]["level"] = int(level)
    if mirror_axes is not None:
        meta["inference"]["mirror_axes"] = sorted({int(a) for a in mirror_axes})
    if extra:
        meta.update(dict(extra))
    return meta


def _first_in_channels(network: torch.nn.Module) -> int | None:
    for module in network.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return int(module.in_channels)
    return None
