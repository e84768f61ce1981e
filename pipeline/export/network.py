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
import logging
import os
from collections.abc import Callable, Iterable

import torch

from pipeline.deploy.card import CARD_FILE, NetworkSpec
from pipeline.deploy.files import find_card
from pipeline.deploy.levels import resolve_level
from pipeline.deploy.steps import describe_transforms
from pipeline.errors import PipelineError

__all__ = ["TRUSTED_PREFIXES", "build_network", "network_for_checkpoint"]

logger = logging.getLogger(__name__)

#: Module prefixes whose classes a card may name.
TRUSTED_PREFIXES = ("pipeline.networks.", "monai.networks.nets.")


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    """A new network of ``spec``'s class and arguments (random weights), in eval mode.

    Args:
        spec: the card's ``network``.

    Raises:
        PipelineError: the card names no class (an export from before the card), an untrusted or missing class, or
            arguments the class refuses.
    """
    if not spec.target:
        raise PipelineError("the model card does not name the network's class and arguments (it was migrated from an "
                            "export made before the card): export with --bundle and the training's --config/--set")
    module_name, _, name = spec.target.rpartition(".")
    if not spec.target.startswith(TRUSTED_PREFIXES):
        raise PipelineError(f"the model card's network must be a class under {' or '.join(TRUSTED_PREFIXES)}, got "
                            f"'{spec.target}'")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise PipelineError(f"the model card's network class '{spec.target}' does not exist in this version") \
            from None
    try:
        return cls(**dict(spec.args)).eval()
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"the model card's network arguments do not build {name}: {exc}") from None


def network_for_checkpoint(checkpoint: str | os.PathLike, network: Callable[[], torch.nn.Module],
                           deploy_level: int | str = "auto", preprocessing: Iterable[object] | None = None) -> \
        torch.nn.Module:
    """The network ``checkpoint`` was trained as, at its deployment level.

    Args:
        checkpoint: the weights to be loaded (``models/model.pt``); the card beside them describes the network.
        network: builds the config's network (a ``_mode_: callable`` component), used where there is no card.
        deploy_level: the bundle's ``deploy_level``, resolved by :func:`pipeline.deploy.resolve_level`.
            Defaults to ``"auto"``.
        preprocessing: the config's deterministic transforms; when given, they must prepare images as the card
            records (else the model would see other input than it was trained on). Defaults to None.

    Raises:
        PipelineError: the card's network cannot be built, or the preprocessing differs from the card's.
    """
    card = find_card(checkpoint)
    if card is None or not card.network.target:
        net = network()
    else:
        net = build_network(card.network)
        logger.info("network of %s: %s from its model card", checkpoint, card.network.target.rpartition(".")[2])
        if preprocessing is not None:
            steps = describe_transforms(preprocessing)
            if steps != [dict(s) for s in card.preprocessing]:
                raise PipelineError(
                    f"'{os.path.join(os.path.dirname(str(checkpoint)), CARD_FILE)}': the model was trained with "
                    f"preprocessing {list(card.preprocessing)}, this config prepares {steps}: give the training's "
                    "overrides (e.g. --target_spacing, --normalization) or segment with the exported model "
                    "(pipeline segment)")
    if getattr(net, "depth", None):
        net.level = resolve_level(deploy_level, checkpoint, int(net.depth))
    return net
