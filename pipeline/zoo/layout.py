"""A stand-alone ``inference.json`` whose shared definitions are ``train.json``'s, mechanically.

MONAI's Model Zoo runs ``python -m monai.bundle run --config_file configs/inference.json`` and its CI checks
(``verify_net_in_out``, ``ckpt_export``, ``ConfigWorkflow.check_properties``) with that file alone, so
``inference.json`` must hold the network, the preprocessing and the inferer itself. MONAI configs cannot include
another file (a ``%file#key`` macro is resolved against the current folder, not the config's), so the
definitions are written once, in ``train.json``, and :func:`sync_inference_config` mirrors the keys in
:data:`SHARED_KEYS` into ``inference.json`` ahead of its own keys. One is changed on the way: inference's
``network_def`` builds the network a checkpoint's model card describes
(:func:`pipeline.export.network.network_for_checkpoint`), with train.json's network as the fallback where there is
no card, so that inference after a training with overrides needs no overrides of its own. ``python -m pipeline
sync-configs BUNDLE --check`` fails when the two have drifted; without ``--check`` it rewrites ``inference.json``
(the shipped bundles are generated whole, :mod:`pipeline.zoo.generate`).

Example:
    >>> changed = sync_inference_config("bundles/unetpp_mri_segmentation", check=True)   # doctest: +SKIP
    >>> changed
    []
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.io.atomic import write_text_atomic
from pipeline.io.json_text import dumps_config

__all__ = ["SHARED_KEYS", "dumps_config", "inference_config", "load_config", "sync_inference_config"]

logger = logging.getLogger(__name__)

#: train.json keys that inference needs: paths, device, the hyperparameters of the network and of the
#: preprocessing, the network, the deterministic transform chain and the sliding-window inferer.
SHARED_KEYS = ("imports", "bundle_name", "bundle_root", "ckpt_dir", "output_dir", "dataset_dir", "device", "precision",
               "amp", "num_classes", "label_names", "spatial_dims", "network_dims", "in_channels", "target_spacing",
               "crop_threshold", "crop_margin", "normalization", "patch_size", "num_workers", "features", "strides",
               "deploy_level", "sw_batch_size", "sw_overlap", "network_def", "network", "preprocessing", "inferer")


def load_config(path: Path) -> dict:
    """A bundle config file as a dict, or one line saying why it is not one.

    Args:
        path: the JSON file.

    Raises:
        PipelineError: unreadable, not JSON, or not a JSON object.
    """
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: a bundle config must be readable JSON, got {exc}") from exc
    if not isinstance(config, dict):
        raise PipelineError(f"{path}: a bundle config must be a JSON object, got {type(config).__name__}")
    return config


def _card_network(network_def: Any) -> dict:
    """train.json's ``network_def`` as inference builds it: from the checkpoint's card, else as configured."""
    return {"_desc_": "the network the checkpoint's model card describes (train.json's network_def where there is no "
                      "card), at deploy_level",
            "_target_": "pipeline.export.network.network_for_checkpoint", "checkpoint": "@ckpt_path",
            "network": {**network_def, "_mode_": "callable"}, "deploy_level": "@deploy_level",
            "preprocessing": "@preprocessing", "inferer": "@inferer"}


def inference_config(train: dict, inference: dict) -> dict:
    """``inference.json``: :data:`SHARED_KEYS` from ``train`` (in its order; ``network_def`` card-aware), then
    ``inference``'s own keys.

    Args:
        train: the parsed ``train.json``.
        inference: the parsed ``inference.json`` (its keys other than the shared ones are kept).
    """
    shared = {k: (_card_network(train[k]) if k == "network_def" else train[k]) for k in train if k in SHARED_KEYS}
    return {**shared, **{k: v for k, v in inference.items() if k not in SHARED_KEYS}}


def sync_inference_config(bundle_dir: str | os.PathLike, check: bool = False) -> list[str]:
    """Copy :data:`SHARED_KEYS` from ``configs/train.json`` into ``configs/inference.json``.

    The shared keys come first, in ``train.json``'s order; ``inference.json``'s own keys follow unchanged.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        check: only report; do not write. Defaults to False.

    Returns:
        The shared keys whose value or position differed (empty when in sync).

    Raises:
        PipelineError: a config is missing or not a JSON object, or ``train.json`` lacks a shared key.
    """
    configs = Path(bundle_dir) / "configs"
    train, inference = load_config(configs / "train.json"), load_config(configs / "inference.json")
    missing = [k for k in SHARED_KEYS if k not in train]
    if missing:
        raise PipelineError(f"{configs / 'train.json'}: every shared key must be defined there, missing "
                            f"{', '.join(missing)}")
    synced = inference_config(train, inference)
    shared = [k for k in synced if k in SHARED_KEYS]
    changed = [k for k in shared if inference.get(k) != synced[k]]
    if not changed and [k for k in inference if k in SHARED_KEYS] != shared:
        changed = ["(order)"]
    if changed and not check:
        write_text_atomic(configs / "inference.json", dumps_config(synced) + "\n")
        logger.info("%s: %d shared key(s) copied from train.json: %s", configs / "inference.json", len(changed),
                    ", ".join(changed))
    return changed
