"""``main``: parse the command line, set up logging, progress and warning filters, run one command, and turn what
it raised into the exit status of docs/cli.md (0 done, 1 the data broke a rule or a case failed, 2 usage error).

Example:
    >>> main(["validate", "/nonexistent"])  # doctest: +SKIP
    2
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
import warnings
from collections.abc import Sequence

from pipeline.cli.parser import build_parser
from pipeline.console import hoist_verbosity, progress_environment, quiet_third_party
from pipeline.errors import DatasetError, PipelineError

__all__ = ["main", "run_bundle"]


def _attach_values(argv: list[str]) -> list[str]:
    """``--shard -1/2`` -> ``--shard=-1/2``: argparse takes a value that starts with '-' for an option and would
    report a missing value instead of the rule the value breaks."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--shard" and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"--shard={arg}"
        else:
            out.append(arg)
    return out


def _monai_start(argv: Sequence[str]) -> int:
    """Where MONAI's arguments start in a ``bundle`` command line (``len(argv)`` for other commands): after
    ``bundle`` and the options before MONAI's own command. Verbosity flags are ours only before that point."""
    positional = [k for k, arg in enumerate(argv) if not arg.startswith("-")]
    if not positional or argv[positional[0]] != "bundle":
        return len(argv)
    return positional[1] if len(positional) > 1 else len(argv)


def run_bundle(monai_args: list[str]) -> int:
    """Run ``python -m monai.bundle <monai_args>`` in this process: already started with the fast allocator, and
    with the warning filters :func:`main` set up, which MONAI's own command line would not have. ``<command>
    --help`` asks MONAI for that command's help the way its command line (Python Fire) gives it:
    ``<command> -- --help``.

    Args:
        monai_args: MONAI's command and its arguments, e.g. ``["run", "training", "--config_file", "x.json"]``.

    Returns:
        MONAI's exit status (0 when it returns normally).

    Example:
        >>> run_bundle(["verify_metadata", "--help"])  # doctest: +SKIP
        0
    """
    args = list(monai_args)
    own = args[: args.index("--")] if "--" in args else args
    if "-h" in own or "--help" in own:
        args = [args[0], "--", "--help"]
    saved = sys.argv
    sys.argv = ["pipeline bundle", *args]  # Fire reads sys.argv[1:] (runpy sets [0] to MONAI's __main__.py)
    sys.stdout.flush()
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _error(command: str, exc: Exception, usage: bool) -> None:
    lines = str(exc).splitlines() or [type(exc).__name__]
    text = lines[0] if len(lines) == 1 else str(exc)
    sys.stderr.write(f"pipeline {command}: {'error: ' if usage else ''}{text}\n")


def _run(args: argparse.Namespace) -> int:
    """The command's exit status; what it raised, as one line on stderr and its status."""
    try:
        return int(args.func(args) or 0)
    except DatasetError as exc:  # the data broke a rule (as `validate` reports it): status 1
        _error(args.command, exc, usage=False)
        return 1
    except (PipelineError, ValueError) as exc:
        _error(args.command, exc, usage=True)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; no traceback (Python's documented way)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command stopped by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 1 the data broke a rule or a case failed, 2 usage error,
    130 interrupted, 141 output pipe closed; ``bundle``: MONAI's). The progress settings and warning filters hold
    while the command runs.

    Args:
        argv: the arguments after the program name. Defaults to ``sys.argv[1:]``.

    Example:
        >>> main(["synth", "--modality", "ct", "--cases", "1", "--out", "/tmp/d"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    start = _monai_start(argv)
    ours, level = hoist_verbosity(argv[:start])  # -v/-q before or after the subcommand
    # before the parser imports anything: tqdm reads TQDM_DISABLE when first imported (pydicom imports it)
    with warnings.catch_warnings(), progress_environment(enabled="--no-progress" not in ours):
        parser = build_parser()
        args = parser.parse_args(_attach_values(ours) + argv[start:])
        if args.command == "bundle" and not args.monai_args:
            parser.parse_args(["bundle", "--help"])  # prints this tool's help for bundle runs, exits 0
        if level != logging.DEBUG:  # -v shows every warning
            quiet_third_party()
        if args.command == "bundle":  # MONAI's logging.conf sets up logging
            return run_bundle(args.monai_args)
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        return _run(args)
