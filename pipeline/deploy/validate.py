"""The rules a model card keeps, checked on the parsed JSON before the card is built (see :mod:`pipeline.deploy.card`).

Each broken rule is one line: ``'<file>': model card: <rule>, got <value>``, so that a damaged or hand-edited model
is refused when it is loaded, not halfway through a batch (or with label maps under wrong names).

Example:
    >>> check_card_dict({"labels": {"0": "background", "1": "liver"}, "network": {"out_channels": 2}}, "ct.ts")
    >>> check_card_dict({"labels": {"0": "background"}, "network": {"out_channels": 2}}, "ct.ts")
    Traceback (most recent call last):
    ...
    ValueError: 'ct.ts': model card: there must be as many labels as output channels (2), got ["0"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["EXPORT_FORMATS", "check_card_dict", "fail"]

#: The formats an exported file may have (the card's ``export.format``).
EXPORT_FORMATS = ("torchscript", "onnx")


def fail(src: str | os.PathLike, rule: str, value: Any) -> str:
    """The one-line message of a broken rule."""
    return f"'{src}': model card: {rule}, got {json.dumps(value, default=str)[:120]}"


def _is_int(value: Any) -> bool:
    try:
        return int(str(value)) >= 0 and str(int(str(value))) == str(value).strip()
    except ValueError:
        return False


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _positive_numbers(values: Any, whole: bool = False) -> bool:
    kinds = (int,) if whole else (int, float)
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, kinds) and not isinstance(v, bool) and v > 0 for v in values)


def _check_labels(card: Mapping, src: str | os.PathLike) -> None:
    labels = card.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(fail(src, "'labels' must be an object of label id -> name", labels))
    bad = [k for k in labels if not _is_int(k)]
    if bad:
        raise ValueError(fail(src, "label ids must be whole numbers >= 0", bad))
    outputs = (card.get("network") or {}).get("out_channels")
    if outputs is not None and int(outputs) != len(labels):
        raise ValueError(fail(src, f"there must be as many labels as output channels ({outputs})", sorted(labels)))


def _check_network(card: Mapping, src: str | os.PathLike) -> None:
    net = card.get("network") or {}
    if net.get("spatial_dims") is not None and net["spatial_dims"] not in (2, 3):
        raise ValueError(fail(src, "'network.spatial_dims' must be 2 or 3", net["spatial_dims"]))
    for key, low in (("in_channels", 1), ("out_channels", 1), ("depth", 1)):
        if net.get(key) is not None and not _whole(net[key], low):
            raise ValueError(fail(src, f"'network.{key}' must be a whole number >= {low}", net[key]))
    if not isinstance(net.get("args", {}), Mapping):
        raise ValueError(fail(src, "'network.args' must be an object of constructor arguments", net["args"]))


def _check_inference(card: Mapping, src: str | os.PathLike) -> None:
    info = card.get("inference") or {}
    dims = (card.get("network") or {}).get("spatial_dims")
    roi = info.get("roi_size")
    if roi not in (None, []) and (not _positive_numbers(roi, whole=True) or (dims and len(roi) != int(dims))):
        raise ValueError(fail(src, f"'inference.roi_size' must be whole numbers > 0, one per network axis ({dims})",
                              roi))
    overlap = info.get("overlap", 0.0)
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0.0 <= float(overlap) < 1.0:
        raise ValueError(fail(src, "'inference.overlap' must be >= 0 and < 1", overlap))
    if info.get("kind", "sliding_window") not in ("sliding_window", "slice"):
        raise ValueError(fail(src, "'inference.kind' must be sliding_window or slice", info.get("kind")))
    mirror = info.get("mirror_axes")  # the network's axes (a slice-wise 2D network's are the slices')
    axes = int(dims or 3)
    if mirror is not None and not (isinstance(mirror, list) and all(_whole(a, 0) and a < axes for a in mirror)):
        raise ValueError(fail(src, f"'inference.mirror_axes' must be a list of the network's spatial axes "
                                   f"0..{axes - 1}", mirror))
    depth = (card.get("network") or {}).get("depth")
    level = info.get("level")
    if level is not None and not (_whole(level, 1) and (depth is None or level <= int(depth))):
        raise ValueError(fail(src, f"'inference.level' must be a level between 1 and the depth ({depth})", level))
    if not _whole(info.get("sw_batch_size", 1), 1):
        raise ValueError(fail(src, "'inference.sw_batch_size' must be a whole number >= 1", info["sw_batch_size"]))


def _check_preprocessing(card: Mapping, src: str | os.PathLike) -> None:
    steps = card.get("preprocessing", [])
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
        raise ValueError(fail(src, "'preprocessing' must be a list of step objects", steps))
    for step in steps:
        if step.get("kind") == "resample" and not _positive_numbers(step.get("pixdim")):
            raise ValueError(fail(src, "target spacings must be numbers > 0", step.get("pixdim")))


def _check_postprocessing(card: Mapping, src: str | os.PathLike) -> None:
    post = (card.get("inference") or {}).get("postprocessing")
    if post is None or post == {}:
        return
    if not isinstance(post, Mapping) or not isinstance(post.get("foreground", False), bool):
        raise ValueError(fail(src, "'inference.postprocessing' must be an object with 'foreground' (true or false) and "
                                   "'largest_component_labels'", post))
    ids = post.get("largest_component_labels", [])
    foreground = sorted(int(k) for k in (card.get("labels") or {}) if int(k) > 0)
    if not isinstance(ids, list) or not all(_whole(k, 1) and k in foreground for k in ids) or len(set(ids)) < len(ids):
        raise ValueError(fail(src, f"'inference.postprocessing.largest_component_labels' must be distinct foreground "
                                   f"label ids of the card {foreground}", ids))
    if (post.get("foreground") or ids) and card.get("card_version", 4) < 4:
        raise ValueError(fail(src, "'inference.postprocessing' needs card_version 4", card.get("card_version")))


def _check_records(card: Mapping, src: str | os.PathLike) -> None:
    training = card.get("training") or {}
    for key in ("dataset", "folds", "validation", "level_choice", "postprocessing_choice"):
        if not isinstance(training.get(key, {}), Mapping):
            raise ValueError(fail(src, f"'training.{key}' must be an object", training[key]))
    fmt = (card.get("export") or {}).get("format", "torchscript")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(fail(src, f"'export.format' must be one of {', '.join(EXPORT_FORMATS)}", fmt))
    channels = card.get("channels") or []
    inputs = (card.get("network") or {}).get("in_channels")
    if not isinstance(channels, list) or (channels and inputs is not None and len(channels) != int(inputs)):
        raise ValueError(fail(src, f"'channels' must name each of the {inputs} input channel(s), or none", channels))


def check_card_dict(card: Mapping[str, Any], src: str | os.PathLike) -> None:
    """Raise for the first rule ``card`` (the card's JSON layout) breaks.

    Args:
        card: the parsed card, in the current layout.
        src: the file it came from (named in the message).

    Raises:
        ValueError: the rule broken, in one line.
    """
    for key in ("network", "inference", "training", "bundle", "versions", "export"):
        if card.get(key) is not None and not isinstance(card[key], Mapping):
            raise ValueError(fail(src, f"'{key}' must be an object", card[key]))
    _check_labels(card, src)
    _check_network(card, src)
    _check_inference(card, src)
    _check_preprocessing(card, src)
    _check_postprocessing(card, src)
    _check_records(card, src)
