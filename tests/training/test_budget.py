"""Training to a time budget: the schedule spread over the steps that fit, a stop in time, a record."""

from __future__ import annotations

import json
import time

import pytest
import torch
from ignite.engine import Engine, Events
from monai.optimizers import WarmupCosineSchedule

from pipeline.training import TimeBudget, process_start_time

#: The budget tests run on a loaded 2-core CI machine, where a 10 ms sleep can take 20 ms: steps of 40 ms and a
#: 2.4 s budget keep the engine's fixed per-step overhead and the scheduler's jitter small against the bounds.
STEP_S, VAL_S, MINUTES = 0.04, 0.2, 0.04


def _engines(step_s=STEP_S, val_s=VAL_S):
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
    budget = TimeBudget(minutes=MINUTES, lr_scheduler=schedule, validator=validator, val_interval=4,
                        output_dir=tmp_path, start_time=time.time())
    budget.attach(trainer)
    started = time.time()
    trainer.run(list(range(5)), max_epochs=1000)
    used = time.time() - started
    assert used < MINUTES * 60 + 4 * STEP_S, "stopped within the budget (2.4 s) plus at most a few steps"
    assert budget.stopped_by == "budget" and 2 <= trainer.state.epoch < 1000
    assert validator.runs and validator.runs[-1] == trainer.state.epoch, "the last epoch was validated"
    assert schedule.t_total < 1000, "the schedule was shortened to the steps that fit"
    assert lrs[-1] < 0.5 * max(lrs), "the cosine decay ran most of its course"
    record = json.loads((tmp_path / "training_time.json").read_text())
    assert record["steps"] == trainer.state.iteration and record["stopped_by"] == "budget"
    assert record["budget_minutes"] == MINUTES and 0 < record["minutes_used"] <= MINUTES + 0.01


def test_work_after_the_training_is_kept_inside_the_budget():
    """after_validations=4: four validations' time (4 x 0.2 s) stays free for what runs after the training."""
    trainer, validator, _ = _engines()
    # validation every epoch, as the bundles' ValidationHandler runs it, so that the budget measures its cost
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run(engine.state.epoch))
    budget = TimeBudget(minutes=MINUTES, validator=validator, val_interval=1, start_time=time.time(),
                        after_validations=4)
    budget.attach(trainer)
    started = time.time()
    trainer.run(list(range(5)), max_epochs=1000)
    used = time.time() - started
    assert budget.stopped_by == "budget" and used + 4 * VAL_S < MINUTES * 60 + 4 * STEP_S, used
    assert budget.validation_s >= VAL_S and len(validator.runs) == trainer.state.epoch, "validated every epoch"
    assert used > MINUTES * 60 - 5 * VAL_S - 2 * (5 * STEP_S + VAL_S), "no more than the kept-back time was left"


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


def test_the_record_gives_every_figure_on_a_known_clock(tmp_path, monkeypatch):
    """training_time.json field by field, on a clock that advances 30 s per step: 6 steps of 3 epochs."""
    from types import SimpleNamespace

    from pipeline.training import budget as module

    clock = [1000.0]
    monkeypatch.setattr(module, "time", SimpleNamespace(time=lambda: clock[0]))
    trainer = Engine(lambda engine, batch: clock.__setitem__(0, clock[0] + 30.0))
    TimeBudget(None, output_dir=tmp_path, start_time=940.0).attach(trainer)  # started a minute before training
    trainer.run([0, 1], max_epochs=3)
    record = json.loads((tmp_path / "training_time.json").read_text())
    assert record == {"budget_minutes": None, "minutes_used": 4.0, "training_minutes": 3.0, "steps": 6,
                      "epochs": 3, "epoch_length": 2, "stopped_by": "epochs"}


def test_under_torch_distributed_every_rank_takes_rank_zeros_decision(tmp_path):
    """One gloo process group of one rank: the decision goes through the broadcast and comes back whole."""
    import torch.distributed as dist

    from pipeline.training.budget import _from_rank_zero, _is_rank_zero

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert _is_rank_zero()
        assert _from_rank_zero(1234, True) == (1234, True)
        assert _from_rank_zero(7, False) == (7, False)
    finally:
        dist.destroy_process_group()
    assert _from_rank_zero(5, True) == (5, True), "without a process group: the value as it is"


def test_process_start_time_is_when_the_process_started():
    """A child that prints its own start time: between the moments just before and after it was started (the
    kernel's boot time is a whole second, so the start may read up to a second early)."""
    import subprocess
    import sys

    before = time.time()
    code = "from pipeline.training.budget import process_start_time; print(repr(process_start_time()))"
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    started = float(proc.stdout.strip())
    assert before - 1.1 <= started <= before + 1.0, (before, started)
