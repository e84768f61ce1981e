"""The batch job on DICOM no one here made: pydicom's own test files, the real CT series and variants of it. Each
input is segmented on a checked grid or named in one line; the job's own SEGs are never inputs; a full disk stops
it in one line."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.cli import main
from pipeline.errors import DiskFullError
from pipeline.inference import segment
from pipeline.io import read_image
from pipeline.io.dicom_scan import scan_dicom_folder
from pipeline.io.dicom_seg import read_dicom_seg

from ..conftest import check_dciodvfy, write_dicom_series
from ..io.dicom_variants import TYPE2, drop, enhanced_copy, variant

# what a raw Python exception looks like in a message: its class name, or a traceback
RAW = re.compile(r"Traceback|\b(?:Attribute|Key|Index|Type|Value|Runtime|Zero\w*|Assertion|Name)Error\b|Exception:")


def _series(folder: Path, seed: int = 0, **kwargs) -> Path:
    volume = (np.random.default_rng(seed).normal(size=(40, 36, 10)) * 80 + 40).astype(np.int16)
    return write_dicom_series(folder, volume, **kwargs)


def test_pydicom_test_files_give_a_report_one_line_each_and_no_traceback(tmp_path, exported, capsys):
    source = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    shutil.copytree(source, tmp_path / "in")
    code = main(["segment", "--model", str(exported["unetpp_mri_segmentation"]), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert code == 1 and not RAW.search(err) and not RAW.search(json.dumps(report))
    counts, ignored = report["counts"], {Path(i["path"]) for i in report["ignored"]}
    assert counts["ok"] >= 1 and counts["failed"] >= 20 and len(ignored) >= 40
    assert all("\n" not in c["error"] for c in report["cases"])
    # every DICOM file is a case's image or named once as not one
    dicom = [p for p in (tmp_path / "in").rglob("*") if p.is_file() and (p.suffix == ".dcm" or "DICOMDIR" in p.name
                                                                          or p.parent.name.isdigit() is False
                                                                          and p.name.startswith("IM"))]
    in_cases = {Path(ds.filename) for folder in {p.parent for p in dicom}
                for g in scan_dicom_folder(folder).groups for ds in g.datasets}
    assert not [p for p in dicom if p not in in_cases and p not in ignored]
    assert len(report["ignored"]) == len(ignored), "each file named once"
    rows = list(csv.DictReader((tmp_path / "out/report.csv").open()))
    assert sum(r["status"] == "ignored" for r in rows) == len(ignored) and all(
        r["error"] for r in rows if r["status"] == "ignored")
    seg = next(Path(c["output"]) for c in report["cases"] if c["status"] == "ok" and c["output"].endswith(".dcm"))
    print(f"\npydicom's test files: {counts}, {len(ignored)} files named as not images (exit status {code})")
    check_dciodvfy(seg)


def test_the_jobs_own_segs_are_never_inputs_wherever_they_lie(tmp_path, exported):
    model = exported["unetpp_ct_segmentation"]
    root = tmp_path / "study"
    series = _series(root / "ct", shuffle=True)
    first = segment(model, root, root, device="cpu", progress=False)  # output folder = input root
    assert first.counts() == {"ok": 1, "skipped": 0, "failed": 0}
    again = segment(model, root, root, device="cpu", progress=False)
    assert again.counts() == {"ok": 0, "skipped": 1, "failed": 0} and again.ignored == []
    inside = segment(model, series, series, device="cpu", progress=False, overwrite=True)  # inside the series
    assert inside.counts() == {"ok": 1, "skipped": 0, "failed": 0}
    assert segment(model, series, series, device="cpu", progress=False).counts()["skipped"] == 1
    # a PACS-style export: the SEG series in a folder of its own beside the image series
    export = tmp_path / "export"
    shutil.copytree(series, export / "SE1", ignore=shutil.ignore_patterns("*_seg.dcm"))
    (export / "SE1000").mkdir()
    shutil.copy(series / "ct_seg.dcm", export / "SE1000" / "IM0001")
    report = segment(model, export, tmp_path / "out", device="cpu", progress=False)
    assert [c.case for c in report.cases] == ["SE1"] and report.cases[0].status == "ok" and report.ignored == []


def test_derived_series_are_segmented_on_a_checked_grid_or_refused_in_one_line(tmp_path, ct_mr_examples, exported):
    real = ct_mr_examples / "example_ct_dicom"
    inputs = tmp_path / "in"
    variant(real, inputs / "anonymised", drop(*TYPE2))
    variant(real, inputs / "gap", lambda files: files[9].unlink())
    variant(real, inputs / "no_spacing", lambda files: [pydicom_set(f, PixelSpacing=None) for f in files])
    variant(real, inputs / "reported", lambda files: shutil.copy(pydicom.data.get_testdata_file("test-SR.dcm"),
                                                               files[0].parent / "sr.dcm"))
    variant(real, inputs / "tilted", _gantry_tilt(12))
    enhanced_copy(_series(tmp_path / "classic", tilt_deg=10), inputs / "enhanced")
    report = segment(exported["unetpp_ct_segmentation"], inputs, tmp_path / "out", device="cpu", progress=False)
    by_case = {c.case: c for c in report.cases}
    assert {k: c.status for k, c in by_case.items()} == {"anonymised": "ok", "gap": "ok", "no_spacing": "failed",
                                                         "reported": "ok", "tilted": "ok", "enhanced": "ok"}
    assert "1 slice(s) missing between" in by_case["gap"].warning and "gantry tilt" in by_case["tilted"].warning
    assert "needs a valid Pixel Spacing" in by_case["no_spacing"].error
    assert [Path(i["path"]).name for i in report.ignored] == ["sr.dcm"]
    again = {c.case: c for c in segment(exported["unetpp_ct_segmentation"], inputs, tmp_path / "out", device="cpu",
                                        progress=False).cases}
    assert again["gap"].status == "skipped" and again["gap"].volumes_ml == by_case["gap"].volumes_ml, \
        "the volumes a re-run reads off the SEG are those the first run reported"
    enhanced = pydicom.dcmread(by_case["enhanced"].output)
    assert enhanced.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID == \
        "1.2.840.10008.5.1.4.1.1.2.2"  # Legacy Converted Enhanced CT: one file, its frames referenced
    anonymised = by_case["anonymised"].output
    seg = pydicom.dcmread(anonymised)
    assert all(keyword in seg and not seg[keyword].value for keyword in TYPE2)
    nifti = segment(exported["unetpp_ct_segmentation"], inputs / "tilted", tmp_path / "nifti", device="cpu",
                    progress=False, output_format="nifti")
    assert re.fullmatch(re.escape(f"{inputs / 'tilted'}: the slices step ") + r"\d+\.\d degrees off their normal "
                        + re.escape("(gantry tilt), which a NIfTI grid cannot hold; write a DICOM SEG (--output-format "
                                    "auto or dicom-seg), or resample the series first"), nifti.cases[0].error), \
        nifti.cases[0].error
    assert not list((tmp_path / "nifti").glob("*.nii.gz"))
    written = sorted(c.output for c in by_case.values() if c.status == "ok" and str(c.output).endswith(".dcm"))
    assert len(written) >= 4, by_case  # the gap, enhanced, anonymised, tilted ... series: every SEG is checked
    for path in written:
        check_dciodvfy(Path(path))


def _gantry_tilt(degrees: float):
    """An edit shifting each slice along its column direction as a tilted gantry does (the real series is
    axial, 2 mm apart)."""
    def edit(files):
        for k, f in enumerate(files):
            x, y, z = (float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient)
            shift = k * 2.0 * np.tan(np.deg2rad(degrees))
            pydicom_set(f, ImagePositionPatient=[f"{x:.6g}", f"{y + shift:.6g}", f"{z:.6g}"])
    return edit


def pydicom_set(path: Path, **values) -> None:
    from ..io.dicom_variants import set_header

    set_header(path, **values)


def test_two_series_in_one_folder_are_two_cases(tmp_path, exported):
    folder = tmp_path / "flat"
    _series(folder, seed=1)
    other = _series(tmp_path / "other", seed=2)
    uid = pydicom.uid.generate_uid()
    for k, f in enumerate(sorted(other.iterdir())):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SeriesNumber = uid, 7
        ds.save_as(folder / f"b_{k:03d}.dcm")
    report = segment(exported["unetpp_ct_segmentation"], folder, tmp_path / "out", device="cpu", progress=False)
    assert sorted(c.case for c in report.cases) == ["flat_CT3", "flat_CT7"]
    assert report.counts()["ok"] == 2
    for case in report.cases:
        key = case.input.split("#", 1)[1]
        labels = read_dicom_seg(case.output, _find(folder, key))
        assert labels.shape == (40, 36, 10)


def _find(folder: Path, key: str):
    from pipeline.io.dicom_series import find_series

    return find_series(folder, key)


def test_a_damaged_seg_from_an_earlier_run_is_redone(tmp_path, exported):
    model = exported["unetpp_ct_segmentation"]
    series = _series(tmp_path / "in" / "ct")
    first = segment(model, series, tmp_path / "out", device="cpu", progress=False)
    output = Path(first.cases[0].output)
    expected = read_dicom_seg(output, series)
    output.write_bytes(output.read_bytes()[: output.stat().st_size - 300])  # a run cut short, provenance intact
    again = segment(model, series, tmp_path / "out", device="cpu", progress=False)
    assert again.counts() == {"ok": 1, "skipped": 0, "failed": 0}
    assert np.array_equal(read_dicom_seg(output, series), expected)


def test_a_full_disk_while_writing_segs_stops_the_job_in_one_line(small_disk, tmp_path, exported, capsys):
    inputs = tmp_path / "in"
    for k in range(4):
        _series(inputs / f"ct{k}", seed=k)
    filler = small_disk.path / "filler.bin"
    filler.write_bytes(b"\0" * (256 * 1024 - 12 * 1024))
    args = ["segment", "--model", str(exported["unetpp_ct_segmentation"]), "--input", str(inputs), "--output",
            str(small_disk.path), "--device", "cpu", "--no-progress", "--workers", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pipeline segment: stopped: cannot write image") and "no space left" in err[-1]
    assert not RAW.search("\n".join(err)), small_disk.kind
    assert not list(small_disk.path.glob(".*.part*"))
    for seg in small_disk.path.glob("*_seg.dcm"):  # whatever was renamed is complete
        read_dicom_seg(seg, inputs / seg.name.replace("_seg.dcm", ""))
    filler.unlink()
    assert main(args) == 0 and len(list(small_disk.path.glob("*_seg.dcm"))) == 4
    with pytest.raises(DiskFullError):
        raise DiskFullError(small_disk.path / "x")  # the type the job raises (kept importable for callers)


def test_an_image_read_back_matches_the_seg_voxels(tmp_path, exported):
    series = _series(tmp_path / "in" / "ct", tilt_deg=15, shuffle=True)
    report = segment(exported["unetpp_ct_segmentation"], series, tmp_path / "seg", device="cpu", progress=False)
    nifti = segment(exported["unetpp_ct_segmentation"], series, tmp_path / "nifti", device="cpu", progress=False,
                    output_format="nifti")
    assert np.array_equal(read_dicom_seg(report.cases[0].output, series),
                          read_image(nifti.cases[0].output).array)
