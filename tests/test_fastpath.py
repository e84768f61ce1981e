from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.fastpath import GLIBC_KEEP_FREED, allocator_env, find_allocator, loaded_allocator


def _plain() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_CONF", "PIPELINE_ALLOCATOR_REEXEC")}


def test_choices_and_errors(monkeypatch):
    assert find_allocator("system") is None and find_allocator("glibc") is None
    rule = "PIPELINE_ALLOCATOR must be one of auto, tcmalloc, jemalloc, glibc, system, got 'x'"
    with pytest.raises(ValueError, match=rule):
        find_allocator("x")
    with pytest.raises(ValueError, match=rule):
        allocator_env({}, "x")
    assert allocator_env({"PATH": "/bin"}, "system") == {"PATH": "/bin"}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES exist only where the C library is glibc")
def test_tuned_glibc_without_a_library():
    env = allocator_env({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc")
    assert "LD_PRELOAD" not in env
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + GLIBC_KEEP_FREED
    assert allocator_env(env, "glibc") == env  # applied once
    code = "from pipeline.fastpath import loaded_allocator; print(loaded_allocator())"
    probe = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                           env={**allocator_env(_plain(), "glibc")}, timeout=600)
    assert probe.stdout.strip() == "glibc-tuned"
    # the commands re-execute themselves with the tunables when no allocator library is chosen
    probe = subprocess.run([sys.executable, "-m", "pipeline", "--version"], check=False, capture_output=True, text=True,
                           env={**_plain(), "PIPELINE_ALLOCATOR": "glibc"}, timeout=600)
    assert probe.returncode == 0 and probe.stdout.startswith("pipeline ")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES exist only where the C library is glibc")
def test_tuned_glibc_keeps_freed_memory():
    """The cause of the speed-up: plain glibc unmaps every freed activation over 32 MB, so each forward pass faults
    its memory in again; tuned glibc (like tcmalloc) reuses it."""
    code = ("import resource, torch\n"
            "net = torch.nn.Sequential(torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.InstanceNorm3d(16),\n"
            "                          torch.nn.LeakyReLU(), torch.nn.Conv3d(16, 2, 3, padding=1)).eval()\n"
            "x = torch.randn(1, 1, 96, 96, 96)\n"
            "with torch.inference_mode():\n"
            "    net(x); net(x)\n"
            "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    for _ in range(6):\n        net(x)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)")
    faults = {}
    for name, env in (("plain", _plain()), ("tuned", allocator_env(_plain(), "glibc"))):
        proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=600)
        faults[name] = int(proc.stdout.strip().splitlines()[-1])
    assert faults["plain"] > 6 * 14_000  # at least one 56 MB activation (14,000 pages) per pass
    # tuned glibc may still grow its heap once (a new thread's arena: up to 27,648 pages seen in CI), never per pass
    assert faults["tuned"] < faults["plain"] / 5, faults


def test_commands_run_with_the_caching_allocator():
    library = find_allocator("auto")
    if library is None:
        pytest.skip("no tcmalloc/jemalloc installed here (Debian: libtcmalloc-minimal4): commands use glibc malloc")
    env = _plain()
    code = "from pipeline.fastpath import loaded_allocator; print(loaded_allocator())"
    plain = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=600)
    assert plain.stdout.strip() == "glibc"
    # `python -m pipeline` re-executes itself once with the library preloaded; the version flag proves it ran
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--version"], check=False, capture_output=True, text=True,
                          env={**env, "PIPELINE_ALLOCATOR": "auto"}, timeout=600)
    assert proc.returncode == 0 and proc.stdout.startswith("pipeline ")
    probe = subprocess.run([sys.executable, "-c", code],
                           check=False, capture_output=True, text=True, env=allocator_env(env), timeout=600)
    assert probe.stdout.strip() in ("tcmalloc", "jemalloc")
    off = subprocess.run([sys.executable, "-m", "pipeline", "bundle", "--help"], check=False, capture_output=True,
                         text=True,
                         env={**env, "PIPELINE_ALLOCATOR": "system"}, timeout=600)
    assert off.returncode == 0 and "run" in off.stdout + off.stderr
    assert loaded_allocator() in ("glibc", "glibc-tuned", "tcmalloc", "jemalloc")


def test_a_pipeline_command_runs_under_the_preloaded_allocator(tmp_path):
    """The README's claim, checked inside a real command: `python -m pipeline ...` re-executes itself with
    tcmalloc (or jemalloc) preloaded, and PIPELINE_ALLOCATOR=system keeps glibc's malloc untouched."""
    library = find_allocator("auto")
    if library is None:
        pytest.skip("no tcmalloc/jemalloc installed here (Debian: libtcmalloc-minimal4): commands use glibc malloc")
    config = tmp_path / "probe.json"  # a bundle whose run prints the allocator of the process that runs it
    config.write_text('{"run": ["$print(\'allocator:\', __import__(\'pipeline.fastpath\', '
                      'fromlist=[\'x\']).loaded_allocator())"]}')
    found = {}
    for choice in ("auto", "system"):
        proc = subprocess.run([sys.executable, "-m", "pipeline", "bundle", "run", "--config_file", str(config)],
                              check=False, capture_output=True, text=True, timeout=120,
                              env={**_plain(), "PIPELINE_ALLOCATOR": choice})
        assert proc.returncode == 0, proc.stderr[-2000:]
        found[choice] = next(line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("allocator:"))
    assert found["auto"] in ("tcmalloc", "jemalloc"), found
    assert found["system"] == "glibc", found
    script = Path(sys.executable).parent / "unetpp"  # the console script goes the same way
    if script.is_file():
        proc = subprocess.run([str(script), "bundle", "run", "--config_file", str(config)], check=False,
                              capture_output=True, text=True, timeout=120, env={**_plain(), "PIPELINE_ALLOCATOR": "auto"})
        assert proc.returncode == 0 and f"allocator: {found['auto']}" in proc.stdout, proc.stderr[-2000:]
