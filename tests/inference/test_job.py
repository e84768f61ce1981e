"""The batch segmentation job: mixed formats, bad cases, resume after SIGKILL, shards, reports, CLI."""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from pipeline.deploy.device import native_bf16
from pipeline.inference import output_names, parse_shard, segment, select_shard
from pipeline.io import read_header, read_image, write_image


def _mixed_folder(root, ct_dataset):
    """NIfTI (RAS and LPS), NRRD, MHA in sub-folders, plus a corrupted file, a 4D file and a NaN file."""
    root.mkdir()
    shutil.copy(ct_dataset / "imagesTr/ct_000.nii.gz", root / "a.nii.gz")
    shutil.copy(ct_dataset / "imagesTr/ct_001.nii.gz", root / "b_lps.nii.gz")
    vol = read_image(ct_dataset / "imagesTr/ct_002.nii.gz")
    (root / "sub").mkdir()
    write_image(vol.array, vol.geometry, root / "sub/c.nrrd")
    write_image(vol.array, vol.geometry, root / "sub/d.mha")
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), root / "four_d.nii.gz")
    nan = vol.array.astype(np.float32)
    nan[0, 0, 0] = np.nan
    write_image(nan, vol.geometry, root / "nan.nii.gz")
    return root


def test_mixed_folder_bad_cases_reported_and_outputs_on_input_grids(tmp_path, ct_dataset, exported):
    inputs = _mixed_folder(tmp_path / "in", ct_dataset)
    report = segment(exported["unetpp_ct_segmentation"], inputs, tmp_path / "out", device="cpu", progress=False)
    status = {c.case: c for c in report.cases}
    assert {k: v.status for k, v in status.items()} == {
        "a": "ok", "b_lps": "ok", "sub_c": "ok", "sub_d": "ok", "broken": "failed", "four_d": "failed",
        "nan": "failed"}  # names carry the sub-folders: adding a file elsewhere renames nothing
    assert "cannot read image" in status["broken"].error and "broken.nii.gz" in status["broken"].error
    assert "the model needs 1 channel(s), the image has 2" in status["four_d"].error
    assert "1 NaN or infinite voxel(s)" in status["nan"].error
    for name, out in [("a.nii.gz", "a_seg.nii.gz"), ("b_lps.nii.gz", "b_lps_seg.nii.gz"),
                      ("sub/c.nrrd", "sub_c_seg.nrrd"), ("sub/d.mha", "sub_d_seg.mha")]:
        source, seg = read_header(inputs / name), read_image(tmp_path / "out" / out)
        assert seg.geometry.same_grid(source.geometry), name
        assert seg.array.dtype == np.uint8 and set(np.unique(seg.array)) <= {0, 1, 2}
        assert set(status[out.split("_seg")[0]].volumes_ml) == {"liver", "kidney"}
    saved = json.loads((tmp_path / "out/report.json").read_text())
    assert saved["counts"] == {"ok": 4, "skipped": 0, "failed": 3}
    assert saved["settings"]["precision"] == ("bf16" if native_bf16() else "fp32")  # --precision auto on a CPU
    header = (tmp_path / "out/report.csv").read_text().splitlines()[0]
    assert header == "case,status,seconds,liver_ml,kidney_ml,input,output,error,warning"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["a_seg.nii.gz", "b_lps_seg.nii.gz", "sub_c_seg.nrrd", "sub_d_seg.mha", "report.json", "report.csv"])


def test_volumes_in_millilitres(tmp_path, ct_dataset, exported):
    report = segment(exported["unetpp_ct_segmentation"], ct_dataset / "imagesTr/ct_000.nii.gz", tmp_path,
                     device="cpu", progress=False)
    (case,) = report.cases
    seg = read_image(case.output)
    voxel_ml = np.prod(seg.geometry.spacing) / 1000
    assert case.volumes_ml["liver"] == pytest.approx((seg.array == 1).sum() * voxel_ml)


def test_rerun_skips_complete_outputs_and_cli_exit_status(tmp_path, ct_dataset, exported):
    args = [sys.executable, "-m", "pipeline", "segment", "--model", str(exported["unetpp_ct_segmentation"]),
            "--input", str(ct_dataset / "imagesTr"), "--output", str(tmp_path / "out"), "--device", "cpu",
            "--no-progress", "--workers", "2"]
    first = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 segmented, 0 already complete, 0 failed" in first.stdout
    again = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 segmented, 6 already complete, 0 failed" in again.stdout
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/x.nii.gz").write_bytes(b"junk")
    bad = subprocess.run([*args[:7], str(tmp_path / "bad"), *args[8:]],
                         check=False, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "FAILED" in bad.stdout and "x.nii.gz" in bad.stdout


def test_resume_after_sigkill(tmp_path, mri_dataset, exported):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        for j in range(3):
            shutil.copy(mri_dataset / f"imagesTr/mri_00{i}.nii.gz", inputs / f"case{i}_{j}.nii.gz")
    args = [sys.executable, "-m", "pipeline", "segment", "--model", str(exported["unetpp_mri_segmentation"]),
            "--input", str(inputs), "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress",
            "--workers", "1", "--tta"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((tmp_path / "out").glob("*_seg.nii.gz"))) < 2:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in (tmp_path / "out").glob("*_seg.nii.gz")}
    assert 2 <= len(done_before) < 12, "killed mid-job"
    for leftover in (tmp_path / "out").glob(".*.part*"):
        os.utime(leftover, (time.time() - 3600, time.time() - 3600))  # as if left by a job killed an hour ago
    resumed = subprocess.run(args, check=False, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{12 - len(done_before)} segmented, {len(done_before)} already complete, 0 failed" in resumed.stdout
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"case{i}_{j}_seg.nii.gz" for i in range(4) for j in range(3)] +
                           ["report.csv", "report.json"]), "no partial or temporary files remain"
    for name in done_before:
        assert read_image(tmp_path / "out" / name).array.shape == (32, 36, 32)


def test_two_shards_cover_every_case_exactly_once(tmp_path, mri_dataset, exported):
    outputs = []
    for index in (0, 1):
        report = segment(exported["unetpp_mri_segmentation"], mri_dataset / "imagesTr", tmp_path / "out",
                         device="cpu", shard=(index, 2), progress=False)
        outputs.append({c.case for c in report.cases if c.status == "ok"})
        assert (tmp_path / f"out/report.shard-{index}-of-2.json").is_file()
    assert outputs[0].isdisjoint(outputs[1])
    assert outputs[0] | outputs[1] == {f"mri_{i:03d}" for i in range(4)}


def test_shard_rules_and_env(monkeypatch):
    items = [f"x{i}" for i in range(10)]
    parts = [select_shard(items, (i, 3)) for i in range(3)]
    assert sorted(functools.reduce(operator.iadd, parts, [])) == sorted(items) and sum(map(len, parts)) == 10
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(ValueError, match="shard must be i/n with 0 <= i < n"):
            parse_shard(bad)
    from pipeline.inference import shard_from_env

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert shard_from_env() == (1, 3)


def test_torchrun_ranks_take_their_share(tmp_path, mri_dataset, exported):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
                           "-m", "pipeline", "segment", "--model", str(exported["unetpp_mri_segmentation"]),
                           "--input", str(mri_dataset / "imagesTr"), "--output", str(tmp_path / "out"),
                           "--device", "cpu", "--no-progress"],
                           check=False, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = []
    for index in (0, 1):
        report = json.loads((tmp_path / f"out/report.shard-{index}-of-2.json").read_text())
        cases += [c["case"] for c in report["cases"]]
    assert sorted(cases) == [f"mri_{i:03d}" for i in range(4)]


def test_output_names_stay_inside_and_disambiguate():
    names = output_names(["/a/x.nii.gz", "/b/x.nii.gz", "/c/../evil name!.mha", "/d/series_dir", "/e/.hidden.nrrd"])
    assert all("/" not in n and not n.startswith(".") for n in names.values())
    assert names["/a/x.nii.gz"] != names["/b/x.nii.gz"] and names["/a/x.nii.gz"].startswith("x_")
    assert names["/c/../evil name!.mha"] == "evil_name_seg.mha"
    assert names["/d/series_dir"] == "series_dir_seg.nii.gz"


@pytest.mark.realdata
def test_real_mixed_folder_dicom_nrrd_and_lps_mr(tmp_path, ct_mr_examples, exported):
    """auto: a DICOM SEG for the DICOM series (tests/inference/test_job_dicom_seg.py checks its voxels), each
    other input's own format on its own grid."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copytree(ct_mr_examples / "example_ct_dicom", inputs / "patient1/ct_series")
    shutil.copy(ct_mr_examples / "example_mr_sm.nii.gz", inputs / "mr_lps.nii.gz")
    ct = read_image(ct_mr_examples / "example_ct.nii.gz")
    write_image(ct.array, ct.geometry, inputs / "ct.nrrd")
    report = segment(exported["unetpp_ct_segmentation"], inputs, tmp_path / "out", device="cpu", progress=False)
    assert report.counts() == {"ok": 3, "skipped": 0, "failed": 0}, [c.error for c in report.cases]
    assert report.settings["output_format"] == "auto"
    pairs = [("mr_lps.nii.gz", "mr_lps_seg.nii.gz"), ("ct.nrrd", "ct_seg.nrrd")]
    for source, output in pairs:
        assert read_header(tmp_path / "out" / output).geometry.same_grid(read_header(inputs / source).geometry)
    assert read_header(tmp_path / "out/mr_lps_seg.nii.gz").geometry.orientation == "LPS"
    assert any(c.output == str(tmp_path / "out/patient1_ct_series_seg.dcm") for c in report.cases), \
        "the report names the SEG"


def test_the_job_does_not_import_monai(tmp_path, mri_dataset, exported):
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['segment', '--model', {str(exported['unetpp_mri_segmentation'])!r}, '--input', "
            f"{str(mri_dataset / 'imagesTr' / 'mri_000.nii.gz')!r}, '--output', {str(tmp_path)!r}, '--device', 'cpu', "
            "'--no-progress']); print('MONAI' if any(m.split('.')[0] == 'monai' for m in sys.modules) else 'NO-MONAI', rc)")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "NO-MONAI 0", proc.stderr[-2000:]


def test_two_channel_cases_as_4d_files_nnunet_files_and_csv_rows(tmp_path, two_channel):
    from pipeline.deploy import load_torchscript

    _, card = load_torchscript(two_channel["model"])
    assert card.network.in_channels == 2 and card.channels == ("T1", "T2")
    assert [s["kind"] for s in card.preprocessing] == ["orient", "resample", "normalize"]
    results = {}
    for layout in ("msd", "nnunet", "csv"):
        source = two_channel[layout] / "imagesTr" if layout != "csv" else two_channel[layout]
        report = segment(two_channel["model"], source, tmp_path / layout, device="cpu", progress=False)
        assert report.counts() == {"ok": 3, "skipped": 0, "failed": 0}, [c.error for c in report.cases]
        results[layout] = {c.case: read_image(c.output).array for c in report.cases}
    assert sorted(results["msd"]) == sorted(results["nnunet"]) == sorted(results["csv"]) == [
        "mri_000", "mri_001", "mri_002"]
    for case in results["msd"]:  # the same voxels three ways: the same labels
        assert np.array_equal(results["msd"][case], results["nnunet"][case])
        assert np.array_equal(results["msd"][case], results["csv"][case])
    grid = read_header(two_channel["nnunet"] / "imagesTr/mri_001_0000.nii.gz").geometry
    assert read_header(tmp_path / "nnunet/mri_001_seg.nii.gz").geometry.same_grid(grid)


def test_two_channel_bad_cases_are_reported_and_the_job_goes_on(tmp_path, two_channel):
    inputs = tmp_path / "in"
    shutil.copytree(two_channel["nnunet"] / "imagesTr", inputs)
    (inputs / "mri_002_0001.nii.gz").unlink()  # a missing channel
    moved = read_image(inputs / "mri_001_0001.nii.gz")  # a channel on another grid
    g = moved.geometry
    write_image(moved.array, type(g)(g.shape, (1.0, 1.0, 2.0), g.origin, g.direction), inputs / "mri_001_0001.nii.gz")
    shutil.copy(two_channel["msd"] / "imagesTr/mri_000.nii.gz", inputs / "four_d.nii.gz")
    single = read_image(two_channel["nnunet"] / "imagesTr/mri_000_0000.nii.gz")
    write_image(single.array, single.geometry, inputs / "one_channel.nii.gz")
    report = segment(two_channel["model"], inputs, tmp_path / "out", device="cpu", progress=False)
    status = {c.case: c for c in report.cases}
    assert {k: v.status for k, v in status.items()} == {"mri_000": "ok", "mri_001": "failed", "mri_002": "failed",
                                                        "four_d": "ok", "one_channel": "failed"}
    assert "all channels of a case must share one grid; channel 1 differs" in status["mri_001"].error
    assert "needs the files mri_002_0000 to mri_002_0001, got channels [0]" in status["mri_002"].error
    assert "the model needs 2 channel(s), the image has 1" in status["one_channel"].error
