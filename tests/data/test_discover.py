from __future__ import annotations

import shutil

import pytest

from pipeline.data import find_images
from pipeline.errors import DatasetError


def test_folder_search_is_recursive_sorted_and_skips_partials(tmp_path, ct_dataset):
    (tmp_path / "a/b").mkdir(parents=True)
    shutil.copy(ct_dataset / "imagesTr/ct_000.nii.gz", tmp_path / "a/b/z.nii.gz")
    shutil.copy(ct_dataset / "imagesTr/ct_001.nii.gz", tmp_path / "a/y.nii.gz")
    (tmp_path / "a/.hidden.nii.gz").write_bytes(b"")
    (tmp_path / "a/x.part.nii.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == [str(tmp_path / "a/b/z.nii.gz"), str(tmp_path / "a/y.nii.gz")]


def test_csv_and_single_file(tmp_path):
    (tmp_path / "l.csv").write_text("image,other\nx.nii.gz,1\nsub/y.mha,2\n")
    assert find_images(tmp_path / "l.csv") == [str(tmp_path / "x.nii.gz"), str(tmp_path / "sub/y.mha")]
    (tmp_path / "s.nrrd").write_bytes(b"")
    assert find_images(tmp_path / "s.nrrd") == [str(tmp_path / "s.nrrd")]


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match="must be an existing file or folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="input files must end in"):
        find_images(tmp_path / "x.png")
    (tmp_path / "bad.csv").write_text("path\nx\n")
    with pytest.raises(DatasetError, match="needs an 'image' column"):
        find_images(tmp_path / "bad.csv")


@pytest.mark.realdata
def test_finds_the_dicom_series_folder(tmp_path, ct_mr_examples):
    shutil.copytree(ct_mr_examples / "example_ct_dicom", tmp_path / "patient/series")
    shutil.copy(ct_mr_examples / "example_mr_sm.nii.gz", tmp_path / "mr.nii.gz")
    assert find_images(tmp_path) == [str(tmp_path / "mr.nii.gz"), str(tmp_path / "patient/series")]
