"""The ``python -m pipeline`` argument parser: each command with a description, one example and its defaults shown.

Global options (``-v``, ``-q``) work before or after the command (:func:`pipeline.console.hoist_verbosity`);
``--no-progress`` works before or after the command too (listed in the help of the commands that show progress).

Example:
    >>> build_parser().parse_args(["validate", "."]).command
    'validate'
"""

from __future__ import annotations

import argparse

from pipeline import __version__
from pipeline.cli import commands
from pipeline.cli.options import HelpFormatter, Once, Parser, int_at_least, positive_float

__all__ = ["EXIT_CODES", "build_parser"]

#: The exit status scheme every command follows (docs/cli.md holds the same table).
EXIT_CODES = """exit status:
  0    done, nothing wrong found
  1    the data broke a rule, or a case failed (validate, summary, folds, plan; segment, also when its
       --statistics or --preview could not be made for a case; postprocess, when a validation case failed or
       has no reference; sync-configs --check; a step of demo)
  2    usage error: an unknown option, a value that breaks its rule, a path that does not exist, an output that
       cannot be written, a model or checkpoint that cannot be loaded, a segment --input without images
  130  interrupted (Ctrl-C)
  141  the output pipe closed early (`... | head`)
  bundle: MONAI's own status"""


def _command(sub: argparse._SubParsersAction, name: str, summary: str, description: str, example: str,
             progress: bool = False) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (for ``pipeline --help``), a description and an example."""
    parser = sub.add_parser(name, help=summary, description=f"{summary}.\n\n{description}",
                            epilog=f"example:\n  {example}", formatter_class=HelpFormatter)
    parser.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS,  # accepted everywhere
                        help="no progress display (on a terminal a bar, elsewhere a log line every 30 s)" if progress
                        else argparse.SUPPRESS)  # shown where the command has progress to show
    return parser


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    from pipeline.data.datalist import FORMATS

    parser.add_argument("dataset", help="dataset folder (MSD or nnU-Net v2 raw), CSV file, or images folder")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="datalist layout")
    parser.add_argument("--labels", default=None, help="labels folder (paired layout)")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "synth", "write a synthetic dataset (CT or MRI phantoms) and print its summary",
                 "Phantoms with known labels, in varied orientations and spacings: data to try every command on.",
                 "python -m pipeline synth --modality ct --cases 6 --out data/ct --seed 0")
    p.add_argument("--modality", required=True, choices=("ct", "mri"), help="phantom type")
    p.add_argument("--cases", type=int_at_least(1), default=8, help="number of cases (>= 1)")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3 = volumes, 2 = axial slices")
    p.add_argument("--shape", type=int_at_least(4), nargs="+", default=None, metavar="N",
                   help="grid size x y z (default: 64 64 24 for CT, 40 48 40 for MRI)")
    p.add_argument("--spacing", type=positive_float, nargs=3, default=None, metavar="MM",
                   help="voxel size in mm (default: 0.8 0.8 2.5 for CT, 1 1 1 for MRI)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1, help="2: T1-like + T2-like MRI (3D)")
    p.add_argument("--layout", choices=("msd", "nnunet", "csv"), default="msd",
                   help="msd (MSD dataset.json; two channels as a 4D NIfTI), or, for two channels only, nnunet "
                        "(CASE_0000/_0001) or csv (image_0,image_1)")
    p.set_defaults(func=commands.cmd_synth)


def _add_inspection(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "summary", "print a dataset's summary",
                 "Cases, shapes, spacings, orientations, labels and intensities, read from every file.\n"
                 "Exit status 1 when the dataset cannot be read as one (e.g. dataset.json lists no cases).",
                 "python -m pipeline summary data/ct --no-intensity", progress=True)
    _dataset_args(p)
    p.add_argument("--rows", type=int_at_least(0), default=20, help="show per-case rows up to this many cases")
    p.add_argument("--no-intensity", action="store_true", help="skip reading image voxels (faster)")
    p.set_defaults(func=commands.cmd_summary)

    p = _command(sub, "validate", "check a dataset against every datalist rule",
                 "Every file readable, labels present and within the declared values, geometry of image and label\n"
                 "equal, channels consistent, no duplicates. Exit status 1 lists every broken rule, one a line.",
                 "python -m pipeline validate data/ct", progress=True)
    _dataset_args(p)
    p.set_defaults(func=commands.cmd_validate)

    p = _command(sub, "folds", "write a seeded K-fold split file",
                 "The same seed and cases give the same folds on every machine.",
                 "python -m pipeline folds data/ct --num-folds 3 --out data/ct/splits.json")
    _dataset_args(p)
    p.add_argument("--num-folds", type=int_at_least(2), default=5, help="K")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--out", required=True, help="split JSON file to write")
    p.set_defaults(func=commands.cmd_folds)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "plan", "fingerprint a dataset and plan a bundle training for it (writes plan.json)",
                 "Validates the dataset as `validate` does (exit status 1 when a rule is broken), measures it\n"
                 "(fingerprint.json), and chooses spacing, patch, network and schedule to fit the time budget.",
                 "python -m pipeline plan data/ct --out plans/ct/plan.json --minutes 30", progress=True)
    _dataset_args(p)
    p.add_argument("--out", required=True, help="plan file to write (JSON; fingerprint.json goes beside it)")
    p.add_argument("--modality", choices=("auto", "ct", "mri"), default="auto",
                   help="auto: declared channel names, else intensities")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device the training will run on (auto: CUDA when present)")
    p.add_argument("--minutes", type=positive_float, default=60.0, help="training budget in minutes")
    p.set_defaults(func=commands.cmd_plan)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "export", "export a trained checkpoint to TorchScript or ONNX (model card embedded, "
                 "parity-checked)",
                 "The model card beside the checkpoint says how it was trained; the exported file carries it,\n"
                 "so `segment` needs nothing else. The suffix of --out chooses the format: .ts TorchScript (the\n"
                 "level stays switchable), .onnx ONNX (one level, fp32, run by ONNX Runtime; pip install\n"
                 "'unetpp-pipeline[onnx]').",
                 "python -m pipeline export --checkpoint runs/ct/models/model.pt --out ct.ts")
    p.add_argument("--checkpoint", required=True, help="models/model.pt (best) or models/checkpoint_latest.pt; the "
                   "model card beside it (models/model_card.json) says how it was trained")
    p.add_argument("--out", required=True, help="file to write: model.ts (TorchScript) or model.onnx (ONNX)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None,
                   help="the export format (default: the suffix of --out decides; given, it must agree with it)")
    p.add_argument("--bundle", default=None, help="bundle folder or name under bundles/: for a checkpoint without a "
                   "model card, or with --config/--set to override the card's settings")
    p.add_argument("--level", type=int_at_least(1), default=None, help="UNet++ inference level (default: the card's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (an ONNX export traces and checks on the CPU)")
    p.add_argument("--half", action="store_true", help="fp16 weights (needs --device cuda; TorchScript only)")
    p.add_argument("--config", nargs="+", default=["train"], help="with --bundle: configs combined, by name or path "
                   "(e.g. train train_2d, or train plans/plan.json)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="with --bundle: config overrides, e.g. sw_overlap=0.25 (only what they change is overridden)")
    p.set_defaults(func=commands.cmd_export)


def _add_postprocess(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "postprocess", "choose keep-the-largest-component postprocessing on validation cases "
                 "(nnU-Net's rule) and write it into the model card",
                 "Segments the validation images without postprocessing, measures Dice per class without and with\n"
                 "keeping the largest connected component (the foreground as a whole first, then each class on top),\n"
                 "keeps each step that lowers no Dice, and writes the decision into the card of a copy of the model\n"
                 "(the weights unchanged). segment, the MLflow model and bundle inference apply it.",
                 "python -m pipeline postprocess --model mri.ts --images val/imagesTr --labels val/labelsTr "
                 "--out mri_pp.ts", progress=True)
    p.add_argument("--model", required=True, action=Once, help="TorchScript (.ts) file from `pipeline export`")
    p.add_argument("--images", required=True, action=Once, help="validation images: file, folder (recursive) or "
                   "CSV list, as segment --input")
    p.add_argument("--labels", required=True, action=Once, help="folder of their reference label maps (same file "
                   "names, or nnU-Net case names for CASE_0000 channel files)")
    p.add_argument("--out", default=None, help="model file to write (default: <model>_pp.ts beside --model; may be "
                   "--model itself, replaced atomically)")
    p.add_argument("--tolerance", type=float, default=0.0, help="Dice drop still accepted for a step (>= 0)")
    p.add_argument("--card", default=None, help="also record the decision in this model_card.json (beside the "
                   "checkpoint the model was exported from: bundle inference reads that one)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="as for segment")
    p.add_argument("--workers", type=int_at_least(1), default=2, help="reading/writing threads")
    p.set_defaults(func=commands.cmd_postprocess)


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "segment", "segment images with an exported model",
                 "Files, DICOM series, folders (recursive) or a CSV list; resumes where it stopped. Writes label\n"
                 "maps and report.json/report.csv. Exit status 1 when a case failed (the others are done), or\n"
                 "lacks the --statistics or --preview output asked for (its label map is kept).",
                 "python -m pipeline segment --model ct.ts --input data/ct_new/imagesTr --output labels_ct/",
                 progress=True)
    p.add_argument("--model", required=True, action=Once, help="TorchScript (.ts) or ONNX (.onnx) file from "
                   "`pipeline export`")
    p.add_argument("--input", required=True, action=Once,
                   help="image file, DICOM folder, folder (recursive) or CSV list (once: gather inputs in a CSV)")
    p.add_argument("--output", required=True, action=Once, help="output folder (label maps, report.json, report.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--level", type=int_at_least(1), default=None, help="UNet++ level (default: the exported one; "
                   "an ONNX model holds that one only)")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",  # Predictor's
                   help="auto: fp16 autocast on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32; "
                   "an ONNX model runs fp32 (auto or fp32 only)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: the "
                   "model card's)")
    p.add_argument("--sw-batch-size", type=int_at_least(1), default=None,
                   help="windows per forward pass (default: the model card's, the bundle's sw_batch_size)")
    p.add_argument("--workers", type=int_at_least(1), default=2, help="reading/writing threads")
    p.add_argument("--shard", default=None, help="i/n: this process takes the cases whose path hashes to shard i "
                   "of n (default: RANK/WORLD_SIZE under torchrun, else all)")
    p.add_argument("--overwrite", action="store_true", help="redo every case, even one whose output is current, "
                   "and replace a file at an output name that this job did not write")
    p.add_argument("--output-format", choices=("auto", "nifti", "dicom-seg"), default="auto",
                   help="auto: DICOM SEG for DICOM series input, the input's own format otherwise; nifti: NIfTI for "
                        "all; dicom-seg: DICOM SEG (DICOM series input only)")
    p.add_argument("--statistics", action="store_true",
                   help="per label: voxel count and the image's intensity mean, median and std under it (first "
                        "channel), in report.json and as report.csv columns after the volumes")
    p.add_argument("--preview", action="store_true",
                   help="write <case>_preview.png beside each label map: axial, coronal and sagittal planes through "
                        "the largest structure, labels over the image, radiological convention")
    p.set_defaults(func=commands.cmd_segment)


def _add_bundle_tools(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sync-configs", "write a bundle's generated configs (--check: compare only)",
                 "A shipped bundle's configs are written from configs/bundles; for another bundle, train.json's\n"
                 "shared definitions are copied into its inference.json. Exit status 1 when --check finds a\n"
                 "difference.", "python -m pipeline sync-configs unetpp_ct_segmentation --check")
    p.add_argument("bundle", help="bundle folder, or a name under bundles/")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when a config differs")
    p.set_defaults(func=commands.cmd_sync_configs)

    p = _command(sub, "bundle", "python -m monai.bundle ... with the fast allocator and quiet start-up",
                 "Runs MONAI's bundle command line (`python -m monai.bundle`) in this process, started with the\n"
                 "fast memory allocator (pipeline/fastpath.py) and with the third-party warnings that tell a user\n"
                 "nothing filtered (docs/cli.md); everything after MONAI's command (run, verify_metadata,\n"
                 "ckpt_export, ...) is MONAI's. MONAI's help for one of its commands: `bundle run --help`.\n"
                 "--no-progress here (or PIPELINE_PROGRESS=0 for `python -m monai.bundle`) turns the training's\n"
                 "progress off; where output is not a terminal it is a log line every 30 s, not a bar.",
                 "B=bundles/unetpp_ct_segmentation/configs\n"
                 "  python -m pipeline bundle run training --config_file $B/train.json \\\n"
                 "      --dataset_dir data/ct --bundle_root runs/ct --epochs 1", progress=True)
    p.add_argument("monai_args", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                   help="MONAI's bundle command and its arguments")
    p.set_defaults(func=None)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "demo", "end to end on synthetic CT: synth, train, export, segment, Dice",
                 "Synthesises CT phantoms, trains the CT bundle with MLflow tracking, exports the best model and\n"
                 "segments held-out cases with it alone; prints their Dice. Exit status 1 names the step that\n"
                 "failed and its log.", "python -m pipeline demo --out demo_output --epochs 40", progress=True)
    p.add_argument("--out", default="demo_output", help="output folder")
    p.add_argument("--cases", type=int_at_least(4), default=8, help="training phantoms")
    p.add_argument("--epochs", type=int_at_least(1), default=40, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=commands.cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pipeline`` argument parser.

    Example:
        >>> build_parser().parse_args(["summary", ".", "--rows", "5"]).rows
        5
    """
    parser = Parser(prog="pipeline", description="UNet++ segmentation pipeline for CT and MRI (MONAI).",
                    epilog=f"{EXIT_CODES}\n\n`pipeline COMMAND --help` describes a command, with an example.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and every third-party warning (before or after the command)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (before or after)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress display (before or after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=Parser)
    for add in (_add_synth, _add_inspection, _add_plan, _add_export, _add_postprocess, _add_segment, _add_bundle_tools, _add_demo):
        add(sub)
    return parser
