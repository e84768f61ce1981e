"""Fault injection: SIGKILL at random points of a batch, corrupted inputs, a full disk. The figures in
docs/reliability.md come from this file: ``pytest tests/inference/test_faults.py -s`` prints them."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.io import read_image, read_notes, write_image

from .conftest import copy_cases

KILLS = 10


def _cases(root, mri_dataset, copies=3):
    return copy_cases(root, mri_dataset, cases=4, copies=copies)


def _command(model, inputs, out):
    return [sys.executable, "-m", "pipeline", "segment", "--model", str(model), "--input", str(inputs), "--output",
            str(out), "--device", "cpu", "--precision", "fp32", "--no-progress", "--workers", "2"]


def _final_outputs_intact(out):
    """Every file under a final name reads back whole and says which run made it."""
    for path in out.glob("*_seg.nii.gz"):
        assert read_image(path).array.shape == (32, 36, 32), path
        assert (read_notes(path) or "").startswith("pipeline segment "), path
        assert not path.is_symlink()


def _wait_for_output(out, count, proc, timeout):
    """Until ``out`` holds more than ``count`` label maps (or the run ended, or ``timeout`` seconds passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(list(out.glob("*_seg.nii.gz"))) > count:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path, mri_dataset, exported):
    model = exported["unetpp_mri_segmentation"]
    inputs = _cases(tmp_path / "in", mri_dataset)
    reference = subprocess.run(_command(model, inputs, tmp_path / "reference"), check=False, capture_output=True,
                               text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    full_run_s = json.loads((tmp_path / "reference/report.json").read_text())["seconds"] + 3.0  # + start-up
    rng = random.Random(0)
    out = tmp_path / "out"
    outcomes = {"before the first output": 0, "between outputs": 0, "with a temporary file open": 0}
    for kill in range(KILLS):
        before = len(list(out.glob("*_seg.nii.gz"))) if out.exists() else 0
        proc = subprocess.Popen(_command(model, inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill % 2:  # every other kill waits for this run's next output, so that it lands inside the batch
            _wait_for_output(out, before, proc, timeout=full_run_s + 60)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            time.sleep(rng.uniform(0.5, full_run_s))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        temporaries = list(out.glob(".*.part*")) if out.exists() else []
        done = list(out.glob("*_seg.nii.gz")) if out.exists() else []
        outcomes["with a temporary file open" if temporaries else
                 "between outputs" if done else "before the first output"] += 1
        _final_outputs_intact(out)
        if len(done) == 12:  # finished before the kill: start over so that every kill lands inside a batch
            shutil.rmtree(out)
    inside = outcomes["between outputs"] + outcomes["with a temporary file open"]
    assert inside >= KILLS // 2, f"too few kills landed inside a batch: {outcomes}"
    final = subprocess.run(_command(model, inputs, out), check=False, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"case{i}_{j}_seg.nii.gz" for i in range(4) for j in range(3)] +
                           ["report.csv", "report.json"]), "nothing lost, duplicated or left half-written"
    for name in names[:-2]:
        assert np.array_equal(read_image(out / name).array, read_image(tmp_path / "reference" / name).array), name
    print(f"\nfault injection: {KILLS} SIGKILLs at random points of a 12-case batch "
          f"({', '.join(f'{v} {k}' for k, v in outcomes.items())}); afterwards 12/12 outputs complete and equal to "
          f"an uninterrupted run, 0 lost, 0 half-written, 0 duplicated, 0 temporary files")


def _corrupted_inputs(root, mri_dataset):
    _cases(root, mri_dataset, copies=1)  # 4 good cases
    vol = read_image(mri_dataset / "imagesTr/mri_000.nii.gz")
    raw = (root / "case0_0.nii.gz").read_bytes()
    (root / "truncated_gz.nii.gz").write_bytes(raw[: len(raw) // 2])
    write_image(vol.array.astype(np.int16), vol.geometry, root / "truncated_raw.nii")
    data = (root / "truncated_raw.nii").read_bytes()
    (root / "truncated_raw.nii").write_bytes(data[: len(data) - 5000])
    (root / "text.nii.gz").write_text("this is a text file, not an image\n")
    (root / "gzip_text.nii.gz").write_bytes(gzip.compress(b"text inside gzip"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), root / "four_d.nii.gz")
    nan = vol.array.astype(np.float32)
    nan[3, 4, 5] = np.nan
    write_image(nan, vol.geometry, root / "nan.nii.gz")
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)  # a valid single-file header: only its size is absurd
    (root / "huge_header.nii").write_bytes(header.binaryblock + b"\0" * 4)
    spaced = vol.geometry
    write_image(vol.array, type(spaced)(spaced.shape, (100.0, 100.0, 100.0), spaced.origin, spaced.direction),
                root / "resamples_huge.nii.gz")
    return {"truncated_gz": "compressed data ends early", "truncated_raw": "the file is truncated",
            "text": "no image reader recognises its content", "gzip_text": "no image reader recognises",
            "four_d": "the model needs 1 channel(s), the image has 3", "nan": "1 NaN or infinite voxel(s)",
            "huge_header": "reading 4000x4000x4000 voxels (16-bit signed integer) and their float32 copy, 2 case(s) at "
                           "once, needs 715.3 GiB",
            "resamples_huge": "resampling the 32x36x32 grid at 100x100x100 mm to 1x1x1 mm"}


def test_corrupted_inputs_are_per_case_errors_and_the_job_goes_on(tmp_path, mri_dataset, exported, capsys):
    expected = _corrupted_inputs(tmp_path / "in", mri_dataset)
    code = main(["segment", "--model", str(exported["unetpp_mri_segmentation"]), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    assert code == 1
    report = json.loads((tmp_path / "out/report.json").read_text())
    status = {c["case"]: c for c in report["cases"]}
    assert report["counts"] == {"ok": 4, "skipped": 0, "failed": len(expected)}
    for case, words in expected.items():
        assert status[case]["status"] == "failed" and words in status[case]["error"], (case, status[case]["error"])
    printed = capsys.readouterr().out
    assert printed.count("FAILED") == len(expected) and all(f"{c}" in printed for c in expected)
    assert sorted(p.name for p in (tmp_path / "out").glob("*_seg*")) == [f"case{i}_0_seg.nii.gz" for i in range(4)]
    print(f"\ncorrupted inputs: {len(expected)} kinds ({', '.join(expected)}), each a per-case error; "
          "4 intact cases segmented; exit status 1")


def test_a_full_disk_stops_the_cli_with_one_line_and_a_rerun_finishes(small_disk, mri_dataset, exported, capsys):
    inputs = _cases(small_disk.path.parent / "in", mri_dataset)
    with open(small_disk.path / "filler.bin", "wb") as handle:
        handle.write(b"\0" * (256 * 1024 - 16 * 1024))
    args = ["segment", "--model", str(exported["unetpp_mri_segmentation"]), "--input", str(inputs), "--output",
            str(small_disk.path), "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("pipeline segment: stopped: cannot write image") and "no space left" in err[-1]
    assert "Traceback" not in captured.err + captured.out
    said = [line for line in err if line.startswith("pipeline segment:")]
    assert said == err[-1:], f"one line for the user, the rest is log lines: {err}"
    _final_outputs_intact(small_disk.path)
    assert not list(small_disk.path.glob(".*.part*"))
    before = sorted(p.name for p in small_disk.path.glob("*_seg.nii.gz"))
    assert 1 <= len(before) < 12, f"{small_disk.kind}: the disk held {len(before)} label maps"
    (small_disk.path / "filler.bin").unlink()
    assert main(args) == 0
    report = json.loads((small_disk.path / "report.json").read_text())
    assert report["counts"] == {"ok": 12 - len(before), "skipped": len(before), "failed": 0}, "each case once"
    assert len(list(small_disk.path.glob("*_seg.nii.gz"))) == 12
    print(f"\nfull disk ({small_disk.kind}): stopped with one line after {len(before)} complete label maps, none "
          f"partial; the re-run did the other {12 - len(before)}")
