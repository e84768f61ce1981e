"""The trained network rebuilt from its model card: class and constructor arguments as the trainer recorded them.

:func:`build_network` serves ``pipeline export``; :func:`network_for_checkpoint` is the ``network_def`` of the
bundles' ``inference.json``, so that ``monai.bundle run inference``, ``ckpt_export`` and ``verify_net_in_out`` build
the network a checkpoint was trained as (overrides included), and the bundle's own when there is no card yet. Only
classes of this package's networks or of MONAI's are built (a card is data; it must not name arbitrary code).

Example:
    >>> net = build_network(read_card("runs/ct/models/model_card.json").network)      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from pipeline.deploy.card import ModelCard, NetworkSpec
from pipeline.deploy.describe import describe_inferer
from pipeline.deploy.files import card_path, find_card
from pipeline.deploy.levels import resolve_level
from pipeline.deploy.steps import describe_transforms
from pipeline.errors import PipelineError

__all__ = ["TRUSTED_PREFIXES", "build_network", "network_for_checkpoint"]

logger = logging.getLogger(__name__)

#: Module prefixes whose classes a card may name.
TRUSTED_PREFIXES = ("pipeline.networks.", "monai.networks.nets.")


def build_network(spec: NetworkSpec, source: str | os.PathLike = "the model card") -> torch.nn.Module:
    """A new network of ``spec``'s class and arguments (random weights), in eval mode.

    Args:
        spec: the card's ``network``.
        source: the card's file, named in errors. Defaults to ``"the model card"``.

    Raises:
        PipelineError: the card names no class (an export from before the card, or a network that does not record
            its arguments), an untrusted or missing class, or arguments the class refuses.

    Example:
        >>> build_network(read_card("runs/ct/models/model_card.json").network).depth      # doctest: +SKIP
        4
    """
    if not spec.target:
        raise PipelineError(f"'{source}': the model card does not name the network's class and arguments (an export "
                            "from before the card, or a network that does not record them): export with --bundle and "
                            "the training's --config/--set")
    module_name, _, name = spec.target.rpartition(".")
    if not spec.target.startswith(TRUSTED_PREFIXES):
        raise PipelineError(f"'{source}': the network must be a class under {' or '.join(TRUSTED_PREFIXES)}, got "
                            f"'{spec.target}'")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise PipelineError(f"'{source}': the network class '{spec.target}' does not exist in this version") \
            from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PipelineError(f"'{source}': the network must be a torch.nn.Module class, got '{spec.target}'")
    try:
        return cls(**dict(spec.args)).eval()
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"'{source}': the network arguments do not build {name}: {exc}") from None


def _check_config(card: ModelCard, source: Path, preprocessing: Iterable[object] | None, inferer: object) -> None:
    """Refuse a config that would feed the model other input than it trained on; warn about other windows."""
    if preprocessing is not None:
        steps = describe_transforms(preprocessing)
        for index, (ours, theirs) in enumerate(itertools.zip_longest(card.preprocessing, steps)):
            if ours != theirs:
                raise PipelineError(f"'{source}': the model was trained with preprocessing step {index} {ours}, this "
                                    f"config prepares {theirs}: give the training's overrides (e.g. --target_spacing, "
                                    "--normalization), or segment with its export (pipeline segment)")
    if inferer is not None:
        info = describe_inferer(inferer)
        if info["kind"] != card.inference.kind:
            raise PipelineError(f"'{source}': the model runs as '{card.inference.kind}' and this config's inferer as "
                                f"'{info['kind']}': combine the configs the training used (e.g. train_2d.json)")
        if list(info["roi_size"]) != list(card.inference.roi_size) or info["overlap"] != card.inference.overlap:
            logger.warning("%s: this config slides %s windows at overlap %g; the model card's are %s at %g (give "
                           "--patch_size and --sw_overlap to match it)", source, list(info["roi_size"]),
                           info["overlap"], list(card.inference.roi_size), card.inference.overlap)


def network_for_checkpoint(checkpoint: str | os.PathLike, network: Callable[[], torch.nn.Module],
                           deploy_level: int | str = "auto", preprocessing: Iterable[object] | None = None,
                           inferer: object = None) -> torch.nn.Module:
    """The network ``checkpoint`` was trained as, at its deployment level.

    Args:
        checkpoint: the weights to be loaded (``models/model.pt``); the card beside them describes the network.
        network: builds the config's network (a ``_mode_: callable`` component), used where there is no card.
        deploy_level: the bundle's ``deploy_level``, resolved by :func:`pipeline.deploy.resolve_level`.
            Defaults to ``"auto"``.
        preprocessing: the config's deterministic transforms; when given, they must prepare images as the card
            records (else the model would see other input than it was trained on). Defaults to None.
        inferer: the config's inferer; when given, it must be of the card's kind (sliding window or slices), and
            other window settings than the card's are logged. Defaults to None.

    Raises:
        PipelineError: the card's network cannot be built, or the config would prepare or run it otherwise.

    Example (inference.json, generated by ``sync-configs``)::

        "network_def": {"_target_": "pipeline.export.network.network_for_checkpoint", "checkpoint": "@ckpt_path",
                        "network": {"_target_": "pipeline.networks.UNetPlusPlus", "_mode_": "callable", ...},
                        "deploy_level": "@deploy_level", "preprocessing": "@preprocessing", "inferer": "@inferer"}
    """
    card = find_card(checkpoint)
    if card is None or not card.network.target:
        net = network()
    else:
        source = card_path(checkpoint)
        _check_config(card, source, preprocessing, inferer)
        net = build_network(card.network, source)
        logger.info("network of %s: %s from its model card", checkpoint, card.network.target.rpartition(".")[2])
    if getattr(net, "depth", None):
        net.level = resolve_level(deploy_level, checkpoint, int(net.depth))
    return net
