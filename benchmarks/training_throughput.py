"""Training throughput: our bundle's training step against stock MONAI, side by side.

Stock MONAI: ``BasicUNetPlusPlus`` (deep supervision) + ``DeepSupervisionLoss(DiceCELoss)`` + ``SupervisedTrainer``;
ours: the ``unetpp_mri_segmentation`` bundle's own ``train#trainer`` (``UNetPlusPlus`` + ``DeepSupervisedDiceCELoss``)
built from its config. Same data (hippocampus training cases, or synthetic MRI without ../shared), same transform
chain, patch size, batch, features, optimiser.

Each measurement is a fresh process (so peak memory is its own and the allocator can differ), and rounds
alternate between the configurations. Configurations: stock MONAI as users run it (glibc malloc), ours as
``python -m pipeline bundle run training`` runs it (tcmalloc preloaded), the two crossed, to show what the
allocator alone does, and ours as it runs where no allocator library is installed (glibc tuned by
``GLIBC_TUNABLES`` to keep freed memory).

    .venv/bin/python benchmarks/training_throughput.py [--iterations 15] [--rounds 3] [--device cpu|cuda]

``--device`` (default: CUDA when present) applies to both sides; on CUDA both train with AMP (the bundle's
default there) and the allocator rows are left out (they concern host memory only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

PATCH = [40, 56, 40]
FEATURES = [16, 16, 32, 64, 128, 16]
BATCH = 4
WARMUP = 3


def _data(tmp: Path) -> Path:
    shared = REPO.parent / "shared" / "data" / "hippocampus"
    if shared.is_dir():
        return shared
    from pipeline.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp / "synth", "mri", cases=20, seed=0, shape=(36, 50, 36)).parent


def _parser(data: Path, tmp: Path, iterations: int, device: str = "cpu"):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/unetpp_mri_segmentation/configs/train.json"))
    overrides = {"dataset_dir": str(data), "bundle_root": str(tmp / "bundle"), "patch_size": PATCH,
                 "features": FEATURES, "batch_size": BATCH, "num_workers": 0, "epochs": 1, "val_interval": 10 ** 6,
                 "check_data": "none", "cache_rate": 1.0, "splits_file": None,
                 "datalist": "$pipeline.training.prepare_fold(@dataset_dir, check='none')",
                 "train#dataset#data": f"$@datalist['train'][:{max(16, (WARMUP + iterations) * BATCH)}]",
                 "train#trainer#epoch_length": WARMUP + iterations, "device": f"$torch.device('{device}')",
                 "amp": device.startswith("cuda")}
    for key, value in overrides.items():
        parser[key] = value
    return parser


def worker(side: str, iterations: int, out: Path, device: str = "cpu") -> None:
    import torch
    from ignite.engine import Events

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        parser = _parser(_data(tmp), tmp, iterations, device)
        if side == "ours":
            trainer = parser.get_parsed_content("train#trainer")
        else:
            from monai.engines import SupervisedTrainer
            from monai.inferers import SimpleInferer
            from monai.losses import DeepSupervisionLoss, DiceCELoss
            from monai.networks.nets import BasicUNetPlusPlus

            torch.manual_seed(0)
            net = BasicUNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True)
            loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True, batch=True), weight_mode="exp")
            optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-5)
            trainer = SupervisedTrainer(device=torch.device(device), max_epochs=1, epoch_length=WARMUP + iterations,
                                        train_data_loader=parser.get_parsed_content("train#dataloader"),
                                        network=net.to(device), optimizer=optimizer, loss_function=loss,
                                        inferer=SimpleInferer(), decollate=False, amp=device.startswith("cuda"))
        stamps: list[float] = []
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: (sync(), stamps.append(time.perf_counter())))
        trainer.run()
        seconds = stamps[-1] - stamps[WARMUP - 1]
        samples = iterations * BATCH * int(parser.get_parsed_content("samples_per_volume"))
        from pipeline.fastpath import loaded_allocator

        result = {"side": side, "allocator": loaded_allocator(), "iterations": iterations,
                  "seconds": seconds, "samples_per_s": samples / seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=("ours", "stock"))
    parser.add_argument("--out")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.iterations, Path(args.out), args.device or "cpu")
        return
    from _common import machine, median, pick_device, write_json

    device = pick_device(parser, args.device)

    from pipeline.fastpath import allocator_env, find_allocator

    plain = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")}
    fast = allocator_env(plain)
    library = "tcmalloc" if "tcmalloc" in (find_allocator() or "") else "jemalloc" if find_allocator() else ""
    configs = [("stock MONAI (glibc)", "stock", plain), (f"ours (default: {library or 'tuned glibc'})", "ours", fast),
               (f"stock MONAI + {library or 'tuned glibc'}", "stock", fast), ("ours with plain glibc", "ours", plain)]
    if device.startswith("cuda"):  # the allocator rows concern host memory; on a GPU compare the two steps only
        configs = configs[:2]
    elif library:  # what users without the library get: glibc tuned to keep freed memory
        configs.append(("ours (no library installed: tuned glibc)", "ours", allocator_env(plain, "glibc")))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for name, side, env in configs:
                out = Path(tmp) / "r.json"
                subprocess.run([sys.executable, __file__, "--worker", side, "--iterations", str(args.iterations),
                                "--out", str(out), "--device", device], env={**env, "PYTHONWARNINGS": "ignore"},
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results[name].append(json.loads(out.read_text()))
                print(f"round {round_no + 1}: {name}: {results[name][-1]['samples_per_s']:.2f} samples/s", flush=True)
    base = median([r["samples_per_s"] for r in results[configs[0][0]]])
    print(f"\ntraining step, patch {PATCH}, batch {BATCH}, features {FEATURES}, {args.iterations} iterations after "
          f"{WARMUP} warm-up, median of {args.rounds} rounds, {device}")
    print(f"{'configuration':<42}{'samples/s':>11}{'peak RSS MB':>13}{'vs stock':>10}")
    rows = []
    for name, _, _ in configs:
        rate = median([r["samples_per_s"] for r in results[name]])
        peak = median([r["peak_rss_mb"] for r in results[name]])
        rows.append({"configuration": name, "samples_per_s": rate, "peak_rss_mb": peak, "ratio": rate / base,
                     "allocator": results[name][0]["allocator"], "runs": results[name]})
        print(f"{name:<42}{rate:>11.2f}{peak:>13.0f}{rate / base:>9.2f}x")
    print(f"\nwrote {write_json('training_throughput', {'machine': machine(), 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
