"""Weight averaging (SWA-style) of a training's last epochs against its best model, scored by the bundle's own
validation (fold 0, sliding window, Dice per class).

The training must have kept per-epoch snapshots of the network, e.g. with the overlay
``benchmarks/configs/snapshots.json`` (a MONAI ``CheckpointSaver`` every epoch into ``<bundle_root>/snapshots``):

    python -m pipeline bundle run training --config_file "['$B/train.json','plan.json',\
'benchmarks/configs/snapshots.json']" --bundle_root runs/x
    .venv/bin/python benchmarks/weight_averaging.py --bundle_root runs/x --config plan.json --last 1 3 5 10

Averaging needs no recalibration here: the network's instance norms keep no running statistics.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import add_trained_bundle_arguments, bundle_validator, machine, pick_device, write_json


def _snapshots(folder: Path) -> list[Path]:
    """Snapshot files by epoch (``..._epoch=<N>.pt``), oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := re.search(r"(\d+)\.pt$", p.name))]
    return [p for _, p in sorted(found)]


def average(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the state dicts in ``paths`` (each a bare state dict or ``{"model": ...}``)."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        for key, value in state.items():
            total[key] = total.get(key, 0) + value.double()
    return {k: (v / len(paths)).float() for k, v in total.items()}


def main() -> None:
    args_parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trained_bundle_arguments(args_parser, dataset_dir="")  # "": the dataset a plan names
    args_parser.add_argument("--last", nargs="+", type=int, default=[1, 3, 5, 10])
    args_parser.add_argument("--json", default=None)
    args_parser.add_argument("--device", default=None)
    args = args_parser.parse_args()
    device = pick_device(args_parser, args.device)
    root = Path(args.bundle_root)
    snapshots = _snapshots(root / "snapshots")
    if not snapshots:
        args_parser.error(f"no snapshots in {root / 'snapshots'} (train with benchmarks/configs/snapshots.json)")
    from pipeline.deploy import load_network_weights

    _, network, evaluator = bundle_validator(args.bundle, str(root), args.dataset_dir, device, args.config)
    rows = []
    candidates = [("best model (models/model.pt)", None)] + [
        (f"mean of the last {n} epochs", snapshots[-n:]) for n in args.last if n <= len(snapshots)]
    for name, paths in candidates:
        if paths is None:
            load_network_weights(network, root / "models" / "model.pt")
        else:
            network.load_state_dict(average(paths))
        evaluator.run()
        metrics = {k: float(v) for k, v in evaluator.state.metrics.items()}
        rows.append({"weights": name, "epochs": [p.name for p in paths or []], **metrics})
        print(f"{name:<34}" + "  ".join(f"{k[4:]} {v:.4f}" for k, v in metrics.items() if "dice" in k), flush=True)
    print(f"wrote {write_json('weight_averaging', {'machine': machine(), 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
