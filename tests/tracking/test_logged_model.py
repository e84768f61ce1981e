"""The model, dataset and source records of a run, in-process against an embedded (SQLite) store: the logged model
is the run's, in the run's experiment, with the best epoch's validation metrics; registering it points the version
at it; a user's process-wide MLflow state (tracking URI, env var, active run, last logged model) is left as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.tracking import (
    BEST_ALIAS,
    dataset_identity,
    log_pyfunc_model,
    log_training_dataset,
    register_model,
    source_tags,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "unetpp_mri_segmentation"
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_parser):
    """A tiny randomly initialised MRI network exported by the bundle (card embedded)."""
    from pipeline.export import export_bundle

    root = tmp_path_factory.mktemp("logged_model")
    torch.manual_seed(5)
    torch.save(tiny_parser(BUNDLE).get_parsed_content("network_def").state_dict(), root / "m.pt")
    return export_bundle(REPO / "bundles" / BUNDLE, root / "m.pt", root / "model.ts", overrides=TINY).path


def _store(root: Path) -> tuple[mlflow.MlflowClient, str, str]:
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("training", artifact_location=str(root / "artifacts"))
    return client, uri, experiment


def test_logged_model_of_the_run_registered_and_state_kept(exported, tmp_path, monkeypatch):
    user_uri = f"sqlite:///{tmp_path / 'user.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_uri)  # a user's own tracking set-up, with an active run
    user_run = mlflow.start_run()
    try:
        client, uri, experiment = _store(tmp_path)
        run_id = client.create_run(experiment).info.run_id
        client.log_param(run_id, "epochs", "3")
        for step, dice in ((1, 0.5), (2, 0.7), (3, 0.6)):
            client.log_metric(run_id, "val/mean_dice", dice, step=step)
            client.log_metric(run_id, "train/loss", 1.0 / step, step=step)
        info = log_pyfunc_model(client, run_id, exported, metrics={"val/mean_dice": 0.7, "best_epoch": 2.0})
        assert mlflow.active_run().info.run_id == user_run.info.run_id and mlflow.get_tracking_uri() == user_uri
        assert mlflow.last_logged_model() is None, "the user's last logged model is untouched"
        version = register_model(client, "logged_test", info.model_id, {"val/mean_dice": 0.7}, "val/mean_dice")
        assert mlflow.get_tracking_uri() == user_uri
    finally:
        mlflow.end_run()
    assert os.environ["MLFLOW_TRACKING_URI"] == user_uri, "MLflow's own switch would have unset it"
    assert mlflow.MlflowClient(user_uri).search_logged_models([user_run.info.experiment_id]).to_list() == []

    (model,) = client.search_logged_models([experiment]).to_list()  # the run's experiment, not Default
    assert model.model_id == info.model_id and model.source_run_id == run_id and model.name == "model"
    assert str(model.status) == "READY" and model.params == {"epochs": "3"}
    assert [(m.key, m.value, m.step) for m in model.metrics] == [("val/mean_dice", 0.7, 2)], "best epoch, val only"
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [info.model_id]
    assert [m.value for m in client.get_metric_history(run_id, "val/mean_dice")] == [0.5, 0.7, 0.6], "no duplicate"
    assert version.source == f"models:/{info.model_id}" and version.run_id == run_id
    assert version.model_id in (None, info.model_id)  # OSS registry stores keep the link in the source only
    assert json.loads(client.get_logged_model(info.model_id).tags["mlflow.modelVersions"]) == [
        {"name": "logged_test", "version": int(version.version)}]
    assert client.get_model_version_by_alias("logged_test", BEST_ALIAS).version == version.version
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for model_uri in (f"models:/logged_test@{BEST_ALIAS}", f"runs:/{run_id}/model", info.model_uri):
        loaded = mlflow.pyfunc.load_model(model_uri)
        assert loaded.metadata.model_id == info.model_id and loaded.metadata.run_id == run_id
    assert loaded.predict(np.zeros((9, 9, 9), np.int16), params={"spacing": [1.0, 1.0, 1.0]}).shape == (9, 9, 9)


def test_dataset_input_and_identity(tmp_path, mri_dataset):
    from pipeline.data import load_msd

    items = load_msd(mri_dataset).items
    identity = dataset_identity({"train": items[:2], "val": items[2:], "all": items})
    assert identity == {"dataset.source": str(mri_dataset.resolve()), "dataset.name": "SyntheticMRI"}
    client, _uri, experiment = _store(tmp_path)
    run_id = client.create_run(experiment).info.run_id
    for _ in range(2):  # a resumed run logs it again: still one input
        log_training_dataset(client, run_id, "SyntheticMRI", "0123456789ab", identity["dataset.source"])
    (entry,) = client.get_run(run_id).inputs.dataset_inputs
    assert entry.dataset.name == "SyntheticMRI" and entry.dataset.digest == "0123456789ab"
    assert entry.dataset.source_type == "local"
    assert json.loads(entry.dataset.source) == {"uri": str(mri_dataset.resolve())}
    assert {t.key: t.value for t in entry.tags} == {"mlflow.data.context": "training"}


def test_dataset_identity_without_dataset_json(tmp_path):
    parts = {"train": [{"image": [str(tmp_path / "cases/a/t1.nii.gz"), str(tmp_path / "cases/a/t2.nii.gz")],
                        "label": str(tmp_path / "cases/a/seg.nii.gz")}],
             "val": [{"image": str(tmp_path / "cases/b/t1.nii.gz")}]}
    assert dataset_identity(parts) == {"dataset.source": str(tmp_path / "cases"), "dataset.name": "cases"}
    assert dataset_identity({"train": []}) == {}


def test_source_tags():
    tags = source_tags("0123abcd+dirty", ["/x/monai/bundle/__main__.py", "run", "training", "--config_file",
                                         "bundles/b/configs/train.json", "--epochs", "2"])
    assert tags["mlflow.source.name"] == "bundles/b/configs/train.json" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == "0123abcd" and tags["mlflow.user"]
    assert source_tags("unknown", ["--config_file=c.json"])["mlflow.source.name"] == "c.json"
    assert "mlflow.source.git.commit" not in source_tags("unknown", ["prog.py"])


def test_a_file_that_is_not_an_exported_model_leaves_a_failed_model(tmp_path):
    from pipeline.errors import PipelineError

    client, _uri, experiment = _store(tmp_path)
    run_id = client.create_run(experiment).info.run_id
    (tmp_path / "not.ts").write_bytes(b"not a TorchScript archive")
    with pytest.raises(PipelineError):
        log_pyfunc_model(client, run_id, tmp_path / "not.ts")
    (model,) = client.search_logged_models([experiment]).to_list()
    assert str(model.status) == "FAILED" and model.source_run_id == run_id
