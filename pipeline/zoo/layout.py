"""A stand-alone ``inference.json`` whose shared definitions are ``train.json``'s, mechanically.

MONAI's Model Zoo runs ``python -m monai.bundle run --config_file configs/inference.json`` and its CI checks
(``verify_net_in_out``, ``ckpt_export``, ``ConfigWorkflow.check_properties``) with that file alone, so
``inference.json`` must hold the network, the preprocessing and the inferer itself. MONAI configs cannot include
another file (a ``%file#key`` macro is resolved against the current folder, not the config's), so the
definitions are written once, in ``train.json``, and :func:`sync_inference_config` mirrors the keys in
:data:`SHARED_KEYS` into ``inference.json`` ahead of its own keys. ``python -m pipeline sync-configs BUNDLE
--check`` (run by the tests) fails when the two have drifted; without ``--check`` it rewrites ``inference.json``.

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

__all__ = ["SHARED_KEYS", "dumps_config", "sync_inference_config"]

logger = logging.getLogger(__name__)

#: train.json keys that inference needs: paths, device, the hyperparameters of the network and of the
#: preprocessing, the network, the deterministic transform chain and the sliding-window inferer.
SHARED_KEYS = ("imports", "bundle_name", "bundle_root", "ckpt_dir", "output_dir", "dataset_dir", "device", "precision",
               "amp", "num_classes", "label_names", "spatial_dims", "in_channels", "target_spacing", "crop_threshold",
               "crop_margin", "normalization", "patch_size", "num_workers", "features", "strides", "deploy_level",
               "sw_batch_size", "sw_overlap", "network_def", "network", "preprocessing", "inferer")

_INLINE_WIDTH = 100


def _inline(value: Any) -> bool:
    """Short lists of scalars (and of such lists) stay on one line, as in the hand-written configs."""
    if not isinstance(value, list):
        return False
    flat = all(not isinstance(v, (dict, list)) or _inline(v) for v in value)
    return flat and len(json.dumps(value)) <= _INLINE_WIDTH


def dumps_config(value: Any, indent: int = 0) -> str:
    """JSON with 4-space indentation and short scalar lists inline (the layout of the bundle configs).

    Args:
        value: a JSON-serialisable config.
        indent: the current indentation (used by the recursion). Defaults to 0.

    Example:
        >>> print(dumps_config({"keys": ["image", "label"]}))
        {
            "keys": ["image", "label"]
        }
    """
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dumps_config(v, indent + 4)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and not _inline(value):
        items = [f"{inner}{dumps_config(v, indent + 4)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def _load(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{path}: a bundle config must be readable JSON, got {exc}") from exc
    if not isinstance(config, dict):
        raise PipelineError(f"{path}: a bundle config must be a JSON object, got {type(config).__name__}")
    return config


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
    train, inference = _load(configs / "train.json"), _load(configs / "inference.json")
    missing = [k for k in SHARED_KEYS if k not in train]
    if missing:
        raise PipelineError(f"{configs / 'train.json'}: every shared key must be defined there, missing "
                            f"{', '.join(missing)}")
    shared = {k: train[k] for k in train if k in SHARED_KEYS}
    synced = {**shared, **{k: v for k, v in inference.items() if k not in SHARED_KEYS}}
    old_order = [k for k in inference if k in SHARED_KEYS]
    changed = [k for k in shared if inference.get(k) != shared[k]]
    if not changed and old_order != list(shared):
        changed = ["(order)"]
    if changed and not check:
        write_text_atomic(configs / "inference.json", dumps_config(synced) + "\n")
        logger.info("%s: %d shared key(s) copied from train.json: %s", configs / "inference.json", len(changed),
                    ", ".join(changed))
    return changed
