"""How the command line talks: verbosity flags anywhere on the line, and progress that suits where it goes.

- :func:`hoist_verbosity`: ``-v``/``--verbose`` and ``-q``/``--quiet`` work before or after the subcommand, as in
  git or pip, so ``pipeline segment ... -v`` is not an error.
- :func:`progress`: a tqdm bar on a terminal; elsewhere (a log file, CI, ``nohup``) a log line at most every
  :data:`LOG_EVERY_S` seconds and one at the end, instead of thousands of ``\\r`` frames.

Example:
    >>> hoist_verbosity(["segment", "--model", "m.ts", "-v"])
    (['segment', '--model', 'm.ts'], 10)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

__all__ = ["LOG_EVERY_S", "hoist_verbosity", "progress"]

logger = logging.getLogger("pipeline")

#: seconds between progress lines when the output is not a terminal
LOG_EVERY_S = 30.0
_LEVELS = {"-v": logging.DEBUG, "--verbose": logging.DEBUG, "-q": logging.WARNING, "--quiet": logging.WARNING}


def hoist_verbosity(argv: Sequence[str]) -> tuple[list[str], int]:
    """``argv`` without its verbosity flags, and the logging level they ask for (INFO without one; the last one
    given wins). Arguments after ``--`` are left alone.

    Args:
        argv: the command line after the program name.
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


class _LogProgress:
    """tqdm's ``update``/``set_postfix``/``close`` as periodic log lines."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self.postfix: dict = {}
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= LOG_EVERY_S:
            self._line()

    def set_postfix(self, values: dict | None = None, **kwargs) -> None:
        self.postfix = {**(values or {}), **kwargs}

    def close(self) -> None:
        if self.total:
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        logger.info("%s: %d/%d %s(s)%s", self.desc, self.done, self.total, self.unit, extra)


def progress(total: int, desc: str, unit: str, enabled: bool = True):
    """A progress display for ``total`` items: a tqdm bar where stderr is a terminal, log lines elsewhere, nothing
    when not ``enabled``.

    Args:
        total: the number of items.
        desc: what is being done (``"segment"``).
        unit: what an item is (``"case"``).
        enabled: False for ``--no-progress``. Defaults to True.
    """
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return _LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
