"""What counts as a full disk: ENOSPC or EDQUOT anywhere in the chain of causes, or an errno-less OSError while
almost nothing is free; never a permission problem, never a suppressed context."""

from __future__ import annotations

import errno

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
