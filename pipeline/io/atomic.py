"""Write files so that a reader (or a re-run after a crash) never sees half of one.

:func:`atomic_path` yields a temporary path in the destination's folder (``.<name>.<random>.part<suffix>``, so
format-by-extension writers such as ITK still recognise it); when the block completes, the temporary file is
flushed to the disk (``fsync``), gets the permissions a plain ``open(..., "w")`` would give (``mkstemp`` makes it
owner-only) and is renamed over the destination, which is atomic on POSIX; the folder is flushed too, so that the
rename survives a power cut. On an exception the temporary file is removed; a full disk (``ENOSPC``, at any of
these steps, or an ``OSError`` without ``errno`` while the disk is nearly full: :func:`is_disk_full`) raises
:class:`~pipeline.errors.DiskFullError`.

A writer that can fail silently (ITK reports a short write on stderr only) must check its file inside the block,
before the rename: :func:`pipeline.io.write_image` reads every label map back.

Example:
    >>> with atomic_path("out/labels.nii.gz", suffix=".nii.gz") as tmp:          # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    >>> write_text_atomic("out/report.json", "{}")                                # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import DiskFullError

__all__ = ["FULL_BELOW", "atomic_path", "free_bytes", "free_inodes", "is_disk_full", "raise_if_disk_full", "temporary_pattern",
           "write_text_atomic"]

#: a write that failed (or reads back wrong) on a file system with less free space than this ran out of space
FULL_BELOW = 1 << 20


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def temporary_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporary files of destination ``name`` (and nothing else): the
    writers pass the destination's own ending as the suffix, or none, so no other ending is matched (a user's
    ``.<name>.abcdefgh.part.docx`` is not ours).

    Args:
        name: the destination's file name.
    """
    ending = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.part({re.escape(ending)})?$")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes available to this user on ``folder``'s file system (None where it cannot be asked)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return int(stats.f_bavail * stats.f_frsize)


def free_inodes(folder: str | os.PathLike) -> int | None:
    """File entries (inodes) available on ``folder``'s file system (None where it cannot be asked or does not
    count them, as some network and FUSE file systems report 0 of 0)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return int(stats.f_favail) if stats.f_files else None


def _full(dest: str | os.PathLike, folder: str | os.PathLike) -> DiskFullError:
    return DiskFullError(dest, free_bytes(folder), free_inodes(folder))


# errors that say something else than "no space", whatever the free space
_NOT_SPACE = (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a full file system, or this user's quota on it


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, as Python would print them (a suppressed context is not a cause)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def is_disk_full(exc: BaseException, folder: str | os.PathLike, any_error: bool = False) -> bool:
    """True when ``exc`` means that ``folder``'s file system is full, however the writer raised it: ``ENOSPC`` (or
    ``EDQUOT``, a quota) anywhere in its chain of causes, or (libraries such as pydicom re-raise the write error as an ``OSError``
    without ``errno``) an ``OSError`` while less than :data:`FULL_BELOW` is free; with ``any_error``, any error
    while so little is free (a file that reads back wrong).

    Args:
        exc: the exception.
        folder: where the write went.
        any_error: count any exception type when the disk is nearly full. Defaults to False.
    """
    chain = _chain(exc)
    if any(isinstance(e, OSError) and e.errno in _FULL_ERRNOS for e in chain):
        return True
    if any(isinstance(e, _NOT_SPACE) for e in chain):
        return False
    if not any_error and not any(isinstance(e, OSError) for e in chain):
        return False
    if not Path(folder).is_dir():
        return False
    free = free_bytes(folder)
    return (free is not None and free < FULL_BELOW) or free_inodes(folder) == 0


def raise_if_disk_full(exc: BaseException, dest: str | os.PathLike, any_error: bool = True) -> None:
    """Raise :class:`~pipeline.errors.DiskFullError` for ``dest`` when ``exc`` means a full disk
    (:func:`is_disk_full`); otherwise return.

    Args:
        exc: the exception a write raised (or one describing a file that reads back wrong).
        dest: the file being written.
        any_error: as :func:`is_disk_full`. Defaults to True.

    Example:
        >>> raise_if_disk_full(ValueError("not a write problem"), "/tmp/x", any_error=False)  # returns None
    """
    if isinstance(exc, DiskFullError):
        raise exc
    folder = Path(dest).parent
    if is_disk_full(exc, folder, any_error):
        raise _full(dest, folder) from exc


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except PermissionError:  # a folder one may write to but not read (a drop box) cannot be synced; its file was
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync folders; the file itself was synced
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; sync it and rename it to ``dest`` when the block succeeds.

    Args:
        dest: the final file.
        suffix: ending of the temporary name (e.g. ``".nii.gz"`` for writers that pick the format by it).

    Raises:
        DiskFullError: the file system ran out of space (nothing is left under either name).
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise _full(target, target.parent) from exc
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, target)
        _fsync(target.parent, directory=True)
    except Exception as exc:  # whatever the writer raised: a full disk is told apart, the rest re-raised as is
        raise_if_disk_full(exc, target, any_error=False)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically; returns ``dest`` as a Path.

    Raises:
        DiskFullError: the file system ran out of space.
    """
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
