"""Training to a wall-clock budget: the learning-rate schedule spread over the steps that fit, a stop in time.

With ``minutes`` set, :class:`TimeBudget` measures what one training step really costs on this machine (validation
and checkpointing included, averaged since training started) and, at the end of every epoch:

- predicts how many more steps fit before the budget ends, keeping back the time of one last validation;
- stretches or shrinks the length of MONAI's ``WarmupCosineSchedule`` (stepped per iteration in this mode) so that
  the cosine decay ends with the last step that fits;
- stops after the last epoch that fits, running a final validation when that epoch had none, so that the best
  model (``CheckpointSaver`` on the key metric) is saved inside the budget;
- and stops within an epoch, the same way, if an epoch runs so long that the budget would end before it does.

Whatever stops it, a training ends with a validated model: the last epoch is validated when the validation interval
skips it. The budget counts from the start of the process (caching, start-up and validation included, so "60
minutes" means the command ends within the hour) and carries over a resumed training through the checkpoint. Under
DDP, rank 0 decides and broadcasts, so every rank follows the same schedule and stops at the same step. Without
``minutes`` nothing changes; either way ``<output_dir>/training_time.json`` records the steps, epochs and minutes used.

Example (bundle config)::

    "time_budget": {"_target_": "pipeline.training.TimeBudget", "minutes": "@minutes",
                    "lr_scheduler": "@lr_scheduler", "validator": "@validate#evaluator",
                    "val_interval": "@val_interval", "output_dir": "@output_dir"}
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from pipeline.io.atomic import write_text_atomic

__all__ = ["TimeBudget", "process_start_time"]

logger = logging.getLogger(__name__)

_IMPORTED = time.time()
#: Fraction of the remaining time kept free for the unknown (start-up of the final validation, the last save).
_MARGIN = 0.01


def process_start_time() -> float:
    """Wall-clock time at which this process started (from ``/proc`` on Linux), else when this module loaded."""
    try:
        with open("/proc/self/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


class TimeBudget:
    """Stop training within ``minutes`` with the learning-rate schedule fitted to the steps that fit.

    Args:
        minutes: the budget, counted from the process start; None disables it (only the record is written).
        lr_scheduler: a schedule with ``t_total`` (MONAI ``WarmupCosineSchedule``) stepped per iteration; its
            length is set to the predicted number of steps. Defaults to None (the schedule is left alone).
        validator: the evaluator, to time validations and to run a final one. Defaults to None.
        val_interval: epochs between validations (the ``ValidationHandler``'s interval). Defaults to 1.
        output_dir: where ``training_time.json`` goes. Defaults to None (not written).
        start_time: wall-clock start of the budget. Defaults to None (the process start).
        after_validations: work that runs after the training and counts against the budget, in validations (the
            bundles' level selection scores every level in one pass: 1); that much time is kept back besides
            the last validation's. Defaults to 0.

    Raises:
        ValueError: ``minutes`` not > 0, ``val_interval`` < 1 or ``after_validations`` < 0.
    """

    def __init__(self, minutes: float | None, lr_scheduler: Any = None, validator: Engine | None = None,
                 val_interval: int = 1, output_dir: str | os.PathLike | None = None,
                 start_time: float | None = None, after_validations: float = 0.0) -> None:
        if minutes is not None and not float(minutes) > 0:
            raise ValueError(f"minutes must be > 0 (or null for no time budget), got {minutes}")
        if int(val_interval) < 1:
            raise ValueError(f"val_interval must be >= 1, got {val_interval}")
        if not float(after_validations) >= 0:
            raise ValueError(f"after_validations must be >= 0, got {after_validations}")
        self.after_validations = float(after_validations)
        self.minutes = None if minutes is None else float(minutes)
        self.lr_scheduler, self.validator, self.val_interval = lr_scheduler, validator, int(val_interval)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.started = process_start_time() if start_time is None else float(start_time)
        self.elapsed_before = 0.0  # seconds spent by the earlier runs of a resumed training
        self.validation_s = 0.0
        self.stopped_by = "epochs"
        self._train_started = 0.0
        self._first_iteration = 0
        self._val_started = 0.0

    # -- state carried through checkpoints ---------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds of the budget used so far (earlier runs of a resumed training included)."""
        return self.elapsed_before + (time.time() - self.started)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.elapsed_before = float(state.get("elapsed_s", 0.0))

    # -- engine events -----------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_epoch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.STARTED, self._on_validation_started)
            self.validator.add_event_handler(Events.COMPLETED, self._on_validation_completed)

    def _on_started(self, engine: Engine) -> None:
        self._train_started, self._first_iteration = time.time(), engine.state.iteration
        if self.minutes is not None:
            logger.info("time budget: %.1f of %.1f minutes left when training starts (start-up and caching took "
                        "%.1f)", self.minutes - self.elapsed() / 60, self.minutes, self.elapsed() / 60)

    def _on_validation_started(self, _: Engine) -> None:
        self._val_started = time.time()

    def _on_validation_completed(self, _: Engine) -> None:
        self.validation_s = time.time() - self._val_started

    def _kept_back(self) -> float:
        """Seconds kept free at the end: the last validation and the work that follows the training."""
        return self.validation_s * (1.0 + self.after_validations)

    def planned_steps(self, engine: Engine) -> tuple[int, bool]:
        """``(total steps the schedule should span, whether to stop now)`` from the cost measured so far."""
        done = engine.state.iteration - self._first_iteration
        per_step = (time.time() - self._train_started) / max(done, 1)
        remaining = self.minutes * 60.0 - self.elapsed()
        remaining -= self._kept_back() + _MARGIN * max(remaining, 0.0)
        epoch_length = int(engine.state.epoch_length or 1)
        fit = int(max(remaining, 0.0) // (per_step * epoch_length))
        scheduled = int(engine.state.max_epochs) - engine.state.epoch
        return engine.state.iteration + min(fit, scheduled) * epoch_length, fit == 0 < scheduled

    def _stop(self, engine: Engine, validated: bool) -> None:
        self.stopped_by = "budget"
        if self.validator is not None and not validated:
            self.validator.run(engine.state.epoch)  # the last model is validated, so that it can be kept
        logger.info("time budget: stopping in epoch %d after %d steps (%.1f of %.1f minutes used)",
                    engine.state.epoch, engine.state.iteration, self.elapsed() / 60, self.minutes)
        engine.terminate()

    def _on_iteration_completed(self, engine: Engine) -> None:
        """Stop mid-epoch only when the budget would otherwise end inside this epoch (very long epochs)."""
        if self.minutes is None or engine.state.iteration % int(engine.state.epoch_length or 1) == 0:
            return
        late = self.elapsed() + self._kept_back() > self.minutes * 60.0
        if _from_rank_zero(0, late)[1]:
            self._stop(engine, validated=False)

    def _on_epoch_completed(self, engine: Engine) -> None:
        last = engine.state.epoch >= int(engine.state.max_epochs)
        if last and self.validator is not None and engine.state.epoch % self.val_interval != 0:
            self.validator.run(engine.state.epoch)  # every run ends validated, so that it has a best model
        if self.minutes is None or last:
            return
        total, stop = _from_rank_zero(*self.planned_steps(engine))
        if stop:
            self._stop(engine, validated=engine.state.epoch % self.val_interval == 0)
        elif self.lr_scheduler is not None and hasattr(self.lr_scheduler, "t_total"):
            warmup = int(getattr(self.lr_scheduler, "warmup_steps", 0))
            self.lr_scheduler.t_total = max(int(total), warmup + 1)

    def _on_completed(self, engine: Engine) -> None:
        record = {"budget_minutes": self.minutes, "minutes_used": round(self.elapsed() / 60.0, 2),
                  "training_minutes": round((time.time() - self._train_started) / 60.0, 2),
                  "steps": int(engine.state.iteration), "epochs": int(engine.state.epoch),
                  "epoch_length": int(engine.state.epoch_length or 0), "stopped_by": self.stopped_by}
        logger.info("training ran %d steps (%d epochs) in %.1f minutes%s", record["steps"], record["epochs"],
                    record["minutes_used"], "" if self.minutes is None else f" of a {self.minutes:g}-minute budget")
        if self.output_dir is not None and _is_rank_zero():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.output_dir / "training_time.json", json.dumps(record, indent=1) + "\n")


def _is_rank_zero() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def _from_rank_zero(total: int, stop: bool) -> tuple[int, bool]:
    """Rank 0's decision on every rank (each rank's clock differs a little; the schedule and stop must not)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return total, stop
    backend = torch.distributed.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    values = torch.tensor([float(total), 1.0 if stop else 0.0], dtype=torch.float64, device=device)
    torch.distributed.broadcast(values, src=0)
    return int(values[0].item()), bool(values[1].item() > 0.5)

