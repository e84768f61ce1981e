"""The output folder: checked first, only the job's own temporaries removed, provenance decides skip/redo/refuse."""

from __future__ import annotations

import os
import time
from pathlib import Path

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

    real = tempfile.NamedTemporaryFile

    def read_only(*args, **kwargs):  # only the folder under test is read-only: the test must write there
        if Path(kwargs.get("dir") or "/").name == "ro":
            raise OSError(30, "Read-only file system")
        return real(*args, **kwargs)

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
    with pytest.raises(PipelineError) as info:
        folder.state("a_seg.nii.gz", RUN)
    assert str(info.value) == (f"{tmp_path / 'out' / 'a_seg.nii.gz'} is a symbolic link; outputs are never written "
                               "through links: remove it or pass --overwrite to replace the link")
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


def test_the_provenance_line_is_the_prefix_and_16_hex_digits_and_an_input_adds_its_fingerprint():
    line = RUN.line
    assert line.startswith("pipeline segment ") and len(line) == len("pipeline segment ") + 16
    int(line.rsplit(" ", 1)[1], 16)
    assert Provenance("ab" * 32, 2, "fp32", False, 0.5 + 1e-9).line == line, "overlap is compared to 6 decimals"
    assert Provenance("ab" * 32, 2, "fp32", False, 0.500002).line != line
    assert RUN.for_input("") == line and RUN.for_input("0123456789ab") == f"{line} 0123456789ab"
    assert len(RUN.for_input("0123456789ab")) == 46


def test_a_changed_input_or_another_run_is_redone_and_the_log_says_which(tmp_path, caplog):
    import logging

    folder = OutputFolder(tmp_path)
    labels = np.zeros(GEOM.shape, np.uint8)
    write_image(labels, GEOM, tmp_path / "a_seg.nii.gz", notes=RUN.for_input("0123456789ab"))
    other = Provenance("cd" * 32, 3, "bf16", True, 0.25)
    with caplog.at_level(logging.INFO, logger="pipeline.inference.outputs"):
        assert folder.state("a_seg.nii.gz", RUN, fingerprint="0123456789ab") == "done"
        assert folder.state("a_seg.nii.gz", RUN, fingerprint="ba9876543210") == "redo"
        assert folder.state("a_seg.nii.gz", other, fingerprint="0123456789ab") == "redo"
        assert folder.state("a_seg.nii.gz", RUN, overwrite=True) == "redo"
    assert [r.getMessage() for r in caplog.records] == [
        ("a_seg.nii.gz: its input changed since it was segmented (or was made before inputs were fingerprinted); "
        "redoing it"),
        ("a_seg.nii.gz was made by another run (model, level, precision, TTA or overlap differ); redoing it with "
        "model cdcdcdcdcdcd, level 3, bf16, TTA on, overlap 0.25")]


def test_a_folder_or_a_header_without_notes_at_a_result_name_is_refused(tmp_path):
    folder = OutputFolder(tmp_path)
    (tmp_path / "d_seg.nii.gz").mkdir()
    with pytest.raises(PipelineError) as info:
        folder.state("d_seg.nii.gz", RUN)
    assert str(info.value) == (f"{tmp_path / 'd_seg.nii.gz'} exists and was not written by this job (no provenance "
                               "line in its header); move it away or pass --overwrite")
    write_image(np.zeros(GEOM.shape, np.uint8), GEOM, tmp_path / "e_seg.nrrd", notes="pipeline segmentation v2")
    with pytest.raises(PipelineError, match="e_seg.nrrd exists and was not written by this job"):
        folder.state("e_seg.nrrd", RUN)


def test_an_output_below_a_folder_that_cannot_be_written_names_the_nearest_parent(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked or mode & os.W_OK == 0)
    with pytest.raises(PipelineError) as info:
        OutputFolder(locked / "a" / "b")
    assert str(info.value) == (f"--output must be a folder this job can write to, got '{locked / 'a' / 'b'}' "
                               f"('{locked}' cannot be written)")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked or mode & os.X_OK == 0)
    with pytest.raises(PipelineError, match="cannot be written"):
        OutputFolder(locked / "a")
    monkeypatch.undo()
    assert OutputFolder(locked / "a" / "b").path == locked / "a" / "b"


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    folder = OutputFolder(tmp_path / "new")

    def refuse(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(PipelineError) as info:
        folder.create()
    assert str(info.value) == (f"--output must be a folder this job can create, got '{tmp_path / 'new'}' (No space "
                               "left on device)")


def test_without_locks_the_temporaries_are_still_removed(tmp_path, monkeypatch, caplog):
    import fcntl
    import logging

    (tmp_path / ".a_seg.nii.gz.k2j4h5g6.part.nii.gz").write_bytes(b"")

    def no_locks(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    folder = OutputFolder(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="pipeline.inference.outputs"):
        assert folder.claim(["a_seg.nii.gz"]) == [".a_seg.nii.gz.k2j4h5g6.part.nii.gz"]
    assert folder._lock is None, "no descriptor is kept open without a lock"
    assert f"no lock on {tmp_path} ([Errno 37] No locks available)" in [r.getMessage() for r in caplog.records]
    assert "removed 1 temporary file(s) left by an interrupted run" in [r.getMessage() for r in caplog.records]


def test_contains_is_the_folder_and_what_lies_below_it(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    assert folder.contains(tmp_path / "out") and folder.contains(tmp_path / "out" / "x" / "y.nii.gz")
    assert not folder.contains(tmp_path / "out2" / "y.nii.gz") and not folder.contains(tmp_path)
    assert folder.contains(tmp_path / "in" / ".." / "out" / "z.nrrd")


def test_what_cannot_be_listed_or_removed_is_left_and_said(tmp_path, monkeypatch, caplog):
    import logging

    folder = OutputFolder(tmp_path)
    (tmp_path / ".a_seg.nii.gz.k2j4h5g6.part").mkdir()  # a folder under a temporary's name is not ours
    (tmp_path / ".b_seg.nii.gz.k2j4h5g6.part").write_bytes(b"")
    real_unlink = Path.unlink

    def stuck(self, *args, **kwargs):
        if self.name.startswith(".b_seg"):
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", stuck)
    with caplog.at_level(logging.INFO, logger="pipeline.inference.outputs"):
        assert folder.remove_own_temporaries(["a_seg.nii.gz", "b_seg.nii.gz"]) == []
    assert [r.getMessage() for r in caplog.records] == [
        (f"could not remove {tmp_path / '.b_seg.nii.gz.k2j4h5g6.part'}, left by an interrupted run: [Errno 13] "
        "Permission denied")]
    caplog.clear()
    monkeypatch.setattr(Path, "iterdir", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with caplog.at_level(logging.INFO, logger="pipeline.inference.outputs"):
        assert folder.remove_own_temporaries(["b_seg.nii.gz"]) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot list {tmp_path} (Permission denied): temporary files of an interrupted run stay"]
