"""Process-level speed defaults for the ``python -m pipeline`` commands: a caching memory allocator.

glibc's malloc serves every buffer above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it
when freed, so each pass through a 3D network page-faults its activations in again and spends much of its time in
the kernel. tcmalloc (Debian's ``libtcmalloc-minimal4``) or jemalloc keep freed pages for reuse; so does glibc itself
when told never to mmap and never to trim (``GLIBC_TUNABLES``). Tuned glibc is the fallback, not the first choice:
it never returns memory, and fragmentation can leave more resident. The page faults, kernel time and peak memory
of each are measured by ``benchmarks/efficiency.py`` and ``benchmarks/training_throughput.py``
(docs/performance.md). Python cannot change its allocator after start, so the commands re-execute themselves once
with ``LD_PRELOAD`` or ``GLIBC_TUNABLES`` set.

``PIPELINE_ALLOCATOR`` chooses: ``auto`` (default: tcmalloc, else jemalloc, else tuned glibc), ``tcmalloc``,
``jemalloc``, ``glibc`` (tuned glibc) or ``system`` (nothing changed).

Example:
    >>> find_allocator("system") is None
    True
"""

from __future__ import annotations

import glob
import os
import platform
import sys
from collections.abc import Sequence

__all__ = [
    "ALLOCATORS",
    "GLIBC_KEEP_FREED",
    "JEMALLOC_CONF",
    "allocator_env",
    "find_allocator",
    "loaded_allocator",
    "reexec_with_allocator",
]

#: Library file patterns per allocator, most specific first.
ALLOCATORS = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}
#: jemalloc settings that keep freed pages (as measured in ../shared/DESIGN.md).
JEMALLOC_CONF = ("oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,"
                 "muzzy_decay_ms:-1")
#: glibc settings that keep freed memory in the heap: no mmap'd chunks, no trimming (64 GiB threshold).
GLIBC_KEEP_FREED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
CHOICES = ("auto", *ALLOCATORS, "glibc", "system")
_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
         "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")
_GUARD = "PIPELINE_ALLOCATOR_REEXEC"


def find_allocator(preference: str | None = None) -> str | None:
    """Path of the preferred installed allocator library, or None.

    Args:
        preference: ``auto``, ``tcmalloc``, ``jemalloc``, ``glibc`` or ``system``. Defaults to
            ``$PIPELINE_ALLOCATOR`` or auto.

    Raises:
        ValueError: an unknown preference.
    """
    choice = _choice(preference)
    if choice in ("glibc", "system"):
        return None
    for name in (ALLOCATORS if choice == "auto" else {choice: ALLOCATORS[choice]}).values():
        for pattern in name:
            for folder in _DIRS:
                hits = sorted(glob.glob(os.path.join(folder, pattern)))
                if hits:
                    return hits[0]
    return None


def _choice(preference: str | None) -> str:
    choice = (preference or os.environ.get("PIPELINE_ALLOCATOR") or "auto").strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"PIPELINE_ALLOCATOR must be one of {', '.join(CHOICES)}, got '{choice}'")
    return choice


def _is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def loaded_allocator() -> str:
    """``"tcmalloc"``, ``"jemalloc"``, ``"glibc-tuned"`` (glibc with :data:`GLIBC_KEEP_FREED`) or ``"glibc"``: the
    allocator of this process."""
    try:
        with open("/proc/self/maps") as handle:
            maps = handle.read()
    except OSError:
        return "unknown"
    for name in ALLOCATORS:
        if f"lib{name}" in maps:
            return name
    return "glibc-tuned" if "mmap_max=0" in os.environ.get("GLIBC_TUNABLES", "") else "glibc"


def allocator_env(env: dict | None = None, preference: str | None = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) that starts a process with the preferred allocator: a preloaded
    library if installed, else (``auto`` or ``glibc``, on glibc systems) glibc tuned to keep freed memory.

    Raises:
        ValueError: an unknown preference.
    """
    out = dict(os.environ if env is None else env)
    choice = _choice(preference)
    library = find_allocator(choice)
    if library:
        if library not in out.get("LD_PRELOAD", ""):
            out["LD_PRELOAD"] = f"{library} {out['LD_PRELOAD']}".strip() if out.get("LD_PRELOAD") else library
        if "jemalloc" in library:
            out.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    elif choice in ("auto", "glibc") and _is_glibc() and "mmap_max" not in out.get("GLIBC_TUNABLES", ""):
        out["GLIBC_TUNABLES"] = ":".join(filter(None, (out.get("GLIBC_TUNABLES"), GLIBC_KEEP_FREED)))
    return out


def reexec_with_allocator(argv: Sequence[str]) -> None:
    """Replace this process by ``python -m pipeline <argv>`` started with :func:`allocator_env`, once.

    Returns without doing anything when a fast allocator is already in place, the user chose ``system``, or this
    process is already the re-executed one.
    """
    if os.environ.get(_GUARD) or loaded_allocator() in (*ALLOCATORS, "glibc-tuned"):
        return
    try:
        env = allocator_env()
    except ValueError as exc:
        sys.stderr.write(f"pipeline: error: {exc}\n")
        raise SystemExit(2) from None
    if all(env.get(k, "") == os.environ.get(k, "") for k in ("LD_PRELOAD", "GLIBC_TUNABLES")):
        return
    env[_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "pipeline", *argv], env)
