from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.export import (
    ExportError,
    bundle_metadata,
    export_bundle,
    export_torchscript,
    load_torchscript,
    resolve_device,
)
from pipeline.networks import UNetPlusPlus

from .conftest import REPO, TINY, tiny_parser

SMALL = (4, 4, 8, 8, 16, 4)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_export_parity_and_metadata_at_every_level(tmp_path, level):
    torch.manual_seed(level)
    net = UNetPlusPlus(3, 1, 3, features=SMALL, deep_supervision=True)
    meta = {"labels": {"0": "bg", "1": "a", "2": "b"}, "inference": {"roi_size": [32, 32, 32]},
            "network": {"in_channels": 1}}
    result = export_torchscript(net, tmp_path / "m.ts", meta, level=level)
    assert result.max_abs_diff < 1e-4 and result.input_shape == (1, 1, 32, 32, 32)
    module, embedded = load_torchscript(tmp_path / "m.ts")
    assert embedded["inference"]["level"] == level and embedded["precision"] == "fp32"
    assert embedded["labels"] == meta["labels"] and module.level == level
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
        export_torchscript(net, tmp_path / "m.ts", {"inference": {"roi_size": [32, 32, 32]}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bundle, kinds", [
    ("unetpp_ct_segmentation", ["orient", "resample", "crop_foreground", "normalize"]),
    ("unetpp_mri_segmentation", ["orient", "resample", "normalize"]),
])
def test_metadata_is_read_off_the_bundle_objects(bundle, kinds):
    parser = tiny_parser(bundle)
    net = parser.get_parsed_content("network_def")
    meta = bundle_metadata(parser, net, level=2)
    assert [s["kind"] for s in meta["preprocessing"]["steps"]] == kinds
    assert meta["preprocessing"]["orientation"] == "RAS"
    assert meta["preprocessing"]["target_spacing"] == parser.get_parsed_content("target_spacing")
    assert meta["inference"] == {"kind": "sliding_window", "roi_size": TINY["patch_size"], "overlap": 0.5,
                                 "mode": "gaussian", "sigma_scale": 0.125, "level": 2,
                                 "mirror_axes": parser.get_parsed_content("mirror_axes")}
    assert meta["labels"] == parser.get_parsed_content("label_names")
    version = json.loads((REPO / "bundles" / bundle / "configs/metadata.json").read_text())["version"]
    assert meta["bundle"]["version"] == version and meta["bundle"]["name"]
    assert meta["network"]["depth"] == 4 and meta["network"]["in_channels"] == 1
    assert meta["modality"] in ("CT", "MR") and meta["channels"]
    assert {"torch", "monai", "pipeline"} <= set(meta["versions"]) and meta["exported_at"]
    (window,) = meta["preprocessing"]["steps"][-1]["schemes"]
    if bundle == "unetpp_ct_segmentation":
        assert (window["scheme"], window["a_min"], window["a_max"], window["clip"]) == ("window", -175, 250, True)
        assert meta["preprocessing"]["steps"][2]["threshold"] == -500.0
    else:
        assert window == {"scheme": "zscore", "nonzero": True}


@pytest.mark.parametrize("bundle", ["unetpp_ct_segmentation", "unetpp_mri_segmentation"])
@pytest.mark.parametrize("extra", [(), ("train_2d",)], ids=["3d", "2d"])
def test_mirror_axes_is_one_definition_for_training_flips_and_tta(bundle, extra):
    """The training chain flips exactly the mirror_axes, and the export records them for segment --tta."""
    for axes in ([0], [1, 2], []):
        parser = tiny_parser(bundle, *(("train", *extra) if extra else ()))
        parser["mirror_axes"] = axes
        flipped = sorted(int(t.flipper.spatial_axis) for t in parser.get_parsed_content("augmentation")
                         if type(t).__name__ == "RandFlipd")
        dims = 2 if extra else 3
        assert flipped == [a for a in axes if a < dims]
        assert bundle_metadata(parser, parser.get_parsed_content("network_def"))["inference"]["mirror_axes"] == axes


def test_unexportable_transform_is_named():
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import GaussianSmoothd

    from pipeline.export import deployment_metadata

    with pytest.raises(ValueError, match="uses GaussianSmoothd: it has no deployment equivalent"):
        deployment_metadata([GaussianSmoothd(keys="image", sigma=1.0)], SlidingWindowInferer([32] * 3), {0: "bg"})


def test_export_bundle_from_checkpoint(tmp_path, tiny_checkpoints):
    result = export_bundle(REPO / "bundles/unetpp_mri_segmentation", tiny_checkpoints["unetpp_mri_segmentation"],
                           tmp_path / "mri.ts", level=3, overrides=TINY)
    assert result.metadata["inference"]["level"] == 3 and result.max_abs_diff < 1e-4
    assert result.metadata["overrides"]["features"] == TINY["features"]
    with pytest.raises(PipelineError, match="does not fit the bundle's network"):
        export_bundle(REPO / "bundles/unetpp_mri_segmentation", tiny_checkpoints["unetpp_mri_segmentation"],
                      tmp_path / "x.ts")  # default features: the tiny weights do not fit


def test_export_takes_the_level_chosen_for_that_checkpoint(tmp_path, tiny_checkpoints):
    import json
    import shutil

    from pipeline.inference.outputs import file_sha256

    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    shutil.copy(tiny_checkpoints["unetpp_mri_segmentation"], model)
    bundle = REPO / "bundles/unetpp_mri_segmentation"
    result = export_bundle(bundle, model, tmp_path / "full.ts", overrides=TINY)
    assert result.metadata["inference"]["level"] == 4, "deploy_level auto without a record: the full network"
    (model.parent / "levels.json").write_text(json.dumps({"model": "model.pt", "model_sha256": file_sha256(model),
                                                          "chosen": 3}))
    assert export_bundle(bundle, model, tmp_path / "l3.ts", overrides=TINY).metadata["inference"]["level"] == 3
    fixed = export_bundle(bundle, model, tmp_path / "l2.ts", overrides={**TINY, "deploy_level": 2})
    assert fixed.metadata["inference"]["level"] == 2, "a number in the config fixes the level"


def test_cli_export_prints_parity(tmp_path, tiny_checkpoints):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--bundle", "unetpp_ct_segmentation",
                           "--checkpoint", str(tiny_checkpoints["unetpp_ct_segmentation"]), "--out",
                           str(tmp_path / "ct.ts"), "--level", "2", "--set", "features=[4,4,8,8,16,4]",
                           "patch_size=[32,32,32]"], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parity: max |TorchScript - eager| =" in proc.stdout and "level 2" in proc.stdout
    _, meta = load_torchscript(tmp_path / "ct.ts")
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "kidney"}


def test_cli_export_errors_are_one_line(tmp_path, tiny_checkpoints):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--bundle", "no_such_bundle", "--checkpoint",
                           "x.pt", "--out", str(tmp_path / "m.ts")],
                           check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--bundle must be a bundle folder" in proc.stderr


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
        export_torchscript(UNetPlusPlus(3, 1, 2, features=SMALL), "x.ts", {}, half=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 export runs only on CUDA")
def test_half_export_on_cuda(tmp_path):
    net = UNetPlusPlus(3, 1, 2, features=SMALL)
    result = export_torchscript(net, tmp_path / "h.ts", {"inference": {"roi_size": [32, 32, 32]}}, device="cuda",
                                half=True)
    assert result.metadata["precision"] == "fp16" and result.max_abs_diff < 1e-2
