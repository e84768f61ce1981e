"""The training's progress: a tqdm bar on a terminal, log lines (no ``\\r`` frames) elsewhere, nothing when off."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import torch
from ignite.engine import Engine

from pipeline import console
from pipeline.training import ProgressBar


def _train(bar: ProgressBar, epochs: int = 2, iterations: int = 3) -> Engine:
    losses = iter(torch.linspace(1.0, 0.1, epochs * iterations))
    engine = Engine(lambda engine, batch: {"loss": next(losses)})
    bar.attach(engine)
    engine.run(range(iterations), max_epochs=epochs)
    return engine


def _ours(caplog) -> list[str]:
    """This package's log lines only: an earlier test in the same worker may have set ignite's engine logger to
    INFO (MONAI's handlers do), and its 'Engine run starting' lines are not the progress display's."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("pipeline")]


def test_log_lines_with_the_loss_where_stderr_is_not_a_terminal(caplog, monkeypatch, capfd):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _train(ProgressBar(output_transform=lambda output: output["loss"], desc="train"))
    lines = _ours(caplog)
    assert lines[:3] == ["train epoch 1/2: 1/3 iteration(s), loss 1", "train epoch 1/2: 2/3 iteration(s), loss 0.82",
                         "train epoch 1/2: 3/3 iteration(s), loss 0.64"]
    assert lines[-1] == "train epoch 2/2: 3/3 iteration(s), loss 0.1" and len(lines) == 6
    assert "\r" not in capfd.readouterr().err


def test_a_dict_output_and_one_epoch(caplog, monkeypatch):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _train(ProgressBar(output_transform=lambda output: [output], desc="evaluate"), epochs=1, iterations=1)
    assert _ours(caplog) == ["evaluate: 1/1 iteration(s), loss 1"]


@pytest.mark.parametrize("off", ["argument", "environment"])
def test_progress_off(off, caplog, monkeypatch, capfd):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    if off == "environment":
        monkeypatch.setenv(console.PROGRESS_ENV, "0")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _train(ProgressBar(desc="train", enabled=off != "argument"))
    err = capfd.readouterr().err
    assert _ours(caplog) == [] and "iteration" not in err and "\r" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal(monkeypatch, caplog):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _train(ProgressBar(output_transform=lambda output: output["loss"], desc="train", persist=True))
    drawn = terminal.getvalue()
    assert "train epoch 1/2" in drawn and "3/3" in drawn and "loss=0.1" in drawn and "\r" in drawn
    assert _ours(caplog) == [], "a terminal gets the bar, not log lines"
