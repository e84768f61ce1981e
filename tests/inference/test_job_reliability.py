"""What the batch job does off the happy path: re-runs after other settings, foreign files and links, its own
outputs under the inputs, constant images, a full disk, a fast predictor, a bad output folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.errors import DiskFullError
from pipeline.inference import segment
from pipeline.io import read_image, read_notes, write_image

from .conftest import copy_cases


def _inputs(root, mri_dataset, copies=1):
    return copy_cases(root, mri_dataset, cases=2, copies=copies)


def _run(model, inputs, out, **kwargs):
    return segment(model, inputs, out, device="cpu", progress=False, precision="fp32", **kwargs)


def test_a_rerun_redoes_other_settings_and_refuses_foreign_files_and_links(tmp_path, mri_dataset, exported):
    model, inputs, out = exported["unetpp_mri_segmentation"], _inputs(tmp_path / "in", mri_dataset), tmp_path / "out"
    first = _run(model, inputs, out)
    assert first.counts() == {"ok": 2, "skipped": 0, "failed": 0}
    line = first.settings["provenance"]
    notes = read_notes(out / "case0_0_seg.nii.gz")  # the settings, then the input's fingerprint
    assert notes.startswith(line + " ") and len(notes.split()[-1]) == 12 and line.startswith("pipeline segment ")
    assert _run(model, inputs, out).counts() == {"ok": 0, "skipped": 2, "failed": 0}
    for changed in ({"level": 1}, {"tta": True}, {"overlap": 0.25}):
        report = _run(model, inputs, out, **changed)
        assert report.counts() == {"ok": 2, "skipped": 0, "failed": 0}, changed
        assert read_notes(out / "case0_0_seg.nii.gz").startswith(report.settings["provenance"] + " ")
        assert report.settings["provenance"] != line
    other_model = tmp_path / "copy.ts"
    shutil.copy(model, other_model)
    assert _run(other_model, inputs, out, overlap=0.25).counts()["skipped"] == 2, "same bytes, same model"
    with open(other_model, "ab") as handle:
        handle.write(b"\0")  # another file: another hash (TorchScript's zip ignores trailing bytes)
    assert _run(other_model, inputs, out, overlap=0.25).counts()["ok"] == 2
    assert _run(model, inputs, out).counts()["ok"] == 2
    foreign = read_image(out / "case0_0_seg.nii.gz")
    write_image(np.zeros_like(foreign.array), foreign.geometry, out / "case0_0_seg.nii.gz")  # not the job's
    (out / "case1_0_seg.nii.gz").unlink()
    (out / "case1_0_seg.nii.gz").symlink_to(out / "case0_0_seg.nii.gz")
    report = _run(model, inputs, out)
    errors = {c.case: c.error for c in report.cases}
    assert report.counts() == {"ok": 0, "skipped": 0, "failed": 2}
    assert "case0_0_seg.nii.gz exists and was not written by this job" in errors["case0_0"]
    assert "case1_0_seg.nii.gz is a symbolic link" in errors["case1_0"]
    assert _run(model, inputs, out, overwrite=True).counts() == {"ok": 2, "skipped": 0, "failed": 0}
    assert not (out / "case1_0_seg.nii.gz").is_symlink(), "the link itself was replaced"
    assert read_image(out / "case0_0_seg.nii.gz").array.any(), "the foreign file was replaced by a real result"


@pytest.mark.parametrize("where", ["inside", "same"])
def test_the_jobs_own_outputs_are_never_inputs(tmp_path, mri_dataset, exported, where):
    inputs = _inputs(tmp_path / "in", mri_dataset)
    out = inputs / "labels" if where == "inside" else inputs
    for _ in range(3):
        report = _run(exported["unetpp_mri_segmentation"], inputs, out)
        assert sorted(c.case for c in report.cases) == ["case0_0", "case1_0"]
    assert report.counts() == {"ok": 0, "skipped": 2, "failed": 0}
    assert not list(out.glob("*_seg_seg*"))


def test_a_constant_image_is_segmented_with_a_warning(tmp_path, mri_dataset, exported, caplog):
    vol = read_image(mri_dataset / "imagesTr/mri_000.nii.gz")
    write_image(np.zeros_like(vol.array), vol.geometry, tmp_path / "zeros.nii.gz")
    with caplog.at_level("WARNING", logger="pipeline.inference.job"):
        report = _run(exported["unetpp_mri_segmentation"], tmp_path / "zeros.nii.gz", tmp_path / "out")
    (case,) = report.cases
    assert case.status == "ok" and "the image is constant (every voxel 0)" in case.warning
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / 'zeros.nii.gz'}: {case.warning}"]
    assert "the image is constant" in (tmp_path / "out/report.csv").read_text()


def test_a_fast_predictor_waits_for_the_writer(tmp_path, mri_dataset, exported, monkeypatch):
    import torch

    from pipeline.inference import job

    inputs = _inputs(tmp_path / "in", mri_dataset, copies=6)
    monkeypatch.setattr(job.Predictor, "__call__", lambda self, image: torch.rand(1, 3, *image.shape[1:]))
    real_write = job.write_image

    def slow_write(*args, **kwargs):
        time.sleep(0.2)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(job, "write_image", slow_write)
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out", workers=2)
    assert report.counts()["ok"] == 12
    assert 1 <= report.settings["write_queue_peak"] <= 2, "at most `workers` predictions wait for the writer"


def test_a_full_disk_stops_the_job_and_a_rerun_completes_it(small_disk, mri_dataset, exported):
    inputs = _inputs(small_disk.path.parent / "in", mri_dataset, copies=5)
    filler = small_disk.path / "filler.bin"
    with open(filler, "wb") as handle:  # leave room for about two label maps and the reports
        handle.write(b"\0" * (256 * 1024 - 16 * 1024))
    with pytest.raises(DiskFullError, match="no space left on the device"):
        _run(exported["unetpp_mri_segmentation"], inputs, small_disk.path, workers=1)
    outputs = sorted(small_disk.path.glob("*_seg.nii.gz"))
    assert 1 <= len(outputs) < 10 and not list(small_disk.path.glob(".*part*")), (small_disk.kind, len(outputs))
    for path in outputs:  # what has a final name is complete
        assert read_image(path).array.shape == (32, 36, 32) and read_notes(path).startswith("pipeline segment")
    filler.unlink()
    report = _run(exported["unetpp_mri_segmentation"], inputs, small_disk.path, workers=1)
    assert report.counts() == {"ok": 10 - len(outputs), "skipped": len(outputs), "failed": 0}


def test_a_bad_output_folder_is_one_line_before_the_model_loads(tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(tmp_path / "none.ts"),
                               "--input", str(tmp_path), "--output", str(out)],
                               check=False, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("pipeline segment: error: --output must be a folder"), proc.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unexpected_error_in_one_case_is_named_with_its_type_and_the_job_goes_on(tmp_path, mri_dataset, exported,
                                                                                    monkeypatch, caplog, workers):
    import torch

    from pipeline.inference import job

    inputs = _inputs(tmp_path / "in", mri_dataset)
    calls = []

    def second_fails(self, image):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of luck 50%")
        return torch.rand(1, 3, *image.shape[1:])

    monkeypatch.setattr(job.Predictor, "__call__", second_fails)
    with caplog.at_level("ERROR", logger="pipeline"):
        report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out", workers=workers)
    assert report.counts() == {"ok": 1, "skipped": 0, "failed": 1}
    failed = next(c for c in report.cases if c.status == "failed")
    assert failed.error == "RuntimeError: out of luck 50%"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == \
        [f"{failed.input}: RuntimeError: out of luck 50%"]


def test_skipped_and_failed_cases_are_recorded_in_full(tmp_path, mri_dataset, exported):
    """The report's rows for a complete output found again and for a case that failed, field by field (a name that
    holds ``_seg`` itself keeps it)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(mri_dataset / "imagesTr/mri_000.nii.gz", inputs / "knee_segment.nii.gz")
    model, out = exported["unetpp_mri_segmentation"], tmp_path / "out"
    first = _run(model, inputs, out)
    (inputs / "bad_segment.nii.gz").write_bytes(b"not an image")
    again = _run(model, inputs, out)
    rows = {c.case: c for c in again.cases}
    done, skipped, failed = first.cases[0], rows["knee_segment"], rows["bad_segment"]
    assert (skipped.status, skipped.input, skipped.output, skipped.seconds) == \
        ("skipped", str(inputs / "knee_segment.nii.gz"), str(out / "knee_segment_seg.nii.gz"), 0.0)
    assert skipped.volumes_ml == done.volumes_ml and sum(done.volumes_ml.values()) > 0
    assert (failed.status, failed.input, failed.output, failed.seconds) == \
        ("failed", str(inputs / "bad_segment.nii.gz"), "", 0.0)
    assert failed.error.startswith(f"cannot read image '{inputs / 'bad_segment.nii.gz'}'"), failed.error


@pytest.mark.parametrize("workers", [1, 2])
def test_a_case_whose_write_fails_is_reported_as_that_case_and_the_job_goes_on(tmp_path, mri_dataset, exported,
                                                                                monkeypatch, workers):
    """With workers > 1 the write runs on the writer thread: its failure must still land on its own case."""
    from pipeline.errors import ImageWriteError
    from pipeline.inference import job

    inputs = _inputs(tmp_path / "in", mri_dataset)
    real_write = job.write_image

    def refuse_case1(labels, geometry, path, **kwargs):
        if "case1" in str(path):
            raise ImageWriteError(path, "the write was refused")
        return real_write(labels, geometry, path, **kwargs)

    monkeypatch.setattr(job, "write_image", refuse_case1)
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out", workers=workers)
    rows = {c.case: c for c in report.cases}
    assert (rows["case0_0"].status, rows["case1_0"].status) == ("ok", "failed")
    assert rows["case1_0"].input == str(inputs / "case1_0.nii.gz")
    assert rows["case1_0"].error.endswith("the write was refused") and "case1_0_seg.nii.gz" in rows["case1_0"].error
    peak = report.settings["write_queue_peak"]
    assert peak == 0 if workers == 1 else 1 <= peak <= workers, "one worker writes in turn: nothing ever waits"


def test_a_label_the_model_did_not_find_has_volume_zero(tmp_path, mri_dataset, exported, monkeypatch):
    """Every label of the model is in the report, the ones not found at 0 mL, and the volumes are the voxel counts
    times the voxel size."""
    import torch

    from pipeline.inference import job

    def background_and_label_1(self, image):
        probs = torch.zeros(1, 3, *image.shape[1:])
        probs[:, 0] = 1.0
        probs[:, 1, : image.shape[1] // 2] = 2.0  # the first half of the first axis is label 1
        return probs

    monkeypatch.setattr(job.Predictor, "__call__", background_and_label_1)
    report = _run(exported["unetpp_mri_segmentation"], _inputs(tmp_path / "in", mri_dataset), tmp_path / "out")
    case = report.cases[0]
    written = read_image(case.output)
    voxel_ml = float(np.prod(written.geometry.spacing)) / 1000.0
    names = [n for k, n in sorted(report.labels.items(), key=lambda kv: int(kv[0])) if k != "0"]
    assert list(case.volumes_ml) == names and case.volumes_ml[names[1]] == 0.0
    assert case.volumes_ml[names[0]] == pytest.approx(np.count_nonzero(written.array == 1) * voxel_ml)
    assert case.volumes_ml[names[0]] > 0


def test_the_memory_for_the_probabilities_is_checked_before_they_are_allocated(tmp_path, mri_dataset, exported,
                                                                                 monkeypatch):
    from pipeline.inference import job

    inputs = _inputs(tmp_path / "in", mri_dataset)
    asked = []
    monkeypatch.setattr(job, "check_fits", lambda need, where, what: asked.append((need, where, what)))
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out", workers=1)
    assert report.counts()["ok"] == 2 and len(asked) == 2
    need, where, what = min(asked, key=lambda a: a[1])
    grid = what.split(" on the ")[1].split(" ")[0]
    voxels = np.prod([int(n) for n in grid.split("x")])
    assert where == str(inputs / "case0_0.nii.gz")
    assert what == f"predicting 3 class probabilities on the {grid} preprocessed grid"
    assert need == voxels * 4 * (3 + 1), "float32 probabilities of 3 classes and the window weights"


def test_a_complete_output_that_no_longer_reads_is_redone_with_a_warning(tmp_path, mri_dataset, exported, caplog):
    inputs, out = _inputs(tmp_path / "in", mri_dataset), tmp_path / "out"
    model = exported["unetpp_mri_segmentation"]
    _run(model, inputs, out)
    damaged = out / "case0_0_seg.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # the header (and its notes) survive
    with caplog.at_level("WARNING", logger="pipeline.inference.job"):
        report = _run(model, inputs, out)
    assert report.counts() == {"ok": 1, "skipped": 1, "failed": 0}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{damaged}: redoing it: cannot read image "), warnings
    assert read_image(damaged).array.shape == (32, 36, 32)


def test_an_image_the_model_cannot_segment_is_named_in_its_error(tmp_path, mri_dataset, exported):
    inputs = _inputs(tmp_path / "in", mri_dataset)
    image = read_image(inputs / "case1_0.nii.gz")
    array = image.array.astype(np.float32)
    array[3, 4, 5] = np.nan
    write_image(array, image.geometry, inputs / "case1_0.nii.gz")
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out")
    failed = next(c for c in report.cases if c.status == "failed")
    assert failed.error == f"cannot read image '{inputs / 'case1_0.nii.gz'}': the image holds 1 NaN or infinite voxel(s)"
