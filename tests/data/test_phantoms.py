from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.phantoms import LABELS, make_phantom


def _phantom(modality, seed=0, shape=(48, 48, 16), spacing=(0.8, 0.8, 2.5)):
    return make_phantom(modality, shape, spacing, np.random.default_rng(seed))


def test_ct_is_in_hounsfield_units_with_air_body_and_two_organs():
    image, label = _phantom("ct")
    assert image.dtype == np.int16 and label.dtype == np.uint8
    corner = image[:3, :3, :].astype(float)
    assert abs(corner.mean() + 1000) < 20, "air must sit at -1000 HU"
    liver, kidney = image[label == 1].astype(float), image[label == 2].astype(float)
    assert 70 < liver.mean() < 120 and 140 < kidney.mean() < 210
    assert (label == 1).sum() > 2 * (label == 2).sum(), "organs must differ in size"
    body = (image > -40) & (label == 0) & (image < 130)  # soft tissue, not fat (-100) or bone
    soft = image[body].astype(float)
    assert 20 <= np.median(soft) <= 60, "body soft tissue must be 20..60 HU"
    assert image[label == 0].std() > 5, "noise must be present"


def test_mri_has_arbitrary_scale_and_bias_field():
    scales = []
    for seed in range(4):
        image, label = _phantom("mri", seed, (40, 48, 40), (1.0, 1.0, 1.0))
        assert set(np.unique(label)) == set(LABELS["mri"])
        scales.append(np.percentile(image, 99))
    assert max(scales) / min(scales) > 5, "per-case intensity scales must differ widely"
    image, _ = _phantom("mri", 0, (40, 48, 40), (1.0, 1.0, 1.0))
    # bias field: the same tissue (white matter core) differs between the two halves of the head
    core = image[12:28, 14:34, 12:28]
    left, right = core[:8].mean(), core[8:].mean()
    assert abs(left - right) / max(left, right) > 0.01


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_same_generator_state_same_phantom(modality):
    a = _phantom(modality, seed=3)
    b = _phantom(modality, seed=3)
    c = _phantom(modality, seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_anisotropic_spacing_keeps_anatomy_in_millimetres():
    _, iso = _phantom("ct", 1, (40, 40, 40), (1.0, 1.0, 1.0))
    _, aniso = _phantom("ct", 1, (40, 40, 16), (1.0, 1.0, 2.5))
    vol_iso = (iso == 1).sum() * 1.0
    vol_aniso = (aniso == 1).sum() * 2.5
    assert abs(vol_iso - vol_aniso) / vol_iso < 0.15


@pytest.mark.parametrize("bad", [{"modality": "pet"}, {"shape": (10, 10)}, {"spacing": (1, 0, 1)}])
def test_bad_arguments_raise_with_the_rule(bad):
    args = {"modality": "ct", "shape": (10, 10, 10), "spacing": (1, 1, 1)}
    args.update(bad)
    with pytest.raises(ValueError, match="must be"):
        make_phantom(args["modality"], args["shape"], args["spacing"], np.random.default_rng(0))
