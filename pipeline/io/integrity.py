"""Is an image file what its header says, and will it fit in memory? Checked before any voxel is read.

Two ways a file lies, both seen with real tools:

- truncated data: ITK's NIfTI reader fills whatever a cut-off ``.nii``/``.nii.gz`` lacks with zeros and
  returns normally, so a half-copied scan (or a label map from a full disk) looks intact. :func:`check_complete`
  compares the data the header declares with the data present: the file size for ``.nii``, the gzip trailer
  (then, if that disagrees, the decompressed length) for ``.nii.gz``.
- a header that declares a huge grid (``4000^3``), or a grid that resampling would make huge (100 mm slices
  resampled to 1 mm): :func:`check_fits` compares the bytes needed with the memory available, so the job names the
  file and the size instead of allocating gigabytes first.

Example:
    >>> check_fits(2**20, "scan.nii.gz", "reading the image")     # 1 MiB fits
    >>> check_complete("scan.nii.gz")                             # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import ImageReadError, PipelineError

__all__ = ["MEMORY_SHARE", "available_memory", "check_complete", "check_fits", "format_bytes"]

#: share of the available memory one image (or one resampled image) may take
MEMORY_SHARE = 0.5


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns


def _own_cgroups(root: Path, proc_cgroup: Path) -> list[tuple[Path, Path, Path]]:
    """``(folder, limit file, usage file)`` for this process's memory cgroup and each of its ancestors up to
    ``root`` (a limit anywhere above binds too), v2 and v1; the root alone where /proc says nothing."""
    paths = {"v2": "", "v1": ""}
    try:
        for line in proc_cgroup.read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0" and not parts[1]:
                paths["v2"] = parts[2].strip().lstrip("/")
            elif len(parts) == 3 and "memory" in parts[1].split(","):
                paths["v1"] = parts[2].strip().lstrip("/")
    except OSError:
        pass
    found = []
    for base, rel, limit, usage in ((root, paths["v2"], "memory.max", "memory.current"),
                                    (root / "memory", paths["v1"], "memory.limit_in_bytes", "memory.usage_in_bytes")):
        here = base / rel if rel else base
        for folder in [here, *here.parents]:
            found.append((folder, folder / limit, folder / usage))
            if folder == base:
                break
    return found


def _inactive_cache(folder: Path) -> int:
    """Page cache the kernel reclaims before it kills anything (``inactive_file``; v1 ``total_inactive_file``):
    the usage counters include it, and a long batch fills it with the files it read (kubelet subtracts it too)."""
    try:
        stats = dict(line.split(" ", 1) for line in (folder / "memory.stat").read_text().splitlines() if " " in line)
    except OSError:
        return 0
    value = stats.get("inactive_file", stats.get("total_inactive_file", "0"))
    try:
        return int(value)
    except ValueError:
        return 0


def _cgroup_headroom(root: Path, proc_cgroup: Path) -> int | None:
    """Bytes this process's memory cgroups still allow (the smallest limit - usage, less the page cache the
    kernel would reclaim), v2 or v1; None without a limit."""
    headroom = None
    for _, limit_file, usage_file in _own_cgroups(root, proc_cgroup):
        try:
            limit_text = limit_file.read_text().strip()
        except OSError:
            continue
        if not limit_text or limit_text == "max" or int(limit_text) >= 1 << 60:  # v1 writes "none" as a huge number
            continue
        try:
            usage = int(usage_file.read_text().strip()) - _inactive_cache(usage_file.parent)
        except (OSError, ValueError):
            usage = 0
        left = max(0, int(limit_text) - max(0, usage))
        headroom = left if headroom is None else min(headroom, left)
    return headroom


def available_memory(cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
                     proc_cgroup: str | os.PathLike = "/proc/self/cgroup") -> int:
    """Bytes this process may still allocate: the kernel's ``MemAvailable`` (else the physical memory), or less
    where a memory cgroup of this process or above it (``docker --memory``, Kubernetes limits, a systemd slice;
    v2 ``memory.max``, v1 ``memory.limit_in_bytes``) leaves less: /proc/meminfo shows the host's memory inside a
    container.

    Args:
        cgroup_root: where the cgroup file system is mounted. Defaults to ``"/sys/fs/cgroup"``.
        proc_cgroup: the file naming this process's cgroups. Defaults to ``"/proc/self/cgroup"``.
    """
    host = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    host = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if host is None:
        host = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        headroom = _cgroup_headroom(Path(cgroup_root), Path(proc_cgroup))
    except ValueError:
        headroom = None
    return host if headroom is None else min(host, headroom)


def check_fits(nbytes: float, path: str | os.PathLike | None, what: str, available: int | None = None) -> None:
    """Raise when ``nbytes`` exceed :data:`MEMORY_SHARE` of the available memory.

    Args:
        nbytes: the memory the next step needs.
        path: the image it is for (named in the message), or None where the caller names it.
        what: the step, e.g. ``"reading the image (4000x4000x4000, 16-bit signed integer)"``.
        available: bytes available. Defaults to None (:func:`available_memory`).

    Raises:
        ImageReadError: (with ``path``) or PipelineError: one line with the size needed and the memory available.
    """
    free = available_memory() if available is None else int(available)
    if nbytes > MEMORY_SHARE * free:
        reason = (f"{what} needs {format_bytes(nbytes)} of memory, more than {MEMORY_SHARE:.0%} of the "
                  f"{format_bytes(free)} available")
        raise ImageReadError(path, reason) if path is not None else PipelineError(reason)


def _declared(path: Path) -> int | None:
    """Bytes of header + data a NIfTI header declares (None when nibabel cannot parse the header: the reader
    then reports the file itself)."""
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj  # the file's own offset (the loaded header's copy may reset it)
        return int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
    except Exception:  # noqa: BLE001 - nibabel raises many types for damaged headers
        return None


def _gzip_length(path: Path) -> int:
    """Decompressed length of a gzip file; raises ``EOFError``/``OSError``/``zlib.error`` when it is cut off."""
    total = 0
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            total += len(chunk)
    return total


def check_complete(path: str | os.PathLike) -> None:
    """Raise when a NIfTI file holds less data than its header declares (other formats: nothing to check here,
    their readers fail on short data).

    Args:
        path: the image file.

    Raises:
        ImageReadError: the file is shorter than its header says, or its compressed stream is cut off.
    """
    p = Path(path)
    name = p.name.lower()
    if not name.endswith((".nii", ".nii.gz")) or not p.is_file():
        return
    declared = _declared(p)
    if declared is None:
        return
    if name.endswith(".nii"):
        size = p.stat().st_size
        if size < declared:
            raise ImageReadError(p, f"the file is truncated: the header declares {declared} bytes of header and "
                                 f"data, the file holds {size}")
        return
    if p.stat().st_size >= 18:  # the gzip trailer holds the decompressed length mod 2^32
        with open(p, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            if int.from_bytes(handle.read(4), "little") == declared % 2**32:
                return
    try:
        length = _gzip_length(p)
    except (EOFError, OSError, zlib.error) as exc:
        raise ImageReadError(p, f"the file is truncated or damaged: its compressed data ends early ({exc})") from exc
    if length < declared:
        raise ImageReadError(p, f"the file is truncated: the header declares {declared} bytes of header and data, "
                             f"the file holds {length} after decompression")
