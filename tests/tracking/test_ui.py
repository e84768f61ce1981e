"""The MLflow UI as documented: the Model training mode address, and a light server (one worker, no job runners)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

from pipeline.tracking import LIGHT_SERVER_ENV, ui_address, ui_command


def test_the_installed_ui_reads_the_mode_from_the_address():
    """MLflow's UI chooses GenAI or Model training mode from ``workflowType`` in the page's query string (else from
    local storage, default GenAI): an MLflow upgrade that changes this breaks the address we print."""
    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    sources = "".join(p.read_text(errors="ignore") for p in build.glob("*.js"))
    assert re.search(r'MACHINE_LEARNING="machine_learning"', sources)
    assert re.search(r'\.get\("workflowType"\)', sources) and '"mlflow.workflowType"' in sources


def test_ui_address_names_the_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("unetpp_ct_segmentation")
    assert ui_address(uri, "unetpp_ct_segmentation") == \
        f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"
    assert ui_address(uri, "absent", "http://host:8080/") == \
        "http://host:8080/#/experiments?workflowType=machine_learning"


def test_ui_address_of_an_unreachable_server(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    address = ui_address("http://127.0.0.1:9", "x", "http://127.0.0.1:9")
    assert address == "http://127.0.0.1:9/#/experiments?workflowType=machine_learning"
    assert "could not look up MLflow experiment x" in caplog.text


def test_ui_command():
    assert ui_command("/tmp/eval/mlruns.db", port=5002) == (
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui --backend-store-uri "
        "sqlite:////tmp/eval/mlruns.db --port 5002 --workers 1")


def _session_processes(sid: int) -> list[tuple[str, int]]:
    """(command line, RSS in kB) of every process of session ``sid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:  # after the command name: state, ppid, pgrp, session
                continue
            rss = next(int(line.split()[1]) for line in (stat.parent / "status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            found.append(((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120], rss))
        except (OSError, StopIteration, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return found


@pytest.mark.slow  # the session's mlflow server
def test_light_server_is_two_processes(mlflow_server):
    """`make mlflow` and the tests' server: MLflow's launcher and one uvicorn worker; by default 15 processes
    (4 workers, a job runner, 7 huey consumers, a resource tracker) and about 3.0 GB summed RSS here."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs Linux /proc")
    assert LIGHT_SERVER_ENV == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    processes = _session_processes(mlflow_server.proc.pid)
    commands = [c for c, _ in processes]
    assert len(processes) == 2, commands
    assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
    assert sum(r for _, r in processes) < 1_200_000, processes  # kB; about 0.5 GB measured
