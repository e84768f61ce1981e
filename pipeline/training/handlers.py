"""Handlers defined under a name of their own and placed in a handler list by that name, not by position.

Bundle configs refer to some handlers from elsewhere: the time budget is saved in the checkpoint, the level
selection has a run id of its own. ``"@train#handlers#2"`` points at whatever handler lands at index 2 once a
handler is added before it, and MONAI's ``check_properties`` needs every item of ``train#handlers`` to be a
component (a dict with ``_target_``), so a bare ``"@time_budget"`` cannot stand in the list either. So the handler
is defined at the top level and the list holds a component that is that handler: ``handler_ref``.

Example (bundle config)::

    "time_budget": {"_target_": "pipeline.training.TimeBudget", ...},
    "train": {"handlers": [..., {"_target_": "pipeline.training.handler_ref", "handler": "@time_budget"}, ...]}
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["handler_ref"]

T = TypeVar("T")


def handler_ref(handler: T) -> T:
    """``handler`` itself (see the module docstring).

    Args:
        handler: the handler defined under its own name.

    Example:
        >>> handler_ref("budget")
        'budget'
    """
    return handler
