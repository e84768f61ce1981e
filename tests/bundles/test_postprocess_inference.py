"""Bundle inference (inference.json) applies the postprocessing the card beside the checkpoint records."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.deploy import card_path, read_card, write_card
from pipeline.deploy.postprocess import Postprocessing, apply
from pipeline.io import read_image

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unetpp_mri_segmentation"


@pytest.mark.slow
def test_inference_json_output_is_the_raw_output_with_the_cards_postprocessing(tmp_path, mri_dataset):
    decision = Postprocessing(foreground=True, labels=(1, 2))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(BUNDLE / "models" / "model.pt", models / "model.pt")
    card = read_card(card_path(BUNDLE / "models" / "model.pt"))
    write_card(card.replace(inference={"postprocessing": decision.to_dict()}), card_path(models / "model.pt"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("mri_001.nii.gz", "mri_002.nii.gz"):
        shutil.copy(mri_dataset / "imagesTr" / name, inputs / name)
    outputs = {}
    for mode in ("none", "auto"):
        outputs[mode] = tmp_path / mode
        proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                               str(BUNDLE / "configs" / "inference.json"), "--bundle_root", str(BUNDLE),
                               "--ckpt_path", str(models / "model.pt"), "--input_dir", str(inputs),
                               "--prediction_dir", str(outputs[mode]), "--postprocess", mode,
                               "--device", "$torch.device('cpu')", "--num_workers", "0"],
                              check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    changed = 0
    for name in ("mri_001_seg.nii.gz", "mri_002_seg.nii.gz"):
        raw = read_image(outputs["none"] / name).array
        kept = read_image(outputs["auto"] / name).array
        assert np.array_equal(kept, apply(raw, decision)), name
        changed += int(not np.array_equal(kept, raw))
    assert changed, "the shipped model's label maps of these cases have components to remove"
