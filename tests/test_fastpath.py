from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.fastpath import allocator_env, find_allocator, loaded_allocator


def test_choices_and_errors(monkeypatch):
    assert find_allocator("system") is None
    with pytest.raises(ValueError, match="PIPELINE_ALLOCATOR must be auto, tcmalloc, jemalloc or system, got 'x'"):
        find_allocator("x")
    env = allocator_env({"PATH": "/bin"}, "system")
    assert "LD_PRELOAD" not in env


def test_commands_run_with_the_caching_allocator():
    library = find_allocator("auto")
    if library is None:
        pytest.skip("no tcmalloc/jemalloc installed here (Debian: libtcmalloc-minimal4): commands use glibc malloc")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PIPELINE_ALLOCATOR_REEXEC")}
    code = "from pipeline.fastpath import loaded_allocator; print(loaded_allocator())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert plain.stdout.strip() == "glibc"
    # `python -m pipeline` re-executes itself once with the library preloaded; the version flag proves it ran
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True,
                          env={**env, "PIPELINE_ALLOCATOR": "auto"})
    assert proc.returncode == 0 and proc.stdout.startswith("pipeline ")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=allocator_env(env))
    assert probe.stdout.strip() in ("tcmalloc", "jemalloc")
    off = subprocess.run([sys.executable, "-m", "pipeline", "bundle", "--help"], capture_output=True, text=True,
                         env={**env, "PIPELINE_ALLOCATOR": "system"})
    assert off.returncode == 0 and "run" in off.stdout + off.stderr
    assert loaded_allocator() in ("glibc", "tcmalloc", "jemalloc")
