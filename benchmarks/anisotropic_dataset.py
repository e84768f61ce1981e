"""Make an anisotropic copy of an MSD dataset: each image as if acquired with thick slices (about 0.7 x 0.7 x 2.8 mm
for the 1 mm hippocampus), for the planner's anisotropic acceptance run.

Along the slice axis the image is first smoothed with a Gaussian whose full width at half maximum is the new slice
thickness (a slice integrates over its thickness), then every volume is resampled linearly to the new grid, in
physical space, so the anatomy stays where it was. The output is an MSD folder with its own ``dataset.json``.

Labels (``--labels``): ``majority`` (the default) gives each thick voxel the class that fills most of it: every
class's mask goes through the image's own smoothing and linear resampling and the largest share wins, so a label
describes the slab its image voxel averages, as an annotator drawing on the thick slices would. ``nearest`` takes
the 1 mm label at the thick voxel's centre: a label of one thin slice under an image of the whole slab, which is
how the first anisotropic runs were made (their figures in the MRI bundle's docs say so).

    .venv/bin/python benchmarks/anisotropic_dataset.py --src ../shared/data/hippocampus --out data/hippo_aniso \
        [--spacing 0.7 0.7 2.8] [--labels majority|nearest]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.io.atomic import atomic_path, write_text_atomic


def resample(image: sitk.Image, spacing: list[float], label: bool) -> sitk.Image:
    """``image`` on a grid of ``spacing`` covering the same physical extent (thick-slice smoothing for images,
    nearest neighbour for ``label``)."""
    size = [max(1, round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    source = image
    if not label:
        source = sitk.Cast(image, sitk.sitkFloat32)
        for axis, (old, new) in enumerate(zip(image.GetSpacing(), spacing)):
            if new > 1.5 * old:  # a thicker slice averages over its thickness: FWHM = new spacing
                sigma = math.sqrt(max(new**2 - old**2, 0.0)) / 2.3548
                source = sitk.RecursiveGaussian(source, sigma=sigma, direction=axis)
    # the new grid starts half a new voxel inside the old image's corner, so both cover the same extent
    direction = list(image.GetDirection())
    corner = image.TransformContinuousIndexToPhysicalPoint([-0.5] * image.GetDimension())
    matrix = [direction[i * 3:(i + 1) * 3] for i in range(3)]
    origin = [corner[r] + sum(matrix[r][c] * 0.5 * spacing[c] for c in range(3)) for r in range(3)]
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(source, size, sitk.Transform(), interpolator, origin, spacing, direction, 0.0,
                        image.GetPixelID() if label else sitk.sitkFloat32)
    return out


def resample_majority(label: sitk.Image, spacing: list[float]) -> sitk.Image:
    """``label`` on the thick grid, each voxel the class with the largest share of it after the image's smoothing
    and linear resampling (ties to the lower class)."""
    array = sitk.GetArrayViewFromImage(label)
    shares = []
    for value in np.unique(array):
        mask = sitk.GetImageFromArray((array == value).astype(np.float32))
        mask.CopyInformation(label)
        shares.append((int(value), sitk.GetArrayFromImage(resample(mask, spacing, label=False))))
    winner = np.argmax(np.stack([share for _, share in shares]), axis=0)
    classes = np.asarray([value for value, _ in shares], dtype=array.dtype)
    out = sitk.GetImageFromArray(classes[winner])
    reference = resample(label, spacing, label=True)
    out.CopyInformation(reference)
    return sitk.Cast(out, label.GetPixelID())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=str(REPO.parent / "shared/data/hippocampus"), help="MSD dataset folder")
    parser.add_argument("--out", required=True, help="folder to write (MSD layout)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.7, 0.7, 2.8], help="new voxel size (mm)")
    parser.add_argument("--labels", choices=("majority", "nearest"), default="majority",
                        help="label resampling: the slab's majority class, or the 1 mm label at the voxel centre")
    args = parser.parse_args()
    src, out = Path(args.src), Path(args.out)
    meta = json.loads((src / "dataset.json").read_text())
    for entry in tqdm(meta["training"], desc="resample", unit="case"):
        for key, label in (("image", False), ("label", True)):
            relative = entry[key].lstrip("./")
            dest = out / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            image = sitk.ReadImage(str(src / relative))
            if label and args.labels == "majority":
                image = resample_majority(image, args.spacing)
            else:
                image = resample(image, args.spacing, label)
            with atomic_path(dest, ".nii.gz") as tmp:
                sitk.WriteImage(image, str(tmp), useCompression=True)
    meta["description"] = (f"{meta.get('description', '')} Resampled to {args.spacing} mm by "
                           f"benchmarks/anisotropic_dataset.py (thick-slice smoothing, {args.labels} labels).").strip()
    meta["test"] = []
    write_text_atomic(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(meta['training'])} cases at {args.spacing} mm to {out}")


if __name__ == "__main__":
    main()
