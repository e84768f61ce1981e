"""What the Model Zoo's CI runs on a bundle, with MONAI's own functions: a stand-alone inference.json
(``verify_net_in_out``, ``ckpt_export``), ``ConfigWorkflow.check_properties`` for training and inference, and a
DistributedSampler that gives ranks different cases every epoch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from pipeline.deploy import load_torchscript, read_card, resolve_level
from pipeline.errors import PipelineError
from pipeline.zoo import GENERATED, SHARED_KEYS, generate_bundle_configs, sync_inference_config

from .conftest import BUNDLES, MODALITY, NAMES, REPO, check, run_bundle


def _inference(bundle: str) -> str:
    return str(BUNDLES / bundle / "configs" / "inference.json")


def _meta(bundle: str) -> str:
    return str(BUNDLES / bundle / "configs" / "metadata.json")


@pytest.mark.parametrize("bundle", NAMES)
def test_inference_json_shares_train_jsons_definitions(bundle):
    assert sync_inference_config(BUNDLES / bundle, check=True) == []
    inference = json.loads((BUNDLES / bundle / "configs/inference.json").read_text())
    assert list(inference)[: len(SHARED_KEYS)] == list(SHARED_KEYS)
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "dataset", "evaluator", "ckpt_path",
                "handlers", "bundle_root", "device", "dataset_dir"):
        assert key in inference, key


def test_sync_configs_reports_and_repairs_drift(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLES / NAMES[1], bundle, ignore=shutil.ignore_patterns("models"))
    train = json.loads((bundle / "configs/train.json").read_text())
    train["patch_size"] = [24, 24, 24]
    (bundle / "configs/train.json").write_text(json.dumps(train, indent=4))
    cmd = [sys.executable, "-m", "pipeline", "sync-configs", str(bundle)]
    proc = subprocess.run([*cmd, "--check"], capture_output=True, text=True, cwd=REPO, check=False, timeout=600)
    assert proc.returncode == 1 and "b: differs from train.json in: patch_size" in proc.stdout
    assert subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, timeout=600).returncode == 0
    assert json.loads((bundle / "configs/inference.json").read_text())["patch_size"] == [24, 24, 24]
    assert subprocess.run([*cmd, "--check"], capture_output=True, cwd=REPO, check=False, timeout=600).returncode == 0


@pytest.mark.parametrize("bundle", NAMES)
def test_the_shipped_bundles_are_generated_from_one_definition(bundle):
    assert generate_bundle_configs(bundle, check=True) == []


def test_a_bundle_definition_change_reaches_every_generated_file(tmp_path):
    definitions, bundles = tmp_path / "definitions", tmp_path / "bundles"
    shutil.copytree(REPO / "configs" / "bundles", definitions)
    shutil.copytree(BUNDLES / NAMES[0], bundles / NAMES[0], ignore=shutil.ignore_patterns("models"))
    base = json.loads((definitions / "base/train.json").read_text())
    base["sw_overlap"] = 0.3
    (definitions / "base/train.json").write_text(json.dumps(base))
    assert generate_bundle_configs(NAMES[0], bundles, definitions, check=True) == ["train.json", "inference.json"]
    assert generate_bundle_configs(NAMES[0], bundles, definitions) == ["train.json", "inference.json"]
    for file in ("train.json", "inference.json"):
        assert json.loads((bundles / NAMES[0] / "configs" / file).read_text())["sw_overlap"] == 0.3
    assert generate_bundle_configs(NAMES[0], bundles, definitions, check=True) == []
    values = json.loads((definitions / f"{NAMES[0]}.json").read_text())
    values["train.json"]["no_such_key"] = 1
    (definitions / f"{NAMES[0]}.json").write_text(json.dumps(values))
    with pytest.raises(PipelineError, match="may only set keys that configs/bundles/base/train.json defines, got "
                                            "no_such_key"):
        generate_bundle_configs(NAMES[0], bundles, definitions, check=True)


@pytest.mark.parametrize("file", GENERATED)
def test_handlers_are_referenced_by_name_not_position(file):
    for bundle in NAMES:
        text = (BUNDLES / bundle / "configs" / file).read_text()
        assert not re.search(r"handlers#\d", text), f"{bundle}/{file} references a handler by its list position"


@pytest.mark.parametrize("bundle", NAMES)
def test_check_properties_finds_nothing_missing(bundle, tiny_datasets, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_datasets[MODALITY[bundle]], data)
    shutil.copytree(data / "imagesTr", data / "imagesTs")
    configs = BUNDLES / bundle / "configs"
    for config, kind in (("train.json", "train"), ("inference.json", "inference")):
        workflow = ConfigWorkflow(config_file=str(configs / config), meta_file=_meta(bundle), workflow_type=kind,
                                  logging_file=str(configs / "logging.conf"), dataset_dir=str(data),
                                  bundle_root=str(tmp_path), device="$torch.device('cpu')")
        workflow.initialize()
        assert workflow.check_properties() == [], config
    assert len(workflow.dataset) == 6, "inference reads imagesTs by default, not the whole dataset folder"


@pytest.mark.parametrize("bundle", NAMES)
def test_verify_net_in_out_with_inference_json_alone(bundle, tmp_path):
    proc = check(run_bundle("verify_net_in_out", "network_def", "--meta_file", _meta(bundle), "--config_file",
                            _inference(bundle), "--device", "cpu", cwd=tmp_path))
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.parametrize("bundle", NAMES)
def test_ckpt_export_with_inference_json_alone(bundle, tmp_path):
    parser = ConfigParser()
    parser.read_config(_inference(bundle))
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models/model.pt")
    check(run_bundle("ckpt_export", "network_def", "--filepath", str(tmp_path / "models/model.ts"), "--ckpt_file",
                     str(tmp_path / "models/model.pt"), "--meta_file", _meta(bundle), "--config_file",
                     _inference(bundle), "--bundle_root", str(tmp_path), cwd=tmp_path))
    scripted = torch.jit.load(str(tmp_path / "models/model.ts"))
    x = torch.randn(1, parser["in_channels"], *[32] * parser["spatial_dims"])
    with torch.no_grad():
        assert torch.allclose(scripted(x), net.eval()(x), atol=1e-5)
    assert net.level == resolve_level(parser.get_parsed_content("deploy_level"), None, net.depth), \
        "exported at the deployment level (the full network: the fresh model.pt has no level record)"


def _sampled_cases(rank: int, world: int, port: int, queue) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / NAMES[1] / "configs" / f) for f in ("train.json", "multi_gpu_train.json")])
    parser["train#dataset"] = list(range(10))
    parser["validate#dataset"] = list(range(5))
    train, val = parser.get_parsed_content("train#sampler"), parser.get_parsed_content("validate#sampler")
    epochs = []
    for epoch in (1, 2):
        train.set_epoch(epoch)  # what MONAI's engine does at each EPOCH_STARTED
        epochs.append(list(train))
    queue.put((rank, epochs, list(val)))
    torch.distributed.destroy_process_group()


def test_multi_gpu_sampler_reshuffles_across_ranks_every_epoch():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_sampled_cases, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {r: (e, v) for r, e, v in (queue.get() for _ in procs)}
    for p in procs:
        p.join(60)
    (r0, v0), (r1, v1) = results[0], results[1]
    for epoch in (0, 1):
        assert sorted(r0[epoch] + r1[epoch]) == list(range(10)), "together the ranks see every case once"
    assert r0[0] != r0[1], "rank 0 sees other cases (or another order) in the next epoch"
    assert set(r0[0]) != set(r0[1]) or set(r1[0]) != set(r1[1]), "the partition changes between epochs"
    assert sorted(v0 + v1) == list(range(5)), "validation split across ranks, no case twice"


@pytest.mark.parametrize("bundle", NAMES)
def test_docs_have_the_model_zoo_sections_and_no_machine_paths(bundle):
    text = (BUNDLES / bundle / "docs/README.md").read_text()
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    for section in ("Model Overview", "Data", "Training configuration", "Performance", "MONAI Bundle Commands",
                    "References", "License"):
        assert section in headings, section
    for path in ("/work/", "../shared", "/root/", "/usr/lib/", "/opt/"):
        assert path not in text, path


SHIPPED = BUNDLES / "unetpp_mri_segmentation"


@pytest.mark.slow
@pytest.mark.realdata
def test_shipped_model_segments_out_of_the_box(hippocampus, tmp_path):
    """``python -m monai.bundle run --config_file configs/inference.json`` in the bundle folder, with the shipped
    weights and nothing trained: validation cases of the shipped model's own split, scored against their labels."""
    import nibabel as nib
    import numpy as np

    from pipeline.training.metrics import dice_scores

    meta = json.loads((SHIPPED / "configs/metadata.json").read_text())
    names = json.loads((SHIPPED / "models/splits.json").read_text())["folds"][0]["val"][:4]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in names:
        shutil.copy(hippocampus / "imagesTr" / f"{name}.nii.gz", inputs)
    before = {p: p.stat().st_mtime_ns for p in SHIPPED.rglob("*") if "__pycache__" not in p.parts}
    check(run_bundle("run", "--config_file", "configs/inference.json", "--input_dir", str(inputs),
                     "--prediction_dir", str(tmp_path / "out"), "--device", "$torch.device('cpu')", cwd=SHIPPED))
    scores = []
    for name in names:
        seg = nib.load(tmp_path / "out" / f"{name}_seg.nii.gz")
        label = nib.load(hippocampus / "labelsTr" / f"{name}.nii.gz")
        assert seg.shape == label.shape and np.allclose(seg.affine, label.affine, atol=1e-4)
        dice = dice_scores(np.asarray(seg.dataobj), np.asarray(label.dataobj), meta["network_data_format"]["outputs"]
                           ["pred"]["channel_def"])
        scores.append(np.mean(list(dice.values())))
    assert np.mean(scores) > 0.8, scores
    assert meta["eval_metrics"]["val_mean_dice"] > 0.8, "metadata carries the measured validation Dice"
    after = {p: p.stat().st_mtime_ns for p in SHIPPED.rglob("*") if "__pycache__" not in p.parts}
    assert after == before, "nothing written into the bundle (what an earlier command left there does not count)"


def test_shipped_torchscript_runs_the_batch_job_and_matches_the_checkpoint(tmp_path, mri_dataset):
    model, card = load_torchscript(SHIPPED / "models/model.ts")
    parser = ConfigParser()
    parser.read_config(_inference("unetpp_mri_segmentation"))
    parser["device"] = "$torch.device('cpu')"
    parser["bundle_root"] = str(SHIPPED)  # so that deploy_level auto finds the shipped model card
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(SHIPPED / "models/model.pt", map_location="cpu", weights_only=True))
    x = torch.randn(1, 1, *card.inference.roi_size)
    with torch.no_grad():
        assert torch.allclose(model(x).float(), net.eval()(x), atol=1e-4)
    assert card.level == net.level == resolve_level(parser.get_parsed_content("deploy_level"),
                                                    SHIPPED / "models/model.pt", net.depth) == 2
    shipped = read_card(SHIPPED / "models/model_card.json")
    assert {k: v for k, v in card.to_dict().items() if k != "export"} == shipped.shareable().to_dict(), \
        "the shipped model.ts embeds the shipped card"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(SHIPPED / "models/model.ts"),
                           "--input", str(mri_dataset / "imagesTr"), "--output", str(tmp_path / "out"),
                           "--no-progress"], check=False, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 4


@pytest.mark.slow
def test_a_copy_of_the_shipped_bundle_retrains_in_place_on_other_data(tiny_datasets, tmp_path):
    """The Model Zoo's way: copy the bundle, run train.json from its folder on one's own data. The shipped folds
    are hippocampus's; the copy makes (and logs) new folds for the new data and keeps the old split beside them."""
    from pipeline.deploy import file_sha256

    bundle = tmp_path / "my_bundle"
    shutil.copytree(SHIPPED, bundle)
    shipped = json.loads((SHIPPED / "models/splits.json").read_text())
    proc = check(run_bundle("run", "training", "--config_file", "configs/train.json", "--dataset_dir",
                            str(tiny_datasets["mri"]), "--epochs", "1", "--val_interval", "1", "--num_workers", "0",
                            "--patch_size", "[32,32,32]", cwd=bundle))
    log = proc.stdout + proc.stderr
    assert "was made for another dataset" in log and "the old one is kept as splits." in log
    splits = json.loads((bundle / "models/splits.json").read_text())
    assert splits["num_cases"] == 6 and splits["num_folds"] == 5
    assert json.loads((bundle / f"models/splits.{shipped['cases_sha256'][:12]}.json").read_text()) == shipped
    card = read_card(bundle / "models/model_card.json")
    assert card.training.checkpoint_sha256 == file_sha256(bundle / "models/model.pt")
    assert card.training.dataset["cases_sha256"] == splits["cases_sha256"] and card.training.dataset["num_cases"] == 6


@pytest.mark.realdata
def test_the_shipped_folds_are_msd_hippocampus_s(hippocampus):
    """The shipped model's folds are still used as they are on the data they were made for."""
    from pipeline.data import load_datalist
    from pipeline.data.folds import cases_fingerprint, split_mismatch

    cases = [item["case"] for item in load_datalist(hippocampus).items]
    shipped = json.loads((SHIPPED / "models/splits.json").read_text())
    assert split_mismatch(shipped, cases, 5) is None and shipped["cases_sha256"] == cases_fingerprint(cases)
    card = read_card(SHIPPED / "models/model_card.json")
    assert card.training.dataset["val"] == shipped["folds"][0]["val"]
    assert card.training.dataset["cases_sha256"] == shipped["cases_sha256"]


def test_sync_configs_leaves_a_copy_in_another_bundles_folder_its_own(tmp_path):
    copy = tmp_path / "bundles" / NAMES[1]
    shutil.copytree(BUNDLES / NAMES[1], copy, ignore=shutil.ignore_patterns("models"))
    train = json.loads((copy / "configs/train.json").read_text())
    train["learning_rate"] = 0.01  # the user's own edit, not in configs/bundles
    (copy / "configs/train.json").write_text(json.dumps(train, indent=4))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "sync-configs", str(copy)], capture_output=True,
                          text=True, cwd=REPO, check=False, timeout=600)
    assert proc.returncode == 0 and "as train.json defines it" in proc.stdout, proc.stdout + proc.stderr
    assert json.loads((copy / "configs/train.json").read_text())["learning_rate"] == 0.01
