"""Write files so that a reader (or a re-run after a crash) never sees half of one.

:func:`atomic_path` yields a temporary path in the destination's folder (``.<name>.<random>.part<suffix>``, so
format-by-extension writers such as ITK still recognise it); when the block completes, the file gets the
permissions a plain ``open(..., "w")`` would give (``mkstemp`` makes it owner-only) and is renamed over the
destination, which is atomic on POSIX. On an exception the temporary file is removed.

Example:
    >>> with atomic_path("out/labels.nii.gz", suffix=".nii.gz") as tmp:          # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    >>> write_text_atomic("out/report.json", "{}")                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_text_atomic"]


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _file_mode()


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it to ``dest`` when the block succeeds.

    Args:
        dest: the final file.
        suffix: ending of the temporary name (e.g. ``".nii.gz"`` for writers that pick the format by it).
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically; returns ``dest`` as a Path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
