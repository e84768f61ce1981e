"""Export with a bundle config: for checkpoints without a model card, and to override a card's settings.

``pipeline export --bundle B --checkpoint model.pt`` reads the card beside the checkpoint when there is one, and the
bundle's configs (``--config``) and overrides (``--set``) change only what they change with respect to the bundle's
own ``train.json``: ``--set sw_overlap=0.25`` changes the card's overlap and nothing else, and ``--bundle`` alone
changes nothing. Without a card (a checkpoint from elsewhere, or trained before cards), the card is read off the
bundle's objects with :func:`pipeline.deploy.describe_model`, the same function the trainer uses.

Example:
    >>> export_bundle("bundles/unetpp_ct_segmentation", "runs/ct/models/model.pt", "ct.ts",
    ...               overrides={"sw_overlap": 0.25})                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from pipeline.deploy.card import ModelCard, card_from_dict
from pipeline.deploy.describe import describe_model, describe_network
from pipeline.deploy.files import find_card
from pipeline.errors import PipelineError
from pipeline.export.checkpoint import export_model
from pipeline.export.common import ExportResult, check_destination, export_format
from pipeline.export.network import build_network

__all__ = ["bundle_card", "export_bundle", "override_card"]

logger = logging.getLogger(__name__)

def _parser(bundle_dir: Path, configs: Sequence[str], overrides: Mapping | None) -> ConfigParser:
    files = [Path(c) if Path(c).suffix == ".json" and Path(c).is_file() else
             bundle_dir / "configs" / (c if c.endswith(".json") else f"{c}.json") for c in configs]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PipelineError(f"bundle config not found: {', '.join(missing)} (is '{bundle_dir}' a bundle folder?)")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    meta = bundle_dir / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    parser["device"] = "$torch.device('cpu')"
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def _arguments(parser: ConfigParser, key: str) -> str:
    """`` (Class with a=1, b=[2, 3])`` for a component config id, its arguments as resolved where they resolve."""
    config = parser.get(key)
    if not isinstance(config, Mapping) or "_target_" not in config:
        return ""
    shown = []
    for name in (k for k in config if not str(k).startswith("_")):
        try:
            value = parser.get_parsed_content(f"{key}#{name}", instantiate=False)
        except Exception:  # noqa: BLE001 - an argument that does not resolve is shown as written
            value = config[name]
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
        shown.append(f"{name}={text[:60]}")
    return f" ({config['_target_']} with {', '.join(shown)})"


def _built(parser: ConfigParser, key: str) -> object:
    """The config id ``key`` built, or a one-line PipelineError naming it, its arguments and the refusal (the
    innermost error's first line: MONAI wraps a constructor's error in its own)."""
    try:
        return parser.get_parsed_content(key)
    except Exception as exc:  # whatever the configs and --set made the constructors raise
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise PipelineError(f"the bundle config's '{key}' cannot be built{_arguments(parser, key)}: {reason}") \
            from exc


def _optional(parser: ConfigParser, key: str) -> object:
    return _built(parser, key) if key in parser and parser.get(key) is not None else None


def bundle_card(parser: ConfigParser) -> tuple[ModelCard, torch.nn.Module]:
    """The card a parsed bundle config describes, and its network (random weights).

    Args:
        parser: the bundle's configs and overrides, parsed.

    Example:
        >>> card, net = bundle_card(parser)                                                # doctest: +SKIP
        >>> card.target_spacing                                                            # doctest: +SKIP
        [1.5, 1.5, 2.0]
    """
    network = _built(parser, "network_def")
    card = describe_model(network, _built(parser, "preprocessing"), _built(parser, "inferer"),
                          _built(parser, "label_names"), augmentation=_optional(parser, "augmentation"),
                          modality=_optional(parser, "modality"), channels=_optional(parser, "channel_names"),
                          bundle_meta=parser.get("_meta_", {}) or {}, deploy_level=_optional(parser, "deploy_level"))
    return card, network


def _merged(value: Mapping, base: Mapping, changed: Mapping) -> dict:
    """``value`` with each key whose value differs between ``base`` and ``changed`` set as in ``changed``."""
    out = dict(value)
    for key in {*base, *changed}:
        if base.get(key) != changed.get(key):
            if key in changed:
                out[key] = changed[key]
            else:
                out.pop(key, None)
    return out


def _merged_steps(card: ModelCard, base: ModelCard, changed: ModelCard) -> tuple:
    """The card's preprocessing with the overrides' changes of step parameters applied, step by step."""
    def kinds(c: ModelCard) -> list[str]:
        return [s.get("kind") for s in c.preprocessing]

    if base.preprocessing == changed.preprocessing:
        return card.preprocessing
    if kinds(base) == kinds(changed) == kinds(card):
        return tuple(_merged(*steps) for steps in zip(card.preprocessing, base.preprocessing, changed.preprocessing))
    if card.preprocessing == base.preprocessing:
        return changed.preprocessing
    raise PipelineError(f"the overrides change the preprocessing steps {kinds(base)} to {kinds(changed)}, but the "
                        f"model was trained with {kinds(card)}: give the steps through the training's own "
                        "--config/--set, not on top of its model card")


def override_card(card: ModelCard, base: ModelCard, changed: ModelCard) -> ModelCard:
    """``card`` with what differs between ``base`` (the bundle's own config) and ``changed`` (with the extra configs
    and overrides) applied, down to single network arguments, step parameters and window settings; each change is
    logged and the result checked against the card's rules.

    Args:
        card: the training's card.
        base: the card of the bundle's ``train.json`` alone.
        changed: the card of the configs and overrides asked for.

    Raises:
        PipelineError: overrides that add or remove preprocessing steps of a chain the model was trained with
            differently, or a result that breaks a rule of the card.

    Example:
        >>> override_card(card, base, base.replace(inference={"overlap": 0.25})).inference.overlap  # doctest: +SKIP
        0.25
    """
    updates: dict[str, object] = {k: getattr(changed, k) for k in ("labels", "modality", "channels")
                                  if getattr(base, k) != getattr(changed, k)}
    if base.network.args != changed.network.args:
        updates["network"] = {"args": _merged(card.network.args, base.network.args, changed.network.args),
                              "target": changed.network.target or card.network.target}
    if base.preprocessing != changed.preprocessing:
        updates["preprocessing"] = _merged_steps(card, base, changed)
    inference = {f.name: getattr(changed.inference, f.name) for f in dataclasses.fields(changed.inference)
                 if getattr(base.inference, f.name) != getattr(changed.inference, f.name)}
    if inference:
        updates["inference"] = inference
    if base.training.level_choice != changed.training.level_choice:  # a fixed level; the scores are kept
        updates["training"] = {"level_choice": {**card.training.level_choice, **changed.training.level_choice}}
    for name, value in updates.items():
        logger.info("overriding the model card's %s: %s", name, value)
    result = card.replace(**updates) if updates else card
    return card_from_dict(result.to_dict(), "the model card with the overrides")


def export_bundle(bundle_dir: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
                  level: int | None = None, device: str = "cpu", half: bool = False,
                  configs: Sequence[str] = ("train",), overrides: Mapping | None = None,
                  fmt: str | None = None) -> ExportResult:
    """Export a checkpoint with a bundle's configs (see the module docstring).

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        checkpoint: weights (``models/model.pt`` or ``models/checkpoint_latest.pt``).
        out: destination file: ``.ts`` (TorchScript) or ``.onnx`` (ONNX).
        level: inference level; None takes the card's (``deploy_level`` resolved for this checkpoint).
            Defaults to None.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.
        half: fp16 weights (CUDA only). Defaults to False.
        configs: config files combined, e.g. ``("train", "train_2d")``: names of the bundle's configs, or paths
            of other JSON files such as a plan (``("train", "plans/hippo.json")``). Defaults to ``("train",)``.
        overrides: config id -> value, as on the ``monai.bundle`` command line. Defaults to None.
        fmt: ``torchscript``, ``onnx`` or None (the suffix of ``out`` decides). Defaults to None.

    Raises:
        PipelineError: an unknown suffix or format and a destination that cannot be written (both checked first),
            configs or overrides whose objects cannot be built (the config id, its arguments and the reason), or any
            error of the export.
    """
    check_destination(out)
    export_format(out, fmt)
    root = Path(bundle_dir)
    changed, network = bundle_card(_parser(root, configs, overrides))
    existing = find_card(checkpoint)
    if existing is None:
        card = changed
    else:
        base_parser = _parser(root, ("train",), None)
        for key, value in (overrides or {}).items():
            if key in base_parser and base_parser.get(key) == value:
                logger.warning("--set %s=%s is the bundle's own value, so it changes nothing in the model card of %s",
                               key, json.dumps(value), checkpoint)
        card = override_card(existing, bundle_card(base_parser)[0], changed)
        if card.network.target:
            network = build_network(card.network)
            card = card.replace(network=describe_network(network, len(card.labels)))
    return export_model(network, card, checkpoint, out, level=level, device=device, half=half, fmt=fmt)
