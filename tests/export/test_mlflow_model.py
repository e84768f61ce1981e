"""The exported model as an MLflow pyfunc: signature, input example, predictions equal to the batch job's, and
the input rules: any real dtype, batch/channel axes of size 1 where unambiguous, one-line errors, a required grid."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.deploy import card_from_dict
from pipeline.export.mlflow_model import _volume, input_example, model_signature, save_mlflow_model
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
    assert signature.inputs is None, "predict checks the input: MLflow's tensor schema refuses int16 and (1,X,Y,Z)"
    assert signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "uint8", "shape": (-1, -1, -1)}
    # "not given" must be distinguishable: MLflow fills a missing param with its default
    assert {p.name: p.default for p in signature.params} == {"spacing": [], "affine": [], "tta": False}
    card = model.metadata.metadata["model_card"]
    assert card["labels"] == {"0": "background", "1": "anterior", "2": "posterior"} and card["card_version"] == 3
    serving = json.loads((folder / "serving_input_example.json").read_text())
    assert np.asarray(serving["inputs"]).shape == (8, 8, 8) and serving["params"] == {"spacing": [1.0, 1.0, 1.0]}
    example = model.input_example  # the array; its params are in the serving example
    assert example.shape == (8, 8, 8) and np.array_equal(example, np.asarray(serving["inputs"]))
    assert model.predict(example, params=serving["params"]).shape == (8, 8, 8), "the example runs as saved"


def _card(network, inference=None, preprocessing=()):
    return card_from_dict({"card_version": 3, "labels": {"0": "bg", "1": "a"}, "network": network,
                           "inference": inference or {}, "preprocessing": list(preprocessing)}, "test card")


def test_signature_and_example_follow_channels_and_dimensions():
    two = _card({"spatial_dims": 3, "in_channels": 2}, preprocessing=[{"kind": "resample", "pixdim": [0.7, 0.7, 2.8]}])
    assert list(model_signature(two).outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1, -1]
    array, params = input_example(two)
    assert array.shape == (8, 8, 8, 2) and array.dtype == np.float32 and params == {"spacing": [0.7, 0.7, 2.8]}
    flat = _card({"spatial_dims": 2, "in_channels": 1})
    assert list(model_signature(flat).outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, -1]
    assert input_example(flat)[0].shape == (8, 8) and input_example(flat)[1] == {"spacing": [1.0, 1.0]}
    slices = _card({"spatial_dims": 2, "in_channels": 1}, {"kind": "slice"})
    assert input_example(slices)[0].shape == (8, 8, 8), "2D net, 3D volumes"


@pytest.mark.parametrize("shape,dims,channels,expected", [
    ((5, 6, 7), 3, 1, (5, 6, 7)),
    ((1, 5, 6, 7), 3, 1, (5, 6, 7)),          # batch axis
    ((5, 6, 7, 1), 3, 1, (5, 6, 7)),          # channel axis of a one-channel model
    ((1, 5, 6, 7, 1), 3, 1, (5, 6, 7)),
    ((1, 1, 5, 6, 7), 3, 1, (5, 6, 7)),       # MONAI's (N, C, X, Y, Z) with N = C = 1
    ((5, 6, 7, 2), 3, 2, (5, 6, 7, 2)),
    ((1, 5, 6, 7, 2), 3, 2, (5, 6, 7, 2)),    # a multi-channel model: batch axis only, channels last
    ((5, 6), 2, 1, (5, 6)),
    ((1, 5, 6), 2, 1, (5, 6)),
    ((5, 6, 1), 2, 1, (5, 6)),
    ((1, 5, 6, 1), 2, 1, (5, 6)),
    ((1, 1, 1), 2, 1, (1, 1)),                # every way of dropping gives the same array
])
def test_unit_axes_dropped_where_unambiguous(shape, dims, channels, expected):
    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    volume = _volume(array, dims, channels)
    assert volume.shape == expected and volume.dtype == np.float32
    assert np.array_equal(volume.ravel(), array.ravel().astype(np.float32)), "no axis reordered"


@pytest.mark.parametrize("shape,dims,channels,match", [
    ((1, 5, 6, 1), 3, 1, r"ambiguous .* \(X, Y, Z\): it could be \(1, 5, 6\) or \(5, 6, 1\)"),
    ((5, 6, 7, 2), 3, 1, r"1 channel: shape \(X, Y, Z\), \(1, X, Y, Z\) or \(X, Y, Z, 1\); got shape \(5, 6, 7, 2\)"),
    ((5, 6), 3, 1, r"got shape \(5, 6\)"),
    ((2, 5, 6, 7), 3, 2, r"2 channels: shape \(X, Y, Z, 2\) \(channels last\) or \(1, X, Y, Z, 2\); got shape"),
    ((5, 6, 7, 1), 3, 2, r"got shape \(5, 6, 7, 1\)"),
    ((3, 5, 6, 7), 3, 1, r"got shape \(3, 5, 6, 7\)"),  # a batch of 3: one volume per request
    ((5, 0, 7), 3, 1, r"the input is empty"),
])
def test_a_wrong_shape_is_one_short_line(shape, dims, channels, match):
    with pytest.raises(ValueError, match=match) as caught:
        _volume(np.ones(shape, np.float32), dims, channels)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 160 and "1." not in str(caught.value)


@pytest.mark.parametrize("data,match", [(np.ones((4, 4, 4), complex), "real numbers, got dtype complex128"),
                                        (np.array([[["a"]]]), "real numbers, got dtype <U1"),
                                        ([[[1.0, 2.0]], [[3.0]]], "array of numbers")])
def test_input_that_is_not_numbers(data, match):
    with pytest.raises(ValueError, match=match):
        _volume(data, 3, 1)


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
    with pytest.raises(ValueError, match=r"^this model takes a 3D volume with 1 channel: .* got shape \(20, 24, 16, 2\)$"):
        model.predict(volume[..., None].repeat(2, -1), params={"spacing": [1.0, 1.0, 1.0]})


def test_without_a_grid_predict_refuses_in_one_line(pyfunc):
    """A bare array has no grid; assuming RAS at the target spacing gave other labels than `segment` (issue 25)."""
    _ts, _folder, model = pyfunc
    volume = np.zeros((12, 12, 12), np.float32)
    for params in (None, {}, {"tta": True}, {"spacing": [], "affine": []}):
        with pytest.raises(ValueError, match=r"^give the input's grid in params: 'affine' \(16 numbers, .*'spacing' "
                                             r"\(3 voxel sizes in mm .* resamples to \[1.0, 1.0, 1.0\]\)$"):
            model.predict(volume, params=params)


def test_any_real_dtype_and_unit_axes_give_the_float32_labels(pyfunc, ct_dataset):
    """What CT files hold (int16), and the batch/channel layouts of other tools, give the same label map."""
    _ts, _folder, model = pyfunc
    case = min((ct_dataset / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    assert image.array.dtype.kind in "iu" or np.array_equal(image.array, np.round(image.array)), "integer-valued"
    params = {"affine": np.asarray(image.geometry.affine).ravel().tolist()}
    values = np.asarray(image.array)
    reference = model.predict(values.astype(np.float32), params=params)
    for variant in (values.astype(np.int16), values.astype(np.int32), values.astype(np.float64), values[None],
                    values.astype(np.int16)[..., None], values[None, None]):
        assert np.array_equal(model.predict(variant, params=params), reference), (variant.dtype, variant.shape)
    small = np.clip(values, 0, 255)
    assert np.array_equal(model.predict(small.astype(np.uint8), params=params),
                          model.predict(small.astype(np.float32), params=params))
    mask = values > np.median(values)
    assert np.array_equal(model.predict(mask, params=params), model.predict(mask.astype(np.float32), params=params))


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


def test_the_pyfunc_applies_the_postprocessing_of_its_card(pyfunc, mri_dataset, tmp_path):
    from pipeline.deploy import load_torchscript
    from pipeline.deploy.postprocess import Postprocessing, apply
    from pipeline.export.postprocess import embed_card

    ts, _folder, model = pyfunc
    image = read_image(min((mri_dataset / "imagesTr").glob("*.nii.gz")))
    array, params = np.asarray(image.array, np.float32), {"affine": np.ravel(image.geometry.affine).tolist()}
    decision = Postprocessing(foreground=True, labels=(1, 2))
    _, card = load_torchscript(ts)
    pp = embed_card(ts, tmp_path / "pp.ts", card.replace(inference={"postprocessing": decision.to_dict()}))
    with_pp = mlflow.pyfunc.load_model(str(save_mlflow_model(pp, tmp_path / "mlflow_pp")))
    raw = model.predict(array, params=params)
    labels = with_pp.predict(array, params=params)
    assert np.array_equal(labels, apply(raw, decision))
    assert not np.array_equal(labels, raw), "the random model's label map has more than one component to remove"
