"""Per-label statistics (segment --statistics): against numpy by hand, in the reports, through the job and on a rerun."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from pipeline.inference import JobReport, segment
from pipeline.inference.extras import Extras
from pipeline.inference.report import CaseResult
from pipeline.inference.statistics import STATISTICS_FIELDS, label_statistics
from pipeline.io import read_image

NAMES = {"0": "background", "1": "big", "2": "single", "3": "absent"}
OLD_HEADER = "case,status,seconds,liver_ml,kidney_ml,input,output,error,warning"  # report.csv before --statistics


def _by_hand(labels: np.ndarray, image: np.ndarray, label: int) -> dict:
    values = image[labels == label].astype(np.float64)
    if values.size == 0:
        return {"voxels": 0, "mean": None, "median": None, "std": None}
    return {"voxels": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "std": float(values.std())}


def _phantom(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """An odd-sized image and a label map with a large label, a one-voxel label and a label that is absent."""
    rng = np.random.default_rng(3)
    image = (rng.normal(40, 300, (9, 11, 7)) if dtype.startswith("float") else
             rng.integers(-1024, 2000, (9, 11, 7))).astype(dtype)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 3:9, 1:5] = 1  # 96 voxels: an even count, so the median is the mean of two middle values
    labels[7, 1, 6] = 2
    return labels, image


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint8", "int32"])
def test_statistics_equal_numpy_by_hand(dtype):
    labels, image = _phantom(dtype)
    stats = label_statistics(labels, image, NAMES)
    assert list(stats) == ["big", "single", "absent"]  # background left out, label order kept
    for label, name in ((1, "big"), (2, "single"), (3, "absent")):
        expected, got = _by_hand(labels, image, label), stats[name].as_dict()
        assert list(got) == list(STATISTICS_FIELDS)
        assert got["voxels"] == expected["voxels"] and isinstance(got["voxels"], int)
        for field in ("mean", "median", "std"):
            assert got[field] == (None if expected[field] is None else pytest.approx(expected[field], rel=1e-12,
                                                                                      abs=1e-9)), (name, field)
    assert stats["single"].as_dict() == {"voxels": 1, "mean": float(image[7, 1, 6]),
                                         "median": float(image[7, 1, 6]), "std": 0.0}


def test_an_integer_image_can_have_a_half_integer_median_and_std_is_the_population_one():
    labels = np.array([[1, 1], [1, 1]], np.uint8)
    image = np.array([[1, 2], [4, 10]], np.int16)
    got = label_statistics(labels, image, {1: "x"})["x"]
    assert (got.voxels, got.mean, got.median, got.std) == (4, 4.25, 3.0, pytest.approx(np.std([1, 2, 4, 10])))


def test_labels_read_back_as_floats_and_many_labels():
    """A label map stored as floats (as the real data's are) and 104 labels, most of them empty."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, (13, 10, 9))
    image = rng.normal(size=labels.shape).astype(np.float32)
    names = {str(k): f"organ{k}" for k in range(105)}
    ints = label_statistics(labels, image, names)
    floats = label_statistics(labels.astype(np.float64), image, names)
    assert ints == floats
    for k in (1, 17, 39):
        assert ints[f"organ{k}"].as_dict() == pytest.approx(_by_hand(labels, image, k), rel=1e-9)
    assert all(ints[f"organ{k}"].as_dict() == _by_hand(labels, image, k) for k in range(40, 105))  # empty


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"one shape, got \(2, 2\) and \(2, 2, 2\)"):
        label_statistics(np.zeros((2, 2), np.uint8), np.zeros((2, 2, 2)), NAMES)
    with pytest.raises(ValueError, match="whole numbers"):
        label_statistics(np.array([0.0, 1.5]), np.zeros(2), NAMES)
    with pytest.raises(ValueError, match=">= 0, got -1"):
        label_statistics(np.array([0, -1]), np.zeros(2), NAMES)


def test_report_columns_json_null_and_csv_blanks(tmp_path):
    labels = {"0": "background", "1": "liver", "2": "kidney"}
    stats = {"liver": {"voxels": 3, "mean": 51.25, "median": 50.0, "std": 1.5},
             "kidney": {"voxels": 0, "mean": None, "median": None, "std": None}}
    report = JobReport("m.ts", str(tmp_path), labels, extras=("statistics",))
    report.add(CaseResult("a", "a.nii.gz", "a_seg.nii.gz", "ok", 1.0, volumes_ml={"liver": 2.0, "kidney": 0.0},
                          statistics=stats))
    report.add(CaseResult("b", "b.nii.gz", "", "failed", 0.0, "cannot read image"))
    report.ignored = [{"path": "x.dcm", "reason": "a SEG", "damaged": False}]
    report.write()
    rows = list(csv.reader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert rows[0] == ["case", "status", "seconds", "liver_ml", "kidney_ml",
                       "liver_voxels", "liver_mean", "liver_median", "liver_std",
                       "kidney_voxels", "kidney_mean", "kidney_median", "kidney_std",
                       "input", "output", "error", "warning"]
    assert rows[1][3:13] == ["2.000", "0.000", "3", "51.25", "50", "1.5", "0", "", "", ""]
    assert rows[2][5:13] == [""] * 8 and rows[3][5:13] == [""] * 8  # failed and ignored rows: blanks
    assert all(len(r) == len(rows[0]) for r in rows)
    cases = json.loads((tmp_path / "report.json").read_text())["cases"]
    assert cases[0]["statistics"]["kidney"] == {"voxels": 0, "mean": None, "median": None, "std": None}
    assert "statistics" not in cases[1] and "preview" not in cases[0]
    assert "NaN" not in (tmp_path / "report.json").read_text()



@pytest.mark.realdata
def test_real_ct_and_its_label_map(ct_mr_examples):
    """TotalSegmentator's example CT (int32 HU) and its 104-class map (float64 on disk): numpy's numbers for every
    class, present or not."""
    import json


    names = json.loads((ct_mr_examples / "class_map_total_v1_total_totalmr.json").read_text())["total_v1"]
    image, labels = read_image(ct_mr_examples / "example_ct.nii.gz").array, \
        read_image(ct_mr_examples / "example_ct_seg_v1.nii.gz").array
    stats = label_statistics(labels, image, names)
    assert len(stats) == 104 and 0 < sum(s.voxels > 0 for s in stats.values()) < 104
    for k, name in names.items():
        expected = _by_hand(labels, image, int(k))
        assert stats[name].as_dict() == (pytest.approx(expected, rel=1e-9) if expected["voxels"] else expected), name
    assert 0 < stats["liver"].mean < 150  # soft tissue in Hounsfield units


def _normalised(folder, statistics: bool) -> tuple[dict, list[list[str]]]:
    """A report's JSON and CSV with times (and, from a run with --statistics, the statistics) taken out."""
    saved = json.loads((folder / "report.json").read_text())
    saved.pop("seconds")
    saved["output_dir"] = ""
    saved["settings"].pop("write_queue_peak")
    if statistics:
        assert saved["settings"].pop("extras") == {"outputs": ["statistics"], "channel": "T1"}
    for case in saved["cases"]:
        case["seconds"], case["output"] = 0, case["output"].rsplit("/", 1)[-1]
        if statistics:
            case.pop("statistics")
    saved["cases"].sort(key=lambda c: c["case"])
    header, *rows = csv.reader(io.StringIO((folder / "report.csv").read_text()))
    keep = [i for i, name in enumerate(header) if not name.endswith(tuple(f"_{f}" for f in STATISTICS_FIELDS))]
    seconds, output = header.index("seconds"), header.index("output")
    rows = sorted([r[i] if i not in (seconds, output) else "" for i in keep] for r in rows)
    return saved, [[header[i] for i in keep], *rows]


def test_segment_statistics_match_the_label_maps_and_a_rerun_and_leave_plain_reports_alone(tmp_path, mri_dataset,
                                                                                            exported):
    """Through the job on the synthetic MRI cases: each case's statistics are numpy's on its label map as written
    and its image as read; the rerun (every case skipped) reads both back and reports the same; a run without
    --statistics writes the reports as before (its CSV header is the old one; its JSON has no new key), and the
    run with it differs from that only by the statistics."""
    model = exported["unetpp_mri_segmentation"]
    images = mri_dataset / "imagesTr"
    first = segment(model, images, tmp_path / "with", device="cpu", progress=False, extras=Extras(statistics=True))
    assert first.counts() == {"ok": 4, "skipped": 0, "failed": 0}
    names = {k: v for k, v in first.labels.items() if k != "0"}
    for case in first.cases:
        labels, image = read_image(case.output).array, read_image(case.input).array
        assert set(case.statistics) == set(names.values())
        for k, name in names.items():
            expected = _by_hand(labels, image, int(k))
            assert case.statistics[name] == pytest.approx(expected, rel=1e-9), (case.case, name)
            voxel_ml = case.volumes_ml[name] / expected["voxels"] if expected["voxels"] else None
            if voxel_ml is not None:
                assert voxel_ml == pytest.approx(1e-3)  # 1 mm voxels: volume and count agree
    assert any(s["voxels"] > 0 for c in first.cases for s in c.statistics.values())

    for name in ("report.json", "report.csv"):  # the rerun rewrites them
        shutil.copy(tmp_path / "with" / name, tmp_path / f"first_{name}")
    again = segment(model, images, tmp_path / "with", device="cpu", progress=False, extras=Extras(statistics=True))
    assert again.counts() == {"ok": 0, "skipped": 4, "failed": 0}
    assert {c.case: c.statistics for c in again.cases} == {c.case: c.statistics for c in first.cases}

    plain = segment(model, images, tmp_path / "plain", device="cpu", progress=False)
    assert (tmp_path / "plain/report.csv").read_text().splitlines()[0] == \
        OLD_HEADER.replace("liver_ml,kidney_ml", ",".join(f"{n}_ml" for n in names.values()))
    saved = json.loads((tmp_path / "plain/report.json").read_text())
    assert "extras" not in saved["settings"] and all(
        list(c) == ["case", "input", "output", "status", "seconds", "error", "volumes_ml", "warning"]
        for c in saved["cases"])
    assert plain.counts()["ok"] == 4
    for name in ("report.json", "report.csv"):
        shutil.copy(tmp_path / f"first_{name}", tmp_path / "with" / name)
    assert _normalised(tmp_path / "plain", False) == _normalised(tmp_path / "with", True)
