"""A real ``mlflow server`` process on 127.0.0.1 with a free port and a temporary SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.tracking.ui import LIGHT_SERVER_ENV

from ..ports import worker_port


class MlflowServer:
    """``mlflow server`` with a SQLite backend store and a local artifact root; ``stop()`` kills it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = worker_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        mlflow = Path(sys.executable).parent / "mlflow"
        self.log = (root / "server.log").open("w")
        # as `make mlflow` starts it: one worker, no GenAI job runners (pipeline.tracking.ui.LIGHT_SERVER_ENV)
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination",
             str(root / "artifacts")], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, **LIGHT_SERVER_ENV))
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not become healthy: {(root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One server for every test that needs one (starting one takes about half a minute here); tests keep apart
    through their own experiments, run ids and model names."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    yield server
    server.stop()
