"""Serving as documented: a tiny exported model logged and registered in an MLflow store, served by ``make serve``
(``mlflow models serve --env-manager local`` with the venv's bin on PATH), answers a real HTTP request with the
label map ``pipeline segment`` writes for the same file; a request without a grid gets a short reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipeline.io import read_image

from ..ports import worker_port

pytestmark = pytest.mark.slow  # starts a model server (about 10 s here)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "unetpp_mri_segmentation"
TINY = {"features": [4, 4, 8, 8, 16, 4], "patch_size": [32, 32, 32]}


def _post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_checkpoints):
    """The tiny MRI model exported, logged as a run's model in a SQLite store and registered with alias best."""
    from pipeline.export import export_bundle
    from pipeline.tracking import log_pyfunc_model, register_model

    root = tmp_path_factory.mktemp("serving")
    ts = export_bundle(REPO / "bundles" / BUNDLE, tiny_checkpoints[BUNDLE], root / "model.ts", overrides=TINY).path
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("serving", artifact_location=str(root / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    info = log_pyfunc_model(client, run_id, ts)
    register_model(client, "serving_test", info.model_id, {}, None)
    return ts, uri


def test_make_serve_answers_a_request_like_segment(registered, mri_dataset, tmp_path):
    from pipeline.inference import segment

    ts, uri = registered
    case = min((mri_dataset / "imagesTr").glob("*.nii.gz"))
    segment(ts, case, tmp_path / "seg", device="cpu", progress=False)
    (written,) = list((tmp_path / "seg").rglob("*.nii.gz"))
    port = worker_port()
    venv = Path(sys.executable).parent.parent
    log = (tmp_path / "serve.log").open("w")
    # PATH without the venv: `make serve` must put its bin first itself (uvicorn is exec'd from PATH)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv / "bin")
    server = subprocess.Popen(["make", "-s", "-o", "install", "serve", f"VENV={venv}", "MODEL=models:/serving_test@best",
                               f"PORT={port}", f"MLFLOW_TRACKING_URI={uri}"], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, env=dict(os.environ, PATH=path), start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "no answer on /ping in 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        image = read_image(case)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"inputs": np.asarray(image.array).tolist(),
                                   "params": {"affine": np.asarray(image.geometry.affine).ravel().tolist()}})
        assert status == 200, body[-2000:]
        labels = np.asarray(json.loads(body)["predictions"], dtype=np.uint8)
        assert labels.shape == image.array.shape
        assert np.array_equal(labels, read_image(written).array.astype(np.uint8)), "voxel-equal to segment"
        status, body = _post(url, {"inputs": np.asarray(image.array).astype(np.int16).tolist()})
        error = json.loads(body)
        assert status == 400 and len(error["message"]) < 200, "MLflow's own message, without the array"
        assert error["stack_trace"].rstrip().splitlines()[-1].startswith("ValueError: give the input's grid in params")
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=30)
        log.close()
