"""Per-epoch progress of a MONAI engine (trainer or evaluator) with its loss, through
:func:`pipeline.console.progress`: a tqdm bar on a terminal; where stderr is not a terminal (a log file, CI,
``nohup``) a log line at most every 30 s instead of a ``\\r`` frame per iteration; nothing with
``PIPELINE_PROGRESS=0`` (``python -m pipeline bundle --no-progress ...`` sets it) or ``enabled: false``.

MONAI engines call ``handler.attach(engine)`` with no other arguments, so the value to show (e.g. the loss) is
given here as ``output_transform``.

Example (bundle config)::

    {"_target_": "pipeline.training.ProgressBar", "output_transform": "$lambda output: output['loss']",
     "desc": "train"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events

from pipeline.console import progress

__all__ = ["ProgressBar"]


def _shown(value: Any) -> dict:
    """An output_transform's result as the values next to the bar (``{"loss": "0.5123"}``)."""
    if isinstance(value, (tuple, list)):  # from_engine(["loss"]) on an undecollated dict output
        value = value[0]
    if isinstance(value, dict):
        return {k: f"{float(v):.4g}" if hasattr(v, "__float__") else v for k, v in value.items()}
    number = float(value.detach() if hasattr(value, "detach") else value)
    return {"loss": f"{number:.4g}"}


class ProgressBar:
    """Per-epoch progress over the iterations of an engine.

    Args:
        output_transform: engine output -> number or dict shown next to the count (e.g. the loss).
            Defaults to None (no value shown).
        persist: keep each epoch's bar on the terminal. Defaults to False.
        desc: what the engine does (``"train"``). Defaults to ``""``.
        enabled: False: no progress at all. Defaults to True (``PIPELINE_PROGRESS=0`` still turns it off).

    Example:
        >>> bar = ProgressBar(output_transform=lambda output: output["loss"], desc="train")
        >>> bar.attach(trainer)  # doctest: +SKIP
    """

    def __init__(self, output_transform: Callable | None = None, persist: bool = False, desc: str = "",
                 enabled: bool = True) -> None:
        self.output_transform = output_transform
        self.persist, self.desc, self.enabled = persist, desc, enabled
        self.bar = None

    def attach(self, engine: Engine) -> None:
        """Show the progress of every epoch of ``engine``.

        Args:
            engine: a MONAI trainer or evaluator (an ignite Engine).
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._close)
        engine.add_event_handler(Events.TERMINATE, self._close)

    def _start(self, engine: Engine) -> None:
        self._close(engine)
        state = engine.state
        epochs = state.max_epochs or 1
        name = f"{self.desc} epoch" if self.desc else "epoch"
        desc = f"{name} {state.epoch}/{epochs}" if epochs > 1 else (self.desc or "epoch")
        self.bar = progress(state.epoch_length, desc, "iteration", enabled=self.enabled, leave=self.persist)

    def _step(self, engine: Engine) -> None:
        if self.bar is None:
            return
        if self.output_transform is not None:  # before the count: a log line shows this iteration's value
            self.bar.set_postfix(_shown(self.output_transform(engine.state.output)), refresh=False)
        self.bar.update(1)

    def _close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
