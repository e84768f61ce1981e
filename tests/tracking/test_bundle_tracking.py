"""Bundle training against a real ``mlflow server``: the complete run record, resume, concurrency, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from .conftest import MlflowServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "unetpp_mri_segmentation"
CONFIG = str(REPO / "bundles" / BUNDLE / "configs" / "train.json")
TRACKING = str(REPO / "configs" / "mlflow.json")
TINY = ["--val_interval", "1", "--num_folds", "3", "--patch_size", "[32,32,32]", "--features", "[4,4,8,8,16,4]",
        "--batch_size", "2", "--num_workers", "0"]


def _command(data, root, epochs, *extra):
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", CONFIG, "--dataset_dir",
            str(data), "--bundle_root", str(root), "--epochs", str(epochs), "--tracking", TRACKING, *TINY, *extra]


def _env(uri):
    return dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                MLFLOW_HTTP_REQUEST_TIMEOUT="5", PYTHONWARNINGS="ignore")


def _train(data, root, uri, epochs=2, *extra):
    proc = subprocess.run(_command(data, root, epochs, *extra), check=False, capture_output=True, text=True,
                          timeout=900,
                          env=_env(uri), cwd=root.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _runs(uri):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(BUNDLE)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory, mri_dataset):
    root = tmp_path_factory.mktemp("tracked") / "run"
    log = _train(mri_dataset, root, mlflow_server.uri)
    client, runs = _runs(mlflow_server.uri)
    run_id = (root / "models/mlflow_run.json").read_text()
    (run,) = [r for r in runs if r.info.run_id in run_id]
    return client, run, root, log


def test_run_has_name_tags_and_all_params(trained):
    _client, run, _root, _ = trained
    assert run.info.run_name.startswith(f"{BUNDLE}-fold0-") and run.info.status == "FINISHED"
    tags = run.data.tags
    version = json.loads((REPO / "bundles" / BUNDLE / "configs/metadata.json").read_text())["version"]
    assert tags["bundle.name"] == BUNDLE and tags["bundle.version"] == version
    for key in ("git.commit", "host", "device", "dataset.datalist_sha1", "dataset.spacing_median",
                "dataset.intensity_p99_5", "dataset.fold"):
        assert tags.get(key), key
    assert tags["dataset.train_cases"] == "2" and tags["dataset.val_cases"] == "2" and tags["device"] == "cpu"
    # what the UI shows as Source and Created by (MONAI's client-created run had none)
    assert tags["mlflow.source.name"] == CONFIG and tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    if tags["git.commit"] != "unknown":
        assert tags["mlflow.source.git.commit"] == tags["git.commit"].split("+")[0]
    params = run.data.params
    assert params["epochs"] == "2" and params["learning_rate"] == "0.003"
    assert params["features"] == "[4, 4, 8, 8, 16, 4]" and params["ds_weights"] == "[1.0, 0.5, 0.25, 0.125]"
    # resolved values, each once: no expressions, references or _target_ keys
    assert params["device"] == "cpu" and params["amp"] == "false" and params["network_def/depth"] == "4"
    assert params["optimizer"] == "torch.optim.AdamW" and params["ckpt_dir"] == str(_root / "models")
    assert "optimizer/lr" not in params, "a reference is logged under the referenced name only"
    assert not [k for k, v in params.items() if v.startswith(("$", "@", "%")) or "_target_" in k]
    assert len(params) > 100


def test_metric_histories(trained):
    client, run, _, _ = trained
    names = set(run.data.metrics)
    assert {"train/loss", "lr", "val/mean_dice", "val/dice_anterior", "val/dice_posterior", "val/loss"} <= names
    assert not {"train_loss", "lr_group_0", "val_mean_dice"} & names
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(loss) == 2 and [m.step for m in loss] == [1, 2], "per iteration (1 per epoch here)"
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 2
    for name in ("val/mean_dice", "val/dice_anterior", "val/dice_posterior", "val/loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name  # the trainer's epoch is the step
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "val/loss"))


def test_artifacts_and_registered_model(trained):
    client, run, root, _ = trained
    run_id = run.info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"checkpoints", "qc"} <= top and any(p.startswith("config_") for p in top)
    assert "model" not in top, "the model is a logged model, not a folder of run artifacts"
    assert sorted(a.path for a in client.list_artifacts(run_id, "checkpoints")) == ["checkpoints/model.pt",
                                                                                    "checkpoints/model_card.json"]
    qc = [a.path for a in client.list_artifacts(run_id, "qc")]
    assert qc and all(p.startswith("qc/epoch_") for p in qc)
    pngs = client.list_artifacts(run_id, qc[0])
    assert 1 <= len(pngs) <= 3 and all(p.path.endswith(".png") for p in pngs)
    local = Path(client.download_artifacts(run_id, pngs[0].path, str(root / "dl")))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "models/export/model.ts").is_file()


def test_the_model_is_a_logged_model_of_the_run_and_the_registered_version(trained, mlflow_server, monkeypatch):
    """Where MLflow users look: the run's Logged models, the experiment's Models tab, the version's source."""
    client, run, _root, _ = trained
    run_id = run.info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run_id}'", output_format="list")
    (model,) = found
    assert model.name == "model" and str(model.status) == "READY" and model.source_run_id == run_id
    assert model.params["epochs"] == "2" and model.params["learning_rate"] == "0.003"
    best_epoch = int(float(run.data.tags["best.best_epoch"]))
    assert {(m.key, m.step) for m in model.metrics} >= {("val/mean_dice", best_epoch)}, "the best epoch's metrics"
    assert not [m for m in model.metrics if not m.key.startswith("val/")], "train/loss's step is not the epoch"
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model.model_id]
    files = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "artifacts", "code", "requirements.txt", "input_example.json",
            "serving_input_example.json"} <= files
    assert {a.path for a in client.list_logged_model_artifacts(model.model_id, "artifacts")} == {
        "artifacts/model.ts", "artifacts/model_card.json"}
    (version,) = [v for v in client.search_model_versions(f"name='{BUNDLE}'") if v.run_id == run_id]
    assert version.source == f"models:/{model.model_id}" and version.model_id in (None, model.model_id)
    assert {"name": BUNDLE, "version": int(version.version)} in json.loads(model.tags["mlflow.modelVersions"])
    assert "val/mean_dice" in version.tags and "best_epoch" in version.tags
    assert client.get_model_version_by_alias(BUNDLE, "best").version == version.version
    assert mlflow.pyfunc.load_model(f"runs:/{run_id}/model").metadata.model_id == model.model_id


def test_the_run_records_its_training_dataset(trained, mri_dataset):
    _client, run, _root, _ = trained
    (entry,) = run.inputs.dataset_inputs
    assert entry.dataset.name == "SyntheticMRI" and entry.dataset.digest == run.data.tags["dataset.datalist_sha1"]
    assert json.loads(entry.dataset.source) == {"uri": str(mri_dataset.resolve())}
    assert entry.dataset.source_type == "local" and run.data.tags["dataset.source"] == str(mri_dataset.resolve())
    assert {t.key: t.value for t in entry.tags} == {"mlflow.data.context": "training"}


def test_registered_model_loads_by_alias_and_segments(trained, mlflow_server, mri_dataset, tmp_path, monkeypatch):
    """The MLflow round trip: the pyfunc registered by the training, loaded by its alias, predicts the label map
    that `pipeline segment` writes with the same exported model, on the case's own grid."""
    import numpy as np

    from pipeline.io import read_image

    root = trained[2]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{BUNDLE}@best")
    assert model.metadata.signature.inputs is None, "predict checks dtype and shape (any real dtype is cast)"
    assert model.metadata.signature.outputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    assert {p.name: p.default for p in model.metadata.signature.params} == {"spacing": [], "affine": [],
                                                                            "tta": False}
    case = min((mri_dataset / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    labels = model.predict(np.asarray(image.array, np.float32),
                           params={"affine": image.geometry.affine.ravel().tolist()})
    assert labels.dtype == np.uint8 and labels.shape == image.array.shape
    out = tmp_path / "seg"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(root / "models/export/model.ts"),
                           "--input", str(case), "--output", str(out), "--device", "cpu"], check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (written,) = [p for p in out.rglob("*.nii.gz")]
    assert np.array_equal(labels, read_image(written).array.astype(np.uint8))
    with pytest.raises(ValueError, match=r"1 channel: .*; got shape \(4, 4, 4, 2\)$"):  # one line, no array
        model.predict(np.zeros((4, 4, 4, 2), np.float32), params={"spacing": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match="give the input's grid in params"):
        model.predict(np.asarray(image.array))


def _torchscript_content(path):
    """A TorchScript file's members, with each code file's lines sorted: TorchScript writes a module's constants in
    the order of a Python set, which differs between processes (PYTHONHASHSEED); everything else is compared as is."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: sorted(archive.read(name).splitlines()) if name.endswith(".py") else
                archive.read(name) for name in archive.namelist()
                if not name.endswith(("serialization_id", ".debug_pkl"))}


def test_the_registered_model_is_what_pipeline_export_writes(trained, mlflow_server, mri_dataset, tmp_path,
                                                              monkeypatch):
    """One writer: the registered MLflow model, the end-of-training export and `pipeline export --checkpoint` are
    the same file with the same card, and give the same label maps with and without mirroring TTA."""
    import numpy as np

    from pipeline.deploy import file_sha256, load_torchscript, read_card
    from pipeline.io import read_image

    client, run, root, _ = trained
    ours = tmp_path / "ours.ts"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--checkpoint", str(root / "models/model.pt"),
                           "--out", str(ours)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (version,) = [v for v in client.search_model_versions(f"name='{BUNDLE}'") if v.run_id == run.info.run_id]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # models:/<model_id> resolves through it
    registered = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path / "dl"))) / \
        "artifacts/model.ts"
    files = {"registered": registered, "end of training": root / "models/export/model.ts", "pipeline export": ours}
    assert file_sha256(registered) == file_sha256(root / "models/export/model.ts"), "the training's own export"
    assert _torchscript_content(ours) == _torchscript_content(registered), "same weights, card and code"
    cards = {name: load_torchscript(path)[1] for name, path in files.items()}
    trained_card = read_card(root / "models/model_card.json")
    for card in cards.values():
        assert card.to_dict() == cards["pipeline export"].to_dict()
        assert card.inference.mirror_axes == (0,) and card.modality == "MR" and card.channels == ("T1",)
        assert card.training == trained_card.shareable().training and card.level == trained_card.level
    model = mlflow.pyfunc.load_model(f"models:/{BUNDLE}/{version.version}")
    assert model.metadata.metadata["model_card"] == cards["registered"].to_dict()
    case = min((mri_dataset / "imagesTr").glob("*.nii.gz"))
    image = read_image(case)
    for tta in (False, True):
        labels = model.predict(np.asarray(image.array, np.float32),
                               params={"affine": image.geometry.affine.ravel().tolist(), "tta": tta})
        out = tmp_path / f"seg_tta_{tta}"
        proc = subprocess.run([sys.executable, "-m", "pipeline", "segment", "--model", str(ours), "--input",
                               str(case), "--output", str(out), "--device", "cpu", *(["--tta"] if tta else [])],
                              check=False, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (written,) = list(out.rglob("*.nii.gz"))
        assert np.array_equal(labels, read_image(written).array.astype(np.uint8)), f"tta={tta}"


def test_resume_continues_the_same_run(trained, mri_dataset, mlflow_server):
    client, run, root, _ = trained
    log = _train(mri_dataset, root, mlflow_server.uri, 3, "--resume", "true")
    assert "continuing MLflow run" in log
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mean_dice")] == [1, 2, 3]
    assert resumed.data.tags.get("resumed.resume") == "true" and resumed.data.params["resume"] == "false"
    assert len(resumed.inputs.dataset_inputs) == 1, "the same dataset, logged again, is one input"
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'").to_list()
    assert len(models) == 2 and len(resumed.outputs.model_outputs) == 2, "each finished training logs its model"
    _, runs = _runs(mlflow_server.uri)
    assert sum(r.info.run_name == run.info.run_name for r in runs) == 1


def test_two_runs_at_once_stay_apart(mlflow_server, tmp_path, mri_dataset):
    _, before = _runs(mlflow_server.uri)
    procs = [subprocess.Popen(_command(mri_dataset, tmp_path / f"r{i}", 2), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=_env(mlflow_server.uri), cwd=tmp_path)
             for i in range(2)]
    assert [p.wait(timeout=900) for p in procs] == [0, 0]
    client, after = _runs(mlflow_server.uri)
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert len(new) == 2 and len({r.info.run_name for r in new}) == 2
    for r in new:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/mean_dice")] == [1, 2]
        assert r.info.status == "FINISHED"


def test_server_dying_mid_run_loses_nothing(tmp_path, mri_dataset):
    server = MlflowServer(tmp_path)
    proc = subprocess.Popen(_command(mri_dataset, tmp_path / "run", 3), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(server.uri), cwd=tmp_path)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Epoch[1] Metrics" in line:
                server.stop()
                break
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=900) == 0, "".join(lines)[-4000:]
    finally:
        server.stop()
    log = "".join(lines)
    assert log.count(f"MLflow tracking at {server.uri} failed") == 1
    assert "Epoch[3] Complete" in log
    assert (tmp_path / "run/models/model.pt").is_file()
    assert (tmp_path / "run/models/checkpoint_latest.pt").is_file()
    assert (tmp_path / "run/models/export/model.ts").is_file(), "the local export still happens"


def test_embedded_store_without_a_server(tmp_path, mri_dataset, monkeypatch):
    env = _env("")
    env.pop("MLFLOW_TRACKING_URI")
    proc = subprocess.run(_command(mri_dataset, tmp_path / "run", 1), check=False, capture_output=True, text=True,
                          timeout=900,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    db = tmp_path / "run/eval/mlruns.db"
    _client, runs = _runs(f"sqlite:///{db}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (tmp_path / "run/eval/mlruns").is_dir(), "artifacts next to the store, browsable with mlflow ui"
    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(uri)
    (model,) = client.search_logged_models([runs[0].info.experiment_id]).to_list()
    assert model.source_run_id == runs[0].info.run_id
    assert list((tmp_path / "run/eval/mlruns").rglob("MLmodel")), "the model files lie next to the store too"
    version = client.get_model_version_by_alias(BUNDLE, "best")
    assert version.source == f"models:/{model.model_id}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert mlflow.pyfunc.load_model(f"models:/{BUNDLE}@best").metadata.model_id == model.model_id
    from pipeline.tracking import ui_address

    assert ui_address(uri, BUNDLE) == (f"http://127.0.0.1:5000/#/experiments/{runs[0].info.experiment_id}"
                                       "?workflowType=machine_learning")
