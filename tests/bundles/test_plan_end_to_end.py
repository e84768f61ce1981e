"""A planned training end to end through MONAI's command line: two-channel MRI in each of the three layouts is
planned, trained to a time budget, exported with the plan and segmented; bad input stops with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.data import write_synthetic_dataset
from pipeline.io import read_image

from .conftest import check, configs, run_bundle

pytestmark = pytest.mark.slow
BUNDLE = "unetpp_mri_segmentation"
# keep the plan's data-driven keys, shrink the network and the run
SMALL = ["--features", "[8,8,16,8]", "--strides", "[[2,2,2],[2,2,2]]", "--ds_weights", "[1.0,0.5]",
         "--deploy_level", "2", "--num_workers", "0", "--num_folds", "3"]


def _plan(dataset, out, *extra):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "plan", str(dataset), "--out", str(out),
                           "--minutes", "1", "--no-progress", *extra],
                           check=False, capture_output=True, text=True, timeout=600)
    return proc


# one layout trains to a time budget and must segment held-out cases well; the others check the wiring quickly
# nnunet: planned on the command line (the real probe) and trained to a time budget (how far it gets depends on the
# machine's load, so its Dice is not checked); msd: planned through the library, a fixed number of steps, must
# segment held-out cases well; csv: the wiring only
@pytest.mark.parametrize("layout, run", [("nnunet", ["--epochs", "1000", "--minutes", "0.4", "--val_interval", "5"]),
                                         ("msd", ["--epochs", "25", "--val_interval", "25", "--patch_size",
                                                  "[16,20,16]", "--batch_size", "1", "--samples_per_volume", "2"]),
                                         ("csv", ["--epochs", "2"])])
def test_two_channel_dataset_plans_trains_exports_and_segments(layout, run, tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", "mri", cases=6, seed=11, shape=(32, 36, 28), channels=2,
                                   layout=layout)
    dataset = data if layout == "csv" else data.parent
    if "--minutes" in run:
        proc = _plan(dataset, tmp_path / "plan.json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "patch" in proc.stdout and "normalisation" in proc.stdout and (tmp_path / "fingerprint.json").is_file()
    else:
        from pipeline.data import load_datalist
        from pipeline.planning import fingerprint_dataset, make_plan

        fp = fingerprint_dataset(load_datalist(dataset), progress=False)
        plan = make_plan(fp, modality="mri", device="cpu", prober=None, dataset_dir=str(dataset))
        (tmp_path / "plan.json").write_text(json.dumps(plan.to_config()))
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["in_channels"] == 2 and len(plan["normalization"]) == 2 and plan["dataset_dir"] == str(dataset)
    root = tmp_path / "run"
    files = "[" + ",".join(f"'{p}'" for p in (configs(BUNDLE, "train"), tmp_path / "plan.json")) + "]"
    small = SMALL if layout != "msd" else SMALL[-4:]  # msd: the plan's own network (small patches: fast steps)
    check(run_bundle("run", "training", "--config_file", files, "--bundle_root", str(root), *small, *run,
                     cwd=tmp_path, timeout=400))
    record = json.loads((root / "eval/training_time.json").read_text())
    budgeted = "--minutes" in run
    assert record["stopped_by"] == ("budget" if budgeted else "epochs") and record["steps"] > 0
    assert not budgeted or record["minutes_used"] < 1.5
    network = [] if layout == "msd" else ["--set", "features=[8,8,16,8]", "strides=[[2,2,2],[2,2,2]]",
                                          "deploy_level=2"]
    export = subprocess.run([sys.executable, "-m", "pipeline", "export", "--bundle", BUNDLE, "--checkpoint",
                             str(root / "models/model.pt"), "--out", str(tmp_path / "m.ts"), "--config", "train",
                             str(tmp_path / "plan.json"), *network],
                             check=False, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    val = json.loads((root / "models/splits.json").read_text())["folds"][0]["val"]
    source = {"msd": dataset / "imagesTr", "nnunet": dataset / "imagesTr", "csv": data}[layout]
    seg = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(tmp_path / "m.ts"), "--input",
                          str(source), "--output", str(tmp_path / "out"), "--no-progress"],
                          check=False, capture_output=True,
                         text=True, timeout=300)
    assert seg.returncode == 0 and "6 segmented" in seg.stdout, seg.stderr[-3000:]
    label_dir = dataset.parent / "labels" if layout == "csv" else dataset / "labelsTr"
    for case in val:
        assert read_image(tmp_path / "out" / f"{case}_seg.nii.gz").geometry.same_grid(
            read_image(label_dir / f"{case}.nii.gz").geometry)
    for case in val if layout == "msd" else []:  # held-out cases: the planned model learnt from both channels
        pred, truth = read_image(tmp_path / "out" / f"{case}_seg.nii.gz").array, read_image(
            label_dir / f"{case}.nii.gz").array
        dice = 2 * np.sum((pred > 0) & (truth > 0)) / (np.sum(pred > 0) + np.sum(truth > 0))
        assert dice > 0.5, (case, dice)


@pytest.mark.parametrize("breakage, rule", [
    ("missing", "each case must have channels [0, 1]"),
    ("grid", "mri_001_0001.nii.gz: all channels of a case must share one grid, got origin"),
    ("count", "all cases must have the same number of channels (2, as most cases have), got 1"),
])
def test_plan_stops_on_broken_channels_naming_case_rule_and_value(breakage, rule, tmp_path):
    from pipeline.io import Geometry, read_image, write_image

    layout = "msd" if breakage == "count" else "nnunet"
    root = write_synthetic_dataset(tmp_path / "d", "mri", cases=3, seed=1, shape=(16, 18, 14), channels=2,
                                   layout=layout).parent
    if breakage == "missing":
        (root / "imagesTr/mri_002_0001.nii.gz").unlink()
    elif breakage == "grid":
        vol = read_image(root / "imagesTr/mri_001_0001.nii.gz")
        g = vol.geometry
        write_image(vol.array, Geometry(g.shape, g.spacing, tuple(o + 4 for o in g.origin), g.direction),
                    root / "imagesTr/mri_001_0001.nii.gz")
    else:
        vol = read_image(root / "imagesTr/mri_002.nii.gz")
        write_image(vol.array[..., 0], vol.geometry, root / "imagesTr/mri_002.nii.gz")
    proc = _plan(root, tmp_path / "plan.json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert rule in proc.stderr and "mri_00" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "fingerprint.json").exists()


def test_training_refuses_a_plan_that_does_not_match_the_dataset(tmp_path, tiny_datasets):
    plan = {"in_channels": 2, "normalization": [{"scheme": "zscore", "nonzero": True}] * 2,
            "dataset_dir": str(tiny_datasets["mri"])}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    files = "[" + ",".join(f"'{p}'" for p in (configs(BUNDLE, "train"), tmp_path / "plan.json")) + "]"
    proc = run_bundle("run", "training", "--config_file", files, "--bundle_root", str(tmp_path / "r"), *SMALL,
                      cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in log, log[-3000:]
    assert "mri_000: every case must have the 2 channel(s) the network takes (in_channels), got 1" in log
    assert "Loading dataset" not in log, "must stop before caching"
