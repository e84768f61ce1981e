"""Command line: ``python -m pipeline <command>``. Each command parses its arguments and calls library code.

Commands:
    synth     write a synthetic MSD-layout dataset and print its summary
    summary   print a dataset's summary (cases, shapes, spacings, orientations, labels, intensities)
    validate  check a dataset against the datalist rules; exit status 1 when any is broken
    folds     write a seeded K-fold split file
    plan      fingerprint a dataset and plan a bundle training for it (spacing, patch, network, schedule)
    export    export a trained checkpoint to TorchScript with its model card (parity-checked)
    sync-configs  write a shipped bundle's configs from configs/bundles (or, for another bundle, train.json's
              shared definitions into its inference.json); --check: compare only
    segment   segment a file, folder or CSV list with an exported model; exit status 1 when a case failed
    demo      the main job on built-in synthetic data
    bundle    ``python -m monai.bundle ...`` with this package's speed defaults (e.g. ``bundle run training ...``)

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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.console import hoist_verbosity
from pipeline.errors import PipelineError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("pipeline")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line: ``prog: error: message`` (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


class _Once(argparse.Action):
    """An option that may be given once: a second value is an error, not a silent replacement of the first."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != self.default:
            parser.error(f"argument {option_string}: may be given once, got '{previous}' and '{values}'")
        setattr(namespace, self.dest, values)


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
    from pipeline.data import load_datalist, load_msd, summarize_datalist, write_synthetic_dataset

    out = _writable_dir("--out", args.out)
    path = write_synthetic_dataset(out, modality=args.modality, cases=args.cases, seed=args.seed, dims=args.dims,
                                   shape=args.shape, spacing=args.spacing, channels=args.channels, layout=args.layout)
    datalist = load_msd(path) if args.layout == "msd" else load_datalist(path if path.suffix == ".csv" else out)
    print(summarize_datalist(datalist, progress=False).to_text())
    print(f"\nwrote {path}")
    return 0


def _load(args: argparse.Namespace):
    from pipeline.data import load_datalist

    return load_datalist(args.dataset, fmt=args.format, labels_dir=args.labels)


def _cmd_summary(args: argparse.Namespace) -> int:
    from pipeline.data import summarize_datalist

    summary = summarize_datalist(_load(args), intensity=not args.no_intensity)
    print(summary.to_text(max_rows=args.rows))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.data import validate_datalist
    from pipeline.errors import DatasetError

    try:  # an unreadable listing, an empty dataset or a broken rule: all are the dataset's problems, status 1
        datalist = _load(args)
        reports = validate_datalist(datalist)
    except DatasetError as exc:
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


def _cmd_plan(args: argparse.Namespace) -> int:
    from pipeline.errors import DatasetError
    from pipeline.planning import plan_dataset

    try:
        plan = plan_dataset(args.dataset, args.out, modality=args.modality, device=args.device, minutes=args.minutes,
                            fmt=args.format, labels_dir=args.labels, progress=not args.no_progress)
    except DatasetError as exc:  # the dataset breaks a rule (as `validate` reports it): status 1
        sys.stderr.write(f"pipeline plan: {exc}\n")
        return 1
    configs = " + ".join(f"{c}.json" for c in plan.configs)
    print(plan.to_text())
    print(f"\nwrote {args.out} (and fingerprint.json beside it); train with a bundle's {configs} plus the plan:")
    listed = ",".join(f"'$B/{c}.json'" for c in plan.configs)
    print(f"  B=bundles/{plan.bundle}/configs\n  python -m pipeline bundle run training --config_file "
          f"\"[{listed},'{args.out}']\" --bundle_root runs/planned")
    return 0


def _bundle_dir(name: str) -> Path:
    """A shipped bundle's name means the shipped bundle, even where the current folder holds a folder of that name
    (its config expressions would run); a path (with a separator) means that folder. Says which one is used."""
    path = Path(name)
    shipped = Path(__file__).resolve().parent.parent / "bundles" / name
    bare = os.sep not in name and "/" not in name and name not in (".", "..")
    if bare and (shipped / "configs").is_dir():
        if (path / "configs").is_dir():
            logger.warning("--bundle %s: using the shipped bundle %s, not the folder ./%s (pass ./%s for that one)",
                           name, shipped, name, name)
        else:
            logger.info("--bundle %s: using %s", name, shipped)
        return shipped
    if (path / "configs").is_dir():
        logger.info("--bundle %s: using the folder %s", name, path.resolve())
        return path
    raise PipelineError(f"--bundle must be a bundle folder (holding configs/) or a bundle name under bundles/, "
                        f"got '{name}'")


def _overrides(pairs: list[str]) -> dict:
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set must be KEY=VALUE (a config id and a JSON value), got '{pair}'")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    from pipeline.export import export_bundle, export_checkpoint

    if args.bundle is None and (args.set or args.config != ["train"]):
        raise PipelineError("--config and --set need --bundle (the bundle whose configs they change)")
    if args.bundle is None:
        result = export_checkpoint(args.checkpoint, args.out, level=args.level, device=args.device, half=args.half)
    else:
        result = export_bundle(_bundle_dir(args.bundle), args.checkpoint, args.out, level=args.level,
                               device=args.device, half=args.half, configs=args.config, overrides=_overrides(args.set))
    card = result.card
    print(f"wrote {result.path} ({card.bundle.get('name', '')} {card.bundle.get('version', '')}, level {card.level}, "
          f"{card.export.precision if card.export else 'fp32'}, labels {list(card.labels.values())})")
    print(f"parity: max |TorchScript - eager| = {result.max_abs_diff:.3g} on a {result.input_shape} input")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from pipeline.errors import DiskFullError
    from pipeline.inference import parse_shard, segment

    shard = parse_shard(args.shard) if args.shard else None
    try:
        report = segment(args.model, args.input, args.output, device=args.device, level=args.level, tta=args.tta,
                         overlap=args.overlap, sw_batch_size=args.sw_batch_size, workers=args.workers, shard=shard,
                         precision=args.precision, overwrite=args.overwrite, progress=not args.no_progress,
                         output_format=args.output_format)
    except DiskFullError as exc:  # the job stopped; what it finished is complete, a re-run resumes
        sys.stderr.write(f"pipeline segment: stopped: {exc}\n")
        return 1
    counts = report.counts()
    print(f"{counts['ok']} segmented, {counts['skipped']} already complete, {counts['failed']} failed; "
          f"report: {Path(args.output) / (report.stem + '.json')}")
    for case in report.cases:
        if case.status == "failed":
            print(f"  FAILED {case.input}: {case.error}")
        elif case.warning:
            print(f"  WARNING {case.input}: {case.warning}")
    return 1 if counts["failed"] else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    _writable_dir("--out", args.out)
    run_demo(args.out, cases=args.cases, epochs=args.epochs, seed=args.seed,
             say=lambda line: print(line, flush=True))
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
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (before or after the command)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
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
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="2: T1-like + T2-like MRI (3D)")
    p.add_argument("--layout", choices=("msd", "nnunet", "csv"), default="msd",
                   help="msd (two channels: 4D NIfTI), nnunet (CASE_0000/_0001) or csv (image_0,image_1)")
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

    p = sub.add_parser("plan", help="fingerprint a dataset and plan a bundle training for it (writes plan.json)")
    _add_dataset_args(p)
    p.add_argument("--out", required=True, help="plan file to write (JSON; fingerprint.json goes beside it)")
    p.add_argument("--modality", choices=("auto", "ct", "mri"), default="auto",
                   help="auto: declared channel names, else intensities (default auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device the training will run on (default auto: CUDA when present)")
    p.add_argument("--minutes", type=_positive_float, default=60.0, help="training budget in minutes (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("export", help="export a trained checkpoint to TorchScript (model card embedded, "
                       "parity-checked)")
    p.add_argument("--checkpoint", required=True, help="models/model.pt (best) or models/checkpoint_latest.pt; the "
                   "model card beside it (models/model_card.json) says how it was trained")
    p.add_argument("--out", required=True, help="TorchScript file to write (e.g. model.ts)")
    p.add_argument("--bundle", default=None, help="bundle folder or name under bundles/: for a checkpoint without a "
                   "model card, or with --config/--set to override the card's settings")
    p.add_argument("--level", type=_int_at_least(1), default=None, help="UNet++ inference level (default: the card's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--half", action="store_true", help="fp16 weights (needs --device cuda)")
    p.add_argument("--config", nargs="+", default=["train"], help="with --bundle: configs combined, by name or path "
                   "(default: train; e.g. train train_2d, or train plans/plan.json)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="with --bundle: config overrides, e.g. sw_overlap=0.25 (only what they change is overridden)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("segment", help="segment images with an exported model; exit 1 when a case failed")
    p.add_argument("--model", required=True, action=_Once, help="TorchScript file from `pipeline export`")
    p.add_argument("--input", required=True, action=_Once,
                   help="image file, DICOM folder, folder (recursive) or CSV list (once: gather inputs in a CSV)")
    p.add_argument("--output", required=True, action=_Once,
                   help="output folder (label maps, report.json, report.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--level", type=_int_at_least(1), default=None, help="UNet++ level (default: the exported one)")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",  # Predictor's
                   help="auto: fp16 autocast on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1)")
    p.add_argument("--sw-batch-size", type=_int_at_least(1), default=None,
                   help="windows per forward pass (default: the model card's, the bundle's sw_batch_size)")
    p.add_argument("--workers", type=_int_at_least(1), default=2, help="reading/writing threads (default 2)")
    p.add_argument("--shard", default=None, help="i/n: this process takes every n-th case from i (default: "
                   "RANK/WORLD_SIZE under torchrun, else all)")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    p.add_argument("--output-format", choices=("auto", "nifti", "dicom-seg"), default="auto",
                   help="auto (default): DICOM SEG for DICOM series input, the input's own format otherwise; nifti: "
                        "NIfTI for all; dicom-seg: DICOM SEG (DICOM series input only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("sync-configs", help="write a shipped bundle's configs from configs/bundles (another bundle: "
                       "train.json's shared keys into inference.json)")
    p.add_argument("bundle", help="bundle folder, or a name under bundles/")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a config differs")
    p.set_defaults(func=_cmd_sync_configs)

    sub.add_parser("bundle", help="python -m monai.bundle ... with the fast allocator (e.g. bundle run training ...)")

    p = sub.add_parser("demo", help="the main job on built-in synthetic data")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--cases", type=_int_at_least(4), default=8, help="training phantoms (default 8)")
    p.add_argument("--epochs", type=_int_at_least(1), default=40, help="training epochs (default 40)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_demo)
    return parser


def _cmd_sync_configs(args: argparse.Namespace) -> int:
    from pipeline.zoo import sync_bundle

    folder = _bundle_dir(args.bundle)
    changed, what = sync_bundle(folder, check=args.check)
    if changed and args.check:
        print(f"{folder.name}: differs from {what} in: {', '.join(changed)} "
              f"(run `python -m pipeline sync-configs {args.bundle}`)")
        return 1
    print(f"{folder.name}: {'now as' if changed else 'as'} {what} defines it"
          + (f" (updated: {', '.join(changed)})" if changed else ""))
    return 0


def _bundle_passthrough(rest: Sequence[str]) -> int:
    """Hand over to MONAI's bundle command line in this (allocator-preloaded) environment."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "monai.bundle", *rest])
    return 0  # pragma: no cover - execv does not return


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 the job found problems, 2 bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bundle"]:
        return _bundle_passthrough(args_list[1:])
    parser = build_parser()
    args_list, level = hoist_verbosity(args_list)  # -v/-q before or after the subcommand
    args = parser.parse_args(_attach_values(args_list))
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args.verbose = level == logging.DEBUG
    if not args.verbose:  # pydicom and highdicom narrate each file (odd encodings read anyway, attributes copied);
        logging.getLogger("pydicom").setLevel(logging.ERROR)  # the job names what matters about each file itself
        logging.getLogger("highdicom").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
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
