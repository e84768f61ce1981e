from __future__ import annotations

import json
import os

from pipeline.tracking import config_params, datalist_hash, flatten_config, run_name, save_run, tracking_uri


def test_flatten_logs_resolved_values_once():
    config = {"imports": ["$import os"], "learning_rate": 0.003, "features": [16, 32], "bundle_root": "/b",
              "ckpt": "$@bundle_root + '/m'", "device": "$torch.device('cpu')", "amp": "$torch.cuda.is_available()",
              "depth": "$len(@features) + 1", "net": {"_target_": "UNet", "features": "@features"},
              "optimizer": {"_target_": "torch.optim.AdamW", "lr": "@learning_rate", "params": "$@net.parameters()"},
              "datalist": "$pipeline.training.prepare_fold(@bundle_root)", "cb": "$lambda x: x",
              "transforms": [{"_target_": "Spacingd", "pixdim": [1.0, 1.0, 2.0], "_disabled_": "$@amp"}],
              "run": ["$@trainer.run()"], "training": "%run", "mixed": [1, "@learning_rate", "$@bundle_root + '/x'"]}
    flat = flatten_config(config)
    assert flat == {"learning_rate": "0.003", "features": "[16, 32]", "bundle_root": "/b", "ckpt": "/b/m",
                    "device": "cpu", "amp": "false", "depth": "3", "net": "UNet", "optimizer": "torch.optim.AdamW",
                    "transforms/0": "Spacingd", "transforms/0/pixdim": "[1.0, 1.0, 2.0]",
                    "mixed/0": "1", "mixed/2": "/b/x"}
    # without evaluation the expressions are left out, never logged as text
    assert "device" not in flatten_config(config, evaluate=False)


def test_expressions_with_side_effects_are_not_run_again(tmp_path):
    marker = tmp_path / "ran"
    config = {"path": str(marker), "touch": "$open(@path, 'w').close()",
              "chained": "$@touch", "plain_from_unsafe": "$str(@touch)"}
    assert flatten_config(config) == {"path": str(marker)}
    assert not marker.exists()


def test_config_params_from_executed_file(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 2, "_meta_": {"version": "1"}, "n": {"k": True}}))
    assert config_params(tmp_path / "c.json") == {"epochs": "2", "n/k": "true"}
    assert config_params(tmp_path / "missing.json") == {}


_HTTP = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def test_tracking_uri_env_and_embedded(tmp_path, monkeypatch):
    for name in _HTTP:  # monkeypatch restores them: what tracking_uri sets must not leak into later tests
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path / "eval") == f"sqlite:///{(tmp_path / 'eval').resolve()}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5999"
    # the documented limits: a dead server costs 2 retries of at most 10 s each, not MLflow's minutes
    assert [os.environ[name] for name in _HTTP] == ["2", "10", "1"]


def test_the_users_own_http_limits_win(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    tracking_uri(tmp_path)
    assert [os.environ[name] for name in _HTTP] == ["7", "120", "1"]


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
