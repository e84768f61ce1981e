"""Gradient clipping and skipping non-finite steps in MONAI's SupervisedTrainer."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from pipeline.training import GradientGuard


def _trainer(batches, guard, lr=0.1, optimizer=torch.optim.AdamW):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=net,
                                optimizer=optimizer(net.parameters(), lr=lr),
                                loss_function=torch.nn.CrossEntropyLoss(), train_handlers=[guard])
    return trainer, net


def _batch(value=None):
    image = torch.randn(2, 1, 8, 8)
    if value is not None:
        image[0, 0, 3, 3] = value
    return {"image": image, "label": torch.randint(0, 2, (2, 8, 8))}


def test_a_non_finite_step_is_skipped_and_training_goes_on(caplog):
    guard = GradientGuard()
    trainer, net = _trainer([_batch(), _batch(float("nan")), _batch()], guard)
    weights = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: weights.append(net.weight.detach().clone()))
    with caplog.at_level(logging.WARNING, logger="pipeline.training.guard"):
        trainer.run()
    assert guard.skipped == 1 and "step 2 skipped: gradient norm nan" in caplog.text
    assert torch.equal(weights[0], weights[1]), "the bad step changed nothing"
    assert not torch.equal(weights[1], weights[2]) and torch.isfinite(weights[2]).all()


def test_a_training_that_keeps_failing_stops_with_a_clear_error():
    guard = GradientGuard(patience=3)
    trainer, net = _trainer([_batch(float("inf"))] * 5, guard)
    with pytest.raises(RuntimeError, match="training diverged: the last 3 steps \\(up to step 3\\)"):
        trainer.run()
    assert torch.isfinite(net.weight).all()


def test_clipping_bounds_the_update():
    guard = GradientGuard(max_norm=1e-3)
    trainer, net = _trainer([_batch()], guard, lr=1.0, optimizer=torch.optim.SGD)
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    change = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(net.parameters(), before)))
    assert 0 < float(change) <= 1e-3 * 1.0001 and guard.skipped == 0


@pytest.mark.parametrize("kwargs, match", [({"max_norm": 0}, "max_norm must be > 0"),
                                           ({"patience": 0}, "patience must be >= 1, got 0")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientGuard(**kwargs)


def test_by_default_training_stops_at_the_twentieth_non_finite_step_in_a_row():
    """The README's figure: 19 non-finite steps in a row are skipped, the 20th stops the training."""
    guard = GradientGuard()
    trainer, _ = _trainer([_batch(float("nan"))] * 19 + [_batch()] + [_batch(float("nan"))] * 25, guard)
    with pytest.raises(RuntimeError, match=r"training diverged: the last 20 steps \(up to step 40\)"):
        trainer.run()
    assert guard.skipped == 39, "a finite step in between starts the count again"
