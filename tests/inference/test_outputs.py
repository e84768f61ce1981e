"""The output folder: checked first, only the job's own temporaries removed, provenance decides skip/redo/refuse."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.inference import OutputFolder, Provenance
from pipeline.io import Geometry, write_image

GEOM = Geometry((6, 5, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
RUN = Provenance("ab" * 32, 2, "fp32", False, 0.5)


def test_the_folder_must_be_a_writable_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match=r"--output must be a folder, got '.*file', which is a file"):
        OutputFolder(tmp_path / "file")
    with pytest.raises(PipelineError, match=r"--output must be a folder this job can write to, got '.*file/sub'"):
        OutputFolder(tmp_path / "file" / "sub")
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    later = OutputFolder(tmp_path / "later" / "out")
    assert not (tmp_path / "later").exists(), "nothing is created before the job is sure to run"
    later.create()
    assert (tmp_path / "later" / "out").is_dir()
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(PipelineError, match=r"can write to, got '.*ro' \(Read-only file system\)"):
        OutputFolder(tmp_path / "ro").create()


def test_only_the_jobs_own_temporaries_are_removed(tmp_path):
    folder = OutputFolder(tmp_path)
    own = [".a_seg.nii.gz.k2j4h5g6.part.nii.gz", ".report.json.abcdEF12.part", ".b_seg.nrrd.zz_xx_yy.part.nrrd"]
    foreign = [".thesis.partial.docx", ".c_seg.nii.gz.k2j4h5g6.part.nii.gz", ".a_seg.nii.gz.partial", "a_seg.nii.gz"]
    ages = [0.0, 5.0, 3600.0, 3600.0, 0.0, 5.0, 3600.0]  # seconds: just written, seconds old, an hour old
    for name, age in zip(own + foreign, ages):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (time.time() - age,) * 2)
    removed = folder.remove_own_temporaries(["a_seg.nii.gz", "b_seg.nrrd", "report.json"])
    assert sorted(removed) == sorted(own), "fresh or old, the job's own leftovers go at start"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(foreign), "a user's files stay, whatever their name"


def test_provenance_decides_skip_redo_or_refuse(tmp_path):
    folder = OutputFolder(tmp_path)
    labels = np.zeros(GEOM.shape, np.uint8)
    assert folder.state("a_seg.nii.gz", RUN) == "missing"
    write_image(labels, GEOM, tmp_path / "a_seg.nii.gz", notes=RUN.line)
    assert folder.state("a_seg.nii.gz", RUN) == "done"
    for other in (Provenance("cd" * 32, 2, "fp32", False, 0.5), Provenance("ab" * 32, 4, "fp32", False, 0.5),
                  Provenance("ab" * 32, 2, "bf16", False, 0.5), Provenance("ab" * 32, 2, "fp32", True, 0.5),
                  Provenance("ab" * 32, 2, "fp32", False, 0.25)):
        assert other.line != RUN.line and folder.state("a_seg.nii.gz", other) == "redo", other
    write_image(labels, GEOM, tmp_path / "b_seg.nii.gz")  # somebody else's file under a result name
    with pytest.raises(PipelineError, match=r"b_seg.nii.gz exists and was not written by this job"):
        folder.state("b_seg.nii.gz", RUN)
    assert folder.state("b_seg.nii.gz", RUN, overwrite=True) == "redo"


def test_links_at_result_names_are_never_followed(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    folder.create()
    target = tmp_path / "elsewhere.nii.gz"
    write_image(np.ones(GEOM.shape, np.uint8), GEOM, target, notes=RUN.line)  # even a matching file behind it
    (tmp_path / "out" / "a_seg.nii.gz").symlink_to(target)
    with pytest.raises(PipelineError, match=r"a_seg.nii.gz is a symbolic link; outputs are never written through"):
        folder.state("a_seg.nii.gz", RUN)
    assert folder.state("a_seg.nii.gz", RUN, overwrite=True) == "redo"


def test_provenance_describes_a_run_as_the_redo_message_says():
    assert RUN.describe() == "model abababababab, level 2, fp32, TTA off, overlap 0.5"
    assert Provenance("cd" * 32, 4, "bf16", True, 0.25).describe() == \
        "model cdcdcdcdcdcd, level 4, bf16, TTA on, overlap 0.25"


def test_a_second_job_on_the_folder_leaves_the_temporaries_alone_and_says_so(tmp_path, caplog):
    import logging

    temporary = tmp_path / ".a_seg.nii.gz.k2j4h5g6.part.nii.gz"
    first, second = OutputFolder(tmp_path), OutputFolder(tmp_path)
    assert first.claim(["a_seg.nii.gz"]) == []
    temporary.write_bytes(b"")  # the first job's file in progress
    with caplog.at_level(logging.INFO, logger="pipeline.inference.outputs"):
        assert second.claim(["a_seg.nii.gz"]) == []
    assert temporary.exists()
    assert [r.getMessage() for r in caplog.records] == \
        [f"another job is writing to {tmp_path}: its temporary files are left alone"]
    for folder in (first, second):
        folder.release()
        folder.release()  # twice is harmless: the job's end and a finally may both give it back
    third = OutputFolder(tmp_path)
    assert third.claim(["a_seg.nii.gz"]) == [temporary.name], "with nobody else on the folder, leftovers go"
    third.release()
