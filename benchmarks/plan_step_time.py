"""A plan's probed step time against the steps its training really runs, in one process, alternating.

The planner predicts how many steps fit the minutes from :func:`pipeline.planning.probe_step` (random data, a bare
loop). This script builds the bundle's own ``train#trainer`` with the plan laid over it and, in rounds, times:

- ``probe``: ``probe_step`` on the plan's network, patch and batch (what the planner measured);
- ``loop``: the same bare loop on batches from the bundle's loader (real data, no engine);
- ``trainer``: one pass of the bundle's ``SupervisedTrainer`` over ``--iterations`` batches, with its handlers
  (gradient clipping, schedule, progress bar), the time waiting for the loader counted separately.

Medians over rounds, seconds per step; the gaps say where a planned hour's steps go. Run it with nothing else on
the machine (``python -m pipeline`` preloads tcmalloc; run it under ``LD_PRELOAD`` the same way to compare).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 .venv/bin/python benchmarks/plan_step_time.py \\
        --plan plans/hippo2/plan.json [--rounds 3] [--iterations 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from pipeline.planning import probe_step


def _parser(bundle: Path, plan: Path, root: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(plan)])
    parser["bundle_root"], parser["minutes"], parser["val_interval"] = root, None, 10**6
    return parser


def _loop(parser: ConfigParser, batches: list[dict], iterations: int) -> float:
    net, loss_fn, optimizer = (parser.get_parsed_content(k) for k in ("network", "loss", "optimizer"))
    inferer = parser.get_parsed_content("train#inferer")
    times = []
    for batch in itertools.islice(itertools.cycle(batches), iterations + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(inferer(batch["image"], net), batch["label"]).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def _trainer(parser: ConfigParser, iterations: int) -> tuple[float, float]:
    trainer = parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {}
    steps, waits = [], []
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda _: marks.__setitem__("fetch", time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED,
                              lambda _: waits.append(time.perf_counter() - marks["fetch"]))
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: marks.__setitem__("step", time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: steps.append(time.perf_counter() - marks["step"]))
    trainer.state.max_epochs, trainer.state.epoch_length = 1, iterations + 1
    trainer.run()
    return statistics.median(steps[1:]), statistics.median(waits[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, default=REPO / "bundles" / "unetpp_mri_segmentation")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    plan = json.loads(args.plan.read_text())
    shape = {"spatial_dims": int(plan["spatial_dims"]), "in_channels": int(plan["in_channels"]),
             "out_channels": int(plan["num_classes"]), "features": plan["features"], "strides": plan["strides"],
             "patch": plan["patch_size"], "batch": int(plan["batch_size"]) * int(plan.get("samples_per_volume", 1))}
    with tempfile.TemporaryDirectory() as root:
        parser = _parser(args.bundle, args.plan, root)
        batches = list(itertools.islice(iter(parser.get_parsed_content("train#dataloader")), 5))
        rows: dict[str, list[float]] = {"probe": [], "loop": [], "trainer": [], "trainer waiting for data": []}
        for index in range(args.rounds):
            rows["probe"].append(probe_step(**shape, steps=args.iterations).seconds)
            rows["loop"].append(_loop(_parser(args.bundle, args.plan, root), batches, args.iterations))
            step, wait = _trainer(_parser(args.bundle, args.plan, root), args.iterations)
            rows["trainer"].append(step)
            rows["trainer waiting for data"].append(wait)
            print(f"round {index + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in rows.items()), flush=True)
    print(f"\n{args.plan} ({shape['batch']} x {'x'.join(map(str, shape['patch']))}, {torch.get_num_threads()} "
          f"threads), medians of {args.rounds} rounds of {args.iterations} steps:")
    for key, values in rows.items():
        print(f"  {key:26s} {statistics.median(values):.3f} s per step")


if __name__ == "__main__":
    main()
