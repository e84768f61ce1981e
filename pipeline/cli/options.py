"""The command line's argparse pieces: one-line errors, options given once, value types that state their rule, and
help that shows every default.

Example:
    >>> int_at_least(1)("3")
    3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import PipelineError

__all__ = ["HelpFormatter", "Once", "Parser", "int_at_least", "positive_float", "require_existing", "writable_dir"]


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: ``prog: error: message (see --help)`` (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written (line breaks kept), and ``(default: X)`` after every option that has a
    default worth showing (not for flags, which default to off, nor for options without a default)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Once(argparse.Action):
    """An option that may be given once: a second value is an error, not a silent replacement of the first."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != self.default:
            parser.error(f"argument {option_string}: may be given once, got '{previous}' and '{values}'")
        setattr(namespace, self.dest, values)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``.

    Args:
        low: the smallest value accepted.

    Example:
        >>> int_at_least(2)("5")
        5
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a number > 0.

    Args:
        text: the value as typed.

    Example:
        >>> positive_float("2.5")
        2.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def require_existing(option: str, path: str) -> Path:
    """``path`` as a Path, or a one-line :class:`PipelineError` (exit status 2) where nothing is there. Checked when
    the command runs, not when it is parsed, so that a command line can be checked anywhere (the docs' test does).

    Args:
        option: the option or argument that named it (``--input``, ``dataset``).
        path: the path as given.

    Example:
        >>> require_existing("--input", ".")
        PosixPath('.')
    """
    if not Path(path).exists():
        raise PipelineError(f"{option} must be an existing file or folder, got '{path}'")
    return Path(path)


def writable_dir(option: str, path: str) -> Path:
    """Create ``path`` if needed and prove it writable, or raise a one-line :class:`PipelineError`.

    Args:
        option: the option that named it (``--out``).
        path: the folder.

    Example:
        >>> writable_dir("--out", tempfile.gettempdir()).is_dir()
        True
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{option} must be a writable folder, got '{path}' ({exc.strerror or exc})") from None
    return folder
