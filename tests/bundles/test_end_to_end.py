"""Each bundle end to end through MONAI's command line on synthetic phantoms: train -> evaluate -> infer,
the 2D variant, a 2-process torchrun (gloo) run, resume, and bad input stopping at start-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from .conftest import MODALITY, NAMES, REPO, TINY, check, configs, run_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=NAMES)
def trained(request, tiny_datasets, tmp_path_factory):
    bundle = request.param
    data = tiny_datasets[MODALITY[bundle]]
    root = tmp_path_factory.mktemp(bundle)
    proc = check(run_bundle("run", "training", "--config_file", configs(bundle, "train"), "--dataset_dir", str(data),
                            "--bundle_root", str(root), *TINY, cwd=root))
    return bundle, data, root, proc.stdout + proc.stderr


def test_training_saves_best_model_latest_state_split_and_metrics(trained):
    _bundle, data, root, log = trained
    assert (root / "models/model.pt").is_file()
    state = torch.load(root / "models/checkpoint_latest.pt", weights_only=False)
    assert set(state) == {"network", "optimizer", "lr_scheduler", "time_budget", "trainer"}
    assert json.loads((root / "eval/training_time.json").read_text())["stopped_by"] == "epochs"
    assert state["trainer"]["max_epochs"] == 2 and state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]
    splits = json.loads((root / "models/splits.json").read_text())
    assert splits["num_folds"] == 3 and len(splits["folds"][0]["val"]) == 2
    report = json.loads((root / "eval/validation/metrics.json").read_text())
    names = [n for k, n in json.loads((data / "dataset.json").read_text())["labels"].items() if k != "0"]
    assert set(report["mean"]) == {"val_mean_dice", "val_loss", *(f"val_dice_{n}" for n in names)}
    assert 0 < report["mean"]["val_loss"] < 10, "the training loss on the validation cases"
    assert report["cases"] == 2 and len(report["per_case"]) == 2
    history = (root / "eval/validation/history.jsonl").read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in history] == [1, 2]
    assert "Key metric: val_mean_dice best value" in log


def test_training_writes_the_model_card_of_its_best_model(trained):
    from pipeline.deploy import file_sha256, read_card

    bundle, _data, root, log = trained
    card = read_card(root / "models/model_card.json")
    splits = json.loads((root / "models/splits.json").read_text())
    assert card.training.checkpoint_sha256 == file_sha256(root / "models/model.pt")
    assert card.training.dataset["num_cases"] == 6 and card.training.dataset["val"] == splits["folds"][0]["val"]
    assert card.training.dataset["cases_sha256"] == splits["cases_sha256"]
    assert card.training.folds == {"fold": 0, "num_folds": 3, "seed": 0,
                                   "splits_file": str(root / "models/splits.json")}
    assert card.training.precision in ("fp32", "bf16") and card.training.validation["best_epoch"] in (1, 2)
    assert 0 <= card.training.validation["val_mean_dice"] <= 1
    assert card.network.args["features"] == [4, 4, 8, 8, 16, 4] and list(card.inference.roi_size) == [32, 32, 32]
    mirror = json.loads((REPO / "bundles" / bundle / "configs/train.json").read_text())["mirror_axes"]
    assert card.inference.mirror_axes == tuple(mirror), "read off the flips that trained"
    assert card.bundle["version"] == json.loads((REPO / "bundles" / bundle / "configs/metadata.json").read_text())[
        "version"]
    assert "wrote the model card of model.pt" in log


def test_export_after_training_with_overrides_needs_no_overrides(trained, tmp_path):
    """The README's `pipeline export --bundle B --checkpoint .../model.pt` and the checkpoint alone, after a training
    with --features and --patch_size: the card beside the checkpoint knows the network (main exited 2 here)."""
    import subprocess
    import sys

    from pipeline.deploy import load_torchscript, read_card

    bundle, _, root, _ = trained
    cards = {}
    for name, extra in (("alone", []), ("bundle", ["--bundle", bundle])):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--checkpoint",
                               str(root / "models/model.pt"), "--out", str(tmp_path / f"{name}.ts"), *extra],
                              check=False, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        cards[name] = load_torchscript(tmp_path / f"{name}.ts")[1]
    assert cards["alone"] == cards["bundle"]
    assert cards["alone"].network.args["features"] == [4, 4, 8, 8, 16, 4]
    assert cards["alone"].training == read_card(root / "models/model_card.json").shareable().training


def test_training_records_the_deployment_level_chosen_from_validation(trained):
    from pipeline.deploy import read_card, resolve_level

    bundle, data, root, log = trained
    record = json.loads((root / "models/levels.json").read_text())
    means = {int(k): v["mean_dice"] for k, v in record["levels"].items()}
    assert sorted(means) == [1, 2, 3, 4] and record["tolerance"] == 0.002
    assert means[record["chosen"]] >= max(means.values()) - 0.002
    assert all(means[lv] < max(means.values()) - 0.002 for lv in means if lv < record["chosen"])
    assert resolve_level("auto", root / "models/model.pt", 4) == record["chosen"]
    assert f"deployment level L{record['chosen']}" in log
    # a model trained elsewhere (or by an earlier version) gets its record with the run id selecting_level
    (root / "models/levels.json").rename(root / "models/levels.first.json")
    check(run_bundle("run", "selecting_level", "--config_file", configs(bundle, "train"), "--dataset_dir",
                     str(data), "--bundle_root", str(root), *TINY, cwd=root))
    again = json.loads((root / "models/levels.json").read_text())
    assert again["chosen"] == record["chosen"] and again["model_sha256"] == record["model_sha256"]
    card = read_card(root / "models/model_card.json")
    assert card.level == record["chosen"] and card.training.level_choice["rule"] == "auto"
    assert card.training.level_choice["mean_dice"] == {str(k): v for k, v in means.items()}


def test_evaluate_writes_dice_and_hd95_per_class(trained):
    bundle, data, root, _ = trained
    check(run_bundle("run", "evaluating", "--config_file", configs(bundle, "train", "evaluate"), "--dataset_dir",
                     str(data), "--bundle_root", str(root), *TINY, cwd=root))
    report = json.loads((root / "eval/evaluation/metrics.json").read_text())
    assert report["grid"].startswith("original")
    names = [n for k, n in json.loads((data / "dataset.json").read_text())["labels"].items() if k != "0"]
    for name in names:
        assert f"val_dice_{name}" in report["mean"] and f"val_hd95_{name}" in report["mean"]
    header = (root / "eval/evaluation/metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "case" and {f"val_hd95_{n}" for n in names} <= set(header)
    assert len(report["per_case"]) == 2
    dice = [row[f"val_dice_{names[0]}"] for row in report["per_case"]]
    assert all(d is None or 0.0 <= d <= 1.0 for d in dice)


def test_evaluation_scores_on_each_cases_own_grid(trained, tmp_path):
    """What metrics.json's "grid" says, checked on the numbers: each case's Dice equals the Dice, computed here with
    numpy, of the full network's label map written on the case's own grid against its label file as stored."""
    bundle, data, root, _ = trained
    if MODALITY[bundle] != "ct":
        pytest.skip("the synthetic MRI is stored at the target spacing; only the CT phantoms (0.8 x 0.8 x 2.5 mm, "
                    "trained at 1.5 x 1.5 x 2) tell the two grids apart")
    check(run_bundle("run", "evaluating", "--config_file", configs(bundle, "train", "evaluate"), "--dataset_dir",
                     str(data), "--bundle_root", str(root), *TINY, cwd=root))
    report = json.loads((root / "eval/evaluation/metrics.json").read_text())
    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = {row["case"]: Path(row["case"]).name.removesuffix(".nii.gz") for row in report["per_case"]}
    for name in cases.values():
        shutil.copy(data / "imagesTr" / f"{name}.nii.gz", inputs)
    check(run_bundle("run", "--config_file", configs(bundle, "inference"), "--input_dir", str(inputs),
                     "--prediction_dir", str(tmp_path / "pred"), "--bundle_root", str(root), "--deploy_level", "4",
                     *TINY, cwd=root))
    labels = {int(k): n for k, n in json.loads((data / "dataset.json").read_text())["labels"].items() if k != "0"}
    compared = 0
    for row in report["per_case"]:
        name = cases[row["case"]]
        pred = np.asarray(nib.load(tmp_path / "pred" / f"{name}_seg.nii.gz").dataobj)
        label = np.asarray(nib.load(data / "labelsTr" / f"{name}.nii.gz").dataobj)
        assert pred.shape == label.shape
        for value, name in labels.items():
            a, b = pred == value, label == value
            if row[f"val_dice_{name}"] is None or not b.any():
                continue
            dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
            assert abs(dice - row[f"val_dice_{name}"]) < 1e-3, (row["case"], name, dice, row[f"val_dice_{name}"])
            compared += 1
    assert compared >= 2, report


def test_inference_writes_labels_on_each_inputs_own_grid(trained, tmp_path, request):
    bundle, data, root, _ = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for index in range(3):  # stored RAS, LPS and LAS
        name = f"{MODALITY[bundle]}_{index:03d}.nii.gz"
        shutil.copy(data / "imagesTr" / name, inputs / name)
    # no --features or --patch_size: the network is the one the checkpoint's model card describes
    check(run_bundle("run", "inference", "--config_file", configs(bundle, "inference"), "--input_dir",
                     str(inputs), "--bundle_root", str(root), "--prediction_dir", str(tmp_path / "out"),
                     "--deploy_level", "2", cwd=root))
    for index, code in enumerate(("RAS", "LPS", "LAS")):
        source = nib.load(inputs / f"{MODALITY[bundle]}_{index:03d}.nii.gz")
        seg = nib.load(tmp_path / "out" / f"{MODALITY[bundle]}_{index:03d}_seg.nii.gz")
        assert seg.shape == source.shape
        assert "".join(nib.aff2axcodes(seg.affine)) == code
        assert np.allclose(seg.affine, source.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}


@pytest.mark.realdata
def test_ct_inference_on_a_dicom_series_writes_nifti_on_its_grid(trained, tmp_path, ct_mr_examples):
    bundle, _, root, _ = trained
    if bundle != "unetpp_ct_segmentation":
        pytest.skip("DICOM input is checked with the CT bundle")
    from pipeline.io import read_header

    inputs = tmp_path / "in"
    shutil.copytree(ct_mr_examples / "example_ct_dicom", inputs / "series")
    check(run_bundle("run", "inference", "--config_file", configs(bundle, "inference"), "--input_dir",
                     str(inputs), "--bundle_root", str(root), "--prediction_dir", str(tmp_path / "out"), *TINY,
                     "--patch_size", "[128,128,32]", "--sw_overlap", "0.25", cwd=root))  # few, large windows
    outputs = list((tmp_path / "out").glob("*.nii.gz"))
    assert len(outputs) == 1
    assert read_header(outputs[0]).geometry.same_grid(read_header(inputs / "series").geometry)


@pytest.mark.parametrize("bundle", NAMES)
def test_2d_variant_trains_on_slices_and_segments_volumes(bundle, tiny_datasets, tmp_path):
    data = tiny_datasets[MODALITY[bundle]]
    tiny_2d = [*TINY, "--patch_size_2d", "[32,32]", "--samples_per_volume", "4", "--epochs", "1"]
    check(run_bundle("run", "--config_file", configs(bundle, "train", "train_2d"), "--dataset_dir", str(data),
                     "--bundle_root", str(tmp_path), *tiny_2d, cwd=tmp_path))  # the default run id: "run"
    net = torch.load(tmp_path / "models/model.pt")
    assert net["stem.conv_0.conv.weight"].ndim == 4, "a 2D network was trained"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(data / "imagesTr" / f"{MODALITY[bundle]}_001.nii.gz", inputs)
    check(run_bundle("run", "inference", "--config_file", configs(bundle, "inference", "train_2d"),
                     "--input_dir", str(inputs), "--bundle_root", str(tmp_path), *tiny_2d, cwd=tmp_path))
    source = nib.load(inputs / f"{MODALITY[bundle]}_001.nii.gz")
    seg = nib.load(tmp_path / "predictions" / f"{MODALITY[bundle]}_001_seg.nii.gz")
    assert seg.shape == source.shape and np.allclose(seg.affine, source.affine, atol=1e-4)


def test_torchrun_two_processes_gloo(tiny_datasets, tmp_path):
    bundle = "unetpp_mri_segmentation"
    proc = check(run_bundle("run", "training", "--config_file", configs(bundle, "train", "multi_gpu_train"),
                            "--dataset_dir", str(tiny_datasets["mri"]), "--bundle_root", str(tmp_path), *TINY,
                            "--batch_size", "1", cwd=tmp_path, torchrun=2, timeout=300))
    log = proc.stdout + proc.stderr
    assert "rank 0 of 2 on cpu (gloo)" in log and "rank 1 of 2 on cpu (gloo)" in log
    state = torch.load(tmp_path / "models/checkpoint_latest.pt", weights_only=False)
    # 4 training cases split over 2 ranks, batch 1: 2 iterations per epoch on each rank
    assert state["trainer"]["epoch_length"] == 2 and state["trainer"]["iteration"] == 4
    assert not any(k.startswith("module.") for k in state["network"]), "saved unwrapped from DDP"
    assert (tmp_path / "models/model.pt").is_file()
    assert len((tmp_path / "eval/validation/history.jsonl").read_text().splitlines()) == 2, "written once, by rank 0"
    # rank 0 alone scores the levels at the end (no collective: rank 1 has left by then)
    assert json.loads((tmp_path / "models/levels.json").read_text())["chosen"] in (1, 2, 3, 4)


def test_resume_continues_epochs_and_optimizer(tiny_datasets, tmp_path):
    bundle = "unetpp_mri_segmentation"
    args = ["run", "training", "--config_file", configs(bundle, "train"), "--dataset_dir", str(tiny_datasets["mri"]),
            "--bundle_root", str(tmp_path), *TINY]
    check(run_bundle(*args, "--epochs", "1", cwd=tmp_path))
    first = torch.load(tmp_path / "models/checkpoint_latest.pt", weights_only=False)
    steps_after_one = first["trainer"]["iteration"]
    assert first["trainer"]["epoch_length"] == steps_after_one
    proc = check(run_bundle(*args, "--epochs", "2", "--resume", "true", cwd=tmp_path))
    log = proc.stdout + proc.stderr
    assert "resuming from" in log and "Epoch[1] Complete" not in log and "Epoch[2] Complete" in log
    second = torch.load(tmp_path / "models/checkpoint_latest.pt", weights_only=False)
    assert second["trainer"]["iteration"] == 2 * steps_after_one
    adam_steps = {float(s["step"]) for s in second["optimizer"]["state"].values()}
    assert adam_steps == {2.0 * steps_after_one}, "optimizer state carried on"
    assert second["lr_scheduler"]["last_epoch"] == 2


@pytest.mark.parametrize("breakage, expected", [
    ("missing_dir", "the dataset folder or datalist file must exist"),
    ("missing_file", "every image named by the datalist must exist"),
    ("bad_label", "label values must be among the declared labels [0, 1, 2], got [5]"),
])
def test_bad_input_stops_at_startup_naming_file_and_rule(breakage, expected, tiny_datasets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_datasets["mri"], data)
    culprit = "data"
    if breakage == "missing_dir":
        culprit = str(tmp_path / "nowhere")
    elif breakage == "missing_file":
        (data / "imagesTr/mri_004.nii.gz").unlink()
        culprit = "imagesTr/mri_004.nii.gz"
    else:
        label = nib.load(data / "labelsTr/mri_002.nii.gz")
        values = np.asarray(label.dataobj).copy()
        values[0, 0, 0] = 5
        nib.save(nib.Nifti1Image(values, label.affine), data / "labelsTr/mri_002.nii.gz")
        culprit = "labelsTr/mri_002.nii.gz"
    source = culprit if breakage == "missing_dir" else str(data)
    proc = run_bundle("run", "training", "--config_file", configs("unetpp_mri_segmentation", "train"),
                      "--dataset_dir", source, "--bundle_root", str(tmp_path / "out"), *TINY, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the dataset cannot be used for training" in log and expected in log and culprit in log
    assert "Loading dataset" not in log, "must stop before caching or workers start"


def test_resume_from_an_empty_checkpoint_stops_with_the_reason(tiny_datasets, tmp_path):
    (tmp_path / "out/models").mkdir(parents=True)
    (tmp_path / "out/models/checkpoint_latest.pt").write_bytes(b"")  # a run killed while copying it
    proc = run_bundle("run", "training", "--config_file", configs("unetpp_mri_segmentation", "train"),
                      "--dataset_dir", str(tiny_datasets["mri"]), "--bundle_root", str(tmp_path / "out"),
                      "--resume", "true", *TINY, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "cannot resume: checkpoint" in log and "checkpoint_latest.pt' is empty (0 bytes)" in log
    assert "Traceback" not in log
