"""Write a synthetic dataset in the Medical Segmentation Decathlon layout.

``dataset.json`` plus ``imagesTr/`` and ``labelsTr/`` of NIfTI files with realistic headers: scanner qform and
sform, millimetre units, anisotropic CT spacing, and stored orientations that cycle through RAS, LPS and LAS
(case ``i`` takes ``ORIENTATIONS[i % 3]``), so that every consumer has to honour the affine. MRI cases carry an
arbitrary intensity scale, and every fourth one is stored as uint8 (0..255), like part of MSD Task04.
A case depends only on ``(seed, case index)``: the same seed gives the same voxels, whatever ``cases`` is.

Example:
    >>> path = write_synthetic_dataset("/tmp/synth_ct", modality="ct", cases=4, seed=0)   # doctest: +SKIP
    >>> json.loads(path.read_text())["numTraining"]                                       # doctest: +SKIP
    4
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from pipeline.data.phantoms import LABELS, MODALITIES, make_phantom
from pipeline.io.atomic import atomic_path, write_text_atomic

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "ORIENTATIONS", "write_synthetic_dataset"]

logger = logging.getLogger(__name__)

#: Default grid per modality: small enough to train on in seconds, CT anisotropic like thick-slice scans.
DEFAULT_SHAPE = {"ct": (64, 64, 24), "mri": (40, 48, 40)}
DEFAULT_SPACING = {"ct": (0.8, 0.8, 2.5), "mri": (1.0, 1.0, 1.0)}
#: Stored orientations, cycled over the cases.
ORIENTATIONS = ("RAS", "LPS", "LAS")


def _atomic_save(img: nib.Nifti1Image, path: Path) -> None:
    with atomic_path(path, ".nii.gz") as tmp:
        nib.save(img, tmp)


def _nifti(array: np.ndarray, spacing: Sequence[float], orientation: str, description: str) -> nib.Nifti1Image:
    """A NIfTI image of a RAS-ordered ``array``, its voxels reordered to ``orientation`` with the affine to match."""
    dims = array.ndim
    ras = np.eye(4)
    ras[:dims, :dims] = np.diag(spacing[:dims])
    ras[:dims, 3] = -(np.asarray(array.shape) - 1) / 2.0 * np.asarray(spacing[:dims])  # centred on the origin
    ras[:3, 3] += (12.5, -30.0, 85.0)  # a scanner-like, non-zero offset
    if dims == 3:
        transform = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(orientation)))
        affine = ras @ inv_ornt_aff(transform, array.shape)
        array = apply_orientation(array, transform)
    else:  # 2D: flip the first two axes the same way (the third is a unit axis)
        affine = ras.copy()
        for axis, code in enumerate(orientation[:2]):
            if code in "LP":
                array = np.flip(array, axis)
                affine[:, axis] *= -1
                affine[axis, 3] = ras[axis, 3] + (array.shape[axis] - 1) * spacing[axis]
    img = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = description[:79].encode()
    return img


def write_synthetic_dataset(out: str | os.PathLike, modality: str = "ct", cases: int = 8, seed: int = 0,
                            dims: int = 3, shape: Sequence[int] | None = None,
                            spacing: Sequence[float] | None = None) -> Path:
    """Generate ``cases`` phantoms and write them as an MSD-layout dataset under ``out``.

    Args:
        out: dataset folder (created; files of the same names are replaced).
        modality: ``"ct"`` or ``"mri"``. Defaults to ``"ct"``.
        cases: number of cases, >= 1. Defaults to 8.
        seed: random seed; the same seed gives the same dataset. Defaults to 0.
        dims: 3 for volumes, 2 for single axial slices (the centre slice of the 3D phantom). Defaults to 3.
        shape: grid size (x, y, z); for 2D, z is the depth of the phantom the slice is cut from.
            Defaults to :data:`DEFAULT_SHAPE`.
        spacing: voxel size in mm. Defaults to :data:`DEFAULT_SPACING`.

    Returns:
        Path of the written ``dataset.json``.

    Raises:
        ValueError: unknown modality, ``cases`` < 1, ``dims`` not 2 or 3, bad shape or spacing.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(sorted(MODALITIES))}, got '{modality}'")
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    shape = tuple(int(s) for s in (shape or DEFAULT_SHAPE[modality]))
    spacing = tuple(float(s) for s in (spacing or DEFAULT_SPACING[modality]))
    if len(shape) == 2:
        shape = (*shape, DEFAULT_SHAPE[modality][2])
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 values (or 2 for --dims 2), each >= 4, got {shape}")
    root = Path(out)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    prefix = f"{modality}{'2d' if dims == 2 else ''}"
    training = []
    for index in range(int(cases)):
        rng = np.random.default_rng([int(seed), index])
        image, label = make_phantom(modality, shape, spacing, rng)
        if dims == 2:
            image, label = image[:, :, shape[2] // 2], label[:, :, shape[2] // 2]
        if modality == "mri" and index % 4 == 3:  # some cases stored as uint8, like part of MSD Task04
            image = np.clip(image / max(float(image.max()), 1e-6) * 255.0, 0, 255).astype(np.uint8)
        orientation = ORIENTATIONS[index % len(ORIENTATIONS)]
        name = f"{prefix}_{index:03d}.nii.gz"
        desc = f"pipeline synthetic {MODALITIES[modality]} phantom seed={seed} case={index}"
        _atomic_save(_nifti(image, spacing, orientation, desc), root / "imagesTr" / name)
        _atomic_save(_nifti(label, spacing, orientation, desc + " labels"), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        logger.debug("wrote case %s (%s)", name, orientation)
    dataset = {
        "name": f"Synthetic{MODALITIES[modality]}{'2D' if dims == 2 else ''}",
        "description": f"Synthetic {MODALITIES[modality]} phantoms from pipeline.data.synthetic (seed {seed})",
        "reference": "generated by `python -m pipeline synth`",
        "licence": "CC0-1.0",
        "tensorImageSize": f"{dims}D",
        "modality": {"0": MODALITIES[modality]},
        "labels": {str(k): v for k, v in LABELS[modality].items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "seed": int(seed),
    }
    path = write_text_atomic(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    logger.info("wrote %d synthetic %s cases to %s", len(training), MODALITIES[modality], root)
    return path
