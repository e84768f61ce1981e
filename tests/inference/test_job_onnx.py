"""``segment`` with an ONNX model: the same label maps as with the TorchScript export of the same weights (the same
card, so the same preprocessing and inverse), and what an ONNX model cannot do refused before any case runs."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from pipeline.inference import segment
from pipeline.io import read_image

MRI = "unetpp_mri_segmentation"


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_onnx_segments_as_torchscript_does(tta, tmp_path, mri_dataset, exported, exported_onnx):
    from pipeline.cli import main

    inputs = mri_dataset / "imagesTr"
    # the .ts at fp32: --precision auto is bf16 autocast on CPUs with native bf16, and an ONNX model runs fp32
    ts = segment(exported[MRI], inputs, tmp_path / "ts", device="cpu", tta=tta, precision="fp32", progress=False)
    if tta:
        onnx = segment(exported_onnx, inputs, tmp_path / "onnx", device="cpu", tta=True, progress=False)
    else:  # the command line, end to end
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["segment", "--model", str(exported_onnx), "--input", str(inputs), "--output",
                         str(tmp_path / "onnx"), "--device", "cpu", "--no-progress"])
        assert code == 0 and "4 segmented, 0 already complete, 0 failed" in out.getvalue()
        onnx = None
    if onnx is not None:
        assert onnx.settings["precision"] == "fp32" and onnx.settings["model"]["format"] == "onnx"
        assert onnx.settings["level"] == ts.settings["level"] == 4
    assert ts.settings["model"]["format"] == "torchscript" and ts.counts()["ok"] == 4
    foreground = 0
    for case in sorted(c.case for c in ts.cases):
        a = read_image(tmp_path / "ts" / f"{case}_seg.nii.gz").array
        b = read_image(tmp_path / "onnx" / f"{case}_seg.nii.gz").array
        truth = read_image(mri_dataset / "labelsTr" / f"{case}.nii.gz").array
        assert a.shape == b.shape == truth.shape
        assert (a == b).mean() >= 0.995, f"{case}: voxel agreement {(a == b).mean():.4f}"
        for label in (1, 2):
            assert abs(_dice(a, truth, label) - _dice(b, truth, label)) <= 0.002, (case, label)
        foreground += int((a > 0).sum())
    assert foreground > 1000, "the tiny model labels voxels: the agreement above is not between empty maps"


@pytest.mark.parametrize("args, message", [
    (["--level", "2"], ("is an ONNX model of level 4 (an ONNX graph holds one level), got level 2: export it again "
                       "with --level 2, or use the TorchScript (.ts) export")),
    (["--precision", "bf16"], ("an ONNX model runs in fp32 (ONNX Runtime runs the exported graph), got --precision "
                              "bf16: use --precision auto or fp32")),
])
def test_what_an_onnx_model_cannot_do_is_one_line_before_any_case(args, message, tmp_path, mri_dataset,
                                                                   exported_onnx, capsys):
    from pipeline.cli import main

    code = main(["segment", "--model", str(exported_onnx), "--input", str(mri_dataset / "imagesTr"), "--output",
                 str(tmp_path / "out"), "--device", "cpu", "--no-progress", *args])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]
    assert code == 2 and captured.out == "" and len(errors) == 1, captured
    assert errors[0].startswith(f"pipeline segment: error: '{exported_onnx}") and message in errors[0]
    assert not (tmp_path / "out").exists(), "nothing written"
    assert main(["segment", "--model", str(exported_onnx), "--input", str(mri_dataset / "imagesTr" / "mri_000.nii.gz"),
                 "--output", str(tmp_path / "same"), "--device", "cpu", "--no-progress", "--level", "4",
                 "--precision", "fp32"]) == 0, "its own level and fp32 are fine"
