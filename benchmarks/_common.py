"""Helpers shared by the benchmark scripts: machine description, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator": os.environ.get("LD_PRELOAD", "") or "glibc malloc",
        "python": platform.python_version(),
    }


def pick_device(parser, value: str | None) -> str:
    """``--device``: the value given, else ``cuda`` where a GPU is visible, else ``cpu``; a CUDA device without a
    GPU is a usage error (``parser.error``)."""
    device = value or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device} needs a CUDA GPU; none is visible")
    return device


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, synchronising CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Run every function once per round, ``repeats`` rounds after ``warmup``; returns all times per name.

    Interleaving keeps slow drifts of the machine (thermal, other load) from favouring one side.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_json(name: str, payload: dict, path: str | None = None) -> Path:
    """Write results to ``path`` or ``benchmarks/results/<name>.json``."""
    dest = Path(path) if path else RESULTS / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(payload, indent=2) + "\n")
    return dest


def add_trained_bundle_arguments(parser, dataset_dir: str | None = None) -> None:
    """The arguments every benchmark of a trained bundle takes: ``--bundle_root``, ``--dataset_dir``, ``--bundle``
    and ``--config`` (files laid over ``train.json``, a plan).

    Args:
        parser: an ``argparse.ArgumentParser``.
        dataset_dir: the default dataset; None means the shared hippocampus data.

    Example:
        >>> add_trained_bundle_arguments(argparse.ArgumentParser())  # doctest: +SKIP
    """
    parser.add_argument("--bundle_root", required=True, help="the training's --bundle_root (models/model.pt)")
    parser.add_argument("--dataset_dir", default=str(REPO.parent / "shared/data/hippocampus")
                        if dataset_dir is None else dataset_dir)
    parser.add_argument("--bundle", default="unetpp_mri_segmentation")
    parser.add_argument("--config", nargs="*", default=[], help="config files laid over train.json (a plan)")


def bundle_validator(bundle: str, bundle_root: str, dataset_dir: str, device: str, configs: list[str] | None = None):
    """``(parser, network, evaluator)``: a bundle's validation (its preprocessing, inferer, precision and Dice) on
    fold 0 of ``dataset_dir``, without its handlers, for scoring weights the caller loads into ``network``.

    Args:
        bundle: bundle name under ``bundles/``.
        bundle_root: the training's ``--bundle_root`` (its ``models/splits.json`` fixes the fold).
        dataset_dir: the dataset; None keeps the one a plan names.
        device: ``cpu`` or ``cuda[:N]``.
        configs: further config files laid over ``train.json`` (a plan). Defaults to None.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / "train.json"), *(configs or [])])
    values = {"bundle_root": bundle_root, "num_workers": 0, "device": f"$torch.device('{device}')",
              "check_data": "none", "validate#handlers": []}
    if dataset_dir:
        values["dataset_dir"] = dataset_dir
    for key, value in values.items():
        parser[key] = value
    return parser, parser.get_parsed_content("network"), parser.get_parsed_content("validate#evaluator")
