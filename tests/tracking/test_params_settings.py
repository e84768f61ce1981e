from __future__ import annotations

import json

from pipeline.tracking import config_params, datalist_hash, flatten_config, run_name, save_run, tracking_uri


def test_flatten_resolves_plain_references_and_keeps_expressions():
    config = {"learning_rate": 0.003, "features": [16, 32], "ckpt": "$@root + '/m'",
              "optimizer": {"lr": "@learning_rate", "params": "$@net.parameters()"},
              "transforms": [{"_target_": "Spacingd", "pixdim": "@spacing"}], "spacing": [1.0, 1.0, 2.0]}
    flat = flatten_config(config)
    assert flat["optimizer/lr"] == "0.003" and flat["features"] == "[16, 32]"
    assert flat["transforms/0/pixdim"] == "[1.0, 1.0, 2.0]" and flat["transforms/0/_target_"] == "Spacingd"
    assert flat["ckpt"] == "$@root + '/m'"
    assert all("#" not in k for k in flat)


def test_config_params_from_executed_file(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 2, "_meta_": {"version": "1"}, "n": {"k": True}}))
    assert config_params(tmp_path / "c.json") == {"epochs": "2", "n/k": "true"}
    assert config_params(tmp_path / "missing.json") == {}


def test_tracking_uri_env_and_embedded(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "eval") == f"sqlite:///{(tmp_path / 'eval').resolve()}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5999"
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def test_run_names_are_unique_and_resume_reuses_the_saved_one(tmp_path):
    a = run_name(tmp_path, "unetpp_mri_segmentation", 0)
    assert a.startswith("unetpp_mri_segmentation-fold0-")
    save_run(tmp_path, "abc123", a, "sqlite:///x.db")
    assert run_name(tmp_path, "unetpp_mri_segmentation", 0, resume=True) == a
    assert run_name(tmp_path / "other", "b", 0, resume=True) != a


def test_datalist_hash_changes_with_the_split():
    parts = {"train": [{"case": "a", "image": "/x/a.nii.gz", "label": "/y/a.nii.gz"}],
             "val": [{"case": "b", "image": "/x/b.nii.gz", "label": "/y/b.nii.gz"}]}
    swapped = {"train": parts["val"], "val": parts["train"]}
    assert datalist_hash(parts) == datalist_hash({**parts, "all": []}) != datalist_hash(swapped)
    assert len(datalist_hash(parts)) == 12
