"""README's first command: the demo runs the whole path and prints Dice and where everything is."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out", str(tmp_path / "demo"), "--epochs", "2",
                           "--cases", "4"], check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "held-out Dice", "label maps:", "MLflow UI:"):
        assert step in out, step
    assert re.search(r"mean\s+\d\.\d{3}\s+\d\.\d{3}", out), "a Dice row per organ"
    report = json.loads((tmp_path / "demo/segmentations/report.json").read_text())
    assert report["counts"] == {"ok": 4, "skipped": 0, "failed": 0}
    assert (tmp_path / "demo/model.ts").is_file()
    assert (tmp_path / "demo/training/eval/mlruns.db").is_file(), "tracked into the embedded MLflow store"
    _printed_dice_is_the_dice_of_the_files(out, tmp_path / "demo")
    log = (tmp_path / "demo/train.log").read_text()
    assert "\r" not in log, "progress as log lines in a file, not terminal frames"
    assert "nvImageCodec" not in log and "instance-level annotations" not in log, "start-up noise filtered"


def _printed_dice_is_the_dice_of_the_files(out, demo):
    """Each printed per-case Dice equals one computed here, with numpy, from the written label map and the
    held-out label file: the demo prints what it wrote, on the label's own grid."""
    rows = re.findall(r"^\s+(ct_\d+)\s+(\d\.\d{3}|nan)\s+(\d\.\d{3}|nan)\s*$", out, flags=re.MULTILINE)
    assert len(rows) == 4, out
    for case, *printed in rows:
        pred = np.asarray(nib.load(demo / "segmentations" / f"{case}_seg.nii.gz").dataobj)
        label = np.asarray(nib.load(demo / "test" / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert pred.shape == label.shape, "the label map lies on the input's grid"
        for value, text in zip((1, 2), printed):  # liver, kidney
            a, b = pred == value, label == value
            if not b.any():
                continue
            dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
            assert abs(dice - float(text)) <= 0.0006, (case, value, dice, text)


def test_demo_bad_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out", str(tmp_path / "file/sub")], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--out must be a writable folder" in proc.stderr
