"""Synthetic CT and MRI phantoms: voxels and labels on a RAS grid, deterministic for a given random generator.

CT (Hounsfield units): air at -1000, a body of soft tissue (20..60 HU) under a thin fat layer, an unlabelled
spine (bone) as a bright distractor, a large liver (label 1, contrast-enhanced, 80..110 HU) and two small
kidneys (label 2, 150..200 HU), Gaussian noise. MRI (arbitrary units): a head of grey and white matter with dark
ventricles and a hippocampus-like pair of structures, anterior head (label 1) and posterior body (label 2), a
smooth multiplicative bias field, Rician noise and an arbitrary per-case intensity scale, as in MSD Task04.

Shapes, positions and intensities are jittered per case. Coordinates are millimetres from the grid centre along
R, A, S, so anisotropic spacing gives the same anatomy.

Example:
    >>> import numpy as np
    >>> image, label = make_phantom("ct", (48, 48, 16), (0.8, 0.8, 2.5), np.random.default_rng(0))
    >>> image.shape, sorted(np.unique(label).tolist())
    ((48, 48, 16), [0, 1, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LABELS", "MODALITIES", "make_phantom", "second_contrast"]

#: Modality keys and their MSD ``modality`` names.
MODALITIES = {"ct": "CT", "mri": "MRI"}
#: Label ids and names per modality.
LABELS = {
    "ct": {0: "background", 1: "liver", 2: "kidney"},
    "mri": {0: "background", 1: "anterior", 2: "posterior"},
}


def _grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, ...]:
    """World coordinates (mm, RAS, centred) of every voxel centre, as broadcastable open grids."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return tuple(np.meshgrid(*axes, indexing="ij", sparse=True))


def _ellipsoid(coords: tuple[np.ndarray, ...], centre: Sequence[float], radii: Sequence[float],
               angle: float = 0.0) -> np.ndarray:
    """Boolean mask of an ellipsoid rotated by ``angle`` (radians) about the S axis."""
    x, y, z = (c - c0 for c, c0 in zip(coords, centre))
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * x + sin * y, -sin * x + cos * y
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (z / radii[2]) ** 2 <= 1.0


def _jitter(rng: np.random.Generator, value: float, rel: float) -> float:
    return float(value * rng.uniform(1.0 - rel, 1.0 + rel))


def _ct(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    coords = _grid(shape, spacing)
    ext = [n * s for n, s in zip(shape, spacing)]
    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    # Body: an elliptic cylinder along S, soft tissue under a thin subcutaneous fat layer.
    a, b = _jitter(rng, 0.46 * ext[0], 0.04), _jitter(rng, 0.38 * ext[1], 0.05)
    body = _ellipsoid(coords, (0, 0, 0), (a, b, 1e9))
    inner = _ellipsoid(coords, (0, 0, 0), (a - 0.06 * a, b - 0.08 * b, 1e9))
    image[body] = rng.uniform(-110, -90)
    image[inner] = rng.uniform(20, 60)
    # Spine: bone, posterior midline, not labelled.
    spine = _ellipsoid(coords, (0, -0.62 * b, 0), (0.07 * ext[0], 0.07 * ext[0], 1e9))
    image[spine] = rng.uniform(500, 900)
    # Liver (label 1): large, on the patient's right (+R), anterior.
    centre = (_jitter(rng, 0.2 * ext[0], 0.15), rng.uniform(0.0, 0.1) * ext[1], rng.uniform(-0.05, 0.1) * ext[2])
    radii = (_jitter(rng, 0.2 * ext[0], 0.12), _jitter(rng, 0.22 * ext[1], 0.12), _jitter(rng, 0.32 * ext[2], 0.1))
    liver = _ellipsoid(coords, centre, radii, rng.uniform(-0.4, 0.4)) & inner
    image[liver] = rng.uniform(80, 110)
    label[liver] = 1
    # Kidneys (label 2): small, posterior, either side of the spine.
    kidney_hu = rng.uniform(150, 200)
    for side in (-1.0, 1.0):
        centre = (side * _jitter(rng, 0.24 * ext[0], 0.1), -0.42 * b + rng.uniform(-0.03, 0.03) * ext[1],
                  rng.uniform(-0.1, 0.05) * ext[2])
        radii = (_jitter(rng, 0.07 * ext[0], 0.15), _jitter(rng, 0.1 * ext[1], 0.15), _jitter(rng, 0.25 * ext[2], 0.1))
        kidney = _ellipsoid(coords, centre, radii, side * rng.uniform(0.2, 0.5)) & inner
        image[kidney] = kidney_hu
        label[kidney] = 2
    image += rng.normal(0.0, rng.uniform(8.0, 15.0), size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label


def _mri(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    coords = _grid(shape, spacing)
    ext = [n * s for n, s in zip(shape, spacing)]
    image = np.zeros(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    head = _ellipsoid(coords, (0, 0, 0), [_jitter(rng, 0.55 * e, 0.05) for e in ext])
    image[head] = rng.uniform(0.6, 0.75)  # grey matter
    white = _ellipsoid(coords, (rng.uniform(-2, 2), 0, 0), [_jitter(rng, 0.38 * e, 0.08) for e in ext])
    image[white] = 1.0
    for side in (-1.0, 1.0):  # ventricles: dark CSF, medial
        vent = _ellipsoid(coords, (side * 0.1 * ext[0], 0.05 * ext[1], 0.1 * ext[2]),
                          (0.05 * ext[0], 0.2 * ext[1], 0.08 * ext[2]), side * 0.2)
        image[vent] = rng.uniform(0.15, 0.3)
    # Hippocampus-like: anterior head (label 1) and posterior body (label 2) along the A-P axis.
    cx, cz = rng.uniform(-0.06, 0.06) * ext[0], rng.uniform(-0.08, 0.0) * ext[2]
    tilt = rng.uniform(-0.3, 0.3)
    intensity = rng.uniform(0.5, 0.6)
    head_c = (cx, 0.08 * ext[1], cz)
    head_r = (_jitter(rng, 0.13 * ext[0], 0.12), _jitter(rng, 0.14 * ext[1], 0.12), _jitter(rng, 0.11 * ext[2], 0.12))
    body_c = (cx + np.sin(tilt) * 0.2 * ext[1], -0.14 * ext[1], cz + 0.03 * ext[2])
    body_r = (_jitter(rng, 0.07 * ext[0], 0.15), _jitter(rng, 0.17 * ext[1], 0.12), _jitter(rng, 0.07 * ext[2], 0.15))
    post = _ellipsoid(coords, body_c, body_r, tilt)
    ant = _ellipsoid(coords, head_c, head_r, tilt)
    image[post | ant] = intensity
    label[post] = 2
    label[ant] = 1  # the head wins where they touch
    # Smooth multiplicative bias field (low-order polynomial in normalised coordinates), Rician noise, scale.
    u = [c / (0.5 * e) for c, e in zip(coords, ext)]
    log_bias = sum(rng.uniform(-0.25, 0.25) * ui for ui in u) + sum(rng.uniform(-0.15, 0.15) * ui * ui for ui in u)
    image *= np.exp(log_bias).astype(np.float32)
    sigma = rng.uniform(0.02, 0.05)
    noisy = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
    scale = 10.0 ** rng.uniform(0.5, 5.0)
    return (noisy * scale).astype(np.float32), label


def make_phantom(modality: str, shape: Sequence[int], spacing: Sequence[float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and labels of one phantom on a RAS grid (index order x, y, z).

    Args:
        modality: ``"ct"`` (int16 Hounsfield units) or ``"mri"`` (float32, arbitrary scale).
        shape: grid size (3 values).
        spacing: voxel size in mm (3 values).
        rng: the random generator; the same generator state gives the same phantom.

    Returns:
        ``(image, label)``, label uint8 with the ids of :data:`LABELS`.

    Raises:
        ValueError: unknown modality, or shape/spacing not 3 positive values.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got '{modality}'")
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing must be 3 positive values, got shape {tuple(shape)}, "
                         f"spacing {tuple(spacing)}")
    return (_ct if modality == "ct" else _mri)(tuple(int(s) for s in shape), tuple(map(float, spacing)), rng)


def second_contrast(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A T2-like second channel for an MRI phantom: tissue contrast inverted (dark matter bright), the anterior
    structure brighter and the posterior one darker than in the first channel, with its own scale and noise, so
    that a model gains from seeing both channels.

    Args:
        image: the first channel (``make_phantom("mri", ...)``'s image).
        label: its labels.
        rng: the random generator.
    """
    scale = float(np.percentile(image, 99.5)) or 1.0
    norm = image / scale
    inside = norm > 0.1
    out = np.where(inside, np.clip(1.2 - norm, 0.05, None), norm).astype(np.float32)
    out[label == 1] *= 1.6
    out[label == 2] *= 0.6
    out += rng.normal(0.0, 0.03, out.shape).astype(np.float32) * inside
    return (np.abs(out) * 10.0 ** rng.uniform(1.0, 3.0)).astype(np.float32)
