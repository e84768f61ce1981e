from __future__ import annotations

import numpy as np

from pipeline.data import load_msd, summarize_datalist


def test_summary_counts_shapes_orientations_labels(ct_dataset):
    summary = summarize_datalist(load_msd(ct_dataset), progress=False)
    assert summary.cases == 6 and summary.problems == 0
    assert summary.shape_min == summary.shape_max == [40, 40, 12]
    assert np.allclose(summary.spacing_median, [0.8, 0.8, 2.5])
    assert summary.orientations == {"RAS": 2, "LPS": 2, "LAS": 2}
    assert summary.label_cases == {0: 6, 1: 6, 2: 6}
    assert sum(summary.label_voxels.values()) == 6 * 40 * 40 * 12
    assert -1025 <= summary.intensity["p00_5"] < -900  # air, clipped at -1024 like scanners
    text = summary.to_text()
    for needle in ("cases     6", "LPS 2", "liver", "kidney", "ct_005"):
        assert needle in text
    assert summary.to_dict()["label_voxels"][1] == summary.label_voxels[1]


def test_summary_counts_problems_instead_of_raising(tmp_path, ct_dataset):
    import shutil

    shutil.copytree(ct_dataset, tmp_path / "d")
    (tmp_path / "d/labelsTr/ct_000.nii.gz").unlink()
    summary = summarize_datalist(load_msd(tmp_path / "d"), intensity=False, progress=False)
    assert summary.problems == 1 and summary.cases == 6 and "PROBLEMS" in summary.to_text()
