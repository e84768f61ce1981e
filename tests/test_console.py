"""The command line's verbosity flags anywhere on the line, and progress as log lines where no terminal shows it."""

from __future__ import annotations

import logging

from pipeline import console
from pipeline.cli import main
from pipeline.console import hoist_verbosity, progress


def test_verbosity_flags_before_or_after_the_command():
    assert hoist_verbosity(["-v", "summary", "x"]) == (["summary", "x"], logging.DEBUG)
    assert hoist_verbosity(["summary", "x", "--quiet"]) == (["summary", "x"], logging.WARNING)
    assert hoist_verbosity(["summary", "--", "-v"]) == (["summary", "--", "-v"], logging.INFO)


def test_quiet_after_the_command_silences_info(tmp_path, capsys):
    args = ["synth", "--modality", "ct", "--cases", "1", "--out", str(tmp_path / "d"), "--shape", "16", "16", "8"]
    assert main([*args, "-q"]) == 0
    assert "INFO" not in capsys.readouterr().err
    assert main([*args[:-6], "--out", str(tmp_path / "e"), *args[-4:], "-v"]) == 0


def test_progress_is_log_lines_where_no_terminal_shows_it(caplog, monkeypatch):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    bar = progress(3, "segment", "case")  # pytest's stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="pipeline"):
        for _ in range(3):
            bar.update(1)
            bar.set_postfix({"ok": 1})
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1] == "segment: 3/3 case(s), ok 1" and not any("\r" in line for line in lines)
    assert progress(3, "segment", "case", enabled=False).disable
