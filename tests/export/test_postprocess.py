"""`pipeline postprocess`: choose on validation cases, write the card into a copy of the model, nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.deploy import load_torchscript, read_card, write_card
from pipeline.deploy.postprocess import Postprocessing, apply, choose
from pipeline.errors import DatasetError, PipelineError
from pipeline.export.postprocess import choose_for_model, embed_card, reference_for
from pipeline.inference import segment
from pipeline.io import read_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_ts(tmp_path_factory, tiny_parser):
    from pipeline.export import export_bundle

    root = tmp_path_factory.mktemp("pp_model")
    torch.manual_seed(5)
    torch.save(tiny_parser("unetpp_mri_segmentation").get_parsed_content("network_def").state_dict(), root / "m.pt")
    return export_bundle(REPO / "bundles" / "unetpp_mri_segmentation", root / "m.pt", root / "m.ts",
                         overrides={"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}).path


def test_embed_card_changes_the_card_and_nothing_else(tiny_ts, tmp_path):
    module, card = load_torchscript(tiny_ts)
    new = card.replace(inference={"postprocessing": {"foreground": True, "largest_component_labels": [2]}})
    out = embed_card(tiny_ts, tmp_path / "pp.ts", new)
    copy, embedded = load_torchscript(out)
    assert embedded == new and embedded.postprocessing == Postprocessing(True, (2,))
    assert load_torchscript(tiny_ts)[1] == card  # the source is untouched
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(module(x), copy(x))  # same network, same weights: same output, bit for bit
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left


def test_the_command_writes_the_decision_its_numbers_imply(tiny_ts, mri_dataset, tmp_path):
    out = tmp_path / "m_pp.ts"
    beside = tmp_path / "models" / "model_card.json"  # the checkpoint's card, which bundle inference reads
    write_card(load_torchscript(tiny_ts)[1].replace(export=None), beside)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "postprocess", "--model", str(tiny_ts), "--images",
                           str(mri_dataset / "imagesTr"), "--labels", str(mri_dataset / "labelsTr"), "--out", str(out),
                           "--device", "cpu", "--precision", "fp32", "--no-progress", "--card", str(beside)],
                          check=False, capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < 300
    _, card = load_torchscript(out)
    record = card.training.postprocessing_choice
    assert record["rule"] == "nnunet" and record["cases"] == 4 and record["tolerance"] == 0.0
    before, fg = record["dice_before"], record["dice_foreground"]
    foreground = np.mean(list(fg.values())) >= np.mean(list(before.values()))
    base = fg if foreground else before
    labels = tuple(k for k in (1, 2) if record["dice_per_label"][str(k)] >= base[str(k)])
    assert card.postprocessing == Postprocessing(bool(foreground), labels)  # the rule, from the recorded numbers
    recorded = read_card(beside)
    assert recorded.postprocessing == card.postprocessing and recorded.training.postprocessing_choice == record
    # and the numbers are those of the raw label maps of the same model against the references
    raw = segment(tiny_ts, mri_dataset / "imagesTr", tmp_path / "raw", device="cpu", progress=False,
                  precision="fp32")
    cases = sorted(raw.cases, key=lambda c: c.case)
    preds = [read_image(c.output).array for c in cases]
    refs = [read_image(mri_dataset / "labelsTr" / Path(c.input).name).array for c in cases]
    again = choose(preds, refs, [1, 2])
    assert again.dice_before == pytest.approx(before) and again.decision == card.postprocessing
    assert "Dice per class on 4 validation case(s)" in proc.stdout and f"wrote {out}" in proc.stdout
    for name in card.label_ids.values():
        assert name in proc.stdout or name == "background"
    # segment with the written model applies exactly that decision to the raw label maps
    done = segment(out, mri_dataset / "imagesTr", tmp_path / "pp", device="cpu", progress=False, precision="fp32")
    for case in sorted(done.cases, key=lambda c: c.case):
        expected = apply(preds[[c.case for c in cases].index(case.case)], card.postprocessing)
        assert np.array_equal(read_image(case.output).array, expected)


def test_an_onnx_model_a_missing_reference_or_another_models_card_is_one_line(tiny_ts, mri_dataset, tmp_path):
    with pytest.raises(PipelineError, match="postprocess writes the card into a TorchScript"):
        choose_for_model(tmp_path / "m.onnx", mri_dataset / "imagesTr", mri_dataset / "labelsTr")
    with pytest.raises(DatasetError, match="needs its reference label map under .* give --labels"):
        reference_for(mri_dataset / "imagesTr" / "mri_000.nii.gz", tmp_path)
    other = tmp_path / "other.json"
    write_card(load_torchscript(tiny_ts)[1].replace(labels={"0": "bg", "1": "x", "2": "y"}), other)
    with pytest.raises(PipelineError, match="give --card the card of the checkpoint the model was exported from"):
        choose_for_model(tiny_ts, mri_dataset / "imagesTr", mri_dataset / "labelsTr", tmp_path / "o.ts", card=other)
    assert not (tmp_path / "o.ts").exists()
    (tmp_path / "CASE.nii.gz").write_bytes(b"")
    assert reference_for("x/CASE_0000.nii.gz", tmp_path) == tmp_path / "CASE.nii.gz"


def test_a_case_without_a_reference_is_status_1_and_writes_nothing(tiny_ts, mri_dataset, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(mri_dataset / "labelsTr" / "mri_000.nii.gz", labels)
    out = tmp_path / "m_pp.ts"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "postprocess", "--model", str(tiny_ts), "--images",
                           str(mri_dataset / "imagesTr"), "--labels", str(labels), "--out", str(out), "--no-progress",
                           "--device", "cpu"], check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "mri_001.nii.gz: every validation image needs its reference" in proc.stderr
    assert not out.exists()


def test_a_bad_tolerance_is_a_usage_error(tiny_ts, mri_dataset, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "postprocess", "--model", str(tiny_ts), "--images",
                           str(mri_dataset / "imagesTr"), "--labels", str(mri_dataset / "labelsTr"),
                           "--tolerance", "-1"], check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "--tolerance must be >= 0, got -1.0" in proc.stderr


@pytest.mark.parametrize("suffix", [".ts", ".onnx"])
def test_an_export_from_a_checkpoint_whose_card_records_it_carries_it(tmp_path, tiny_parser, suffix):
    if suffix == ".onnx":
        for name in ("onnx", "onnxruntime", "onnxscript"):
            pytest.importorskip(name, reason=f"ONNX export needs {name}")
    from pipeline.deploy import card_path, load_model
    from pipeline.export import export_checkpoint

    from .conftest import trained_checkpoint

    ckpt = trained_checkpoint(tmp_path, tiny_parser)
    decision = {"foreground": True, "largest_component_labels": [1]}  # as `postprocess --card` records it
    write_card(read_card(card_path(ckpt)).replace(inference={"postprocessing": decision}), card_path(ckpt))
    path = export_checkpoint(ckpt, tmp_path / f"m{suffix}").path
    assert load_model(path)[1].postprocessing == Postprocessing(True, (1,))  # segment reads it from there
