"""A tqdm progress bar for MONAI engines, showing the loss.

MONAI engines call ``handler.attach(engine)`` with no other arguments; ignite's ``ProgressBar.attach`` needs an
``output_transform`` to show the loss. This handler carries it.

Example (bundle config)::

    {"_target_": "pipeline.training.ProgressBar", "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}
"""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine
from ignite.handlers import ProgressBar as _IgniteBar

__all__ = ["ProgressBar"]


class ProgressBar:
    """Per-epoch tqdm bar over the iterations of an engine.

    Args:
        output_transform: engine output -> number or dict shown next to the bar (e.g. the loss).
            Defaults to None (no value shown).
        persist: keep each epoch's bar on screen. Defaults to False.
        desc: label before the bar. Defaults to ``""``.
    """

    def __init__(self, output_transform: Callable | None = None, persist: bool = False, desc: str = "") -> None:
        self.output_transform = output_transform
        self.bar = _IgniteBar(persist=persist, desc=desc)

    def attach(self, engine: Engine) -> None:
        transform = None
        if self.output_transform is not None:
            fn = self.output_transform

            def transform(output: object) -> dict:
                value = fn(output)
                if isinstance(value, (tuple, list)):  # from_engine(["loss"]) on an undecollated dict output
                    value = value[0]
                if isinstance(value, dict):
                    return value
                return {"loss": float(value.detach() if hasattr(value, "detach") else value)}
        self.bar.attach(engine, output_transform=transform)
