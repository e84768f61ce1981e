"""The exported model as an MLflow pyfunc: signature, predictions equal to the batch job's, input checks."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.deploy import card_from_dict
from pipeline.export.mlflow_model import model_signature, save_mlflow_model
from pipeline.io import read_image

REPO = Path(__file__).resolve().parents[2]
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory):
    """A tiny random MRI model exported by the bundle, saved as an MLflow model and loaded back."""
    from monai.bundle import ConfigParser

    from pipeline.export import export_bundle

    root = tmp_path_factory.mktemp("mlflow_model")
    bundle = REPO / "bundles" / "unetpp_mri_segmentation"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    parser["features"] = TINY["features"]
    torch.manual_seed(3)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "m.pt")
    ts = export_bundle(bundle, root / "m.pt", root / "export" / "model.ts", overrides=TINY).path
    folder = save_mlflow_model(ts, root / "mlflow_model")
    return ts, folder, mlflow.pyfunc.load_model(str(folder))


def test_folder_and_signature(pyfunc):
    _ts, folder, model = pyfunc
    assert (folder / "MLmodel").is_file() and (folder / "artifacts" / "model.ts").is_file()
    assert (folder / "code" / "pipeline" / "inference" / "predictor.py").is_file()
    assert not list((folder / "code").rglob("__pycache__"))
    requirements = (folder / "requirements.txt").read_text()
    assert "torch>=" in requirements and f"mlflow=={mlflow.__version__}" in requirements
    signature = model.metadata.signature
    assert signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "float32"
    assert {p.name: p.default for p in signature.params} == {"spacing": [1.0, 1.0, 1.0], "affine": [],
                                                             "tta": False}
    card = model.metadata.metadata["model_card"]
    assert card["labels"] == {"0": "background", "1": "anterior", "2": "posterior"} and card["card_version"] == 3


def _card(network, inference=None, preprocessing=()):
    return card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "network": network,
                           "inference": inference or {}, "preprocessing": list(preprocessing)}, "test card")


def test_signature_follows_channels_and_dimensions():
    two = model_signature(_card({"spatial_dims": 3, "in_channels": 2},
                                preprocessing=[{"kind": "resample", "pixdim": [0.7, 0.7, 2.8]}]))
    assert list(two.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1, -1, 2]
    assert list(two.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1, -1]
    assert next(p.default for p in two.params if p.name == "spacing") == [0.7, 0.7, 2.8]
    flat = model_signature(_card({"spatial_dims": 2, "in_channels": 1}))
    assert list(flat.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1]
    slices = model_signature(_card({"spatial_dims": 2, "in_channels": 1}, {"kind": "slice"}))
    assert list(slices.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1, -1], "2D net, 3D volumes"


def test_predictions_equal_the_batch_job_on_any_orientation(pyfunc, mri_dataset, tmp_path):
    from pipeline.inference import segment

    ts, _folder, model = pyfunc
    case = min((mri_dataset / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    array = np.asarray(image.array, np.float32)
    affine = np.asarray(image.geometry.affine, float)
    labels = model.predict(array, params={"affine": affine.ravel().tolist()})
    report = segment(ts, case, tmp_path / "out", device="cpu", progress=False)
    (written,) = list((tmp_path / "out").rglob("*.nii.gz"))
    assert report.counts()["ok"] == 1
    assert labels.dtype == np.uint8 and np.array_equal(labels, read_image(written).array.astype(np.uint8))
    # the same patient stored the other way round along x: the labels follow the voxels
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = array.shape[0] - 1
    mirrored = model.predict(array[::-1].copy(), params={"affine": (affine @ flip).ravel().tolist()})
    assert np.array_equal(mirrored[::-1], labels)


def test_spacing_param_and_bad_input(pyfunc):
    _ts, _folder, model = pyfunc
    volume = np.random.default_rng(0).normal(size=(20, 24, 16)).astype(np.float32)
    coarse = model.predict(volume, params={"spacing": [2.0, 2.0, 2.0]})
    assert coarse.shape == volume.shape
    with pytest.raises(ValueError, match="param 'affine' must hold 16 numbers"):
        model.predict(volume, params={"affine": [1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="param 'spacing' must be 3 positive voxel sizes"):
        model.predict(volume, params={"spacing": [1.0, 0.0, 1.0]})
    with pytest.raises(Exception, match="does not match expected shape"):
        model.predict(volume[..., None].repeat(2, -1))


def test_a_2d_network_run_slice_by_slice_takes_volumes(mri_dataset, tmp_path):
    from monai.bundle import ConfigParser

    from pipeline.export import export_bundle
    from pipeline.inference import segment

    bundle = REPO / "bundles" / "unetpp_mri_segmentation"
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f"{c}.json") for c in ("train", "train_2d")])
    parser["device"] = "$torch.device('cpu')"
    parser["features"] = TINY["features"]
    torch.manual_seed(4)
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "m2d.pt")
    ts = export_bundle(bundle, tmp_path / "m2d.pt", tmp_path / "export" / "m2d.ts", configs=("train", "train_2d"),
                       overrides={"features": TINY["features"]}).path
    model = mlflow.pyfunc.load_model(str(save_mlflow_model(ts, tmp_path / "mlflow_2d")))
    case = min((mri_dataset / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    labels = model.predict(np.asarray(image.array, np.float32),
                           params={"affine": np.asarray(image.geometry.affine).ravel().tolist()})
    segment(ts, case, tmp_path / "out", device="cpu", progress=False)
    (written,) = list((tmp_path / "out").rglob("*.nii.gz"))
    assert np.array_equal(labels, read_image(written).array.astype(np.uint8))


def test_a_2d_network_on_2d_images(tmp_path, tiny_parser):
    from pipeline.data import write_synthetic_dataset
    from pipeline.export import export_bundle
    from pipeline.inference import segment

    data = write_synthetic_dataset(tmp_path / "data", "mri", cases=1, seed=5, dims=2, shape=(40, 36)).parent
    bundle = REPO / "bundles" / "unetpp_mri_segmentation"
    overrides = {"features": TINY["features"], "spatial_dims": 2, "patch_size": [32, 32]}
    parser = tiny_parser("unetpp_mri_segmentation")
    parser.update({"spatial_dims": 2, "patch_size": [32, 32]})
    torch.manual_seed(6)
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "m2.pt")
    ts = export_bundle(bundle, tmp_path / "m2.pt", tmp_path / "export" / "m2.ts", overrides=overrides).path
    model = mlflow.pyfunc.load_model(str(save_mlflow_model(ts, tmp_path / "mlflow_2d_images")))
    case = min((data / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    affine = np.asarray(image.geometry.affine)
    labels = model.predict(np.asarray(image.array, np.float32), params={"affine": affine.ravel().tolist()})
    in_plane = affine[np.ix_([0, 1, 3], [0, 1, 3])].ravel().tolist()
    assert np.array_equal(model.predict(np.asarray(image.array, np.float32), params={"affine": in_plane}), labels)
    segment(ts, case, tmp_path / "out", device="cpu", progress=False)
    (written,) = list((tmp_path / "out").rglob("*.nii.gz"))
    assert labels.shape == (40, 36) and np.array_equal(labels, read_image(written).array.astype(np.uint8))


def test_an_fp16_model_on_a_machine_without_cuda_is_refused_when_loaded(pyfunc, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: an fp16 model loads here")
    from pipeline.deploy import ExportRecord, load_torchscript

    ts, _folder, _model = pyfunc
    module, card = load_torchscript(ts)
    fp16 = tmp_path / "fp16.ts"
    torch.jit.save(module, str(fp16), _extra_files={"model_card.json": card.replace(
        export=ExportRecord(precision="fp16", device="cuda")).to_json()})
    folder = save_mlflow_model(fp16, tmp_path / "mlflow_fp16")
    with pytest.raises(Exception, match="exported in fp16 for CUDA and this machine has no CUDA device"):
        mlflow.pyfunc.load_model(str(folder))
