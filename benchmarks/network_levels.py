"""UNet++ pruning table: parameters, GFLOPs and forward time per inference level, against MONAI's UNet++.

For a 3D 1x1x96^3 and a 2D 1x1x512^2 input, prints per level L1..L4 of ``pipeline.networks.UNetPlusPlus``
the parameters that level uses, its GFLOPs (``torch.utils.flop_counter``, one multiply-add = 2 FLOPs) and the
median forward time over ``--repeats`` runs after a warm-up, next to MONAI's ``BasicUNetPlusPlus`` with the
same weights (it always computes every node) run in the same process, rounds interleaved. Ratios are
MONAI time / our time (> 1: we are faster).

    .venv/bin/python benchmarks/network_levels.py [--repeats 5] [--device cpu|cuda] [--only 3d|2d]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians, machine, median, write_json
from monai.networks.nets import BasicUNetPlusPlus

from pipeline.networks import UNetPlusPlus

FEATURES = (32, 32, 64, 128, 256, 32)  # MONAI's default


def level_parameters(net: UNetPlusPlus, level: int) -> int:
    """Parameters of the modules that level ``level`` runs."""
    modules = [net.stem, *net.downs[:level], net.heads[level - 1]]
    modules += [node for k, nodes in enumerate(net.decoder[:level]) for node in nodes]
    return sum(p.numel() for m in modules for p in m.parameters())


def gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def run(name: str, shape: tuple[int, ...], repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    dims = len(shape) - 2
    ref = BasicUNetPlusPlus(dims, 1, 2, features=FEATURES).to(device).eval()
    ours = UNetPlusPlus(dims, 1, 2, features=FEATURES).to(device).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(*shape, device=device)
    levels = [UNetPlusPlus(dims, 1, 2, features=FEATURES, level=k).to(device).eval() for k in range(1, 5)]
    for net in levels:
        net.load_state_dict(ref.state_dict())

    def forward(net):
        def call():
            with torch.inference_mode():
                return net(x)
        return call

    fns = {"MONAI BasicUNetPlusPlus": forward(ref), **{f"L{k}": forward(levels[k - 1]) for k in range(4, 0, -1)}}
    with torch.inference_mode():
        diff = (ref(x)[0] - ours(x)).abs().max().item()
    times = interleaved_medians(fns, repeats, device)
    rows = []
    ref_time = median(times["MONAI BasicUNetPlusPlus"])
    ref_flops = gflops(fns["MONAI BasicUNetPlusPlus"])
    rows.append({"model": "MONAI BasicUNetPlusPlus", "params": sum(p.numel() for p in ref.parameters()),
                 "gflops": ref_flops, "seconds": ref_time, "speedup_vs_monai": 1.0, "times": times[
                     "MONAI BasicUNetPlusPlus"]})
    for k in range(4, 0, -1):
        t = median(times[f"L{k}"])
        rows.append({"model": f"UNetPlusPlus L{k}", "params": level_parameters(levels[k - 1], k),
                     "gflops": gflops(fns[f"L{k}"]), "seconds": t, "speedup_vs_monai": ref_time / t,
                     "times": times[f"L{k}"]})
    print(f"\n{name}: input {tuple(shape)}, features {FEATURES}, {repeats} runs after 1 warm-up, "
          f"max |ours L4 - MONAI| = {diff:.2e}")
    print(f"{'model':<26}{'params':>12}{'GFLOPs':>10}{'s/forward':>12}{'vs MONAI':>10}")
    for r in rows:
        print(f"{r['model']:<26}{r['params']:>12,d}{r['gflops']:>10.1f}{r['seconds']:>12.3f}"
              f"{r['speedup_vs_monai']:>9.2f}x")
    return {"input": list(shape), "max_abs_diff_L4_vs_monai": diff, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", choices=("3d", "2d"), default=None)
    parser.add_argument("--json", default=None, help="output file (default benchmarks/results/network_levels.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    print(f"machine: {info}")
    results = {"machine": info}
    if args.only in (None, "3d"):
        results["3d"] = run("3D", (1, 1, 96, 96, 96), args.repeats, device)
    if args.only in (None, "2d"):
        results["2d"] = run("2D", (1, 1, 512, 512), args.repeats, device)
    print(f"\nwrote {write_json('network_levels', results, args.json)}")


if __name__ == "__main__":
    main()
