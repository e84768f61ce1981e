"""JSON as people write it: 4-space indentation, short lists of scalars on one line.

Bundle configs and model cards are read by people as much as by programs; ``json.dumps(indent=...)`` puts every
number of a spacing or a patch size on a line of its own. The output parses back to the same value.

Example:
    >>> print(dumps_config({"keys": ["image", "label"]}))
    {
        "keys": ["image", "label"]
    }
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps_config"]

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
    """
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dumps_config(v, indent + 4)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and not _inline(value):
        items = [f"{inner}{dumps_config(v, indent + 4)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)
