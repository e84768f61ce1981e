"""The batch job's DICOM SEG outputs: the same voxels as its NIfTI outputs, resumable, refused for plain files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.inference import segment
from pipeline.io import read_header, read_image
from pipeline.io.dicom_seg import read_dicom_seg

from ..conftest import write_dicom_series


def test_real_series_seg_equals_the_nifti_of_the_same_model(tmp_path, ct_mr_examples, exported):
    series = tmp_path / "in/ct_series"
    shutil.copytree(ct_mr_examples / "example_ct_dicom", series)
    model = exported["unetpp_ct_segmentation"]
    report = segment(model, series, tmp_path / "seg", device="cpu", progress=False)
    (case,) = report.cases
    assert case.status == "ok" and case.output == str(tmp_path / "seg/ct_series_seg.dcm")
    segment(model, series, tmp_path / "nifti", device="cpu", progress=False, output_format="nifti")
    label_map = read_image(tmp_path / "nifti/ct_series_seg.nii.gz")
    assert label_map.geometry.same_grid(read_header(series).geometry)
    assert np.array_equal(read_dicom_seg(case.output, series), label_map.array)
    again = segment(model, series, tmp_path / "seg", device="cpu", progress=False)
    assert again.counts() == {"ok": 0, "skipped": 1, "failed": 0}, "a re-run recognises its own SEG"
    assert again.cases[0].volumes_ml == case.volumes_ml


def test_oblique_unsorted_series_and_plain_files_refused(tmp_path, mri_dataset, exported):
    volume = (np.random.default_rng(3).normal(size=(40, 36, 14)) * 80 + 40).astype(np.int16)
    series = write_dicom_series(tmp_path / "in/oblique", volume, tilt_deg=25, shuffle=True)
    shutil.copy(mri_dataset / "imagesTr/mri_000.nii.gz", tmp_path / "in/mr.nii.gz")
    model = exported["unetpp_ct_segmentation"]
    report = segment(model, tmp_path / "in", tmp_path / "out", device="cpu", progress=False,
                     output_format="dicom-seg")
    failed = {Path(c.input).name: c.error for c in report.cases if c.status == "failed"}
    assert list(failed) == ["mr.nii.gz"] and failed["mr.nii.gz"] == (
        f"{tmp_path / 'in/mr.nii.gz'}: --output-format dicom-seg needs a DICOM series as input (a SEG references its "
        "source images); use --output-format auto or nifti for other files")
    segment(model, series, tmp_path / "nifti", device="cpu", progress=False, output_format="nifti")
    expected = read_image(tmp_path / "nifti/oblique_seg.nii.gz").array
    assert np.array_equal(read_dicom_seg(tmp_path / "out/oblique_seg.dcm", series), expected)
    with pytest.raises(PipelineError, match="output format must be one of auto, nifti, dicom-seg, got 'png'"):
        segment(model, series, tmp_path / "x", device="cpu", progress=False, output_format="png")


@pytest.mark.parametrize("bundle", [None, {}])
def test_the_seg_names_the_model_its_labels_and_the_file_it_came_from(tmp_path, exported, bundle):
    """Each label but the background is a segment, identified by the bundle's name and version and the model file's
    SHA-256; a card without a bundle says so instead of leaving the fields blank."""
    import pydicom
    import torch

    from pipeline.deploy import file_sha256, load_torchscript

    model = exported["unetpp_ct_segmentation"]
    module, card = load_torchscript(model)
    if bundle is not None:
        model = tmp_path / "nameless.ts"
        torch.jit.save(module, str(model), _extra_files={"model_card.json": card.replace(bundle=bundle).to_json()})
    volume = (np.random.default_rng(4).normal(size=(40, 36, 6)) * 80 + 40).astype(np.int16)
    write_dicom_series(tmp_path / "in/ct", volume)
    report = segment(model, tmp_path / "in", tmp_path / "out", device="cpu", progress=False)
    ds = pydicom.dcmread(report.cases[0].output)
    name, version = (card.bundle["name"], card.bundle["version"]) if bundle is None else ("unetpp-pipeline", "unknown")
    labels = {k: v for k, v in card.label_ids.items() if k > 0}
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == sorted(labels)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [labels[k] for k in sorted(labels)]
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (name, version)
    assert file_sha256(model) in str(algorithm.AlgorithmParameters)
    assert (ds.ManufacturerModelName, ds.SoftwareVersions) == (name, version)


def test_a_series_headers_are_read_once_per_case(tmp_path, exported, monkeypatch):
    """The module's promise: the series found to name the case is the one fingerprinted and read."""
    from pipeline.inference import inputs as inputs_module
    from pipeline.inference import job

    calls = []
    real = job.find_series

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "find_series", counted)
    monkeypatch.setattr(inputs_module, "find_series", counted)
    volume = (np.random.default_rng(5).normal(size=(40, 36, 6)) * 80 + 40).astype(np.int16)
    write_dicom_series(tmp_path / "in/ct", volume)
    report = segment(exported["unetpp_ct_segmentation"], tmp_path / "in", tmp_path / "out", device="cpu",
                     progress=False)
    assert report.counts()["ok"] == 1 and calls == [str(tmp_path / "in/ct")]
