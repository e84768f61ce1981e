"""The batch job applies the postprocessing its model card records, before writing and before the volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.deploy import load_torchscript
from pipeline.export.postprocess import embed_card
from pipeline.inference import job, segment
from pipeline.io import read_image

from .conftest import copy_cases


def _two_blobs(self, image):
    """Label 1 in two blobs on the preprocessed grid: a large one and a small one far from it."""
    probs = torch.zeros(1, 3, *image.shape[1:])
    probs[:, 0] = 1.0
    probs[:, 1, 2:12, 2:12, 2:12] = 2.0   # 1000 voxels
    probs[:, 1, -5:-2, -5:-2, -5:-2] = 2.0  # 27 voxels, planted
    return probs


@pytest.fixture(scope="module")
def keep_largest_1(exported, tmp_path_factory):
    """The tiny MRI model with a card that says: keep the largest component of label 1."""
    src = exported["unetpp_mri_segmentation"]
    _, card = load_torchscript(src)
    new = card.replace(inference={"postprocessing": {"foreground": False, "largest_component_labels": [1]}})
    return embed_card(src, tmp_path_factory.mktemp("pp") / "pp.ts", new)


@pytest.mark.parametrize("workers", [1, 2])
def test_segment_removes_the_planted_second_blob_before_writing_and_volumes(tmp_path, mri_dataset, exported,
                                                                            keep_largest_1, monkeypatch, workers):
    from scipy import ndimage

    monkeypatch.setattr(job.Predictor, "__call__", _two_blobs)
    inputs = copy_cases(tmp_path / "in", mri_dataset, cases=1)
    kwargs = {"device": "cpu", "progress": False, "precision": "fp32", "workers": workers}
    plain = segment(exported["unetpp_mri_segmentation"], inputs, tmp_path / "plain", **kwargs)
    report = segment(keep_largest_1, inputs, tmp_path / "pp", **kwargs)
    raw, kept = read_image(plain.cases[0].output), read_image(report.cases[0].output)
    assert ndimage.label(raw.array == 1, structure=np.ones((3, 3, 3)))[1] == 2  # the model gives two blobs
    assert ndimage.label(kept.array == 1, structure=np.ones((3, 3, 3)))[1] == 1  # the card removes the small one
    assert 0 < np.count_nonzero(kept.array == 1) < np.count_nonzero(raw.array == 1)
    name = report.labels["1"]
    voxel_ml = float(np.prod(kept.geometry.spacing)) / 1000.0
    assert report.cases[0].volumes_ml[name] == pytest.approx(np.count_nonzero(kept.array == 1) * voxel_ml)
    assert report.settings["postprocessing"] == {"foreground": False, "largest_component_labels": [1]}
    assert "postprocessing" not in plain.settings  # a report without it stays as it was
    again = segment(keep_largest_1, inputs, tmp_path / "raw", postprocess=False, **kwargs)
    assert np.array_equal(read_image(again.cases[0].output).array, raw.array)  # postprocess=False: the raw argmax
