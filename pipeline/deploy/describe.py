"""A model card read off the objects a training actually ran: the network, the transforms, the inferer.

Nothing is restated: the network's class and constructor arguments come from the network (``init_args``), each
preprocessing step's parameters from the instantiated transform (:func:`pipeline.deploy.steps.describe_transforms`),
the window settings from the inferer, and the mirror axes from the flip transforms of the augmentation, as the
target spacing comes from ``Spacingd``. Classes are recognised by name, so this module needs no MONAI.

Example:
    >>> card = describe_model(parser.get_parsed_content("network_def"),                # doctest: +SKIP
    ...                       parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer"),
    ...                       {"0": "background", "1": "liver"},
    ...                       augmentation=parser.get_parsed_content("augmentation"))
    >>> card.inference.mirror_axes                                                      # doctest: +SKIP
    (0, 1, 2)
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from pipeline import __version__
from pipeline.deploy.card import InferenceSettings, ModelCard, NetworkSpec, TrainingRecord, card_from_dict
from pipeline.deploy.steps import describe_transforms

__all__ = ["describe_inferer", "describe_model", "describe_network", "mirror_axes", "network_inputs"]


def _names(obj: object) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def describe_inferer(inferer: Any) -> dict[str, Any]:
    """The window settings of a MONAI ``SlidingWindowInferer`` or ``SliceInferer`` (wrappers with an ``inferer``
    attribute, such as :class:`pipeline.training.AutocastInferer`, are looked through).

    Args:
        inferer: the bundle's inferer.

    Raises:
        ValueError: another kind of inferer (it has no deployment equivalent).
    """
    while "SlidingWindowInferer" not in _names(inferer) and hasattr(inferer, "inferer"):
        inferer = inferer.inferer
    if "SlidingWindowInferer" not in _names(inferer):
        raise ValueError(f"cannot deploy a model with inferer {type(inferer).__name__}: SlidingWindowInferer or "
                         "SliceInferer expected")
    info = {"kind": "slice" if "SliceInferer" in _names(inferer) else "sliding_window",
            "roi_size": tuple(int(r) for r in inferer.roi_size), "overlap": float(inferer.overlap),
            "mode": str(getattr(inferer.mode, "value", inferer.mode)), "sigma_scale": float(inferer.sigma_scale),
            "sw_batch_size": int(inferer.sw_batch_size)}
    if info["kind"] == "slice":
        info["spatial_dim"] = int(inferer.spatial_dim)
    return info


def mirror_axes(transforms: Iterable[object], spatial_dims: int) -> tuple[int, ...]:
    """The spatial axes the random flips of ``transforms`` mirror (``RandFlipd`` with its ``spatial_axis``,
    ``RandAxisFlipd``: every axis), sorted; ``()`` when nothing is flipped.

    Args:
        transforms: the training chain (disabled transforms are not in it).
        spatial_dims: the network's spatial dimensions (a flip of every axis means these).

    Example:
        >>> from monai.transforms import RandFlipd                                        # doctest: +SKIP
        >>> mirror_axes([RandFlipd("image", prob=0.5, spatial_axis=0)], 3)                # doctest: +SKIP
        (0,)
    """
    axes: set[int] = set()
    for t in transforms:
        names = _names(t)
        if float(getattr(t, "prob", 1.0)) <= 0:
            continue
        if names & {"RandAxisFlipd", "RandAxisFlip"}:
            axes.update(range(spatial_dims))
        elif names & {"RandFlipd", "RandFlip"}:
            axis = t.flipper.spatial_axis
            axes.update(range(spatial_dims) if axis is None else
                        [int(axis)] if isinstance(axis, int) else [int(a) for a in axis])
    return tuple(sorted(a % spatial_dims for a in axes))


def _first_conv(network: torch.nn.Module) -> torch.nn.Module | None:
    return next((m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))), None)


def describe_network(network: torch.nn.Module, out_channels: int) -> NetworkSpec:
    """Class, constructor arguments (``network.init_args``, as :class:`pipeline.networks.UNetPlusPlus` records
    them) and shape of a network (a ``DistributedDataParallel`` wrapper is looked through).

    Args:
        network: the trained network.
        out_channels: its classes (the labels), where the network does not say.

    Example:
        >>> describe_network(UNetPlusPlus(3, 1, 3, features=(4, 4, 8, 8, 16, 4)), 3).depth  # doctest: +SKIP
        4
    """
    net = getattr(network, "module", network)
    conv = _first_conv(net)
    args = dict(getattr(net, "init_args", {}) or {})
    return NetworkSpec(target=f"{type(net).__module__}.{type(net).__qualname__}" if args else "", args=args,
                       spatial_dims=int(getattr(net, "spatial_dims", 0) or (conv.weight.ndim - 2 if conv else 3)),
                       in_channels=int(conv.in_channels) if conv is not None else 1,
                       out_channels=int(args.get("out_channels", out_channels)),
                       depth=int(net.depth) if getattr(net, "depth", None) else None)


def network_inputs(bundle_meta: Mapping | None) -> tuple[str, list[str]]:
    """(modality, channel names) declared in a bundle's ``metadata.json`` (``network_data_format.inputs.image``).

    Args:
        bundle_meta: the bundle metadata (``@_meta_``), or None.

    Example:
        >>> network_inputs({"network_data_format": {"inputs": {"image": {"modality": "MR",
        ...                                                               "channel_def": {"0": "T1"}}}}})
        ('MR', ['T1'])
    """
    image = ((bundle_meta or {}).get("network_data_format") or {}).get("inputs", {}).get("image", {})
    channels = [str(v) for _, v in sorted((image.get("channel_def") or {}).items(), key=lambda kv: int(kv[0]))]
    return str(image.get("modality", "") or ""), channels


def _versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return {"torch": torch.__version__, "monai": version("monai"), "pipeline": __version__,
            "python": platform.python_version()}


def describe_model(network: torch.nn.Module, preprocessing: Iterable[object], inferer: Any, labels: Mapping, *,
                   augmentation: Iterable[object] | None = None, modality: str | None = None,
                   channels: Iterable[str] | None = None, bundle_meta: Mapping | None = None,
                   deploy_level: int | str | None = None) -> ModelCard:
    """The card of a model from the objects that train it (the training record is filled in by the trainer).

    Args:
        network: the network (its class, arguments, depth and channels are recorded).
        preprocessing: the instantiated deterministic transforms (``@preprocessing``).
        inferer: the validation/inference inferer (``@inferer``).
        labels: label id -> name.
        augmentation: the instantiated random transforms, whose flips give the mirror axes. Defaults to None (not
            known: test-time augmentation then mirrors every axis).
        modality: e.g. ``CT``; None takes ``bundle_meta``'s. Defaults to None.
        channels: input channel names; None takes ``bundle_meta``'s. Defaults to None.
        bundle_meta: the bundle's metadata (``name``, ``version``, ``network_data_format``). Defaults to None.
        deploy_level: the bundle's ``deploy_level``: a level, or ``auto`` (the full network until the level is
            chosen from validation). Defaults to None (the full network).

    Raises:
        ValueError: a transform or inferer without a deployment equivalent, or a bad level.
    """
    names = {str(k): str(v) for k, v in sorted(dict(labels).items(), key=lambda kv: int(kv[0]))}
    spec = describe_network(network, len(names))
    meta_modality, meta_channels = network_inputs(bundle_meta)
    level = None if deploy_level is None or isinstance(deploy_level, str) else int(deploy_level)
    if isinstance(deploy_level, str) and deploy_level.strip().lower() != "auto":
        raise ValueError(f"deploy_level must be 'auto' or a level between 1 and {spec.depth}, got '{deploy_level}'")
    info = describe_inferer(inferer)
    flips = None if augmentation is None else mirror_axes(augmentation, spec.spatial_dims)
    card = ModelCard(
        labels=names, network=spec, preprocessing=tuple(describe_transforms(preprocessing)),
        inference=InferenceSettings(**info, level=level, mirror_axes=flips),
        modality=str(modality if modality is not None else meta_modality),
        channels=tuple(str(c) for c in (channels if channels is not None else meta_channels)),
        training=TrainingRecord(level_choice={"rule": "fixed" if level is not None else "auto"}),
        bundle={key: str((bundle_meta or {}).get(key, "")) for key in ("name", "version")},
        versions=_versions())
    return card_from_dict(card.to_dict(), f"the card of {card.bundle['name'] or type(network).__name__}")  # its rules
