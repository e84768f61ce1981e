"""Command line: ``python -m pipeline <command>``. Each command parses its arguments and calls library code.

Commands:
    synth     write a synthetic MSD-layout dataset and print its summary
    summary   print a dataset's summary (cases, shapes, spacings, orientations, labels, intensities)
    validate  check a dataset against the datalist rules; exit status 1 when any is broken
    folds     write a seeded K-fold split file
    demo      the main job on built-in synthetic data

Bad input gives one line on stderr, ``pipeline <command>: error: <rule>, got <value>``, and exit status 2.

Example:
    $ python -m pipeline synth --modality ct --cases 4 --out data/ct --seed 0
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.errors import PipelineError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("pipeline")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: ``prog: error: message`` (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _writable_dir(option: str, path: str) -> Path:
    """Create ``path`` if needed and prove it writable, or raise a one-line PipelineError."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{option} must be a writable folder, got '{path}' ({exc.strerror or exc})") from None
    return folder


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data import load_msd, summarize_datalist, write_synthetic_dataset

    out = _writable_dir("--out", args.out)
    path = write_synthetic_dataset(out, modality=args.modality, cases=args.cases, seed=args.seed, dims=args.dims,
                                   shape=args.shape, spacing=args.spacing)
    print(summarize_datalist(load_msd(path), progress=False).to_text())
    print(f"\nwrote {path}")
    return 0


def _load(args: argparse.Namespace):  # noqa: ANN202 - Datalist
    from pipeline.data import load_datalist

    return load_datalist(args.dataset, fmt=args.format, labels_dir=args.labels)


def _cmd_summary(args: argparse.Namespace) -> int:
    from pipeline.data import summarize_datalist

    summary = summarize_datalist(_load(args), intensity=not args.no_intensity)
    print(summary.to_text(max_rows=args.rows))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.data import DatasetValidationError, validate_datalist

    datalist = _load(args)
    try:
        reports = validate_datalist(datalist)
    except DatasetValidationError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    print(f"{datalist.source}: {len(reports)} cases, no problems")
    return 0


def _cmd_folds(args: argparse.Namespace) -> int:
    from pipeline.data import make_splits, save_splits

    datalist = _load(args)
    splits = make_splits([item["case"] for item in datalist.items], args.num_folds, args.seed)
    path = save_splits(splits, args.out)
    sizes = ", ".join(str(len(f["val"])) for f in splits["folds"])
    print(f"wrote {args.num_folds} folds (seed {args.seed}, validation sizes {sizes}) to {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.data import load_msd, summarize_datalist, write_synthetic_dataset

    out = _writable_dir("--out", args.out)
    path = write_synthetic_dataset(out / "data", modality=args.modality, cases=args.cases, seed=args.seed)
    print(summarize_datalist(load_msd(path), progress=False).to_text())
    print(f"\ndemo dataset: {path}")
    return 0


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    from pipeline.data.datalist import FORMATS

    parser.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 raw), CSV file, or images folder")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="datalist layout")
    parser.add_argument("--labels", default=None, help="labels folder (paired layout)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipeline`` argument parser."""
    parser = _Parser(prog="pipeline", description="UNet++ segmentation pipeline for CT and MRI (MONAI).")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("synth", help="write a synthetic MSD-layout dataset and print its summary")
    p.add_argument("--modality", required=True, choices=("ct", "mri"), help="phantom type")
    p.add_argument("--cases", type=_int_at_least(1), default=8, help="number of cases (>= 1, default 8)")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3 = volumes, 2 = axial slices")
    p.add_argument("--shape", type=_int_at_least(4), nargs="+", default=None, metavar="N",
                   help="grid size x y z (default: 64 64 24 for CT, 40 48 40 for MRI)")
    p.add_argument("--spacing", type=_positive_float, nargs=3, default=None, metavar="MM",
                   help="voxel size in mm (default: 0.8 0.8 2.5 for CT, 1 1 1 for MRI)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("summary", help="print a dataset summary")
    _add_dataset_args(p)
    p.add_argument("--rows", type=_int_at_least(0), default=20, help="show per-case rows up to this many cases")
    p.add_argument("--no-intensity", action="store_true", help="skip reading image voxels")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("validate", help="check a dataset; exit 1 when a rule is broken")
    _add_dataset_args(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("folds", help="write a seeded K-fold split file")
    _add_dataset_args(p)
    p.add_argument("--num-folds", type=_int_at_least(2), default=5, help="K (default 5)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--out", required=True, help="split JSON file to write")
    p.set_defaults(func=_cmd_folds)

    p = sub.add_parser("demo", help="the main job on built-in synthetic data")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--modality", choices=("ct", "mri"), default="ct", help="phantom type (default ct)")
    p.add_argument("--cases", type=_int_at_least(2), default=8, help="number of cases (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 the job found problems, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (PipelineError, ValueError) as exc:
        first = str(exc).splitlines()
        sys.stderr.write(f"pipeline {args.command}: error: {first[0] if len(first) == 1 else exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
