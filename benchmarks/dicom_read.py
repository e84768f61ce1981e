"""Reading a DICOM series: this package's checked reader (pydicom headers, GDCM pixels per file) against
SimpleITK's series reader (GDCM's scan and sort, one ImageSeriesReader call), rounds interleaved.

Both read the real CT series (20 JPEG 2000 slices of 512x512) and a wider uncompressed synthetic series; the
result says what the checks cost. Run on a quiet machine:

    .venv/bin/python benchmarks/dicom_read.py [--series ../shared/data/ct_mr_examples/example_ct_dicom] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np
import SimpleITK as sitk
import torch

from benchmarks._common import interleaved_medians, machine, write_json
from pipeline.io import read_image


def itk_series(folder: Path) -> np.ndarray:
    """What the reader did before: GDCM's scan, sort and one series read."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default=str(REPO.parent / "shared/data/ct_mr_examples/example_ct_dicom"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from conftest import write_dicom_series

    with tempfile.TemporaryDirectory() as tmp:
        synthetic = write_dicom_series(Path(tmp) / "synthetic", np.random.default_rng(0).integers(
            -1000, 1000, (256, 256, 120)).astype(np.int16), shuffle=True)
        rows = {}
        for name, folder in (("real CT, 20 x 512x512 JPEG 2000", Path(args.series)),
                             ("synthetic, 120 x 256x256 uncompressed", synthetic)):
            if not folder.is_dir():
                print(f"skipping {name}: {folder} is absent")
                continue
            times = interleaved_medians({"checked reader": lambda f=folder: read_image(f),
                                         "SimpleITK series reader": lambda f=folder: itk_series(f)},
                                        args.repeats, torch.device("cpu"))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows[name] = {k: {"median_s": round(m, 4), "min_s": round(min(times[k]), 4),
                              "max_s": round(max(times[k]), 4)} for k, m in med.items()}
            rows[name]["ratio"] = round(med["checked reader"] / med["SimpleITK series reader"], 3)
            print(f"{name}: checked {med['checked reader']:.3f} s, SimpleITK {med['SimpleITK series reader']:.3f} s"
                  f" (x{rows[name]['ratio']:.2f}; medians of {args.repeats} interleaved rounds)")
    print("->", write_json("dicom_read", {"machine": machine(), "repeats": args.repeats, "results": rows}, args.out))


if __name__ == "__main__":
    main()
