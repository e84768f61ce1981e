"""Write files so that a reader (or a re-run after a crash) never sees half of one.

:func:`atomic_path` yields a temporary path in the destination's folder (``.<name>.<random>.part<suffix>``, so
format-by-extension writers such as ITK still recognise it); when the block completes, the temporary file is
flushed to the disk (``fsync``), gets the permissions a plain ``open(..., "w")`` would give (``mkstemp`` makes it
owner-only) and is renamed over the destination, which is atomic on POSIX; the folder is flushed too, so that the
rename survives a power cut. On an exception the temporary file is removed; a full disk (``ENOSPC``, at any of
these steps) raises :class:`~pipeline.errors.DiskFullError`.

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

__all__ = ["atomic_path", "free_bytes", "temporary_pattern", "write_text_atomic"]


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


def temporary_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporary files of destination ``name`` (and nothing else)."""
    return re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.part(\.[A-Za-z0-9.]+)?$")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes available to this user on ``folder``'s file system (None where it cannot be asked)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return int(stats.f_bavail * stats.f_frsize)


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
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
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(target, free_bytes(target.parent)) from exc
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, target)
        _fsync(target.parent, directory=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise DiskFullError(target, free_bytes(target.parent)) from exc
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
