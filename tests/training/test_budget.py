"""Training to a time budget: the schedule spread over the steps that fit, a stop in time, a record."""

from __future__ import annotations

import json
import time

import pytest
import torch
from ignite.engine import Engine, Events
from monai.optimizers import WarmupCosineSchedule

from pipeline.training import TimeBudget, process_start_time


def _engines(step_s=0.01, val_s=0.05):
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    trainer = Engine(lambda engine, batch: time.sleep(step_s))
    validator = Engine(lambda engine, batch: time.sleep(val_s))
    validator.runs = []
    validator.run_ = validator.run

    def run(epoch):
        validator.runs.append(epoch)
        return validator.run_([0])

    validator.run = run
    return trainer, validator, optimizer


def test_stops_before_the_budget_validates_last_and_records(tmp_path):
    trainer, validator, optimizer = _engines()
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=2, t_total=1000, warmup_multiplier=0.1)
    lrs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: (optimizer.step(), schedule.step(),
                                                                     lrs.append(schedule.get_last_lr()[0])))
    budget = TimeBudget(minutes=0.01, lr_scheduler=schedule, validator=validator, val_interval=4,
                        output_dir=tmp_path, start_time=time.time())
    budget.attach(trainer)
    started = time.time()
    trainer.run(list(range(5)), max_epochs=1000)
    used = time.time() - started
    assert used < 0.6 + 0.2, "stopped within the budget (0.6 s) plus at most one step"
    assert budget.stopped_by == "budget" and 2 <= trainer.state.epoch < 1000
    assert validator.runs and validator.runs[-1] == trainer.state.epoch, "the last epoch was validated"
    assert schedule.t_total < 1000, "the schedule was shortened to the steps that fit"
    assert lrs[-1] < 0.5 * max(lrs), "the cosine decay ran most of its course"
    record = json.loads((tmp_path / "training_time.json").read_text())
    assert record["steps"] == trainer.state.iteration and record["stopped_by"] == "budget"
    assert record["budget_minutes"] == 0.01 and 0 < record["minutes_used"] <= 0.02


def test_work_after_the_training_is_kept_inside_the_budget():
    """after_validations=4: four validations' time (4 x 0.05 s) stays free for what runs after the training."""
    trainer, validator, _ = _engines()
    budget = TimeBudget(minutes=0.01, validator=validator, val_interval=1, start_time=time.time(),
                        after_validations=4)
    budget.attach(trainer)
    started = time.time()
    trainer.run(list(range(5)), max_epochs=1000)
    used = time.time() - started
    assert budget.stopped_by == "budget" and used + 4 * 0.05 < 0.6 + 0.1, used


def test_without_minutes_nothing_changes_but_the_record(tmp_path):
    trainer, validator, optimizer = _engines(step_s=0.0)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=1, t_total=7)
    TimeBudget(None, lr_scheduler=schedule, validator=validator, val_interval=2, output_dir=tmp_path).attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    assert trainer.state.epoch == 3 and schedule.t_total == 7
    assert validator.runs == [3], "the last epoch is validated even when the interval skips it"
    record = json.loads((tmp_path / "training_time.json").read_text())
    assert record == {**record, "budget_minutes": None, "steps": 6, "epochs": 3, "stopped_by": "epochs"}


def test_epochs_bound_the_schedule_when_they_end_first():
    trainer, _validator, optimizer = _engines(step_s=0.0, val_s=0.0)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=1, t_total=10**6)
    budget = TimeBudget(minutes=5, lr_scheduler=schedule, start_time=time.time())
    budget.attach(trainer)
    trainer.run([0, 1, 2], max_epochs=4)
    assert trainer.state.epoch == 4 and budget.stopped_by == "epochs" and schedule.t_total == 12


def test_a_resumed_run_counts_the_time_already_used():
    budget = TimeBudget(minutes=10, start_time=time.time())
    budget.load_state_dict({"elapsed_s": 120.0})
    assert 120.0 <= budget.elapsed() < 121.0 and budget.state_dict()["elapsed_s"] >= 120.0
    assert process_start_time() <= time.time()


def test_bad_settings():
    with pytest.raises(ValueError, match="minutes must be > 0 \\(or null for no time budget\\), got 0"):
        TimeBudget(0)
    with pytest.raises(ValueError, match="val_interval must be >= 1, got 0"):
        TimeBudget(1, val_interval=0)
    with pytest.raises(ValueError, match="after_validations must be >= 0, got -1"):
        TimeBudget(1, after_validations=-1)
