"""Dice of what a user deploys: a trained bundle's model exported (``python -m pipeline export``), the fold's
validation cases segmented by ``python -m pipeline segment`` and scored against their labels on each case's own
grid, per UNet++ level and with or without test-time mirroring, with the seconds each setting took.

This is how the accuracy issue measured the MRI recipe ("trained, exported, ``pipeline segment`` with defaults");
the bundle's own validation (``eval/validation``) scores the same cases at the training spacing instead.

    .venv/bin/python benchmarks/deployed_dice.py --bundle_root runs/hippo [--settings L2 L3 L4 L4+tta]
        [--dataset_dir ../shared/data/hippocampus] [--config plan.json] [--device cpu|cuda]

A setting is ``L<level>``, ``auto`` (the level the model card records, else the full network), with ``+tta`` for
mirroring. The validation cases and labels are the model card's (``models/model_card.json``); a run trained before the
card uses fold 0 of ``<bundle_root>/models/splits.json`` and is exported with ``--bundle``/``--config``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import add_trained_bundle_arguments, machine, write_json

from pipeline.deploy import find_card


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, env=dict(os.environ))
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _score(out: Path, dataset: Path, names: list[str], labels: dict[str, str]) -> dict[str, float]:
    import nibabel as nib

    from pipeline.training.metrics import dice_scores

    per_case = []
    for name in names:
        pred = np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj)
        truth = np.asarray(nib.load(dataset / "labelsTr" / f"{name}.nii.gz").dataobj)
        if pred.shape != truth.shape:
            raise SystemExit(f"{name}: prediction shape {pred.shape} differs from the label's {truth.shape}")
        per_case.append(dice_scores(pred, truth.round().astype(np.int64), labels))
    scores = {name: float(np.nanmean([c[name] for c in per_case])) for name in per_case[0]}
    return {**scores, "mean": float(np.mean(list(scores.values())))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trained_bundle_arguments(parser)
    parser.add_argument("--settings", nargs="+", default=["auto", "L2", "L3", "L4", "L4+tta"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    root, dataset = Path(args.bundle_root).resolve(), Path(args.dataset_dir).resolve()
    card = find_card(root / "models/model.pt")
    if card is not None:
        names, labels = list(card.training.dataset.get("val", [])), dict(card.labels)
    else:
        names = json.loads((root / "models/splits.json").read_text())["folds"][0]["val"]
        labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    py = [sys.executable, "-m", "pipeline"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inputs = tmp / "in"
        inputs.mkdir()
        for name in names:
            os.symlink(dataset / "imagesTr" / f"{name}.nii.gz", inputs / f"{name}.nii.gz")
        model = tmp / "model.ts"
        config = ["--config", "train", *[str(Path(c).resolve()) for c in args.config]] if args.config else []
        without_card = [] if card is not None else ["--bundle", args.bundle, *config]
        _run([*py, "export", "--checkpoint", str(root / "models/model.pt"), "--out", str(model), *without_card])
        for setting in args.settings:
            level, _, tta = setting.partition("+")
            out = tmp / setting.replace("+", "_")
            cmd = [*py, "segment", "--model", str(model), "--input", str(inputs), "--output", str(out),
                   "--device", args.device, "--no-progress"]
            if level != "auto":
                cmd += ["--level", level.lstrip("L")]
            if tta:
                cmd.append("--tta")
            seconds = _run(cmd)
            row = {"setting": setting, "seconds": seconds, "cases": len(names), **_score(out, dataset, names, labels)}
            rows.append(row)
            print(f"{setting:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)
                                                 and k != "seconds") + f"  {seconds:.1f} s", flush=True)
    print(f"wrote {write_json('deployed_dice', {'machine': machine(), 'bundle_root': str(root), 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
