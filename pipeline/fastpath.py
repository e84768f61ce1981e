"""Process-level speed defaults for the ``python -m pipeline`` commands: a caching memory allocator.

On this kind of machine glibc's malloc hands every tensor above its mmap threshold (at most 32 MB) back to the
kernel when it is freed, so the next pass page-faults the same memory in again: a 3D UNet++ forward spent 40% of
its time in the kernel (see ../shared/DESIGN.md). tcmalloc (Debian's ``libtcmalloc-minimal4``) or jemalloc keep
freed pages for reuse; preloaded, a stock MONAI training step ran about 2x and sliding-window inference about
1.6x faster. Python cannot swap its allocator after start, so the commands re-execute themselves once with
``LD_PRELOAD`` set, when a library is installed and none is preloaded yet.

``PIPELINE_ALLOCATOR`` chooses: ``auto`` (default: tcmalloc, else jemalloc, else the system's), ``tcmalloc``,
``jemalloc`` or ``system`` (no preload).

Example:
    >>> find_allocator("system") is None
    True
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence

__all__ = ["ALLOCATORS", "JEMALLOC_CONF", "find_allocator", "loaded_allocator", "allocator_env", "reexec_with_allocator"]

#: Library file patterns per allocator, most specific first.
ALLOCATORS = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
#: jemalloc settings that keep freed pages (as measured in ../shared/DESIGN.md).
JEMALLOC_CONF = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,"
                 "muzzy_decay_ms:-1")
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
         "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")
_GUARD = "PIPELINE_ALLOCATOR_REEXEC"


def find_allocator(preference: str | None = None) -> str | None:
    """Path of the preferred installed allocator library, or None.

    Args:
        preference: ``auto``, ``tcmalloc``, ``jemalloc`` or ``system``. Defaults to ``$PIPELINE_ALLOCATOR`` or auto.

    Raises:
        ValueError: an unknown preference.
    """
    choice = (preference or os.environ.get("PIPELINE_ALLOCATOR") or "auto").strip().lower()
    if choice not in ("auto", "system", *ALLOCATORS):
        raise ValueError(f"PIPELINE_ALLOCATOR must be auto, tcmalloc, jemalloc or system, got '{choice}'")
    if choice == "system":
        return None
    for name in (ALLOCATORS if choice == "auto" else {choice: ALLOCATORS[choice]}).values():
        for pattern in name:
            for folder in _DIRS:
                hits = sorted(glob.glob(os.path.join(folder, pattern)))
                if hits:
                    return hits[0]
    return None


def loaded_allocator() -> str:
    """``"tcmalloc"``, ``"jemalloc"`` or ``"glibc"``: the allocator mapped into this process."""
    try:
        with open("/proc/self/maps") as handle:
            maps = handle.read()
    except OSError:
        return "unknown"
    for name in ALLOCATORS:
        if f"lib{name}" in maps:
            return name
    return "glibc"


def allocator_env(env: dict | None = None, preference: str | None = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) with the preferred allocator preloaded (if installed)."""
    out = dict(os.environ if env is None else env)
    library = find_allocator(preference)
    if library and library not in out.get("LD_PRELOAD", ""):
        out["LD_PRELOAD"] = f"{library} {out['LD_PRELOAD']}".strip() if out.get("LD_PRELOAD") else library
        if "jemalloc" in library:
            out.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return out


def reexec_with_allocator(argv: Sequence[str]) -> None:
    """Replace this process by ``python -m pipeline <argv>`` with the allocator preloaded, once.

    Returns without doing anything when the allocator is already loaded, none is installed, the user chose
    ``system``, or this process is already the re-executed one.
    """
    if os.environ.get(_GUARD) or loaded_allocator() in ALLOCATORS:
        return
    try:
        env = allocator_env()
    except ValueError as exc:
        sys.stderr.write(f"pipeline: error: {exc}\n")
        raise SystemExit(2) from None
    if env.get("LD_PRELOAD", "") == os.environ.get("LD_PRELOAD", ""):
        return
    env[_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "pipeline", *argv], env)
