"""Check a deployed model's embedded metadata when it is loaded, so that a damaged or hand-edited file is one
line naming it and the rule, not an AttributeError in the middle of a batch (or a label map with wrong names).

Rules: a JSON object; ``labels`` an object of whole-number ids (0 and up) to names, as many as the network has
output channels (where recorded); ``inference.roi_size`` whole numbers > 0, one per spatial axis;
``inference.overlap`` in [0, 1); ``inference.mirror_axes`` spatial axes (0 up to the image's dimensions);
``network.in_channels`` >= 1; target spacings > 0; ``preprocessing.steps`` a
list of objects.

Example:
    >>> check_model_metadata({"labels": {"0": "background", "1": "liver"}}, "ct.ts")
    {'labels': {'0': 'background', '1': 'liver'}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pipeline.errors import PipelineError

__all__ = ["check_model_metadata", "parse_model_metadata"]


def _fail(src: str | os.PathLike, rule: str, value: Any) -> PipelineError:
    return PipelineError(f"'{src}': embedded metadata: {rule}, got {json.dumps(value, default=str)[:120]}")


def _is_int(value: Any) -> bool:
    try:
        return int(str(value)) >= 0 and str(int(str(value))) == str(value).strip()
    except ValueError:
        return False


def _positive_numbers(values: Any, whole: bool = False) -> bool:
    kinds = (int,) if whole else (int, float)
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, kinds) and not isinstance(v, bool) and v > 0 for v in values)


def _check_labels(meta: Mapping, src: str | os.PathLike) -> None:
    labels = meta.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise _fail(src, "'labels' must be an object of label id -> name", labels)
    bad = [k for k in labels if not _is_int(k)]
    if bad:
        raise _fail(src, "label ids must be whole numbers >= 0", bad)
    outputs = (meta.get("network") or {}).get("out_channels")
    if outputs is not None and int(outputs) != len(labels):
        raise _fail(src, f"there must be as many labels as output channels ({outputs})", sorted(labels))


def _check_geometry(meta: Mapping, src: str | os.PathLike) -> None:
    inference = meta.get("inference") or {}
    net = meta.get("network") or {}
    roi = inference.get("roi_size")
    dims = net.get("spatial_dims")
    if roi is not None and (not _positive_numbers(roi, whole=True) or (dims and inference.get("kind") != "slice"
                                                                        and len(roi) != int(dims))):
        raise _fail(src, f"'inference.roi_size' must be whole numbers > 0, one per spatial axis ({dims})", roi)
    overlap = inference.get("overlap", 0.0)
    if not isinstance(overlap, (int, float)) or not 0.0 <= float(overlap) < 1.0:
        raise _fail(src, "'inference.overlap' must be >= 0 and < 1", overlap)
    mirror = inference.get("mirror_axes")
    axes = 3 if inference.get("kind") == "slice" else int(dims or 3)
    if mirror is not None and not (isinstance(mirror, list) and all(
            isinstance(a, int) and not isinstance(a, bool) and 0 <= a < axes for a in mirror)):
        raise _fail(src, f"'inference.mirror_axes' must be a list of spatial axes 0..{axes - 1}", mirror)
    if net.get("in_channels") is not None and not (_is_int(net["in_channels"]) and int(net["in_channels"]) >= 1):
        raise _fail(src, "'network.in_channels' must be a whole number >= 1", net["in_channels"])
    prep = meta.get("preprocessing") or {}
    if not isinstance(prep, Mapping) or not isinstance(prep.get("steps", []), list) or \
            not all(isinstance(s, Mapping) for s in prep.get("steps", [])):
        raise _fail(src, "'preprocessing.steps' must be a list of objects", prep)
    spacings = [prep.get("target_spacing")] + [s.get("pixdim") for s in prep.get("steps", [])
                                               if s.get("kind") == "resample"]
    for spacing in spacings:
        if spacing is not None and not _positive_numbers(spacing):
            raise _fail(src, "target spacings must be numbers > 0", spacing)


def check_model_metadata(meta: Any, src: str | os.PathLike) -> dict:
    """Return ``meta`` when it keeps every rule (module docstring).

    Args:
        meta: the parsed metadata.
        src: the model file (named in the message).

    Raises:
        PipelineError: the first rule broken.
    """
    if not isinstance(meta, dict):
        raise _fail(src, "metadata.json must hold a JSON object", type(meta).__name__)
    for key in ("network", "inference", "preprocessing"):
        if meta.get(key) is not None and not isinstance(meta[key], Mapping):
            raise _fail(src, f"'{key}' must be an object", meta[key])
    _check_labels(meta, src)
    _check_geometry(meta, src)
    return meta


def parse_model_metadata(text: str, src: str | os.PathLike) -> dict:
    """``json.loads`` plus :func:`check_model_metadata`, with the file named on bad JSON."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"'{src}': embedded metadata.json must be valid JSON: {exc}") from None
    return check_model_metadata(meta, src)
