from __future__ import annotations

import shutil

import pytest

from pipeline.data import InputCase, find_cases, find_images
from pipeline.errors import DatasetError


def test_folder_search_is_recursive_sorted_and_skips_hidden_files(tmp_path, ct_dataset):
    (tmp_path / "a/b").mkdir(parents=True)
    shutil.copy(ct_dataset / "imagesTr/ct_000.nii.gz", tmp_path / "a/b/z.nii.gz")
    shutil.copy(ct_dataset / "imagesTr/ct_001.nii.gz", tmp_path / "a/y.nii.gz")
    (tmp_path / "a/.hidden.nii.gz").write_bytes(b"")
    (tmp_path / "a/.y_seg.nii.gz.abcd1234.part.nii.gz").write_bytes(b"")  # a batch job's temporary file
    shutil.copy(ct_dataset / "imagesTr/ct_002.nii.gz", tmp_path / "a/scan.part1.nii.gz")  # a user's name
    (tmp_path / "notes.txt").write_text("not an image")
    assert find_images(tmp_path) == [str(tmp_path / "a/b/z.nii.gz"), str(tmp_path / "a/scan.part1.nii.gz"),
                                     str(tmp_path / "a/y.nii.gz")]


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


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def test_cases_for_one_channel_are_the_images(tmp_path):
    a = _touch(tmp_path / "x_0000.nii.gz")
    assert [(c.name, c.paths) for c in find_cases(tmp_path)] == [("x_0000", (a,))]


def test_nnunet_channel_files_group_into_cases_and_a_missing_channel_is_reported(tmp_path):
    files = {n: _touch(tmp_path / "in" / f"{n}.nii.gz") for n in ("p1_0000", "p1_0001", "p2_0000", "four_d")}
    cases = {c.name: c for c in find_cases(tmp_path / "in", channels=2)}
    assert cases["p1"].paths == (files["p1_0000"], files["p1_0001"]) and not cases["p1"].error
    assert "a 2-channel case needs the files p2_0000 to p2_0001, got channels [0]" in cases["p2"].error
    assert cases["four_d"].paths == (files["four_d"],) and not cases["four_d"].error  # a 4D file, checked on reading


def test_csv_rows_with_channel_columns(tmp_path):
    (tmp_path / "list.csv").write_text("image_0,image_1,case\na_t1.nii.gz,a_t2.nii.gz,A\nb_t1.nii.gz,,B\n")
    cases = find_cases(tmp_path / "list.csv", channels=2)
    assert cases[0] == InputCase("A", (str(tmp_path / "a_t1.nii.gz"), str(tmp_path / "a_t2.nii.gz")))
    assert cases[1].name == "B" and "got an empty cell in image_1" in cases[1].error and "list.csv:3" in cases[1].error
    (tmp_path / "bad.csv").write_text("path\nx\n")
    with pytest.raises(DatasetError, match="needs columns image_0, image_1"):
        find_cases(tmp_path / "bad.csv", channels=2)


def test_csv_rows_that_are_empty_or_repeated_are_reported_not_dropped(tmp_path):
    (tmp_path / "list.csv").write_text("image\na.nii.gz\n\nb.nii.gz\n ,\na.nii.gz\n")
    cases = find_cases(tmp_path / "list.csv")
    assert [c.error == "" for c in cases] == [True, True, False, False]
    assert "list.csv:5: every row must name an image in each of the columns image, got an empty cell in image" \
        in cases[2].error
    assert "list.csv:6: every row must name other images than the rows before it, got those of row 2" in \
        cases[3].error
    assert len({c.source for c in cases}) == 4, "every row keeps a place of its own in the job's report"


@pytest.mark.realdata
def test_a_dicom_series_behind_other_files_is_found(tmp_path, ct_mr_examples):
    shutil.copytree(ct_mr_examples / "example_ct_dicom", tmp_path / "series")
    for i in range(7):  # what PACS exports put beside a series: readmes, DICOMDIR-like indexes, thumbnails
        (tmp_path / "series" / f"0{i}_notes.txt").write_text("not DICOM")
    assert find_images(tmp_path) == [str(tmp_path / "series")]
