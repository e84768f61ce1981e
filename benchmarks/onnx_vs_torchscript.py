"""Batch segmentation with the ONNX export against the TorchScript export of the same model: whole
``python -m pipeline segment`` commands (start-up included) on the same cases, rounds interleaved.

Three runs per round, in turn: the ``.ts`` at ``--precision auto`` (the product default: bf16 autocast on CPUs with
native bf16, fp32 elsewhere), the ``.ts`` at fp32, and the ``.onnx`` (ONNX Runtime, always fp32). Each run writes to
a fresh output folder (``segment`` would otherwise skip the cases it finished). A warm-up round (page cache, first
imports) is not counted. It prints each run, then the median, the spread (min-max) and seconds per case of each
runtime, the ratios, the voxel agreement of the label maps, and the machine (lscpu's model name, its threads, the
threads torch and ONNX Runtime use). ``--in-process`` times the ``segment`` function in this process instead (no
start-up, no imports).

    .venv/bin/python benchmarks/onnx_vs_torchscript.py [--cases 4] [--rounds 3] [--checkpoint model.pt]
        [--input folder] [--level 2] [--in-process] [--json out.json]

The model defaults to the shipped MRI model (``bundles/unetpp_mri_segmentation/models/model.pt`` at its card's
level); the cases to ``--cases`` synthetic MRI volumes (``--input`` takes the first ``--cases`` images of a folder,
e.g. ../shared/data/hippocampus/imagesTr). Which runtime becomes the default is decided on real data, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

RUNS = {"ts_auto": ("ts", "auto"), "ts_fp32": ("ts", "fp32"), "onnx": ("onnx", "auto")}


def lscpu() -> dict:
    """lscpu's model name and thread counts (empty where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Flags")
    found = {k: fields[k].strip() for k in wanted if k in fields}
    flags = found.pop("Flags", "").split()
    found["bf16"] = "avx512_bf16" in flags or "amx_bf16" in flags
    return found


def cases(work: Path, count: int, source: str | None) -> Path:
    """``count`` images in a folder: the first of ``source`` (sorted), or synthetic MRI volumes."""
    folder = work / "inputs"
    folder.mkdir()
    if source:
        images = sorted(p for p in Path(source).iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")))
        for path in images[:count]:
            shutil.copy(path, folder / path.name)
        return folder
    from pipeline.data import write_synthetic_dataset

    write_synthetic_dataset(work / "synth", modality="mri", cases=count, seed=1)
    for path in sorted((work / "synth" / "imagesTr").iterdir()):
        shutil.copy(path, folder / path.name)
    return folder


def export_both(checkpoint: str, work: Path, level: int | None) -> tuple[dict[str, Path], dict[str, float]]:
    """The checkpoint exported to ``.ts`` and ``.onnx`` (the same card and level), and each export's seconds."""
    from pipeline.export import export_checkpoint

    files, seconds = {}, {}
    for suffix in ("ts", "onnx"):
        start = time.perf_counter()
        files[suffix] = export_checkpoint(checkpoint, work / f"model.{suffix}", level=level).path
        seconds[suffix] = time.perf_counter() - start
    return files, seconds


def run_once(model: Path, inputs: Path, out: Path, precision: str, in_process: bool) -> float:
    """Seconds for one ``segment`` of every case into the fresh folder ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if in_process:
        from pipeline.inference import segment

        report = segment(model, inputs, out, device="cpu", precision=precision, progress=False)
        if report.counts()["failed"]:
            raise RuntimeError(f"segment {model} failed: {[c.error for c in report.cases if c.error]}")
    else:
        cmd = [sys.executable, "-m", "pipeline", "segment", "--model", str(model), "--input", str(inputs), "--output",
               str(out), "--device", "cpu", "--precision", precision, "--no-progress", "-q"]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def agreement(work: Path, a: str, b: str) -> float:
    """The smallest per-case fraction of voxels on which two runs' label maps agree (outputs from their reports)."""
    from pipeline.io import read_image

    outputs = [{c["input"]: c["output"] for c in json.loads((work / f"out_{run}" / "report.json").read_text())["cases"]}
               for run in (a, b)]
    fractions = []
    for source, first in sorted(outputs[0].items()):
        x, y = read_image(first).array, read_image(outputs[1][source]).array
        fractions.append(float((x == y).mean()))
    return min(fractions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "bundles/unetpp_mri_segmentation/models/model.pt"),
                        help="a model.pt with its model card beside it")
    parser.add_argument("--cases", type=int, default=4, help="cases per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds counted (after one warm-up)")
    parser.add_argument("--input", default=None, help="a folder of images (default: synthetic MRI volumes)")
    parser.add_argument("--level", type=int, default=None, help="level exported (default: the card's)")
    parser.add_argument("--in-process", action="store_true", help="time the segment function, not commands")
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/<name>.json)")
    args = parser.parse_args()
    if args.cases < 1 or args.rounds < 1:
        parser.error(f"--cases and --rounds must be >= 1, got {args.cases} and {args.rounds}")
    import onnxruntime
    import torch
    from _common import machine, write_json

    from pipeline.console import quiet_third_party

    quiet_third_party()  # the exporter's narration, as `python -m pipeline export` filters it

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = cases(work, args.cases, args.input)
        files, export_s = export_both(args.checkpoint, work, args.level)
        times: dict[str, list[float]] = {run: [] for run in RUNS}
        for round_no in range(args.rounds + 1):  # round 0 warms up
            for run, (suffix, precision) in RUNS.items():
                seconds = run_once(files[suffix], inputs, work / f"out_{run}", precision, args.in_process)
                if round_no:
                    times[run].append(seconds)
                print(f"round {round_no or 'warm-up'} {run}: {seconds:.2f} s", flush=True)
        agree = {"ts_fp32 vs onnx": agreement(work, "ts_fp32", "onnx"),
                 "ts_auto vs onnx": agreement(work, "ts_auto", "onnx")}
    medians = {run: statistics.median(t) for run, t in times.items()}
    cpu = lscpu()
    print(f"\nmachine: {cpu.get('Model name', machine()['cpu'])}; {cpu.get('CPU(s)', os.cpu_count())} CPU(s), "
          f"{cpu.get('Thread(s) per core', '?')} thread(s) per core, native bf16: {cpu.get('bf16')}; torch "
          f"{torch.__version__} with {torch.get_num_threads()} thread(s), onnxruntime {onnxruntime.__version__}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{args.cases} case(s) from {args.input or 'synthetic MRI'}, {args.rounds} round(s), "
          f"{'in-process segment()' if args.in_process else 'whole commands'}; exports: .ts {export_s['ts']:.1f} s, "
          f".onnx {export_s['onnx']:.1f} s")
    for run, t in times.items():
        print(f"  {run:8s} median {medians[run]:7.2f} s  (min {min(t):.2f}, max {max(t):.2f})  "
              f"{medians[run] / args.cases:.2f} s/case")
    print(f"  onnx / ts_fp32 = {medians['onnx'] / medians['ts_fp32']:.2f}, onnx / ts_auto = "
          f"{medians['onnx'] / medians['ts_auto']:.2f} (below 1: ONNX faster)")
    print("  voxel agreement (smallest per case): " + ", ".join(f"{k} {v:.4f}" for k, v in agree.items()))
    dest = write_json("onnx_vs_torchscript", {"machine": {**machine(), "lscpu": cpu}, "cases": args.cases,
                                              "input": args.input or "synthetic", "in_process": args.in_process,
                                              "export_s": export_s, "times": times, "medians": medians,
                                              "agreement": agree}, args.json)
    print(f"results: {dest}")


if __name__ == "__main__":
    main()
