"""Write a synthetic dataset in the Medical Segmentation Decathlon layout (or nnU-Net's, or a CSV).

``dataset.json`` plus ``imagesTr/`` and ``labelsTr/`` of NIfTI files with realistic headers: scanner qform and
sform, millimetre units, anisotropic CT spacing, and stored orientations that cycle through RAS, LPS and LAS
(case ``i`` takes ``ORIENTATIONS[i % 3]``), so that every consumer has to honour the affine. MRI cases carry an
arbitrary intensity scale, and every fourth one is stored as uint8 (0..255), like part of MSD Task04.
A case depends only on ``(seed, case index)``: the same seed gives the same voxels, whatever ``cases`` is.

Two-channel MRI (``channels=2``: T1-like and T2-like, see :func:`~pipeline.data.phantoms.second_contrast`) is
written in the layout asked for: ``msd`` stores each case as one 4D NIfTI (channels on the fourth axis, as MSD
Task01/Task05 do), ``nnunet`` as ``imagesTr/CASE_0000.nii.gz`` and ``CASE_0001.nii.gz`` with nnU-Net v2's
``dataset.json``, ``csv`` as one file per channel listed in ``dataset.csv`` (``image_0,image_1,label,case``).

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
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from pipeline.data.phantoms import LABELS, MODALITIES, make_phantom, second_contrast
from pipeline.io.atomic import atomic_path, write_text_atomic

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "LAYOUTS", "ORIENTATIONS", "write_synthetic_dataset"]

logger = logging.getLogger(__name__)

#: Default grid per modality: small enough to train on in seconds, CT anisotropic like thick-slice scans.
DEFAULT_SHAPE = {"ct": (64, 64, 24), "mri": (40, 48, 40)}
DEFAULT_SPACING = {"ct": (0.8, 0.8, 2.5), "mri": (1.0, 1.0, 1.0)}
#: Stored orientations, cycled over the cases.
ORIENTATIONS = ("RAS", "LPS", "LAS")
#: Dataset layouts written (see the module docstring).
LAYOUTS = ("msd", "nnunet", "csv")
#: Channel names of the two-channel MRI phantoms.
CHANNEL_NAMES = ("T1", "T2")


def _atomic_save(img: nib.Nifti1Image, path: Path) -> None:
    with atomic_path(path, ".nii.gz") as tmp:
        nib.save(img, tmp)


def _nifti(array: np.ndarray, spacing: Sequence[float], orientation: str, description: str,
           extra: np.ndarray | None = None) -> nib.Nifti1Image:
    """A NIfTI image of a RAS-ordered ``array`` (plus an ``extra`` channel on a fourth axis), its voxels reordered
    to ``orientation`` with the affine to match."""
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
    if extra is not None:  # more channels: a 4D image with the channels on the fourth axis
        array = np.stack([array, apply_orientation(extra, transform) if dims == 3 else extra], axis=-1)
    img = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = description[:79].encode()
    return img


def write_synthetic_dataset(out: str | os.PathLike, modality: str = "ct", cases: int = 8, seed: int = 0,
                            dims: int = 3, shape: Sequence[int] | None = None,
                            spacing: Sequence[float] | None = None, channels: int = 1,
                            layout: str = "msd") -> Path:
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
        channels: 1, or 2 for two-channel MRI (T1-like, T2-like; 3D only). Defaults to 1.
        layout: one of :data:`LAYOUTS` (``nnunet`` and ``csv`` for two-channel data). Defaults to ``"msd"``.

    Returns:
        Path of the written ``dataset.json`` (``dataset.csv`` for the CSV layout).

    Raises:
        ValueError: unknown modality or layout, ``cases`` < 1, ``dims`` not 2 or 3, bad shape or spacing, two
            channels for CT or 2D.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(sorted(MODALITIES))}, got '{modality}'")
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if channels not in (1, 2) or (channels == 2 and (modality != "mri" or dims != 3)):
        raise ValueError(f"channels must be 1, or 2 for 3D MRI, got {channels} ({modality}, {dims}D)")
    if layout not in LAYOUTS or (layout != "msd" and channels == 1):
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (nnunet and csv for two channels), got "
                         f"'{layout}' with {channels} channel(s)")
    shape = tuple(int(s) for s in (shape or DEFAULT_SHAPE[modality]))
    spacing = tuple(float(s) for s in (spacing or DEFAULT_SPACING[modality]))
    if len(shape) == 2 and dims == 2:  # a 2D slice is cut from a phantom of the default depth
        shape = (*shape, DEFAULT_SHAPE[modality][2])
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 values x y z (2 values x y with dims 2), each >= 4, got "
                         f"{' '.join(map(str, shape))} for {dims}D")
    root = Path(out)
    prefix = f"{modality}{'2d' if dims == 2 else ''}"
    entries = []
    for index in range(int(cases)):
        rng = np.random.default_rng([int(seed), index])
        image, label = make_phantom(modality, shape, spacing, rng)
        extra = second_contrast(image, label, rng) if channels == 2 else None
        if dims == 2:
            image, label = image[:, :, shape[2] // 2], label[:, :, shape[2] // 2]
        if modality == "mri" and channels == 1 and index % 4 == 3:  # some stored as uint8, like part of Task04
            image = np.clip(image / max(float(image.max()), 1e-6) * 255.0, 0, 255).astype(np.uint8)
        case = _Case(f"{prefix}_{index:03d}", spacing, ORIENTATIONS[index % len(ORIENTATIONS)],
                     f"pipeline synthetic {MODALITIES[modality]} phantom seed={seed} case={index}")
        entries.append(_write_case(root, layout, case, image, extra, label))
        logger.debug("wrote case %s (%s)", case.name, case.orientation)
    path = _write_description(root, layout, entries, modality, dims, channels, seed)
    logger.info("wrote %d synthetic %s cases to %s (%s layout)", len(entries), MODALITIES[modality], root, layout)
    return path


@dataclass
class _Case:
    name: str
    spacing: tuple[float, ...]
    orientation: str
    description: str


def _save(root: Path, relative: str, array: np.ndarray, case: _Case, suffix: str = "",
          extra: np.ndarray | None = None) -> str:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(_nifti(array, case.spacing, case.orientation, case.description + suffix, extra), root / relative)
    return f"./{relative}"


def _write_case(root: Path, layout: str, case: _Case, image: np.ndarray, extra: np.ndarray | None,
                label: np.ndarray) -> dict:
    """Write one case's files in ``layout``; returns its datalist entry (paths relative to ``root``)."""
    name = case.name
    label_path = _save(root, f"labelsTr/{name}.nii.gz" if layout != "csv" else f"labels/{name}.nii.gz", label, case,
                       " labels")
    if layout == "msd":
        return {"image": _save(root, f"imagesTr/{name}.nii.gz", image, case, extra=extra), "label": label_path}
    if layout == "nnunet":
        for c, channel in enumerate((image, extra)):
            _save(root, f"imagesTr/{name}_{c:04d}.nii.gz", channel, case, f" {CHANNEL_NAMES[c]}")
        return {"case": name}
    paths = {f"image_{c}": _save(root, f"images/{name}_{CHANNEL_NAMES[c].lower()}.nii.gz", channel, case,
                                 f" {CHANNEL_NAMES[c]}") for c, channel in enumerate((image, extra))}
    return {**paths, "label": label_path, "case": name}


def _write_description(root: Path, layout: str, entries: list[dict], modality: str, dims: int, channels: int,
                       seed: int) -> Path:
    names = list(CHANNEL_NAMES[:channels]) if channels > 1 else [MODALITIES[modality]]
    title = f"Synthetic{MODALITIES[modality]}{'2D' if dims == 2 else ''}{'2ch' if channels > 1 else ''}"
    if layout == "csv":
        lines = ["image_0,image_1,label,case"] + [f"{e['image_0']},{e['image_1']},{e['label']},{e['case']}"
                                                   for e in entries]
        return write_text_atomic(root / "dataset.csv", "\n".join(lines) + "\n")
    if layout == "nnunet":
        dataset = {"name": title, "channel_names": {str(c): n for c, n in enumerate(names)},
                   "labels": {v: k for k, v in LABELS[modality].items()}, "numTraining": len(entries),
                   "file_ending": ".nii.gz", "licence": "CC0-1.0"}
        return write_text_atomic(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    dataset = {
        "name": title,
        "description": f"Synthetic {MODALITIES[modality]} phantoms from pipeline.data.synthetic (seed {seed})",
        "reference": "generated by `python -m pipeline synth`",
        "licence": "CC0-1.0",
        "tensorImageSize": f"{dims + (1 if channels > 1 else 0)}D",
        "modality": {str(c): n for c, n in enumerate(names)},
        "labels": {str(k): v for k, v in LABELS[modality].items()},
        "numTraining": len(entries),
        "numTest": 0,
        "training": entries,
        "test": [],
        "seed": int(seed),
    }
    return write_text_atomic(root / "dataset.json", json.dumps(dataset, indent=2) + "\n")
