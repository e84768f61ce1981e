"""The fingerprint of real files: geometry in RAS order, foreground statistics, label sizes, and its cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.data import load_datalist, write_synthetic_dataset
from pipeline.errors import DatasetError
from pipeline.io import read_image
from pipeline.planning import Fingerprint, fingerprint_dataset


def test_ct_fingerprint_geometry_and_foreground_statistics(ct_dataset, tmp_path):
    datalist = load_datalist(ct_dataset)
    fp = fingerprint_dataset(datalist, cache=tmp_path / "fingerprint.json", progress=False)
    assert len(fp.cases) == 6 and fp.modality_hint == "CT" and fp.labels["1"] == "liver"
    for case in fp.cases:  # stored RAS, LPS, LAS: the same RAS-ordered grid
        assert case.ras_shape == [40, 40, 12] and case.ras_spacing == pytest.approx([0.8, 0.8, 2.5])
        assert all(b <= s for b, s in zip(case.body_shape, case.ras_shape)) and case.channels == 1
        assert set(case.label_voxels) == {"0", "1", "2"} and len(case.label_extent_mm["1"]) == 3
    # foreground statistics equal those of every labelled voxel (few enough to be taken whole)
    values = np.concatenate([read_image(i["image"]).array[read_image(i["label"]).array > 0]
                             for i in datalist.items]).astype(float)
    fg = fp.channels[0]["foreground"]
    assert fg["mean"] == pytest.approx(values.mean(), rel=1e-6) and fg["p99_5"] == pytest.approx(
        np.percentile(values, 99.5))
    assert fp.channels[0]["integer"] and fp.channels[0]["image"]["p00_5"] < -900  # air


def test_cache_is_reused_while_files_are_unchanged(mri_dataset, tmp_path):
    datalist = load_datalist(mri_dataset)
    cache = tmp_path / "fingerprint.json"
    first = fingerprint_dataset(datalist, cache=cache, progress=False)
    cache.write_text(cache.read_text().replace(f'"case": "{first.cases[0].case}"', '"case": "from-cache"'))
    assert fingerprint_dataset(datalist, cache=cache, progress=False).cases[0].case == "from-cache"
    label = datalist.items[0]["label"]
    os.utime(label, ns=(os.stat(label).st_atime_ns, os.stat(label).st_mtime_ns + 10**9))  # touched: recompute
    again = fingerprint_dataset(datalist, cache=cache, progress=False)
    assert again.cases[0].case == first.cases[0].case and Fingerprint.from_json(cache.read_text()).key == again.key


def test_two_channel_4d_and_stacked_files_agree(tmp_path):
    fps = {}
    for layout in ("msd", "nnunet"):
        path = write_synthetic_dataset(tmp_path / layout, "mri", cases=3, seed=2, shape=(24, 28, 20), channels=2,
                                       layout=layout)
        fps[layout] = fingerprint_dataset(load_datalist(path.parent), progress=False)
    assert fps["msd"].cases[0].channels == fps["nnunet"].cases[0].channels == 2
    assert fps["msd"].channel_names == ["T1", "T2"] and len(fps["nnunet"].channels) == 2
    assert fps["msd"].channels[1]["foreground"]["mean"] == pytest.approx(fps["nnunet"].channels[1]["foreground"]
                                                                        ["mean"], rel=1e-5)


def test_unreadable_case_is_named(mri_dataset, tmp_path):
    datalist = load_datalist(mri_dataset)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8bnot gzip")
    datalist.items[1] = {**datalist.items[1], "image": str(broken)}
    with pytest.raises(DatasetError, match="broken.nii.gz: every image and label must be readable"):
        fingerprint_dataset(datalist, progress=False)


@pytest.mark.realdata
def test_real_abdomen_ct_plan_takes_spacing_and_hounsfield_normalisation_from_the_data(ct_mr_examples, tmp_path):
    from pipeline.planning import DeviceSpec, make_plan

    image, label = ct_mr_examples / "example_ct.nii.gz", ct_mr_examples / "example_ct_seg_v1.nii.gz"
    (tmp_path / "ct.csv").write_text(f"image,label\n{image},{label}\n")
    fp = fingerprint_dataset(load_datalist(tmp_path / "ct.csv"), progress=False)
    plan = make_plan(fp, device=DeviceSpec("cpu", True, 8 * 2**30, 2), prober=None)
    o = plan.overrides
    assert o["target_spacing"] == pytest.approx([3.0, 3.0, 3.0], abs=0.01)
    (scheme,) = o["normalization"]
    fg = fp.channels[0]["foreground"]
    assert scheme["scheme"] == "clip_zscore" and scheme["lower"] == pytest.approx(fg["p00_5"], abs=1e-3)
    # the labels include the air-filled lungs and bone: the window spans them, in Hounsfield units
    assert -1024 <= scheme["lower"] < scheme["mean"] < scheme["upper"] <= 3071 and scheme["upper"] > 200
    assert o["modality"] == "CT" and "guessed from intensities" in plan.info["channels"][0]["why"]
    assert o["num_classes"] == int(max(int(k) for k in fp.labels)) + 1


def test_class_centres_are_in_the_world_frame_whatever_the_stored_orientation(ct_dataset, tmp_path):
    import nibabel as nib

    from pipeline.data.datalist import Datalist

    item = load_datalist(ct_dataset).items[0]
    items = [dict(item, case="stored")]
    for name, flip in (("lps", (slice(None, None, -1), slice(None, None, -1))), ("si", (..., slice(None, None, -1)))):
        paths = {}
        for key in ("image", "label"):  # the same voxels stored along reversed axes (nibabel adjusts the affine)
            img = nib.load(item[key])
            paths[key] = str(tmp_path / f"{name}_{key}.nii.gz")
            nib.save(img.slicer[flip], paths[key])
        items.append(dict(paths, case=name))
    fp = fingerprint_dataset(Datalist(items, {0: "bg", 1: "liver", 2: "tumour"}), progress=False)
    offsets = [np.subtract(c.label_centroid_mm["1"], c.label_centroid_mm["2"]) for c in fp.cases]
    assert np.abs(offsets[0]).max() > 1.0, "the two classes' centres must differ for the check to mean anything"
    for offset in offsets[1:]:
        np.testing.assert_allclose(offset, offsets[0], atol=0.02)
