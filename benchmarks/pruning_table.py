"""The UNet++ paper's pruning table on our data: per inference level L1..L4 of a trained model, the parameters,
GFLOPs per window, seconds per volume and validation Dice (hippocampus fold 0, the bundle's own validation:
same preprocessing, sliding window with Gaussian blending, Dice per class).

    .venv/bin/python benchmarks/pruning_table.py --bundle_root runs/hippo [--dataset_dir ../shared/data/hippocampus]
        [--config plans/hippo/plan.json] [--device cpu|cuda]

``--device`` defaults to CUDA when present; the precision is the bundle's (fp16 AMP on CUDA, bf16 on CPUs with
native bf16). ``--config`` lays further files (a plan) over ``train.json``; with a plan, ``--dataset_dir ''``
keeps the plan's dataset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _common import add_trained_bundle_arguments, bundle_validator, machine, pick_device, write_json
from network_levels import level_parameters


def main() -> None:
    parser_args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trained_bundle_arguments(parser_args)
    parser_args.add_argument("--json", default=None)
    parser_args.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    args = parser_args.parse_args()
    device = pick_device(parser_args, args.device)

    from pipeline.deploy import load_network_weights

    parser, network, evaluator = bundle_validator(args.bundle, args.bundle_root, args.dataset_dir, device, args.config)
    load_network_weights(network, Path(args.bundle_root) / "models" / "model.pt")
    patch = parser.get_parsed_content("patch_size")
    cases = len(parser.get_parsed_content("validate#dataset"))
    rows = []
    for level in range(network.depth, 0, -1):
        network.level = level
        network.eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, parser.get_parsed_content("in_channels"), *patch, device=device))
        start = time.perf_counter()
        evaluator.run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / cases
        metrics = {k: float(v) for k, v in evaluator.state.metrics.items()}
        rows.append({"level": level, "params": level_parameters(network, level),
                     "gflops_per_window": counter.get_total_flops() / 1e9, "seconds_per_volume": seconds, **metrics})
    print(f"\n{args.bundle}, {cases} validation volumes, window {patch}, {device} ({machine()['allocator']})")
    names = [k for k in rows[0] if k.startswith("val_")]
    print(f"{'level':<7}{'params':>10}{'GFLOPs':>9}{'s/volume':>10}" + "".join(f"{n[4:]:>16}" for n in names))
    for r in rows:
        print(f"L{r['level']:<6}{r['params']:>10,d}{r['gflops_per_window']:>9.1f}{r['seconds_per_volume']:>10.3f}"
              + "".join(f"{r[n]:>16.4f}" for n in names))
    print(f"wrote {write_json('pruning_table', {'machine': machine(), 'cases': cases, 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
