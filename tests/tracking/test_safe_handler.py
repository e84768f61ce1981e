from __future__ import annotations

import logging

import mlflow
from ignite.engine import Engine, Events

from pipeline.tracking import SafeMLFlowHandler, tracking_failed

from ..ports import worker_port


def _engine(epochs=2):
    engine = Engine(lambda e, b: {"loss": 0.5})
    engine.state.metrics = {}
    return engine


def test_unreachable_server_warns_once_and_training_goes_on(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"http://127.0.0.1:{worker_port()}"
    engine = _engine()
    handlers = [SafeMLFlowHandler(tracking_uri=uri, experiment_name="x", output_transform=lambda o: o["loss"]),
                SafeMLFlowHandler(tracking_uri=uri, experiment_name="x", iteration_log=False)]
    for h in handlers:
        h.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking.safe_handler"):
        engine.run([0, 1, 2], max_epochs=2)
    assert seen == [1, 2, 3, 4, 5, 6], "training ran to the end"
    warnings = [r.getMessage() for r in caplog.records if "MLflow tracking at" in r.getMessage()]
    assert len(warnings) == 1 and uri in warnings[0]
    assert tracking_failed(uri)


def test_params_are_logged_in_batches_and_changed_values_become_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    handler = SafeMLFlowHandler(tracking_uri=uri, experiment_name="batches", run_name="r",
                                experiment_param={f"p{i:03d}": i for i in range(250)}, iteration_log=False)
    engine = _engine()
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("batches").experiment_id])[0]
    assert len([k for k in run.data.params if k.startswith("p")]) == 250
    again = SafeMLFlowHandler(tracking_uri=uri, experiment_name="batches", run_name="r",
                              experiment_param={"p001": "changed", "new": 1}, iteration_log=False)
    client.update_run(run.info.run_id, status="RUNNING")
    again.attach(_engine())
    again.start(_engine())
    data = client.get_run(run.info.run_id).data
    assert data.params["p001"] == "1" and data.params["new"] == "1" and data.tags["resumed.p001"] == "changed"
