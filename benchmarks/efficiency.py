"""Efficiency: achieved GFLOP/s of the UNet++ forward against this machine's limit.

The limit is computed, not quoted: cores x clock x fp32 FLOPs per cycle per core. The clock is measured with a
chain of dependent integer additions (one per cycle on every x86 core since 2006) compiled with gcc; FLOPs per
cycle come from the vector extensions the CPU reports (AVX-512 with two 512-bit FMA pipes: 64; AVX2/FMA3 with
two 256-bit FMA pipes: 32; the script prints which it assumed). A large sgemm (``torch.mm``, 2 threads) shows
what the BLAS reaches; then the UNet++ forward (3D 1x1x96^3, MONAI default features), in child processes with
plain glibc malloc, glibc tuned to keep freed memory and tcmalloc preloaded, with the minor page faults and kernel
CPU time per forward that explain the difference.

    .venv/bin/python benchmarks/efficiency.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    unsigned long long n = 2000000000ULL, x = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (unsigned long long i = 0; i < n; i++) { __asm__ volatile("add $1, %0" : "+r"(x)); }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("%f\n", (double)n / s / 1e9);
    return (int)(x & 1);
}
"""


def measure_clock_ghz() -> float | None:
    """GHz from a dependent add chain (the loop counter's add and compare run in parallel with it)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "c.c", Path(tmp) / "c"
        src.write_text(CLOCK_C)
        if subprocess.run(["gcc", "-O1", str(src), "-o", str(exe)], check=False, capture_output=True).returncode != 0:
            return None
        runs = [float(subprocess.run([str(exe)], check=False, capture_output=True, text=True).stdout) for _ in range(3)]
    return max(runs)


def flops_per_cycle() -> tuple[int, str]:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512f" in flags:
        return 64, "AVX-512: 2 FMA pipes x 16 fp32 lanes x 2 FLOPs (full-width 512-bit datapath assumed)"
    if "fma" in flags and "avx2" in flags:
        return 32, "AVX2/FMA3: 2 FMA pipes x 8 fp32 lanes x 2 FLOPs"
    return 8, "SSE: assumed 8 FLOPs per cycle"


def sgemm_gflops(n: int = 4096, repeats: int = 7) -> float:
    """Median GFLOP/s of ``torch.mm`` into a preallocated output (no allocator effects)."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


def unetpp_forward() -> dict:
    from monai.networks.nets import BasicUNetPlusPlus
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.fastpath import loaded_allocator
    from pipeline.networks import UNetPlusPlus

    torch.manual_seed(0)
    x = torch.randn(1, 1, 96, 96, 96)
    out = {"allocator": loaded_allocator(), "sgemm": sgemm_gflops()}
    for name, net in (("MONAI BasicUNetPlusPlus", BasicUNetPlusPlus(3, 1, 2).eval()),
                      ("UNetPlusPlus L4", UNetPlusPlus(3, 1, 2).eval())):
        with torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                net(x)
            times = []
            before = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(4):
                t = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_SELF)
        seconds = sorted(times)[len(times) // 2]
        out[name] = {"gflops": counter.get_total_flops() / 1e9, "seconds": seconds,
                     "gflop_per_s": counter.get_total_flops() / 1e9 / seconds,
                     # the cause of the allocator effect: page faults and kernel time per forward
                     "minor_faults_per_forward": (after.ru_minflt - before.ru_minflt) / 4,
                     "kernel_s_per_forward": (after.ru_stime - before.ru_stime) / 4,
                     "user_s_per_forward": (after.ru_utime - before.ru_utime) / 4}
    return out


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(unetpp_forward()))
        return
    from _common import machine, write_json

    from pipeline.fastpath import allocator_env

    cores = torch.get_num_threads()
    ghz = measure_clock_ghz()
    per_cycle, why = flops_per_cycle()
    peak = cores * (ghz or 0) * per_cycle
    plain = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")}
    runs = {}
    for label, env in (("glibc", plain), ("glibc-tuned", allocator_env(plain, "glibc")),
                       ("tcmalloc", allocator_env(plain, "tcmalloc"))):
        proc = subprocess.run([sys.executable, __file__, "--child"],
                              check=False, capture_output=True, text=True, env=env)
        runs[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    sgemm = max(r["sgemm"] for r in runs.values())
    print(f"threads {cores}, measured clock {ghz:.2f} GHz, {per_cycle} fp32 FLOPs/cycle/core ({why})")
    print(f"peak fp32: {cores} x {ghz:.2f} GHz x {per_cycle} = {peak:.0f} GFLOP/s")
    print(f"sgemm 4096^3 (torch.mm): {sgemm:.0f} GFLOP/s = {sgemm / peak:.0%} of peak")
    for label, run in runs.items():
        for name in ("MONAI BasicUNetPlusPlus", "UNetPlusPlus L4"):
            r = run[name]
            print(f"{name:<24} forward 1x1x96^3 ({run['allocator']:>8}): {r['seconds']:.2f} s, {r['gflops']:.0f} "
                  f"GFLOP -> {r['gflop_per_s']:.0f} GFLOP/s = {r['gflop_per_s'] / peak:.0%} of peak, "
                  f"{r['gflop_per_s'] / sgemm:.0%} of sgemm; per forward {r['minor_faults_per_forward']:,.0f} page "
                  f"faults, {r['kernel_s_per_forward']:.2f} s kernel / {r['user_s_per_forward']:.2f} s user CPU")
    payload = {"machine": machine(), "clock_ghz": ghz, "flops_per_cycle": per_cycle, "assumption": why,
               "peak_gflops": peak, "sgemm_gflops": sgemm, "forward": runs}
    print(f"wrote {write_json('efficiency', payload)}")


if __name__ == "__main__":
    main()
