"""``plan_dataset`` plans only what ``pipeline validate`` accepts: the same rules, the same messages, the same
exit status."""

from __future__ import annotations

import shutil

import pytest

from pipeline.cli import main
from pipeline.data import DatasetValidationError
from pipeline.planning import plan_dataset


def _stray_label_value(ct_dataset, root):
    from pipeline.io import read_image, write_image

    shutil.copytree(ct_dataset, root)
    label = read_image(root / "labelsTr/ct_001.nii.gz")
    array = label.array.copy()
    array[0, 0, 0] = 7
    write_image(array, label.geometry, root / "labelsTr/ct_001.nii.gz")
    return root, "labelsTr/ct_001.nii.gz: label values must be among the declared labels [0, 1, 2], got [7]"


def _unlabelled_case_without_image(ct_dataset, root):
    root.mkdir()
    rows = [f"{ct_dataset}/imagesTr/ct_00{i}.nii.gz,{ct_dataset}/labelsTr/ct_00{i}.nii.gz" for i in range(4)]
    (root / "list.csv").write_text("image,label\n" + "\n".join(rows) + "\nscans/gone.nii.gz,\n")
    return root / "list.csv", "scans/gone.nii.gz: every image named by the datalist must exist"


@pytest.mark.parametrize("breakage", [_stray_label_value, _unlabelled_case_without_image])
def test_plan_refuses_what_validate_refuses_with_its_message_and_status(breakage, tmp_path, ct_dataset, capsys):
    dataset, problem = breakage(ct_dataset, tmp_path / "d")
    assert main(["validate", str(dataset)]) == 1
    refused = capsys.readouterr().err
    assert problem in refused
    out = tmp_path / "plans/plan.json"
    assert main(["plan", str(dataset), "--out", str(out), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pipeline plan: ") and refused.rstrip().splitlines()[-1] in err and problem in err
    assert not out.exists() and not (out.parent / "fingerprint.json").exists()
    with pytest.raises(DatasetValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        plan_dataset(dataset, out, device="cpu", progress=False)
