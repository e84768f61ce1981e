"""Training throughput: our bundle's training step against stock MONAI, side by side.

Stock MONAI: ``BasicUNetPlusPlus`` (deep supervision) + ``DeepSupervisionLoss(DiceCELoss)`` + ``SupervisedTrainer``
(fp32 on the CPU, MONAI's fp16 amp on CUDA, standard memory layout); ours: the ``unetpp_mri_segmentation`` bundle's
own ``train#trainer`` (``UNetPlusPlus`` + ``DeepSupervisedDiceCELoss``, bf16 autocast on CPUs with native bf16,
channels-last on the CPU) built from its config. Same data (hippocampus training cases, or synthetic MRI without
../shared), the same data loader (the bundle's: its transform chain, cached, its default workers), patch size,
batch, features, optimiser.

Each measurement is a fresh process (so peak memory is its own and the allocator can differ), and rounds
alternate between the configurations. Configurations: stock MONAI as users run it (glibc malloc), ours as
``python -m pipeline bundle run training`` runs it (tcmalloc preloaded), the two crossed, to show what the
allocator alone does, ours where no allocator library is installed (glibc tuned by ``GLIBC_TUNABLES`` to keep
freed memory), and ours with one lever taken away (fp32, the standard layout). On CUDA: stock, ours, and ours
with the CPU data path (``device_data`` false: worker processes, augmentation on the host).

Besides samples/s it reports steps/s, the share of the wall time the trainer waited for a batch, and on CUDA the
GPU's utilisation (NVML, sampled every 0.1 s; needs ``nvidia-ml-py``) and peak memory.

    .venv/bin/python benchmarks/training_throughput.py [--iterations 15] [--rounds 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
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


def _parser(data: Path, tmp: Path, iterations: int, device: str = "cpu", overrides: dict | None = None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/unetpp_mri_segmentation/configs/train.json"))
    values = {"dataset_dir": str(data), "bundle_root": str(tmp / "bundle"), "patch_size": PATCH,
              "features": FEATURES, "batch_size": BATCH, "epochs": 1, "val_interval": 10 ** 6,
              "check_data": "none", "cache_rate": 1.0, "splits_file": None,
              "datalist": "$pipeline.training.prepare_fold(@dataset_dir, check='none')",
              "train#dataset#data": f"$@datalist['train'][:{max(16, (WARMUP + iterations) * BATCH)}]",
              "train#trainer#epoch_length": WARMUP + iterations, "device": f"$torch.device('{device}')",
              **(overrides or {})}
    for key, value in values.items():
        parser[key] = value
    return parser


class _GpuSampler:
    """NVML utilisation of GPU 0 every 0.1 s while running (empty where NVML is missing)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
        except Exception:  # noqa: BLE001 - no NVML: report None
            self._read = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(int(self._read()))

    def start(self) -> None:
        if self._read:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _stock_trainer(parser, device: str, epoch_length: int):
    import torch
    from monai.engines import SupervisedTrainer
    from monai.inferers import SimpleInferer
    from monai.losses import DeepSupervisionLoss, DiceCELoss
    from monai.networks.nets import BasicUNetPlusPlus

    torch.manual_seed(0)
    net = BasicUNetPlusPlus(3, 1, 3, features=FEATURES, deep_supervision=True)
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True, batch=True), weight_mode="exp")
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-5)
    return SupervisedTrainer(device=torch.device(device), max_epochs=1, epoch_length=epoch_length,
                             train_data_loader=parser.get_parsed_content("train#dataloader"),
                             network=net.to(device), optimizer=optimizer, loss_function=loss,
                             inferer=SimpleInferer(), decollate=False, amp=device.startswith("cuda"))


def worker(side: str, iterations: int, out: Path, device: str = "cpu", overrides: dict | None = None) -> None:
    import torch
    from ignite.engine import Events

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        parser = _parser(_data(tmp), tmp, iterations, device, overrides)
        trainer = parser.get_parsed_content("train#trainer") if side == "ours" else \
            _stock_trainer(parser, device, WARMUP + iterations)
        stamps: list[float] = []
        waits: list[float] = []
        cuda = device.startswith("cuda")
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: (sync(), stamps.append(time.perf_counter())))
        trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: waits.append(-time.perf_counter()))
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: waits.__setitem__(-1, waits[-1] +
                                                                                          time.perf_counter()))
        sampler = _GpuSampler() if cuda else None
        if sampler:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=WARMUP), lambda e: sampler.start())
        trainer.run()
        if sampler:
            sampler.stop()
        seconds = stamps[-1] - stamps[WARMUP - 1]
        samples = iterations * BATCH * int(parser.get_parsed_content("samples_per_volume"))
        from pipeline.fastpath import loaded_allocator

        result = {"side": side, "allocator": loaded_allocator(), "iterations": iterations, "seconds": seconds,
                  "samples_per_s": samples / seconds, "steps_per_s": iterations / seconds,
                  "data_wait_share": sum(waits[WARMUP:]) / seconds,
                  "gpu_utilisation": sampler.mean() if sampler else None,
                  "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    out.write_text(json.dumps(result))


def _configs(device: str) -> list[tuple[str, str, dict, dict]]:
    """(name, side, environment, bundle overrides) per configuration."""
    from pipeline.fastpath import allocator_env, find_allocator

    plain = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")}
    fast = allocator_env(plain)
    if device.startswith("cuda"):  # the allocator rows concern host memory; on a GPU: the data paths
        return [("stock MONAI", "stock", fast, {}), ("ours (device data path)", "ours", fast, {}),
                ("ours, CPU data path (device_data false)", "ours", fast, {"device_data": False})]
    library = "tcmalloc" if "tcmalloc" in (find_allocator() or "") else "jemalloc" if find_allocator() else ""
    name = library or "tuned glibc"
    configs = [("stock MONAI (glibc)", "stock", plain, {}), (f"ours (default: {name})", "ours", fast, {}),
               (f"stock MONAI + {name}", "stock", fast, {}), ("ours with plain glibc", "ours", plain, {})]
    if library:  # what users without the library get: glibc tuned to keep freed memory
        configs.append(("ours (no library installed: tuned glibc)", "ours", allocator_env(plain, "glibc"), {}))
    configs += [(f"ours, fp32 ({name})", "ours", fast, {"precision": "fp32"}),
                (f"ours, standard layout ({name})", "ours", fast,
                 {"network": "$pipeline.training.prepare_network(@network_def, @device, channels_last=False)"})]
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=("ours", "stock"))
    parser.add_argument("--overrides", default="{}")
    parser.add_argument("--out")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when present)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.iterations, Path(args.out), args.device or "cpu", json.loads(args.overrides))
        return
    from _common import machine, median, pick_device, write_json

    device = pick_device(parser, args.device)
    configs = _configs(device)
    results: dict[str, list[dict]] = {name: [] for name, *_ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for name, side, env, overrides in configs:
                out = Path(tmp) / "r.json"
                subprocess.run([sys.executable, __file__, "--worker", side, "--iterations", str(args.iterations),
                                "--out", str(out), "--device", device, "--overrides", json.dumps(overrides)],
                               env={**env, "PYTHONWARNINGS": "ignore"}, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                results[name].append(json.loads(out.read_text()))
                print(f"round {round_no + 1}: {name}: {results[name][-1]['samples_per_s']:.2f} samples/s", flush=True)
    _report(configs, results, args, device, machine, median, write_json)


def _report(configs, results, args, device, machine, median, write_json) -> None:
    base = median([r["samples_per_s"] for r in results[configs[0][0]]])
    print(f"\ntraining step, patch {PATCH}, batch {BATCH}, features {FEATURES}, {args.iterations} iterations after "
          f"{WARMUP} warm-up, median of {args.rounds} rounds, {device}")
    gpu = device.startswith("cuda")
    gpu_head = f"{'GPU util':>9}" if gpu else ""
    print(f"{'configuration':<44}{'samples/s':>10}{'steps/s':>9}{'data wait':>10}{gpu_head}{'peak MB':>9}"
          f"{'vs stock':>9}")
    rows = []
    for name, *_ in configs:
        runs = results[name]
        row = {key: median([r[key] for r in runs]) if runs[0][key] is not None else None
               for key in ("samples_per_s", "steps_per_s", "data_wait_share", "gpu_utilisation", "peak_gpu_mb",
                           "peak_rss_mb")}
        row.update(configuration=name, ratio=row["samples_per_s"] / base, allocator=runs[0]["allocator"], runs=runs)
        rows.append(row)
        util = "" if not gpu else f"{row['gpu_utilisation']:>8.0f}%" if row["gpu_utilisation"] is not None \
            else f"{'n/a':>9}"
        peak = row["peak_gpu_mb"] if gpu else row["peak_rss_mb"]
        print(f"{name:<44}{row['samples_per_s']:>10.2f}{row['steps_per_s']:>9.3f}{row['data_wait_share']:>9.1%}"
              f"{util}{peak:>9.0f}{row['ratio']:>8.2f}x")
    print(f"\nwrote {write_json('training_throughput', {'machine': machine(), 'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
