"""Export a trained bundle: build its network from the config, load a checkpoint, describe, script, verify.

Example:
    >>> export_bundle("bundles/unetpp_ct_segmentation", "runs/ct/models/model.pt", "ct.ts", level=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from pipeline.errors import PipelineError
from pipeline.export.metadata import deployment_metadata
from pipeline.export.torchscript import ExportResult, export_torchscript
from pipeline.io.checkpoint import load_checkpoint

__all__ = ["bundle_metadata", "export_bundle", "load_network_weights"]

logger = logging.getLogger(__name__)


def load_network_weights(network: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load ``checkpoint`` into ``network``: a bare state dict (``model.pt``), a full training checkpoint
    (``checkpoint_latest.pt``, key ``network``), a MONAI ``{"model": ...}`` dict, or MONAI BasicUNetPlusPlus keys.

    Raises:
        PipelineError: missing, empty, truncated or foreign file, or weights that do not fit the network (the
            mismatch is named).
    """
    path = Path(checkpoint)
    state = load_checkpoint(path)
    if not isinstance(state, Mapping):
        raise PipelineError(f"checkpoint '{path}' must hold a state dict (or a dict with one under 'network', "
                            f"'model' or 'state_dict'), got a {type(state).__name__}")
    for key in ("network", "model", "state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise PipelineError(f"checkpoint '{path}' does not fit the bundle's network (check features, "
                            f"num_classes, spatial_dims overrides): {str(exc).splitlines()[0]}") from exc


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


def bundle_metadata(parser: ConfigParser, network: torch.nn.Module, level: int | None = None,
                    extra: Mapping | None = None) -> dict:
    """Deployment metadata of a parsed bundle config (see :func:`deployment_metadata`)."""
    meta = parser.get("_meta_", {}) or {}
    image = (meta.get("network_data_format", {}).get("inputs", {}).get("image", {}))
    channels = [v for _, v in sorted(image.get("channel_def", {}).items(), key=lambda kv: int(kv[0]))]
    modality = image.get("modality", "")
    if "channel_names" in parser:  # a plan (or any override) describes the input better than metadata.json
        channels = list(parser.get_parsed_content("channel_names"))
    if "modality" in parser:
        modality = str(parser.get_parsed_content("modality"))
    return deployment_metadata(parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer"),
                               parser.get_parsed_content("label_names"), network=network,
                               modality=modality, channels=channels,
                               bundle={"name": meta.get("name", ""), "version": meta.get("version", "")},
                               level=level, extra=extra,
                               mirror_axes=parser.get_parsed_content("mirror_axes") if "mirror_axes" in parser else None)


def export_bundle(bundle_dir: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike,
                  level: int | None = None, device: str = "cpu", half: bool = False,
                  configs: Sequence[str] = ("train",), overrides: Mapping | None = None) -> ExportResult:
    """Export a bundle's trained network to TorchScript with its deployment metadata.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        checkpoint: weights (``models/model.pt`` or ``models/checkpoint_latest.pt``).
        out: destination ``.ts`` file.
        level: inference level; None takes the config's ``deploy_level``: a level, or ``auto`` (the level chosen
            from validation for this checkpoint, recorded in ``levels.json`` beside it; the full network without a
            record). Without that key, the network's own level (its full depth). Defaults to None.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.
        half: fp16 weights (CUDA only). Defaults to False.
        configs: config files combined, e.g. ``("train", "train_2d")``: names of the bundle's configs, or paths
            of other JSON files such as a plan (``("train", "plans/hippo.json")``). Defaults to ``("train",)``.
        overrides: config id -> value, as on the ``monai.bundle`` command line. Defaults to None.
    """
    root = Path(bundle_dir)
    parser = _parser(root, configs, overrides)
    network = parser.get_parsed_content("network_def")
    load_network_weights(network, checkpoint)
    if level is None and "deploy_level" in parser:
        from pipeline.training.levels import resolve_level

        level = resolve_level(parser.get_parsed_content("deploy_level"), checkpoint, network.depth)
    metadata = bundle_metadata(parser, network, level=level,
                               extra={"checkpoint": str(Path(checkpoint).resolve()), "configs": list(configs),
                                      "overrides": json.loads(json.dumps(dict(overrides or {}), default=str))})
    result = export_torchscript(network, out, metadata, level=level, device=device, half=half)
    logger.info("exported %s (level %s) to %s", root.name, result.metadata["inference"]["level"], result.path)
    return result
