"""What counts as a full disk: ENOSPC or EDQUOT anywhere in the chain of causes, or an errno-less OSError while
almost nothing is free; never a permission problem, never a suppressed context."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

from pipeline.errors import DiskFullError
from pipeline.io import atomic
from pipeline.io.atomic import atomic_path, is_disk_full


def _wrapped(inner: BaseException, suppress: bool = False) -> OSError:
    try:
        try:
            raise inner
        except BaseException as exc:
            if suppress:
                raise OSError("could not write") from None
            raise OSError("could not write") from exc
    except OSError as outer:
        return outer


def test_the_causes_decide_and_a_suppressed_context_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1 << 40)
    assert is_disk_full(_wrapped(OSError(errno.ENOSPC, "No space left on device")), tmp_path)
    assert is_disk_full(_wrapped(OSError(errno.EDQUOT, "Disk quota exceeded")), tmp_path)
    assert not is_disk_full(_wrapped(OSError(errno.ENOSPC, "old news"), suppress=True), tmp_path)
    assert not is_disk_full(OSError("could not write"), tmp_path), "plenty of space: another problem"


def test_low_free_space_explains_an_errno_less_write_error_but_not_a_permission_error(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 100)
    assert is_disk_full(OSError("could not write"), tmp_path)
    assert not is_disk_full(_wrapped(PermissionError(errno.EACCES, "Permission denied")), tmp_path)
    assert not is_disk_full(ValueError("a bad label map"), tmp_path)
    with pytest.raises(DiskFullError, match="x.bin': no space left on the device"), \
            atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise OSError("could not write")
    with pytest.raises(PermissionError), atomic_path(tmp_path / "y.bin"):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert not list(tmp_path.iterdir()), "no file under either name"


def test_no_inodes_left_is_named_as_such(tmp_path, monkeypatch):
    """Out of file entries, a disk is full with megabytes free: the message says which."""
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 10 << 20)
    monkeypatch.setattr(atomic, "free_inodes", lambda folder: 0)
    assert is_disk_full(OSError("could not write"), tmp_path)
    with pytest.raises(DiskFullError, match=r"no file entries \(inodes\) left on the device \(10485760 bytes free\)"), \
            atomic_path(tmp_path / "z.bin"):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_files_get_the_mode_the_umask_allows_and_the_umask_is_left_as_it_was():
    old = os.umask(0o027)
    try:
        assert atomic._file_mode() == 0o640
        assert os.umask(0o022) == 0o027, "the umask is put back"
        assert atomic._file_mode() == 0o644, "never executable"
    finally:
        os.umask(old)


@pytest.mark.parametrize("name, ours, not_ours", [
    ("a_seg.nii.gz", [".a_seg.nii.gz.abcd_123.part.nii.gz", ".a_seg.nii.gz.ABCDEFGH.part"],
     [".a_seg.nii.gz.abcd_123.part.gz", ".a_seg.nii.gz.abcd_123.part.docx", ".a_seg.nii.gz.abc.part.nii.gz",
      "a_seg.nii.gz.abcd_123.part", ".b_seg.nii.gz.abcd_123.part"]),
    ("x.nrrd", [".x.nrrd.abcdefgh.part.nrrd", ".x.nrrd.abcdefgh.part"],
     [".x.nrrd.abcdefgh.part.nii.gz", ".x.nrrd.abcdefgh.part.nrrdx", ".xxnrrd.abcdefgh.part"]),
    ("report", [".report.abcdefgh.part"], [".report.abcdefgh.part.json"]),
])
def test_the_temporary_pattern_matches_our_temporaries_and_nothing_else(name, ours, not_ours):
    pattern = atomic.temporary_pattern(name)
    assert all(pattern.match(n) for n in ours), ours
    assert not any(pattern.match(n) for n in not_ours), not_ours


@pytest.mark.parametrize("suffix", ["", ".nii.gz", ".nrrd"])
def test_atomic_paths_temporaries_match_the_pattern(tmp_path, suffix):
    with atomic_path(tmp_path / f"out{suffix}", suffix) as tmp:
        assert atomic.temporary_pattern(f"out{suffix}").match(tmp.name), tmp.name
        tmp.write_bytes(b"x")


def test_a_file_system_that_counts_no_inodes_says_none(monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda folder: SimpleNamespace(f_files=0, f_favail=0, f_bavail=1, f_frsize=1))
    assert atomic.free_inodes("/") is None
    monkeypatch.setattr(os, "statvfs", lambda folder: SimpleNamespace(f_files=9, f_favail=4, f_bavail=1, f_frsize=1))
    assert atomic.free_inodes("/") == 4


def test_an_implicit_context_counts_as_a_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 1 << 40)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("the writer gave up")  # the implicit context (no "from") is what is tested
    except RuntimeError as exc:
        assert exc.__context__ is not None and not exc.__suppress_context__
        assert is_disk_full(exc, tmp_path)


def test_low_free_space_counts_only_below_the_bound_and_only_for_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "free_inodes", lambda folder: 100)
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: atomic.FULL_BELOW)
    assert not is_disk_full(OSError("could not write"), tmp_path)
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: atomic.FULL_BELOW - 1)
    assert is_disk_full(OSError("could not write"), tmp_path)
    (tmp_path / "file").write_bytes(b"")
    assert not is_disk_full(OSError("could not write"), tmp_path / "file"), "a file is not where a write went"


@pytest.mark.parametrize("directory, code, raises", [(True, errno.EINVAL, False), (True, errno.EIO, True),
                                                      (False, errno.EINVAL, True)])
def test_only_a_folder_that_cannot_be_synced_is_let_go(tmp_path, monkeypatch, directory, code, raises):
    target = tmp_path if directory else tmp_path / "f"
    if not directory:
        target.touch()

    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    if raises:
        with pytest.raises(OSError) as info:
            atomic._fsync(target, directory=directory)
        assert info.value.errno == code
    else:
        atomic._fsync(target, directory=directory)
