from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipeline.deploy import (
    card_from_dict,
    card_path,
    file_sha256,
    load_torchscript,
    read_card,
    resolve_device,
    write_card,
)
from pipeline.errors import PipelineError
from pipeline.export import ExportError, export_bundle, export_checkpoint, export_torchscript
from pipeline.networks import UNetPlusPlus

from .conftest import REPO, TINY, trained_checkpoint

SMALL = (4, 4, 8, 8, 16, 4)
CARD = card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a", "2": "b"},
                       "inference": {"roi_size": [32, 32, 32]}, "network": {"in_channels": 1, "depth": 4,
                                                                           "out_channels": 3}}, "test card")


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_export_parity_and_metadata_at_every_level(tmp_path, level):
    torch.manual_seed(level)
    net = UNetPlusPlus(3, 1, 3, features=SMALL, deep_supervision=True)
    result = export_torchscript(net, tmp_path / "m.ts", CARD, level=level)
    assert result.max_abs_diff < 1e-4 and result.input_shape == (1, 1, 32, 32, 32)
    module, embedded = load_torchscript(tmp_path / "m.ts")
    assert embedded.level == level and embedded.export.precision == "fp32"
    assert embedded.labels == CARD.labels and module.level == level
    x = torch.randn(1, 1, 32, 32, 33)
    with torch.inference_mode():
        assert (module(x) - net.eval()(x)).abs().max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.ts"], "no temporary files left"


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    net = UNetPlusPlus(3, 1, 2, features=SMALL)
    real_load = torch.jit.load

    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + 1.0

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: Broken(real_load(*a, **k)))
    with pytest.raises(ExportError, match=r"differs from the eager model by 1 \(> tolerance 0.0001\)"):
        export_torchscript(net, tmp_path / "m.ts", CARD.replace(labels={"0": "bg", "1": "a"}))
    assert list(tmp_path.iterdir()) == []


def test_export_from_the_checkpoint_alone_after_overrides(tmp_path, tiny_parser):
    """The card beside the checkpoint says which network and preprocessing: no --bundle, no --set."""
    demo = {"patch_size": [48, 48, 32], "features": [16, 16, 32, 64, 128, 16], "sw_overlap": 0.25}
    model = trained_checkpoint(tmp_path, tiny_parser, "unetpp_ct_segmentation", demo)
    result = export_checkpoint(model, tmp_path / "ct.ts")
    assert result.max_abs_diff < 1e-4 and result.card.inference.overlap == 0.25
    assert list(result.card.inference.roi_size) == [48, 48, 32] and result.card.network.args["features"] == \
        demo["features"]
    _, card = load_torchscript(tmp_path / "ct.ts")
    assert card == result.card and card.training == read_card(card_path(model)).shareable().training
    assert card.export.precision == "fp32" and card.level == 4
    assert card.training.dataset == {"source": "Task04", "num_cases": 3, "num_train": 2, "num_val": 1}, \
        "case ids (often patient identifiers) and local paths stay on the training machine"


def test_the_same_checkpoint_gives_the_same_bytes(tmp_path, tiny_parser):
    model = trained_checkpoint(tmp_path, tiny_parser)
    a, b = export_checkpoint(model, tmp_path / "a.ts"), export_checkpoint(model, tmp_path / "b.ts")
    assert file_sha256(a.path) == file_sha256(b.path)


def test_export_takes_the_level_chosen_for_that_checkpoint(tmp_path, tiny_parser):
    model = trained_checkpoint(tmp_path, tiny_parser)
    card = read_card(card_path(model))
    write_card(card.replace(inference={"level": 3}, training={"level_choice": {"rule": "auto"}}), card_path(model))
    assert export_checkpoint(model, tmp_path / "l3.ts").card.level == 3
    assert export_checkpoint(model, tmp_path / "l2.ts", level=2).card.level == 2, "--level wins"
    other = model.with_name("checkpoint_latest.pt")
    torch.save({"network": torch.load(model)}, other)
    result = export_checkpoint(other, tmp_path / "latest.ts")
    assert result.card.level == 4, "the level was chosen for model.pt, not for this file: the full network"
    assert result.card.training.validation == {} and result.card.training.checkpoint_sha256 == file_sha256(other)
    write_card(card.replace(inference={"level": 2}, training={"level_choice": {"rule": "fixed"}}), card_path(model))
    assert export_checkpoint(other, tmp_path / "fixed.ts").card.level == 2, "a fixed level holds for any checkpoint"


def test_without_a_card_the_bundle_is_needed(tmp_path, tiny_checkpoints):
    with pytest.raises(PipelineError, match="has no model card beside it .*pass --bundle"):
        export_checkpoint(tiny_checkpoints["unetpp_mri_segmentation"], tmp_path / "m.ts")
    result = export_bundle(REPO / "bundles/unetpp_mri_segmentation", tiny_checkpoints["unetpp_mri_segmentation"],
                           tmp_path / "mri.ts", level=3, overrides=TINY)
    assert result.card.level == 3 and result.max_abs_diff < 1e-4 and result.card.network.args["features"] == \
        TINY["features"]
    with pytest.raises(PipelineError) as info:
        export_bundle(REPO / "bundles/unetpp_mri_segmentation", tiny_checkpoints["unetpp_mri_segmentation"],
                      tmp_path / "x.ts")  # default features: the tiny weights do not fit
    message = str(info.value)
    assert "does not fit the network UNetPlusPlus" in message and "size mismatch" in message
    assert not message.rstrip().endswith(":") and "\n" not in message


def test_bundle_and_set_override_only_what_they_change(tmp_path, tiny_parser):
    model = trained_checkpoint(tmp_path, tiny_parser, overrides={**TINY, "sw_overlap": 0.25})
    bundle = REPO / "bundles/unetpp_mri_segmentation"
    plain = export_bundle(bundle, model, tmp_path / "plain.ts")
    assert plain.card == export_checkpoint(model, tmp_path / "alone.ts").card, "--bundle alone changes nothing"
    changed = export_bundle(bundle, model, tmp_path / "o.ts", overrides={"sw_overlap": 0.1, "deploy_level": 2})
    assert changed.card.inference.overlap == 0.1 and changed.card.level == 2
    assert changed.card.network == plain.card.network and changed.card.training.validation == {"val_mean_dice": 0.5}


def test_overrides_merge_into_the_card_parameter_by_parameter(tmp_path, tiny_parser, caplog):
    """A CT model trained at other spacing and window: --set changes the one value it names, nothing else."""
    trained_with = {**TINY, "target_spacing": [0.7, 0.7, 2.8], "crop_margin": 4,
                    "normalization": {"scheme": "window", "a_min": -100, "a_max": 200, "b_min": 0.0, "b_max": 1.0,
                                      "clip": True}}
    model = trained_checkpoint(tmp_path, tiny_parser, "unetpp_ct_segmentation", trained_with)
    card = read_card(card_path(model))
    bundle = REPO / "bundles/unetpp_ct_segmentation"
    result = export_bundle(bundle, model, tmp_path / "m.ts", overrides={"crop_margin": 2, "sw_overlap": 0.3})
    steps = {s["kind"]: s for s in result.card.preprocessing}
    assert steps["crop_foreground"]["margin"] == 2 and steps["resample"]["pixdim"] == [0.7, 0.7, 2.8]
    assert steps["normalize"] == {s["kind"]: s for s in card.preprocessing}["normalize"]
    assert result.card.inference.overlap == 0.3 and result.card.network == card.network
    wider = export_bundle(bundle, model, tmp_path / "w.ts", overrides={"features": [4, 4, 8, 8, 16, 4],
                                                                       "in_channels": 1})
    assert wider.card.network == card.network
    with caplog.at_level("WARNING"):
        same = export_bundle(bundle, model, tmp_path / "s.ts", overrides={"sw_overlap": 0.5})
    assert same.card.inference.overlap == card.inference.overlap and "is the bundle's own value" in caplog.text
    with pytest.raises(PipelineError, match="the overrides change the preprocessing steps .* but the model was "
                                            "trained with"):
        export_bundle(bundle, model, tmp_path / "x.ts", overrides={"crop_threshold": None})


def test_cli_export_prints_parity(tmp_path, tiny_checkpoints):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--bundle", "unetpp_ct_segmentation",
                           "--checkpoint", str(tiny_checkpoints["unetpp_ct_segmentation"]), "--out",
                           str(tmp_path / "ct.ts"), "--level", "2", "--set", "features=[4,4,8,8,16,4]",
                           "patch_size=[32,32,32]"], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parity: max |TorchScript - eager| =" in proc.stdout and "level 2" in proc.stdout
    _, card = load_torchscript(tmp_path / "ct.ts")
    assert dict(card.labels) == {"0": "background", "1": "liver", "2": "kidney"}


def test_cli_export_errors_are_one_line(tmp_path, tiny_checkpoints):
    for args, message in [(["--bundle", "no_such_bundle", "--checkpoint", "x.pt"], "--bundle must be a bundle folder"),
                          (["--checkpoint", str(tiny_checkpoints["unetpp_ct_segmentation"])], "has no model card"),
                          (["--checkpoint", "x.pt", "--set", "features=[1]"], "--config and --set need --bundle")]:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "export", *args, "--out", str(tmp_path / "m.ts")],
                              check=False, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("bundle", ["unetpp_ct_segmentation", "unetpp_mri_segmentation"])
def test_monai_ckpt_export(bundle, tmp_path, tiny_checkpoints):
    configs = REPO / "bundles" / bundle / "configs"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
                           str(tmp_path / "m.ts"), "--ckpt_file", str(tiny_checkpoints[bundle]), "--meta_file",
                           str(configs / "metadata.json"), "--config_file", str(configs / "train.json"),
                           "--features", json.dumps(TINY["features"])],
                           check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra).eval()
    assert json.loads(extra["metadata.json"])["version"] == json.loads((configs / "metadata.json").read_text())["version"]
    with torch.inference_mode():
        assert module(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_device_rules():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PipelineError, match="device must be cpu or cuda"):
        resolve_device("mps")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the 'CUDA absent' errors cannot be checked here")
    with pytest.raises(PipelineError, match="'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(PipelineError, match="half precision export needs --device cuda"):
        export_torchscript(UNetPlusPlus(3, 1, 2, features=SMALL), "x.ts", CARD, half=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 export runs only on CUDA")
def test_half_export_on_cuda(tmp_path):
    net = UNetPlusPlus(3, 1, 2, features=SMALL)
    result = export_torchscript(net, tmp_path / "h.ts", CARD.replace(labels={"0": "bg", "1": "a"}), device="cuda",
                                half=True)
    assert result.card.export.precision == "fp16" and result.max_abs_diff < 1e-2


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write in: a read-only tmpfs where the tests run as root (root ignores
    permissions), else a folder without write permission."""
    import os

    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=False,
                          capture_output=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True, timeout=600)


@pytest.mark.parametrize("kind, rule", [
    ("folder", "the export destination must be a file, not a folder, got the folder '{out}' (e.g. '{out}/model.ts')"),
    ("pipe", "the export destination must be a regular file (the export replaces it), got '{out}'"),
    ("under_a_file", "the export destination must lie in a folder, got '{out}', where '{parent}' is a file"),
    ("read_only", "the export destination's folder must be writable, got '{parent}' ("),
])
def test_cli_export_refuses_a_destination_it_cannot_write_before_exporting(kind, rule, tmp_path, tiny_parser,
                                                                           monkeypatch, capsys, request):
    import os

    from pipeline.cli import main
    from pipeline.export import checkpoint

    model = trained_checkpoint(tmp_path, tiny_parser)
    if kind == "folder":
        out = tmp_path / "exports"
        out.mkdir()
    elif kind == "pipe":
        out = tmp_path / "fifo.ts"
        os.mkfifo(out)
    elif kind == "under_a_file":
        out = model.parent / "model_card.json" / "m.ts"
    else:
        out = request.getfixturevalue("read_only_folder") / "sub" / "m.ts"
    parent = out.parent if kind != "read_only" else out.parent.parent

    def not_reached(*args, **kwargs):
        raise AssertionError("the export ran before its destination was checked")

    monkeypatch.setattr(checkpoint, "load_network_weights", not_reached)
    for extra in ([], ["--bundle", "unetpp_mri_segmentation"]):
        assert main(["export", "--checkpoint", str(model), "--out", str(out), *extra]) == 2
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if "error" in line.lower()]
        assert errors == [errors[0]] and errors[0].startswith("pipeline export: error: "), captured.err
        assert rule.format(out=out, parent=parent) in errors[0] and captured.out == ""
    assert kind != "folder" or list(out.iterdir()) == []


def test_cli_export_names_the_network_argument_the_class_refuses(tmp_path, tiny_checkpoints, capsys):
    from pipeline.cli import main

    code = main(["export", "--bundle", "unetpp_mri_segmentation", "--checkpoint",
                 str(tiny_checkpoints["unetpp_mri_segmentation"]), "--out", str(tmp_path / "m.ts"), "--set",
                 "features=[1,2]"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err, captured.err
    (line,) = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert line.startswith("pipeline export: error: the bundle config's 'network_def' cannot be built "
                           "(pipeline.networks.UNetPlusPlus with ")
    assert "features=[1, 2], depth=0" in line and line.endswith(": depth must be between 1 and 6, got 0")
    assert not (tmp_path / "m.ts").exists()
