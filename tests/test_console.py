"""The command line's verbosity flags anywhere on the line, progress as log lines where no terminal shows it, and
third-party noise filtered at start-up while real warnings stay."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import warnings

import pytest

from pipeline import console
from pipeline.cli import main
from pipeline.console import hoist_verbosity, progress, quiet_third_party, tracked


def test_verbosity_flags_before_or_after_the_command():
    assert hoist_verbosity(["-v", "summary", "x"]) == (["summary", "x"], logging.DEBUG)
    assert hoist_verbosity(["summary", "x", "--quiet"]) == (["summary", "x"], logging.WARNING)
    assert hoist_verbosity(["summary", "--", "-v"]) == (["summary", "--", "-v"], logging.INFO)


def _synth(out, *extra):
    return subprocess.run([sys.executable, "-m", "pipeline", "synth", "--modality", "ct", "--cases", "1", "--out",
                           str(out), "--shape", "16", "16", "8", *extra], check=False, capture_output=True, text=True,
                          timeout=120)


def test_quiet_and_verbose_after_the_command(tmp_path):
    plain, quiet, verbose = _synth(tmp_path / "a"), _synth(tmp_path / "b", "-q"), _synth(tmp_path / "c", "-v")
    assert plain.returncode == quiet.returncode == verbose.returncode == 0
    assert "INFO pipeline.data.synthetic: wrote 1 synthetic CT cases" in plain.stderr
    assert quiet.stderr == "" and "DEBUG pipeline.io.reader: read" in verbose.stderr


def test_progress_is_log_lines_where_no_terminal_shows_it(caplog, monkeypatch):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    bar = progress(3, "segment", "case")  # pytest's stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="pipeline"):
        for k in range(3):
            bar.set_postfix({"ok": k})
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["segment: 1/3 case(s), ok 0", "segment: 2/3 case(s), ok 1", "segment: 3/3 case(s), ok 2"]
    assert progress(3, "segment", "case", enabled=False).disable


def test_a_short_task_logs_no_progress_and_the_end_of_a_long_one_is_logged(caplog, monkeypatch):
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert list(tracked(range(4), 4, "checking cases", "case")) == [0, 1, 2, 3]
    assert caplog.records == [], "under LOG_EVERY_S: the command reports the result itself"
    clock = itertools.chain([0.0, 0.0, 31.0], itertools.repeat(32.0))  # start, update 1, update 2: 31 s later
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="pipeline"):
        list(tracked(range(3), 3, "fingerprint", "case"))
    assert [r.getMessage() for r in caplog.records] == ["fingerprint: 2/3 case(s)", "fingerprint: 3/3 case(s)"]


def test_the_progress_environment_variable_turns_every_display_off(monkeypatch, caplog):
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    monkeypatch.setenv(console.PROGRESS_ENV, "0")
    bar = progress(2, "segment", "case")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        bar.update(2)
        bar.close()
    assert bar.disable and caplog.records == []


def test_no_progress_reaches_child_processes_and_third_party_bars(monkeypatch):
    monkeypatch.delenv(console.PROGRESS_ENV, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    code = "from tqdm import tqdm; import pipeline.console as c; print(tqdm(range(2)).disable, c.progress_enabled())"
    with console.progress_environment(enabled=False):
        proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["True", "False"], proc.stderr
    assert console.PROGRESS_ENV not in os.environ and "TQDM_DISABLE" not in os.environ, "restored after"


@pytest.fixture
def clean_filters():
    """Warning filters and logger filters as they were before the test."""
    noisy = [logging.getLogger(name) for name in console.NOISE_LOGS]
    saved = [list(logger.filters) for logger in noisy]
    with warnings.catch_warnings():
        yield
    for logger, filters in zip(noisy, saved):
        logger.filters[:] = filters


def _emit(message: str, module: str, filename: str | None = None) -> None:
    """Warn as if from ``module`` (warnings are matched by the module they are attributed to)."""
    warnings.warn_explicit(message, UserWarning, filename or f"<{module}>", 1, module=module)


def test_third_party_noise_is_filtered_and_real_warnings_stay(clean_filters, caplog):
    warnings.simplefilter("always")
    quiet_third_party()
    quiet_third_party()  # idempotent
    banner = ('parsing config_file train.json: any `"_target_"` value in it is resolved to an importable callable and '
              'invoked with no allow list')
    with warnings.catch_warnings(record=True) as seen:
        _emit(banner, "monai.bundle.scripts")
        _emit("\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m",
              "mlflow.pyfunc.utils.data_validation")
        _emit(banner, "my_own_code")  # the same words from elsewhere are not MONAI's banner: kept
        _emit("spacing 0 read as 1 mm", "monai.data.image_reader")  # a real warning: kept
    assert [(str(w.message)[:20], w.filename) for w in seen] == [(banner[:20], "<my_own_code>"),
                                                                  ("spacing 0 read as 1 ", "<monai.data.image_reader>")]
    with caplog.at_level(logging.INFO):
        logging.getLogger("mlflow.pyfunc").warning("Passing a Python object as `python_model` causes it to be "
                                                   "serialized using CloudPickle, it requires ...")
        logging.getLogger("mlflow.pyfunc").warning("the model signature does not match the input")
        logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").warning(
            "nvImageCodec is not available; skipping pydicom decoder plugin registration.")
    assert [r.getMessage() for r in caplog.records] == ["the model signature does not match the input"]


def test_noise_shown_despite_the_filters_is_dropped(clean_filters):
    """MLflow checks a model class inside catch_warnings() with simplefilter("once"), which no filter outranks."""
    where = "/venv/lib/python3.11/site-packages/mlflow/pyfunc/utils/data_validation.py"
    with warnings.catch_warnings(record=True) as seen:
        quiet_third_party()
        with warnings.catch_warnings():
            warnings.simplefilter("once", category=UserWarning)
            _emit("\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m", "mlflow.x", where)
            _emit("Add type hints to the `predict` method of your model", "mine", "/home/me/model.py")
            _emit("the signature does not match", "mlflow.x", where)
    assert [str(w.message) for w in seen] == ["Add type hints to the `predict` method of your model",
                                              "the signature does not match"]


def test_the_cli_filters_noise_unless_verbose(tmp_path, monkeypatch):
    from pipeline.cli import commands

    def noisy(args):
        warnings.warn("The TorchScript type system doesn't support instance-level annotations on empty non-base "
                      "types in `__init__`.", UserWarning)
        warnings.warn("an unrelated warning", UserWarning)
        return 0

    monkeypatch.setattr(commands, "cmd_folds", noisy)
    shown = {}
    for flags in ([], ["-v"]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["folds", str(tmp_path), "--out", "x.json", *flags]) == 0
        shown[bool(flags)] = [str(w.message)[:20] for w in seen]
    assert shown == {False: ["an unrelated warning"], True: ["The TorchScript type", "an unrelated warning"]}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("The TorchScript type system doesn't support instance-level annotations on empty", UserWarning)
    assert len(seen) == 1, "the filters hold while the command runs, not after"


def test_validation_and_the_fingerprint_show_progress_through_the_console(ct_dataset, caplog, monkeypatch, capfd):
    """Issue 25: they drew tqdm bars of their own, frames and all, into log files."""
    from pipeline.data import load_msd, validate_datalist
    from pipeline.planning import fingerprint_dataset

    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    datalist = load_msd(ct_dataset)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        validate_datalist(datalist)
        fingerprint_dataset(datalist)
        validate_datalist(datalist, progress=False)
        fingerprint_dataset(datalist, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline"]
    assert lines == [f"checking cases: {k}/6 case(s)" for k in range(1, 7)] + [
        f"fingerprint: {k}/6 case(s)" for k in range(1, 7)]
    assert "\r" not in capfd.readouterr().err
