"""Command line: ``python -m pipeline <command>``. Each command parses its arguments and calls library code.

Commands:
    synth     write a synthetic dataset (CT or MRI phantoms) and print its summary
    summary   print a dataset's summary (cases, shapes, spacings, orientations, labels, intensities)
    validate  check a dataset against the datalist rules
    folds     write a seeded K-fold split file
    plan      fingerprint a dataset and plan a bundle training for it (spacing, patch, network, schedule)
    export    export a trained checkpoint to TorchScript with its model card (parity-checked)
    segment   segment a file, folder or CSV list with an exported model
    sync-configs  write a shipped bundle's configs from configs/bundles (or, for another bundle, train.json's
              shared definitions into its inference.json); --check: compare only
    bundle    ``python -m monai.bundle ...`` with this package's speed defaults and quiet start-up
    demo      the main job on built-in synthetic data

Modules: :mod:`~pipeline.cli.options` (argparse pieces), :mod:`~pipeline.cli.parser` (the commands' options, help
and examples), :mod:`~pipeline.cli.commands` (what each command does), :mod:`~pipeline.cli.app` (``main``: logging,
progress, warning filters, exit status). Exit status, global options and progress: docs/cli.md. Bad input gives
one line on stderr, ``pipeline <command>: error: <rule>, got <value>``, and exit status 2.

Example:
    $ python -m pipeline synth --modality ct --cases 4 --out data/ct --seed 0
"""

from __future__ import annotations

from pipeline.cli.app import main
from pipeline.cli.parser import build_parser

__all__ = ["build_parser", "main"]
