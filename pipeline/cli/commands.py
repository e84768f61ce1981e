"""What each ``python -m pipeline`` command does with its parsed arguments: call the library, print the result.

Each ``cmd_*`` function returns the exit status (see docs/cli.md): 0 done, 1 the data broke a rule or a case
failed (a :class:`~pipeline.errors.DatasetError` raised here means 1 as well), 2 a usage error (raised as
:class:`~pipeline.errors.PipelineError` or ValueError and printed by :func:`pipeline.cli.app.main`).

Example:
    >>> from pipeline.cli.parser import build_parser
    >>> cmd_validate(build_parser().parse_args(["validate", "data/ct"]))  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from pipeline.cli.options import require_existing, writable_dir
from pipeline.errors import PipelineError

__all__ = ["bundle_dir", "cmd_demo", "cmd_export", "cmd_folds", "cmd_plan", "cmd_postprocess", "cmd_segment", "cmd_summary",
           "cmd_sync_configs", "cmd_synth", "cmd_validate", "overrides"]

logger = logging.getLogger("pipeline")
REPO = Path(__file__).resolve().parents[2]


def cmd_synth(args: argparse.Namespace) -> int:
    """``synth``: write a synthetic dataset and print its summary."""
    from pipeline.data import load_datalist, load_msd, summarize_datalist, write_synthetic_dataset

    if args.layout != "msd" and args.channels != 2:  # the library's rule, said in this command's options
        raise PipelineError(f"--layout {args.layout} is for two-channel data (--channels 2: 3D MRI); one channel is "
                            f"written with --layout msd, got --layout {args.layout} with --channels {args.channels}")
    out = writable_dir("--out", args.out)
    path = write_synthetic_dataset(out, modality=args.modality, cases=args.cases, seed=args.seed, dims=args.dims,
                                   shape=args.shape, spacing=args.spacing, channels=args.channels, layout=args.layout)
    datalist = load_msd(path) if args.layout == "msd" else load_datalist(path if path.suffix == ".csv" else out)
    print(summarize_datalist(datalist, progress=False).to_text())
    print(f"\nwrote {path}")
    return 0


def _existing_dataset(args: argparse.Namespace) -> None:
    """A dataset (and --labels) that is not there is a usage error (2), not a dataset that breaks a rule (1)."""
    require_existing("dataset", args.dataset)
    if args.labels is not None:
        require_existing("--labels", args.labels)


def _load(args: argparse.Namespace):
    from pipeline.data import load_datalist

    _existing_dataset(args)
    return load_datalist(args.dataset, fmt=args.format, labels_dir=args.labels)


def cmd_summary(args: argparse.Namespace) -> int:
    """``summary``: print a dataset's summary."""
    from pipeline.data import summarize_datalist

    summary = summarize_datalist(_load(args), intensity=not args.no_intensity, progress=not args.no_progress)
    print(summary.to_text(max_rows=args.rows))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate``: check every rule; a broken one raises DatasetError (exit status 1)."""
    from pipeline.data import validate_datalist

    datalist = _load(args)
    reports = validate_datalist(datalist, progress=not args.no_progress)
    print(f"{datalist.source}: {len(reports)} cases, no problems")
    return 0


def cmd_folds(args: argparse.Namespace) -> int:
    """``folds``: write a seeded K-fold split file."""
    from pipeline.data import make_splits, save_splits

    datalist = _load(args)
    splits = make_splits([item["case"] for item in datalist.items], args.num_folds, args.seed)
    path = save_splits(splits, args.out)
    sizes = ", ".join(str(len(f["val"])) for f in splits["folds"])
    print(f"wrote {args.num_folds} folds (seed {args.seed}, validation sizes {sizes}) to {path}")
    return 0


def python_invocation() -> str:
    """How to start this interpreter in a printed command: ``python`` where that is the one on PATH (an active
    venv), else its path (relative to the working folder when it lies below it, e.g. ``.venv/bin/python``).

    Example:
        >>> python_invocation()                                                       # doctest: +SKIP
        'python'
    """
    found = shutil.which("python")
    if found and os.path.abspath(found) == os.path.abspath(sys.executable):  # not realpath: a venv links its base
        return "python"
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fingerprint a dataset and write a plan; a dataset that breaks a rule raises DatasetError (1)."""
    from pipeline.planning import plan_dataset

    _existing_dataset(args)
    plan = plan_dataset(args.dataset, args.out, modality=args.modality, device=args.device, minutes=args.minutes,
                        fmt=args.format, labels_dir=args.labels, progress=not args.no_progress)
    configs = " + ".join(f"{c}.json" for c in plan.configs)
    print(plan.to_text())
    print(f"\nwrote {args.out} (and fingerprint.json beside it); train with a bundle's {configs} plus the plan:")
    listed = ",".join(f"'$B/{c}.json'" for c in plan.configs)
    print(f"  B=bundles/{plan.bundle}/configs\n  {python_invocation()} -m pipeline bundle run training --config_file "
          f"\"[{listed},'{args.out}']\" --bundle_root runs/planned")
    return 0


def bundle_dir(name: str) -> Path:
    """A bundle folder from ``--bundle``: a shipped bundle's name means the shipped bundle, even where the current
    folder holds a folder of that name (its config expressions would run); a path (with a separator) means that
    folder. Says which one is used.

    Args:
        name: a name under bundles/ or a folder holding configs/.

    Example:
        >>> bundle_dir("unetpp_ct_segmentation").name
        'unetpp_ct_segmentation'
    """
    path = Path(name)
    shipped = REPO / "bundles" / name
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


def overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs as a dict, each value read as JSON where it is JSON, else kept as text.

    Args:
        pairs: the ``KEY=VALUE`` strings.

    Example:
        >>> overrides(["sw_overlap=0.25", "name=x"])
        {'sw_overlap': 0.25, 'name': 'x'}
    """
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


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: a checkpoint to TorchScript or ONNX with its model card, parity-checked."""
    from pipeline.export import export_bundle, export_checkpoint
    from pipeline.export.common import RUNTIMES

    if args.bundle is None and (args.set or args.config != ["train"]):
        raise PipelineError("--config and --set need --bundle (the bundle whose configs they change)")
    if args.bundle is None:  # --format None: the suffix of --out decides
        result = export_checkpoint(args.checkpoint, args.out, level=args.level, device=args.device, half=args.half,
                                   fmt=args.format)
    else:
        result = export_bundle(bundle_dir(args.bundle), args.checkpoint, args.out, level=args.level,
                               device=args.device, half=args.half, configs=args.config, overrides=overrides(args.set),
                               fmt=args.format)
    card = result.card
    print(f"wrote {result.path} ({card.bundle.get('name', '')} {card.bundle.get('version', '')}, level {card.level}, "
          f"{card.export.precision if card.export else 'fp32'}, labels {list(card.labels.values())})")
    runtime = RUNTIMES[card.export.format if card.export else "torchscript"]
    print(f"parity: max |{runtime} - eager| = {result.max_abs_diff:.3g} on a {result.input_shape} input")
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    """``postprocess``: choose the postprocessing on validation cases, write it into a copy of the model, print the
    Dice table."""
    from pipeline.export.postprocess import choose_for_model

    require_existing("--model", args.model)
    require_existing("--images", args.images)
    require_existing("--labels", args.labels)
    if args.card is not None:
        require_existing("--card", args.card)
    if args.tolerance < 0:
        raise PipelineError(f"--tolerance must be >= 0, got {args.tolerance}")
    result = choose_for_model(args.model, args.images, args.labels, args.out, tolerance=args.tolerance,
                              device=args.device, precision=args.precision, workers=args.workers,
                              progress=not args.no_progress, card=args.card)
    print(f"Dice per class on {result.choice.cases} validation case(s) (* applied):")
    print(result.table())
    decision = result.choice.decision
    print(f"wrote {result.path}: foreground {'kept largest' if decision.foreground else 'as is'}, largest component "
          f"for labels {list(decision.labels) or 'none'}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    """``segment``: the batch job; exit status 1 when a case failed, a case lacks the statistics or preview asked
    for, or the disk filled up; 2 when --input cannot be read as inputs (missing, not images, a CSV without its
    column)."""
    from pipeline.errors import DatasetError, DiskFullError
    from pipeline.inference import Extras, parse_shard, segment

    shard = parse_shard(args.shard) if args.shard else None
    try:
        report = segment(args.model, args.input, args.output, device=args.device, level=args.level, tta=args.tta,
                         overlap=args.overlap, sw_batch_size=args.sw_batch_size, workers=args.workers, shard=shard,
                         precision=args.precision, overwrite=args.overwrite, progress=not args.no_progress,
                         output_format=args.output_format,
                         extras=Extras(statistics=args.statistics, preview=args.preview))
    except DiskFullError as exc:  # the job stopped; what it finished is complete, a re-run resumes
        sys.stderr.write(f"pipeline segment: stopped: {exc}\n")
        return 1
    except DatasetError as exc:  # --input is not what the job takes (a case's own problems are in the report)
        raise PipelineError(str(exc)) from exc  # a usage error: 2
    counts, incomplete = report.counts(), report.incomplete()
    print(f"{counts['ok']} segmented, {counts['skipped']} already complete, {counts['failed']} failed"
          + (f", {len(incomplete)} without their {' or '.join(report.extras)}" if incomplete else "")
          + f"; report: {Path(args.output) / (report.stem + '.json')}")
    for case in report.cases:
        if case.status == "failed":
            print(f"  FAILED {case.input}: {case.error}")
        elif case in incomplete:  # its label map is there, an output asked for is not: a verdict, as a failure
            print(f"  INCOMPLETE {case.input}: {case.warning}")
        elif case.warning:
            print(f"  WARNING {case.input}: {case.warning}")
    return 1 if counts["failed"] or incomplete else 0


def cmd_sync_configs(args: argparse.Namespace) -> int:
    """``sync-configs``: write (or with --check, compare) a bundle's generated configs; 1 when --check differs."""
    from pipeline.zoo import sync_bundle

    folder = bundle_dir(args.bundle)
    changed, what = sync_bundle(folder, check=args.check)
    if changed and args.check:
        print(f"{folder.name}: differs from {what} in: {', '.join(changed)} "
              f"(run `python -m pipeline sync-configs {args.bundle}`)")
        return 1
    print(f"{folder.name}: {'now as' if changed else 'as'} {what} defines it"
          + (f" (updated: {', '.join(changed)})" if changed else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the main job on built-in data; a step that fails is exit status 1 (its log is named)."""
    from pipeline.demo import run_demo

    writable_dir("--out", args.out)
    try:
        run_demo(args.out, cases=args.cases, epochs=args.epochs, seed=args.seed,
                 say=lambda line: print(line, flush=True))
    except PipelineError as exc:  # the arguments were checked above: what fails now is a step of the job
        sys.stderr.write(f"pipeline demo: failed: {exc}\n")
        return 1
    return 0
