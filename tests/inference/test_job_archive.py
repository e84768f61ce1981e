"""The batch job under archive conditions: folders that change between ranks, inputs replaced under their outputs,
the job's own outputs of earlier runs, container memory limits, pipes and devices among the inputs, two jobs on one
folder, and the launcher's environment."""

from __future__ import annotations

import fcntl
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.inference import segment, select_shard
from pipeline.inference.cases import shard_from_env
from pipeline.io import integrity, read_image

from .conftest import copy_cases


def _run(model, inputs, out, **kwargs):
    return segment(model, inputs, out, device="cpu", progress=False, precision="fp32", **kwargs)


def test_ranks_that_list_a_changing_folder_at_different_moments_lose_no_case(tmp_path, mri_dataset, exported):
    model, inputs = exported["unetpp_mri_segmentation"], copy_cases(tmp_path / "in", mri_dataset, cases=2, copies=3)
    first = _run(model, inputs, tmp_path / "out", shard=(0, 2))  # rank 0 lists 6 cases
    copy_cases(tmp_path / "in" / "new", mri_dataset, cases=2, copies=3)  # a new scan arrives
    second = _run(model, inputs, tmp_path / "out", shard=(1, 2))  # rank 1 lists 12
    old = {f"case{i}_{j}" for i in range(2) for j in range(3)}
    done = {c.case for c in first.cases + second.cases if c.status == "ok"}
    assert old <= done, "every case both ranks listed is done by one of them"
    rerun = _run(model, inputs, tmp_path / "out", shard=(0, 2))  # rank 0's next run takes its new cases
    assert len(done | {c.case for c in rerun.cases if c.status == "ok"}) == 12
    items = [f"/data/in/case{k}.nii.gz" for k in range(40)]
    for count in (2, 3, 7):  # the shards partition any listing, and a case's shard does not depend on the others
        parts = [select_shard(items, (i, count), root="/data/in") for i in range(count)]
        assert sorted(p for part in parts for p in part) == sorted(items)
        assert select_shard(items[:10], (1, count), root="/data/in") == [p for p in parts[1] if p in items[:10]]


def test_a_replaced_input_is_redone_on_its_own_grid(tmp_path, mri_dataset, exported):
    model, inputs = exported["unetpp_mri_segmentation"], copy_cases(tmp_path / "in", mri_dataset, cases=1)
    assert _run(model, inputs, tmp_path / "out").counts()["ok"] == 1
    image = read_image(mri_dataset / "imagesTr/mri_001.nii.gz")
    cropped = nib.Nifti1Image(image.array[:24, :30, :28], np.diag([1.5, 1.5, 2.0, 1.0]))
    nib.save(cropped, inputs / "case0_0.nii.gz")  # another scan copied over the input
    again = _run(model, inputs, tmp_path / "out")
    assert again.counts() == {"ok": 1, "skipped": 0, "failed": 0}
    assert read_image(tmp_path / "out/case0_0_seg.nii.gz").geometry.shape == (24, 30, 28)
    assert _run(model, inputs, tmp_path / "out").counts()["skipped"] == 1


def test_the_jobs_own_outputs_of_any_format_or_folder_are_never_inputs(tmp_path, mri_dataset, exported):
    model, inputs = exported["unetpp_mri_segmentation"], copy_cases(tmp_path / "in", mri_dataset, cases=2)
    _run(model, inputs, inputs)  # output folder = input folder, the input's own format
    nrrd = _run(model, inputs, inputs, output_format="nifti")
    assert {c.case for c in nrrd.cases} == {"case0_0", "case1_0"}
    _run(model, inputs, inputs / "labels_v1")
    later = _run(model, inputs, inputs / "labels_v2")  # a new output folder while the old one is still there
    assert {c.case for c in later.cases} == {"case0_0", "case1_0"}
    assert not list(inputs.rglob("*_seg_seg*"))


def test_memory_is_counted_against_the_containers_limit_and_a_case_too_large_fails_alone(tmp_path, mri_dataset,
                                                                                          exported, monkeypatch):
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{2 << 30}\n")  # docker --memory=2g (cgroup v2)
    (cgroup / "memory.current").write_text(f"{300 << 20}\n")
    assert integrity.available_memory(cgroup) == (2 << 30) - (300 << 20)
    (cgroup / "memory.stat").write_text(f"anon 104857600\ninactive_file {200 << 20}\n")  # cache a batch leaves
    assert integrity.available_memory(cgroup) == (2 << 30) - (100 << 20)
    (cgroup / "memory.max").write_text("max\n")
    # no limit: the host's MemAvailable, which moves between two reads while other processes run
    assert integrity.available_memory(cgroup) == pytest.approx(integrity.available_memory(tmp_path / "none"),
                                                               abs=512 << 20)
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text("0\n")
    assert integrity.available_memory(tmp_path / "v1") == 1 << 30
    nested = tmp_path / "v2"  # a limit on the slice above this process's own cgroup binds it too
    (nested / "batch.slice" / "job.scope").mkdir(parents=True)
    (nested / "batch.slice" / "memory.max").write_text(f"{3 << 30}\n")
    (nested / "batch.slice" / "memory.current").write_text(f"{1 << 30}\n")
    (nested / "batch.slice" / "job.scope" / "memory.max").write_text("max\n")
    (tmp_path / "proc_cgroup").write_text("0::/batch.slice/job.scope\n")
    assert integrity.available_memory(nested, tmp_path / "proc_cgroup") == 2 << 30
    real = integrity.available_memory
    monkeypatch.setattr(integrity, "available_memory", lambda *args: real(tmp_path / "v1"))
    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 600))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)  # a valid single-file header: only its size is absurd
    (inputs / "big_ct.nii").write_bytes(header.binaryblock + b"\0" * 4)
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out")
    status = {c.case: c for c in report.cases}
    assert status["case0_0"].status == "ok" and status["big_ct"].status == "failed"
    assert "and their float32 copy, 2 case(s) at once, needs 7.0 GiB" in status["big_ct"].error


def test_pipes_and_devices_are_never_opened_and_a_series_folder_may_have_any_name(tmp_path, mri_dataset, exported):
    from ..conftest import write_dicom_series

    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    os.mkfifo(inputs / "stuck.nrrd")  # ITK's blocking open would hang the job
    (inputs / "zeros.nii").symlink_to("/dev/zero")
    volume = (np.random.default_rng(0).normal(size=(32, 32, 8)) * 80).astype(np.int16)
    write_dicom_series(inputs / "scan.nii.gz", volume)  # a series folder named like a file
    report = _run(exported["unetpp_ct_segmentation"], inputs, tmp_path / "out")
    assert {c.case: c.status for c in report.cases} == {"case0_0": "ok", "scan": "ok"}
    assert sorted(os.path.basename(i["path"]) for i in report.ignored) == ["stuck.nrrd", "zeros.nii"]
    with pytest.raises(PipelineError, match="must be a regular file or a folder, not a named pipe or device"):
        _run(exported["unetpp_ct_segmentation"], inputs / "stuck.nrrd", tmp_path / "out2")


def test_a_second_job_leaves_the_first_jobs_files_in_progress_alone(tmp_path, mri_dataset, exported):
    model, inputs = exported["unetpp_mri_segmentation"], copy_cases(tmp_path / "in", mri_dataset, cases=1)
    out = tmp_path / "out"
    out.mkdir()
    in_progress = out / ".case0_0_seg.nii.gz.k2j4h5g6.part.nii.gz"
    in_progress.write_bytes(b"being written")
    users = out / ".case0_0_seg.nii.gz.abcdefgh.part.docx"  # not a name the job gives its temporaries
    users.write_bytes(b"a user's file")
    first_job = os.open(out, os.O_RDONLY)
    fcntl.flock(first_job, fcntl.LOCK_SH)  # what a running job holds
    try:
        _run(model, inputs, out)
        assert in_progress.exists(), "another job's file in progress"
    finally:
        os.close(first_job)
    _run(model, inputs, out, overwrite=True)
    assert not in_progress.exists() and users.exists(), "no job runs: a leftover is removed, a user's file is not"


def test_the_launchers_environment_and_options_are_checked(tmp_path, mri_dataset, exported, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK and WORLD_SIZE must be set together .* RANK='3' and WORLD_SIZE=None"):
        shard_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE, got RANK='3' and WORLD_SIZE='2'"):
        shard_from_env()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    model = str(exported["unetpp_mri_segmentation"])
    for option, words in ((["--workers", "100000"], "workers must be between 1 and 32, got 100000"),
                          (["--device", "cpu:1"], "device must be cpu (one CPU device, all its cores)")):
        code = main(["segment", "--model", model, "--input", str(inputs), "--output", str(tmp_path / "o"),
                     "--no-progress", *option])
        assert code == 2 and words in capsys.readouterr().err
    bad_model = tmp_path / "not_a_model.ts"
    bad_model.write_text("no")
    assert main(["segment", "--model", str(bad_model), "--input", str(inputs), "--output",
                 str(tmp_path / "never"), "--no-progress"]) == 2
    assert not (tmp_path / "never").exists(), "no output folder for a job that cannot start"
    (tmp_path / "list.csv").write_text("\ufeffimage\n" + str(inputs / "case0_0.nii.gz") + "\n", encoding="utf-8")
    report = _run(model, tmp_path / "list.csv", tmp_path / "csv_out")  # saved by Excel: a byte-order mark
    assert report.counts()["ok"] == 1


def test_a_truncated_output_with_a_valid_header_is_redone(tmp_path, mri_dataset, exported):
    model, inputs = exported["unetpp_mri_segmentation"], copy_cases(tmp_path / "in", mri_dataset, cases=1)
    _run(model, inputs, tmp_path / "out")
    output = tmp_path / "out/case0_0_seg.nii.gz"
    expected = read_image(output).array
    shutil.copy(output, tmp_path / "full.nii.gz")
    output.write_bytes((tmp_path / "full.nii.gz").read_bytes()[:-200])
    assert _run(model, inputs, tmp_path / "out").counts() == {"ok": 1, "skipped": 0, "failed": 0}
    assert np.array_equal(read_image(output).array, expected)


def test_thin_images_and_another_modality_are_segmented_with_a_warning(tmp_path, mri_dataset, exported, caplog):
    from ..conftest import write_dicom_series

    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(64, 64, 1)).astype(np.float32), np.eye(4)),
             inputs / "slab.nii.gz")
    write_dicom_series(inputs / "ct_series", (np.random.default_rng(1).normal(size=(32, 32, 8)) * 80).astype(np.int16))
    (inputs / "broken.nii.gz").write_text("not an image")
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out")
    status = {c.case: c for c in report.cases}
    assert status["slab"].status == "ok" and "only 1 voxel(s) along axis 2" in status["slab"].warning
    assert status["ct_series"].status == "ok"
    assert "the model was trained on MR images, this series is CT" in status["ct_series"].warning
    (line,) = [r.getMessage() for r in caplog.records if "broken.nii.gz" in r.getMessage()]
    assert line.count("broken.nii.gz") == 1, "the file is named once"


def test_hidden_inputs_are_counted_in_the_log(tmp_path, mri_dataset, exported, caplog):
    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    shutil.copy(inputs / "case0_0.nii.gz", inputs / ".backup.nii.gz")
    with caplog.at_level("INFO"):
        report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "out")
    assert [c.case for c in report.cases] == ["case0_0"]
    assert any("passed over 1 hidden file(s)" in r.getMessage() for r in caplog.records)


def test_case_keys_agree_however_the_input_is_named_and_detached_data_counts(tmp_path, mri_dataset, exported,
                                                                          monkeypatch):
    from pipeline.data import InputCase
    from pipeline.inference.cases import case_key

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mc").mkdir()
    cases = [InputCase(f"c{k}", (f"mc/c{k}_0000.nii.gz", f"mc/c{k}_0001.nii.gz")) for k in range(12)]
    absolute = [InputCase(c.name, tuple(str(tmp_path / p) for p in c.paths)) for c in cases]
    for count in (2, 3):  # `--input mc` on one machine, `--input /abs/mc` on another: one assignment
        relative = select_shard([c.source for c in cases], (0, count),
                                keys={c.source: case_key(c, "mc") for c in cases})
        other = select_shard([c.source for c in absolute], (0, count),
                             keys={c.source: case_key(c, tmp_path / "mc") for c in absolute})
        assert [s.replace(str(tmp_path) + "/", "") for s in other] == relative
    image = read_image(mri_dataset / "imagesTr/mri_000.nii.gz")
    from pipeline.io import write_image

    inputs = tmp_path / "in"
    write_image(image.array, image.geometry, inputs / "m.mha")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(inputs / "m.mha")), str(inputs / "m.mhd"))
    (inputs / "m.mha").unlink()
    model = exported["unetpp_mri_segmentation"]
    assert _run(model, inputs, tmp_path / "out").counts()["ok"] == 1
    raw = inputs / "m.raw"
    raw.write_bytes(bytes(raw.stat().st_size))  # the voxels change, the header does not
    assert _run(model, inputs, tmp_path / "out").counts() == {"ok": 1, "skipped": 0, "failed": 0}
    raw.unlink()
    os.mkfifo(raw)  # ITK would block on opening it
    report = _run(model, inputs, tmp_path / "out2")
    assert "its data file" in report.cases[0].error and "is not a regular file" in report.cases[0].error


def test_an_output_folder_that_cannot_be_listed_or_locked_still_runs(tmp_path, mri_dataset, exported, monkeypatch):
    from pathlib import Path

    from pipeline.inference import outputs

    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    real_open, real_iterdir = os.open, Path.iterdir

    def no_read(path, flags, *args):  # a drop box: write and enter, never read
        if Path(path) == tmp_path / "box" and not flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    def no_list(self):
        if self == tmp_path / "box":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(outputs.os, "open", no_read)
    monkeypatch.setattr(Path, "iterdir", no_list)
    report = _run(exported["unetpp_mri_segmentation"], inputs, tmp_path / "box")
    assert report.counts()["ok"] == 1
