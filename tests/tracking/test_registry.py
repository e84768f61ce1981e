"""The ``best`` alias follows the validation key metric across registered versions, each the logged model of its
run (real ``mlflow server``)."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipeline.tracking import BEST_ALIAS, register_model

pytestmark = pytest.mark.slow  # starts an mlflow server


def test_best_alias_moves_only_to_a_better_version(mlflow_server):
    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment("registry_test")
    name = "registry_test_model"

    def logged_model(experiment_id=experiment):
        run_id = client.create_run(experiment_id).info.run_id
        return client.create_logged_model(experiment_id, name="model", source_run_id=run_id)

    def version_for(score):
        return register_model(client, name, logged_model().model_id, {"val/mean_dice": score, "best_epoch": 3.0},
                              "val/mean_dice")

    first = version_for(0.80)
    assert client.get_model_version_by_alias(name, BEST_ALIAS).version == first.version
    worse = version_for(0.70)
    assert client.get_model_version_by_alias(name, BEST_ALIAS).version == first.version
    assert client.get_model_version(name, worse.version).tags["val/mean_dice"] == "0.7"
    better = version_for(0.85)
    assert client.get_model_version_by_alias(name, BEST_ALIAS).version == better.version
    model = client.search_logged_models([experiment], filter_string=f"source_run_id = '{better.run_id}'").to_list()
    assert len(model) == 1 and better.source == f"models:/{model[0].model_id}", "the version is the run's model"
    # the server records the version on the logged model; registering does not add it twice
    assert json.loads(model[0].tags["mlflow.modelVersions"]) == [{"name": name, "version": int(better.version)}]
    assert "val/mean_dice=0.8500" in client.get_model_version(name, better.version).description
    # a version without validation metrics never takes the alias from a validated one, only from nobody
    unscored = register_model(client, name, logged_model().model_id, {}, None)
    assert client.get_model_version_by_alias(name, BEST_ALIAS).version == better.version
    first_of_its_name = register_model(client, "other_model", logged_model().model_id, {}, None)
    assert client.get_model_version_by_alias("other_model", BEST_ALIAS).version == first_of_its_name.version
    assert unscored.version == str(int(better.version) + 1)
