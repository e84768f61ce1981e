"""Peak memory of the batch job when the network is instant: does the writer's queue stay bounded?

With a fast predictor (a GPU) the job produces probability maps faster than it can invert, compress and write
them; an unbounded queue would keep every map in memory. Each run below is a fresh process whose predictor
returns random probabilities at once; the peak resident memory of 50 cases should match that of 5.

    .venv/bin/python benchmarks/writer_memory.py [--shape 192 192 96] [--cases 5 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import RESULTS, machine


def worker(model: str, inputs: str, output: str) -> None:
    """One job with an instant predictor; prints its peak memory and the writer queue's peak as JSON."""
    import torch

    from pipeline.inference import job

    job.Predictor.__call__ = lambda self, image: torch.rand(1, 3, *image.shape[1:])  # the network takes no time
    start = time.perf_counter()
    report = job.segment(model, inputs, output, device="cpu", progress=False, workers=2)
    print(json.dumps({"cases": len(report.cases), "seconds": round(time.perf_counter() - start, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "write_queue_peak": report.settings["write_queue_peak"]}))


def _model(work: Path) -> Path:
    import torch
    from monai.bundle import ConfigParser

    from pipeline.export import export_bundle

    bundle = REPO / "bundles" / "unetpp_ct_segmentation"
    overrides = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [64, 64, 32]}
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["device"] = "$torch.device('cpu')"
    parser["features"] = overrides["features"]
    torch.save(parser.get_parsed_content("network_def").state_dict(), work / "tiny.pt")
    return export_bundle(bundle, work / "tiny.pt", work / "tiny.ts", overrides=overrides).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[192, 192, 96], help="CT volume size")
    parser.add_argument("--cases", type=int, nargs="+", default=[5, 50], help="batch sizes to compare")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "INPUTS", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from pipeline.data import write_synthetic_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = _model(work)
        write_synthetic_dataset(work / "one", "ct", cases=1, seed=0, shape=tuple(args.shape))
        source = work / "one/imagesTr/ct_000.nii.gz"
        for count in args.cases:
            inputs = work / f"in{count}"
            inputs.mkdir()
            for i in range(count):
                shutil.copy(source, inputs / f"case{i:03d}.nii.gz")
            command = [sys.executable, __file__, "--worker", str(model), str(inputs), str(work / f"out{count}")]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{count:4d} cases: peak {rows[-1]['peak_rss_mb']:.0f} MB, writer queue peak "
                  f"{rows[-1]['write_queue_peak']}, {rows[-1]['seconds']} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "writer_memory.json").write_text(json.dumps({"machine": machine(), "shape": args.shape,
                                                            "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
