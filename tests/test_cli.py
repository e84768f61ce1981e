from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.cli import main


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args],
                          check=False, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_synth_writes_dataset_and_prints_summary(tmp_path):
    code, out, err = _run("synth", "--modality", "mri", "--cases", "3", "--out", str(tmp_path / "d"), "--seed", "2",
                          "--shape", "24", "28", "24")
    assert code == 0, err
    meta = json.loads((tmp_path / "d/dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["seed"] == 2
    for needle in ("cases     3", "shape     min 24x28x24", "spacing", "orient.", "anterior", "posterior",
                   "mri_002"):
        assert needle in out


@pytest.mark.parametrize("args, rule", [
    (["--modality", "ct", "--cases", "0"], "argument --cases: must be >= 1, got 0"),
    (["--modality", "pet", "--cases", "2"], "argument --modality: invalid choice: 'pet'"),
    (["--modality", "ct", "--cases", "two"], "argument --cases: must be a whole number, got 'two'"),
])
def test_bad_arguments_give_one_line_with_the_rule(tmp_path, args, rule):
    code, out, err = _run("synth", *args, "--out", str(tmp_path / "d"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and rule in err and err.startswith("pipeline synth: error:")
    assert not (tmp_path / "d").exists()


def test_non_writable_out_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = _run("synth", "--modality", "ct", "--cases", "1", "--out", str(blocker / "sub"))
    assert code == 2 and err.count("\n") == 1
    assert f"--out must be a writable folder, got '{blocker / 'sub'}'" in err


def test_validate_exit_status_and_problem_listing(tmp_path, ct_dataset, capsys):
    import shutil

    assert main(["validate", str(ct_dataset)]) == 0
    shutil.copytree(ct_dataset, tmp_path / "d")
    (tmp_path / "d/labelsTr/ct_001.nii.gz").unlink()
    assert main(["validate", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "ct_001.nii.gz: every training case must have its label file (missing label)" in err


def test_summary_and_folds(tmp_path, ct_dataset, capsys):
    assert main(["summary", str(ct_dataset), "--no-intensity"]) == 0
    assert "orient.   LAS 2, LPS 2, RAS 2" in capsys.readouterr().out
    assert main(["folds", str(ct_dataset), "--num-folds", "3", "--seed", "1", "--out", str(tmp_path / "s.json")]) == 0
    splits = json.loads((tmp_path / "s.json").read_text())
    assert splits["num_folds"] == 3 and sum(len(f["val"]) for f in splits["folds"]) == 6


def test_library_errors_are_one_line(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the dataset folder or datalist file must exist" in err


@pytest.mark.parametrize("args, rule", [
    (["--minutes", "0"], "argument --minutes: must be > 0, got 0.0"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    (["--modality", "pet"], "argument --modality: invalid choice: 'pet'"),
])
def test_plan_bad_arguments_are_one_line(tmp_path, ct_dataset, args, rule):
    code, _out, err = _run("plan", str(ct_dataset), "--out", str(tmp_path / "p.json"), *args)
    assert code == 2 and err.count("\n") == 1 and rule in err and not (tmp_path / "p.json").exists()


def test_synth_two_channel_layouts(tmp_path):
    for layout in ("nnunet", "csv"):
        code, out, err = _run("synth", "--modality", "mri", "--cases", "2", "--out", str(tmp_path / layout),
                              "--shape", "16", "18", "14", "--channels", "2", "--layout", layout)
        assert code == 0, err
        assert "cases     2" in out
    assert (tmp_path / "nnunet/imagesTr/mri_001_0001.nii.gz").is_file() and (tmp_path / "csv/dataset.csv").is_file()
    code, _, err = _run("synth", "--modality", "ct", "--channels", "2", "--out", str(tmp_path / "x"))
    assert code == 2 and "channels must be 1, or 2 for 3D MRI" in err


def test_validate_an_empty_or_malformed_dataset_exits_1(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/dataset.json").write_text(json.dumps({"training": [], "labels": {"0": "background"}}))
    assert main(["validate", str(tmp_path / "empty")]) == 1
    assert "a dataset must hold at least one case, got 0 cases" in capsys.readouterr().err
    (tmp_path / "empty/dataset.json").write_text(json.dumps({"training": "abc", "labels": {"0": "background"}}))
    assert main(["validate", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'training' must be a list of entries, got str" in err


def test_segment_options_given_twice_are_one_line(tmp_path):
    code, _, err = _run("segment", "--model", "m.ts", "--input", "a", "--input", "b", "--output", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "argument --input: may be given once, got 'a' and 'b'" in err


@pytest.mark.parametrize("args, rule", [
    (["segment", "--model", "m.ts", "--input", "in", "--output", "out", "--shard", "-1/2"],
     "pipeline segment: error: shard must be i/n with 0 <= i < n (e.g. 0/4), got '-1/2'"),
    (["synth", "--modality", "mri", "--cases", "1", "--out", "OUT", "--shape", "4", "4"],
     "pipeline synth: error: shape must be 3 values x y z (2 values x y with dims 2), each >= 4, got 4 4"),
])
def test_values_that_break_a_rule_are_one_line(tmp_path, args, rule):
    code, _, err = _run(*[a.replace("OUT", str(tmp_path / "d")) for a in args])
    assert code == 2 and err.count("\n") == 1 and err.startswith(rule), err
    assert not (tmp_path / "d" / "dataset.json").exists()


def test_a_shipped_bundle_name_is_the_shipped_bundle(tmp_path, monkeypatch, caplog):
    import logging

    from pipeline.cli import _bundle_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "unetpp_mri_segmentation/configs").mkdir(parents=True)  # a same-named folder here
    with caplog.at_level(logging.INFO, logger="pipeline"):
        chosen = _bundle_dir("unetpp_mri_segmentation")
    assert chosen.parent.name == "bundles" and chosen != tmp_path / "unetpp_mri_segmentation"
    assert "not the folder ./unetpp_mri_segmentation (pass ./unetpp_mri_segmentation" in caplog.text
    assert _bundle_dir("./unetpp_mri_segmentation").resolve() == tmp_path / "unetpp_mri_segmentation"
