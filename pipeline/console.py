"""How the command line talks: verbosity flags anywhere on the line, progress that suits where it goes, and no
third-party chatter that tells a user nothing.

- :func:`hoist_verbosity`: ``-v``/``--verbose`` and ``-q``/``--quiet`` work before or after the subcommand, as in
  git or pip, so ``pipeline segment ... -v`` is not an error.
- :func:`progress` and :func:`tracked`: a tqdm bar on a terminal; elsewhere (a log file, CI, ``nohup``) a log line
  at most every :data:`LOG_EVERY_S` seconds, instead of thousands of ``\\r`` frames; nothing when disabled, by
  argument or by ``PIPELINE_PROGRESS=0`` (:func:`progress_enabled`) for every process started from here.
- :func:`progress_environment`: ``--no-progress``, and third-party tqdm bars off where stderr is not a terminal.
- :func:`quiet_third_party`: warnings and log records of other libraries that carry no information for a user of
  this tool (:data:`NOISE_WARNINGS`, :data:`NOISE_SHOWN`, :data:`NOISE_LOGS`), filtered by message and origin;
  every other warning stays.

Example:
    >>> hoist_verbosity(["segment", "--model", "m.ts", "-v"])
    (['segment', '--model', 'm.ts'], 10)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["LOG_EVERY_S", "NOISE_LOGS", "NOISE_SHOWN", "NOISE_WARNINGS", "PROGRESS_ENV", "hoist_verbosity", "progress",
           "progress_enabled", "progress_environment", "quiet_third_party", "tracked"]

logger = logging.getLogger("pipeline")
T = TypeVar("T")

#: seconds between progress lines when the output is not a terminal
LOG_EVERY_S = 30.0
#: environment variable that turns every progress display of this package off (``0``, ``false``, ``no``, ``off``)
PROGRESS_ENV = "PIPELINE_PROGRESS"
_LEVELS = {"-v": logging.DEBUG, "--verbose": logging.DEBUG, "-q": logging.WARNING, "--quiet": logging.WARNING}
_ANSI = r"(?:\x1b\[[0-9;]*m)?"  # MLflow colours some warnings

#: ``(message regex, category, module regex)`` of warnings that tell a user of this tool nothing, each with why.
NOISE_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # MONAI, for every config file of every bundle run: the configs named on our command line are the user's own
    # or this repository's (`-v` shows it)
    (r"parsing config_file .*: any `\"_target_\"` value in it is resolved", UserWarning, r"monai\.bundle"),
    # MONAI's DICOM reader without nvImageCodec (a GPU decoder): pydicom decodes instead, as it always did here
    (r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register", UserWarning, r"monai\."),
    # torch.jit while scripting a module whose __init__ annotates an empty container: the export's own parity
    # check says whether the scripted model is right
    (r"The TorchScript type system doesn't support instance-level annotations on empty", UserWarning, ""),
    # MLflow, about how this package logs its model (the signature is given explicitly)
    (_ANSI + r"Add type hints to the `predict` method", UserWarning, r"mlflow\."),
    (_ANSI + r"An input example was not provided when logging the model", UserWarning, r"mlflow\."),
    # torch's ONNX exporter deep-copies a pytree class that torch itself deprecated (so the warning is attributed to
    # copyreg): nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"copyreg$"),
)
#: ``(message regex, file regex)`` of warnings that a library shows even where a filter ignores them (MLflow
#: checks a model class inside ``catch_warnings()`` with ``simplefilter("once")``): dropped when shown
NOISE_SHOWN: tuple[tuple[str, str], ...] = (
    (_ANSI + r"Add type hints to the `predict` method", r".*[/\\]mlflow[/\\]"),
)
#: logger name -> message starts of log records that tell a user of this tool nothing
NOISE_LOGS: dict[str, tuple[str, ...]] = {
    # said once more, as a log record, by the same reader as the nvImageCodec warning above
    "monai.data.nvimgcodec_pydicom_plugin": ("nvImageCodec is not available; skipping pydicom decoder plugin",),
    # the model class is this package's own code, pickled by MLflow as every python_model object is
    "mlflow.pyfunc": ("Passing a Python object as `python_model` causes it to be serialized using CloudPickle",),
    # torch's ONNX exporter, for the torchvision operators it would register: a UNet++ uses none of them
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
}


def hoist_verbosity(argv: Sequence[str]) -> tuple[list[str], int]:
    """``argv`` without its verbosity flags, and the logging level they ask for (INFO without one; the last one
    given wins). Arguments after ``--`` are left alone.

    Args:
        argv: the command line after the program name.

    Example:
        >>> hoist_verbosity(["-q", "summary", "x"])
        (['summary', 'x'], 30)
    """
    rest: list[str] = []
    level = logging.INFO
    for k, arg in enumerate(argv):
        if arg == "--":
            rest += list(argv[k:])
            break
        if arg in _LEVELS:
            level = _LEVELS[arg]
        else:
            rest.append(arg)
    return rest, level


def progress_enabled() -> bool:
    """False when ``$PIPELINE_PROGRESS`` turns progress off (``0``, ``false``, ``no``, ``off``), else True.

    Example:
        >>> progress_enabled()  # PIPELINE_PROGRESS unset
        True
    """
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def progress_environment(enabled: bool = True) -> Iterator[None]:
    """Progress settings for the command run inside, and for the processes it starts (restored after):
    ``enabled=False`` (``--no-progress``) sets ``PIPELINE_PROGRESS=0``; where stderr is not a terminal, or progress
    is off, other libraries' tqdm bars are turned off too (``TQDM_DISABLE=1``: tqdm reads it when first imported, so
    it reaches MONAI and MLflow in a bundle run and in child processes).

    Args:
        enabled: False for ``--no-progress``. Defaults to True.

    Example:
        >>> with progress_environment(enabled=False):
        ...     progress_enabled()
        False
    """
    saved = {key: os.environ.get(key) for key in (PROGRESS_ENV, "TQDM_DISABLE")}
    if not enabled:
        os.environ[PROGRESS_ENV] = "0"
    if not enabled or not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _LogProgress:
    """tqdm's ``update``/``set_postfix``/``close`` as periodic log lines; the last line is logged only where an
    earlier one was (a short task logs nothing: the command reports its own result)."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self.lines = self.logged = 0
        self.postfix: dict = {}
        self.last = time.monotonic()
        self.disable = False

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= LOG_EVERY_S:
            self._line()

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def close(self) -> None:
        if self.lines and self.done != self.logged:
            self._line()

    def _line(self) -> None:
        self.last, self.lines, self.logged = time.monotonic(), self.lines + 1, self.done
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        total = "?" if self.total is None else self.total
        logger.info("%s: %d/%s %s(s)%s", self.desc, self.done, total, self.unit, extra)


def progress(total: int | None, desc: str, unit: str, enabled: bool = True, leave: bool = True):
    """A progress display for ``total`` items: a tqdm bar where stderr is a terminal, log lines elsewhere, nothing
    when not ``enabled`` or when ``$PIPELINE_PROGRESS`` is off.

    Args:
        total: the number of items (None: unknown).
        desc: what is being done (``"segment"``).
        unit: what an item is (``"case"``).
        enabled: False for ``--no-progress``. Defaults to True.
        leave: keep the finished bar on the terminal. Defaults to True.

    Returns:
        An object with tqdm's ``update(n)``, ``set_postfix(dict)`` and ``close()``.

    Example:
        >>> bar = progress(2, "segment", "case", enabled=False)
        >>> bar.update(1); bar.close()
    """
    from tqdm.auto import tqdm

    enabled = enabled and progress_enabled()
    if enabled and not sys.stderr.isatty():
        return _LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave)


def tracked(items: Iterable[T], total: int | None, desc: str, unit: str, enabled: bool = True,
            leave: bool = True) -> Iterator[T]:
    """``items``, one at a time, counted by a :func:`progress` display that closes when they run out.

    Args:
        items: what to go through (e.g. ``pool.map(...)``).
        total: how many there are (None: unknown).
        desc: what is being done.
        unit: what an item is.
        enabled: False for ``--no-progress``. Defaults to True.
        leave: keep the finished bar on the terminal. Defaults to True.

    Example:
        >>> list(tracked(range(3), 3, "checking cases", "case", enabled=False))
        [0, 1, 2]
    """
    bar = progress(total, desc, unit, enabled=enabled, leave=leave)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def _dropping_noise(show: Callable) -> Callable:
    """``warnings.showwarning`` that drops the warnings of :data:`NOISE_SHOWN` and shows the others with ``show``."""
    patterns = [(re.compile(message), re.compile(where)) for message, where in NOISE_SHOWN]

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: object = None, line: str | None = None) -> None:
        if not any(m.match(str(message)) and w.match(str(filename)) for m, w in patterns):
            show(message, category, filename, lineno, file, line)

    showwarning.drops_noise = True  # type: ignore[attr-defined]
    return showwarning


def quiet_third_party() -> None:
    """Filter the warnings in :data:`NOISE_WARNINGS` and :data:`NOISE_SHOWN` and the log records in
    :data:`NOISE_LOGS` (each by its message and where it comes from), and the per-file narration of pydicom and
    highdicom (the batch job reports what matters about each file itself). Every other warning and log record is
    left as it was. Idempotent. The warning filters and ``warnings.showwarning`` are process-wide: call it inside
    ``warnings.catch_warnings()`` to undo them after.

    The command line calls it at start-up unless ``-v`` is given, and before it hands a bundle run to MONAI.

    Example:
        >>> quiet_third_party()
    """
    for message, category, module in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
    if not getattr(warnings.showwarning, "drops_noise", False):
        warnings.showwarning = _dropping_noise(warnings.showwarning)
    for name, starts in NOISE_LOGS.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.starts == starts for f in target.filters):
            target.addFilter(_DropMessages(starts))
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # odd encodings it reads anyway
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # attributes copied into a SEG
    for name in ("onnxscript", "onnx_ir"):  # the ONNX exporter's graph passes, step by step (nodes removed...)
        logging.getLogger(name).setLevel(logging.WARNING)
