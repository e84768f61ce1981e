"""The trainer's MLflow handler in-process, each test on its own copy of an empty embedded (SQLite) store: the best
validation metrics it remembers, the end-of-training export, tags and the dataset input at start, the run saved
beside the checkpoints and continued on resume, and what a resumed training without a better model logs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import mlflow
import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.deploy import card_from_dict, card_path, file_sha256, load_torchscript, read_card, write_card
from pipeline.tracking import recorder as recorder_module
from pipeline.tracking.recorder import TrainingRecorder
from pipeline.tracking.safe_handler import metric_name, tracking_failed
from pipeline.tracking.settings import RUN_FILE, save_run, saved_run

BUNDLE = "unetpp_mri_segmentation"
CARD = {"card_version": 3, "labels": {"0": "bg", "1": "a", "2": "b"}, "inference": {"roi_size": [32, 32, 32]},
        "network": {"in_channels": 1, "depth": 4, "out_channels": 3}}
VALIDATION = {"val_mean_dice": 0.8, "best_epoch": 3}
DATASET = {"dataset.name": "SyntheticMRI", "dataset.source": "/data/SyntheticMRI", "dataset.datalist_sha1": "0123abcd"}


@pytest.fixture(autouse=True)
def _own_store_only(monkeypatch):
    """The recorder's argument picks the store (MONAI prefers the env var), and no test moves MLflow's global URI."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    yield
    assert mlflow.get_tracking_uri() == before


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised empty SQLite store: creating MLflow's tables takes seconds, copying the file does not."""
    db = tmp_path_factory.mktemp("store") / "mlruns.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def uri(empty_store, tmp_path) -> str:
    shutil.copy(empty_store, tmp_path / "mlruns.db")
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_parser) -> Path:
    """models/ with model.pt of a tiny random MRI network and the card a training writes beside it."""
    from pipeline.export import bundle_card

    torch.manual_seed(0)
    card, net = bundle_card(tiny_parser(BUNDLE))
    models = tmp_path_factory.mktemp("ckpt") / "models"
    models.mkdir()
    torch.save(net.state_dict(), models / "model.pt")
    write_card(card.replace(training={"checkpoint_sha256": file_sha256(models / "model.pt"), "validation": VALIDATION}),
               card_path(models / "model.pt"))
    return models


def _models(tmp_path: Path, source: Path | None = None) -> Path:
    if source is not None:
        return Path(shutil.copytree(source, tmp_path / "models"))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def _recorder(uri: str, models: Path, **kwargs) -> TrainingRecorder:
    kwargs = {"experiment_name": "recorder", "run_name": "r", "iteration_log": False, "epoch_log": False} | kwargs
    return TrainingRecorder(ckpt_dir=models, tracking_uri=uri, **kwargs)


def _started(uri: str, models: Path, **kwargs) -> tuple[TrainingRecorder, mlflow.entities.Run]:
    recorder = _recorder(uri, models, **kwargs)
    recorder.start(Engine(lambda e, b: None))
    assert not tracking_failed(uri), "start failed (the guard turned tracking off)"
    return recorder, recorder.client.get_run(recorder.cur_run.info.run_id)


def test_best_metrics_are_remembered_on_the_validators_best_epochs_only(uri, tmp_path):
    validator, trainer = Engine(lambda e, b: None), Engine(lambda e, b: None)
    recorder = _recorder(uri, tmp_path, validator=validator)
    recorder.attach(trainer)
    assert validator.has_event_handler(recorder._remember_best, Events.EPOCH_COMPLETED)
    assert not trainer.has_event_handler(recorder._remember_best)
    state = validator.state
    state.epoch, state.metrics, state.key_metric_name = 1, {"val_mean_dice": 0.5}, "val_mean_dice"
    validator.fire_event(Events.EPOCH_COMPLETED)  # a validator that keeps no best epoch
    assert recorder.best == {} and recorder.key_metric is None

    state.epoch = state.best_metric_epoch = 3
    state.metrics = {"val_mean_dice": 0.75, "val_loss": 2, "val_per_case": [0.1, 0.2], "note": "text"}
    validator.fire_event(Events.EPOCH_COMPLETED)
    assert recorder.best == {"val/mean_dice": 0.75, "val/loss": 2.0, "best_epoch": 3.0}, "numbers only"
    assert {type(v) for v in recorder.best.values()} == {float}
    assert recorder.key_metric == metric_name("val_mean_dice") == "val/mean_dice"

    state.epoch, state.metrics, state.key_metric_name = 4, {"val_mean_dice": 0.6}, "val_loss"  # not the best
    validator.fire_event(Events.EPOCH_COMPLETED)
    assert recorder.best == {"val/mean_dice": 0.75, "val/loss": 2.0, "best_epoch": 3.0}
    assert recorder.key_metric == "val/mean_dice"

    state.best_metric_epoch, state.key_metric_name = 4, None
    validator.fire_event(Events.EPOCH_COMPLETED)
    assert recorder.best == {"val/mean_dice": 0.6, "best_epoch": 4.0} and recorder.key_metric is None


@pytest.mark.parametrize("case", ["export off", "no model.pt", "broken model.pt"])
def test_no_export_without_a_usable_best_model_and_a_failed_one_only_warns(case, checkpoint, uri, tmp_path, caplog):
    models = _models(tmp_path, checkpoint if case == "export off" else None)
    if case == "broken model.pt":
        (models / "model.pt").write_bytes(b"\x00garbage, not a checkpoint")
        write_card(card_from_dict(CARD, "test card"), card_path(models / "model.pt"))
    recorder = _recorder(uri, models, export=case != "export off")
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking.recorder"):
        assert recorder._export() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if case == "broken model.pt":
        (warning,) = warnings
        assert warning.startswith("TorchScript export at the end of training failed:")
        assert not (models / "export/model.ts").exists() and not (models / "export/model_card.json").exists()
    else:
        assert warnings == [] and not (models / "export").exists()


def test_the_export_is_the_best_checkpoint_with_its_card_beside_it(checkpoint, uri, tmp_path):
    models = _models(tmp_path, checkpoint)
    assert _recorder(uri, models)._export() == models / "export"
    assert sorted(p.name for p in (models / "export").iterdir()) == ["model.ts", "model_card.json"]
    _module, embedded = load_torchscript(models / "export/model.ts")
    assert read_card(models / "export/model_card.json") == embedded
    assert json.loads((models / "export/model_card.json").read_text()) == embedded.to_dict()
    assert embedded.training.validation == VALIDATION, "the best model's own card"
    assert embedded.training.checkpoint_sha256 == file_sha256(models / "model.pt")


def test_complete_on_another_process_does_nothing(checkpoint, uri, tmp_path, monkeypatch):
    models = _models(tmp_path, checkpoint)
    recorder, run = _started(uri, models)
    monkeypatch.setattr(recorder_module, "is_main_process", lambda: False)
    recorder.complete()
    assert not (models / "export").exists()
    assert recorder.client.list_artifacts(run.info.run_id) == []
    assert not [k for k in recorder.client.get_run(run.info.run_id).data.tags if k.startswith("best.")]


def test_tags_are_all_logged_in_batches_and_cut_to_5000_characters(uri, tmp_path):
    tags = {f"tag{i:03d}": f"value {i}" for i in range(150)}
    run = _started(uri, _models(tmp_path), tags={**tags, "long": "x" * 6000, "number": 7})[1]
    assert {k: run.data.tags.get(k) for k in tags} == tags
    assert run.data.tags["long"] == "x" * 5000 and run.data.tags["number"] == "7"


@pytest.mark.parametrize("missing", [None, "dataset.name", "dataset.source", "dataset.datalist_sha1"])
def test_the_training_dataset_is_an_input_of_the_run_only_with_its_three_tags(missing, uri, tmp_path):
    tags = {k: v for k, v in DATASET.items() if k != missing}
    run = _started(uri, _models(tmp_path), tags=tags)[1]
    if missing:
        assert run.inputs.dataset_inputs == []
        return
    (entry,) = run.inputs.dataset_inputs
    assert entry.dataset.name == "SyntheticMRI" and entry.dataset.digest == "0123abcd"
    assert json.loads(entry.dataset.source) == {"uri": "/data/SyntheticMRI"}


@pytest.mark.parametrize(("run_name", "main"), [("r", True), (None, True), ("r", False)])
def test_the_run_is_saved_beside_the_checkpoints_on_the_main_process(run_name, main, uri, tmp_path, monkeypatch):
    if not main:  # the recorder's own check (the guard around start has one of its own)
        monkeypatch.setattr(recorder_module, "is_main_process", lambda: False)
    models = _models(tmp_path)
    run = _started(uri, models, run_name=run_name)[1]
    if not main:
        assert not (models / RUN_FILE).exists() and run.info.status == "RUNNING"
        return
    assert saved_run(models) == {"run_id": run.info.run_id, "run_name": run.info.run_name, "tracking_uri": uri}
    assert run.info.run_name == run_name or (run_name is None and run.info.run_name.startswith("run_"))


def test_resume_continues_the_saved_run_only_when_it_is_the_same_run(uri, tmp_path):
    models = _models(tmp_path)
    first, run = _started(uri, models)
    client, run_id = first.client, run.info.run_id
    client.set_terminated(run_id)
    again, resumed = _started(uri, models, resume=True)
    assert resumed.info.run_id == run_id and again.cur_run.info.status == "RUNNING"
    assert client.get_run(run_id).info.status == "RUNNING" and saved_run(models)["run_id"] == run_id
    client.set_terminated(run_id)
    for kwargs, saved_uri in [({"resume": False}, uri), ({"resume": True, "run_name": "other"}, uri),
                              ({"resume": True}, "http://127.0.0.1:1")]:
        save_run(models, run_id, "r", saved_uri)
        count = len(client.search_runs([run.info.experiment_id]))
        _other, new = _started(uri, models, **kwargs)
        assert new.info.run_id != run_id and client.get_run(run_id).info.status == "FINISHED", kwargs
        assert len(client.search_runs([run.info.experiment_id])) == count + 1, kwargs
        client.set_terminated(new.info.run_id)


@pytest.mark.parametrize("remembered", [{}, {"val/mean_dice": 0.9, "best_epoch": 5.0}])
def test_a_resumed_training_without_a_better_model_tags_the_cards_best(remembered, uri, tmp_path):
    models = _models(tmp_path)
    (models / "model.pt").write_bytes(b"weights")
    write_card(card_from_dict({**CARD, "training": {"validation": VALIDATION}}, "test card"),
               card_path(models / "model.pt"))
    recorder, run = _started(uri, models, export=False)
    recorder.best = dict(remembered)
    recorder.complete()
    assert not tracking_failed(uri)
    client, run_id = recorder.client, run.info.run_id
    tags = {k: v for k, v in client.get_run(run_id).data.tags.items() if k.startswith("best.")}
    if remembered:
        assert tags == {"best.val/mean_dice": "0.9", "best.best_epoch": "5"}, "a better model's own metrics"
    else:
        assert tags == {f"best.{metric_name('val_mean_dice')}": "0.8", "best.best_epoch": "3"}
        assert recorder.key_metric == "val/mean_dice"
    assert sorted(a.path for a in client.list_artifacts(run_id, "checkpoints")) == [
        "checkpoints/model.pt", "checkpoints/model_card.json"]
    assert client.search_logged_models([run.info.experiment_id]).to_list() == [], "no export, no logged model"


@pytest.mark.parametrize("fate", ["deleted", "gone"])
def test_a_saved_run_that_was_deleted_or_is_gone_gives_a_new_run_not_a_silent_one(fate, uri, tmp_path, caplog):
    models = _models(tmp_path)
    first, run = _started(uri, models)
    client, run_id = first.client, run.info.run_id
    client.set_terminated(run_id)
    if fate == "deleted":
        client.delete_run(run_id)
    else:
        save_run(models, "0" * 32, "r", uri)
    with caplog.at_level("WARNING", logger="pipeline.tracking.recorder"):
        again, new = _started(uri, models, resume=True)
    gone = run_id if fate == "deleted" else "0" * 32
    assert new.info.run_id not in (run_id, "0" * 32) and new.info.lifecycle_stage == "active"
    assert again.cur_run.info.run_id == new.info.run_id and saved_run(models)["run_id"] == new.info.run_id
    assert any(r.getMessage().startswith(f"the saved MLflow run {gone} ") and "starting a new run" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
