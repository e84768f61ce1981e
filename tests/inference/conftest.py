"""Exported tiny models (random weights) for deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import built_once

REPO = Path(__file__).resolve().parents[2]
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}
# real CT volumes are large: bigger windows with little overlap keep the window count (and test time) small
OVERRIDES = {"unetpp_ct_segmentation": {**TINY, "patch_size": [96, 96, 48], "sw_overlap": 0.25},
             "unetpp_mri_segmentation": TINY}


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Path]:
    """bundle name -> .ts of a tiny random network exported with the bundle's metadata."""
    from monai.bundle import ConfigParser

    from pipeline.export import export_bundle

    def build(root: Path) -> dict[str, Path]:
        out = {}
        for bundle in ("unetpp_ct_segmentation", "unetpp_mri_segmentation"):
            parser = ConfigParser()
            parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
            parser["device"] = "$torch.device('cpu')"
            parser["features"] = TINY["features"]
            torch.manual_seed(1)
            net = parser.get_parsed_content("network_def")
            torch.save(net.state_dict(), root / f"{bundle}.pt")
            out[bundle] = export_bundle(REPO / "bundles" / bundle, root / f"{bundle}.pt", root / f"{bundle}.ts",
                                        overrides=OVERRIDES[bundle]).path
        return out

    return built_once(tmp_path_factory, "exported", build)


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory, exported) -> Path:
    """The tiny MRI model of :func:`exported` (the same weights and overrides) exported to ONNX; skips where the
    onnx extra is absent."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(name, reason=f"ONNX export needs {name}: pip install -e '.[onnx]'")
    from pipeline.export import export_bundle

    bundle = "unetpp_mri_segmentation"

    def build(root: Path) -> Path:
        return export_bundle(REPO / "bundles" / bundle, exported[bundle].with_suffix(".pt"), root / f"{bundle}.onnx",
                             overrides=OVERRIDES[bundle]).path

    return built_once(tmp_path_factory, "exported_onnx", build)


@pytest.fixture(scope="session")
def two_channel(tmp_path_factory) -> dict[str, Path]:
    """A tiny random 2-channel MRI model (exported) and the same cases as 4D files, nnU-Net files and a CSV."""
    return built_once(tmp_path_factory, "two_channel", _two_channel)


def _two_channel(root: Path) -> dict[str, Path]:
    from monai.bundle import ConfigParser

    from pipeline.data import write_synthetic_dataset
    from pipeline.export import export_bundle

    bundle = REPO / "bundles" / "unetpp_mri_segmentation"
    overrides = {**TINY, "in_channels": 2, "channel_names": ["T1", "T2"],
                 "normalization": [{"scheme": "zscore", "nonzero": True},
                                   {"scheme": "clip_zscore", "lower": 0.0, "upper": 2000.0, "mean": 500.0,
                                    "std": 300.0}]}
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    for key, value in overrides.items():
        parser[key] = value
    torch.manual_seed(2)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "two.pt")
    out = {"model": export_bundle(bundle, root / "two.pt", root / "two.ts", overrides=overrides).path}
    for layout in ("msd", "nnunet", "csv"):
        path = write_synthetic_dataset(root / layout, "mri", cases=3, seed=7, shape=(30, 34, 28), channels=2,
                                       layout=layout)
        out[layout] = path if layout == "csv" else path.parent
    return out


def copy_cases(root: Path, mri_dataset: Path, cases: int, copies: int = 1) -> Path:
    """``root`` filled with ``copies`` copies of the first ``cases`` synthetic MRI cases (``case<i>_<j>.nii.gz``)."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        for j in range(copies):
            shutil.copy(mri_dataset / f"imagesTr/mri_00{i}.nii.gz", root / f"case{i}_{j}.nii.gz")
    return root
