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


def _step(net, value, amp=False, scaler=None, output=None):
    """One backward pass of ``net`` on a batch (with ``value`` planted in it) and an engine-like object as MONAI's
    trainer hands it to its handlers."""
    from types import SimpleNamespace

    batch = _batch(value)
    loss = torch.nn.functional.cross_entropy(net(batch["image"]), batch["label"])
    (scaler.scale(loss) if scaler is not None else loss).backward()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    state = SimpleNamespace(iteration=7, output={"loss": loss.detach()} if output is None else output)
    return SimpleNamespace(network=net, optimizer=optimizer, amp=amp, scaler=scaler, state=state)


def test_the_warning_names_the_step_the_norm_the_loss_and_the_count(caplog):
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    guard = GradientGuard()
    with caplog.at_level(logging.WARNING, logger="pipeline.training.guard"):
        guard(_step(net, float("inf")))
    assert [r.getMessage() for r in caplog.records] == \
        ["step 7 skipped: gradient norm nan (loss nan); 1 step(s) skipped so far"]  # inf input: nan in the conv
    assert all(p.grad is None for p in net.parameters()), "the optimiser will leave every weight alone"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.training.guard"):
        guard(_step(net, float("nan"), output=[1.0]))  # an engine whose output is not MONAI's dict
    assert caplog.records[0].getMessage().endswith("(loss unknown); 2 step(s) skipped so far")


def test_patience_one_stops_at_the_first_non_finite_step_and_none_means_no_clipping():
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(RuntimeError, match=r"the last 1 steps \(up to step 7\)"):
        GradientGuard(patience=1)(_step(net, float("nan")))
    net.zero_grad()
    engine = _step(net, 1e6)  # a huge but finite gradient
    before = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    GradientGuard(max_norm=None)(engine)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert torch.isfinite(after) and float(after) == pytest.approx(float(before)) and float(after) > 12


def test_under_amp_gradients_are_unscaled_before_clipping_and_the_scaler_skips_bad_steps():
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    engine = _step(net, None, amp=True, scaler=scaler)
    GradientGuard(max_norm=1e-3)(engine)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert float(norm) <= 1e-3 * 1.0001
    with pytest.raises(RuntimeError, match="already been called"):  # the guard unscaled them before clipping
        scaler.unscale_(engine.optimizer)
    net.zero_grad()
    guard = GradientGuard(patience=1)
    bad = _step(net, float("nan"), amp=True, scaler=torch.amp.GradScaler("cpu"))
    guard(bad)  # left to the scaler: no error even with patience 1, gradients kept for it to see
    assert guard.skipped == 0 and any(p.grad is not None for p in net.parameters())
    net.zero_grad()  # a scaler without amp is not used: the gradients stay as they are
    engine = _step(net, None, amp=False, scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    before = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    GradientGuard(max_norm=None)(engine)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert float(after) == pytest.approx(float(before)), "no unscaling without amp"
