from __future__ import annotations

import json
import shutil

import pytest

from pipeline.data import case_id, load_csv, load_datalist, load_msd, load_nnunet, load_paired
from pipeline.errors import DatasetError


def _nnunet_from(ct_dataset, root, channels=1):
    """An nnU-Net v2 raw folder built from the synthetic MSD set (channels duplicated for multi-channel)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for item in load_msd(ct_dataset).items:
        for c in range(channels):
            shutil.copy(item["image"], root / "imagesTr" / f"{item['case']}_{c:04d}.nii.gz")
        shutil.copy(item["label"], root / "labelsTr" / f"{item['case']}.nii.gz")
    meta = {"channel_names": {str(c): f"CT{c}" for c in range(channels)},
            "labels": {"background": 0, "liver": 1, "kidney": 2}, "numTraining": 6, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_msd(ct_dataset):
    dl = load_datalist(ct_dataset)
    assert dl.format == "msd" and len(dl) == 6
    assert dl.labels == {0: "background", 1: "liver", 2: "kidney"} and dl.channels == ["CT"]
    item = dl.items[0]
    assert item["case"] == "ct_000" and item["image"].endswith("imagesTr/ct_000.nii.gz")
    assert item["label"].startswith(str(ct_dataset.resolve()))


def test_msd_test_section_has_images_only(tmp_path, ct_dataset):
    meta = json.loads((ct_dataset / "dataset.json").read_text())
    meta["test"] = [str(ct_dataset / "imagesTr/ct_000.nii.gz")]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    dl = load_msd(tmp_path, section="test")
    assert dl.items == [{"image": str(ct_dataset / "imagesTr/ct_000.nii.gz"), "case": "ct_000"}]


@pytest.mark.parametrize("channels", [1, 2])
def test_nnunet_v2_raw(tmp_path, ct_dataset, channels):
    root = _nnunet_from(ct_dataset, tmp_path / "Dataset001_Synth", channels)
    dl = load_datalist(root)
    assert dl.format == "nnunet" and len(dl) == 6
    assert dl.labels == {0: "background", 1: "liver", 2: "kidney"}
    assert dl.channels == [f"CT{c}" for c in range(channels)]
    item = dl.items[0]
    if channels == 1:
        assert item["image"].endswith("ct_000_0000.nii.gz")
    else:
        assert [p[-16:] for p in item["image"]] == ["ct_000_0000.nii.gz"[-16:], "ct_000_0001.nii.gz"[-16:]]
    assert item["label"].endswith("labelsTr/ct_000.nii.gz")


def test_nnunet_missing_channel_is_named(tmp_path, ct_dataset):
    root = _nnunet_from(ct_dataset, tmp_path / "Dataset002", channels=2)
    (root / "imagesTr" / "ct_003_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"ct_003: each case must have channels \[0, 1\].*got \[0\]"):
        load_nnunet(root)


def test_nnunet_layout_problems_are_all_reported_one_line_each(tmp_path, ct_dataset, capsys):
    from pipeline.cli import main
    from pipeline.data import DatasetValidationError

    root = _nnunet_from(ct_dataset, tmp_path / "Dataset003", channels=2)
    (root / "imagesTr/ct_003_0001.nii.gz").unlink()
    (root / "labelsTr/ct_001.nii.gz").unlink()
    shutil.copy(root / "labelsTr/ct_000.nii.gz", root / "labelsTr/ghost.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(numTraining=7, labels={"background": 0, "liver": "one", "kidney": 2})
    (root / "dataset.json").write_text(json.dumps(meta))
    expected = [f"{root}/dataset.json: label ids must be integers (region-based labels are not supported), got "
                "'liver': 'one'",
                f"{root}/labelsTr/ghost.nii.gz: every label must have its case's images in imagesTr (label without "
                "image), got no ghost_0000.nii.gz",
                f"{root}/imagesTr/ct_003: each case must have channels [0, 1] (_0000..._0001.nii.gz), got [0]",
                f"{root}/dataset.json: 'numTraining' must be the number of cases in imagesTr (6), got 7",
                f"{root.resolve()}/labelsTr/ct_001.nii.gz: every training case must have its label file (missing "
                "label)"]
    with pytest.raises(DatasetValidationError) as info:
        load_nnunet(root)
    assert [str(p) for p in info.value.problems] == expected
    assert main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{root}: dataset has 5 problem(s):" in err and all(f"  - {line}\n" in err for line in expected)


@pytest.mark.parametrize("meta, problems", [
    ({"channel_names": {"a": "CT"}, "labels": {"background": 0}, "file_ending": 5},
     ["'channel_names' must map the channel numbers 0, 1, ... to names (e.g. {\"0\": \"CT\"}), got {\"a\": \"CT\"}",
      "'file_ending' must be a file ending such as \".nii.gz\", got 5"]),
    ({"channel_names": {"0": "CT", "2": "PET"}, "labels": ["background"]},
     ["'channel_names' must map the channel numbers 0, 1, ... to names (e.g. {\"0\": \"CT\"}), got {\"0\": \"CT\", "
      "\"2\": \"PET\"}", "'labels' must map label names to ids (e.g. {\"background\": 0}), got [\"background\"]"]),
    ({"name": "x", "channel_names": {"0": "CT"}},
     ["an nnU-Net v2 dataset.json must have 'labels', got keys ['channel_names', 'name']"]),
])
def test_bad_nnunet_dataset_json_keys_are_all_named(tmp_path, ct_dataset, meta, problems):
    root = _nnunet_from(ct_dataset, tmp_path / "Dataset004")
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as info:
        load_nnunet(root)
    found = [str(p) for p in getattr(info.value, "problems", [info.value])]
    assert found == [f"{root}/dataset.json: {p}" for p in problems]


def test_paired_folders(ct_dataset, tmp_path):
    (tmp_path / "img").mkdir()
    shutil.copy(ct_dataset / "imagesTr/ct_001.nii.gz", tmp_path / "img/a.nii.gz")
    shutil.copy(ct_dataset / "imagesTr/ct_002.nii.gz", tmp_path / "img/b.nii.gz")
    dl = load_paired(tmp_path / "img", ct_dataset / "labelsTr")
    assert [i["case"] for i in dl.items] == ["a", "b"]
    assert dl.items[0]["label"].endswith("labelsTr/a.nii.gz")  # expected path, missing: validation reports it
    dl2 = load_datalist(ct_dataset / "imagesTr", labels_dir=ct_dataset / "labelsTr")
    assert dl2.format == "paired" and len(dl2) == 6 and dl2.items[2]["label"].endswith("ct_002.nii.gz")


def test_csv_single_and_multi_channel(tmp_path):
    (tmp_path / "list.csv").write_text("image,label\nimgs/a.nii.gz,labs/a.nii.gz\nimgs/b.nrrd,\n")
    dl = load_datalist(tmp_path / "list.csv")
    assert dl.format == "csv"
    assert dl.items[0] == {"image": str(tmp_path / "imgs/a.nii.gz"), "label": str(tmp_path / "labs/a.nii.gz"),
                           "case": "a"}
    assert "label" not in dl.items[1] and dl.items[1]["case"] == "b"
    (tmp_path / "multi.csv").write_text("case,image_1,image_0,label\nc1,t2.nii,t1.nii,l.nii\n")
    item = load_csv(tmp_path / "multi.csv").items[0]
    assert item["image"] == [str(tmp_path / "t1.nii"), str(tmp_path / "t2.nii")] and item["case"] == "c1"


def test_csv_without_image_column(tmp_path):
    (tmp_path / "bad.csv").write_text("path,label\nx.nii,y.nii\n")
    with pytest.raises(DatasetError, match=r"bad.csv: a CSV datalist needs an 'image' column"):
        load_csv(tmp_path / "bad.csv")


def test_unrecognised_layouts(tmp_path):
    with pytest.raises(DatasetError, match="must exist"):
        load_datalist(tmp_path / "nope")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="must be valid JSON"):
        load_datalist(tmp_path)
    (tmp_path / "dataset.json").write_text('{"name": "x"}')
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        load_datalist(tmp_path)
    with pytest.raises(DatasetError, match="format must be one of"):
        load_datalist(tmp_path, fmt="xml")


def test_case_id():
    assert case_id("/a/b/liver_1.nii.gz") == "liver_1"
    assert case_id("x.mha") == "x" and case_id("scan.nrrd") == "scan" and case_id("dicom_dir") == "dicom_dir"


def test_a_csv_saved_by_excel_with_a_byte_order_mark(tmp_path, ct_dataset):
    image = sorted((ct_dataset / "imagesTr").iterdir())[0]
    (tmp_path / "list.csv").write_text(f"\ufeffimage,label\n{image},{ct_dataset / 'labelsTr' / image.name}\n",
                                       encoding="utf-8")
    datalist = load_csv(tmp_path / "list.csv")
    assert [item["image"] for item in datalist.items] == [str(image)]
