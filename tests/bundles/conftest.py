"""Helpers for running the bundles end to end, through MONAI's own command line, on tiny synthetic data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
NAMES = ("unetpp_ct_segmentation", "unetpp_mri_segmentation")
MODALITY = {"unetpp_ct_segmentation": "ct", "unetpp_mri_segmentation": "mri"}
# the smallest settings that still exercise everything: 2 epochs of tiny patches and a tiny network
TINY = ["--epochs", "2", "--val_interval", "1", "--num_folds", "3", "--patch_size", "[32,32,32]",
        "--features", "[4,4,8,8,16,4]", "--batch_size", "2", "--num_workers", "0", "--samples_per_volume", "1"]


def configs(bundle: str, *names: str) -> str:
    """MONAI's list syntax for several config files of one bundle."""
    paths = [str(BUNDLES / bundle / "configs" / f"{n}.json") for n in names]
    return paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"


def run_bundle(*args: str, cwd: Path, timeout: int = 600, torchrun: int = 0) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` (or under ``torchrun --nproc_per_node=N``); output kept for asserts."""
    env = dict(os.environ, OMP_NUM_THREADS="1" if torchrun else os.environ.get("OMP_NUM_THREADS", "2"),
               PYTHONWARNINGS="ignore")
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    proc = subprocess.Popen([*prefix, "-m", "monai.bundle", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too, not just the launcher
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"timed out after {timeout} s: {' '.join(args[:3])}\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n" \
                                 f"{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six small synthetic cases per modality (RAS, LPS and LAS stored)."""
    from pipeline.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("bundle_data")
    return {
        "ct": write_synthetic_dataset(root / "ct", "ct", cases=6, seed=3, shape=(48, 48, 16)).parent,
        "mri": write_synthetic_dataset(root / "mri", "mri", cases=6, seed=4, shape=(32, 36, 32)).parent,
    }
