"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked by reading it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKER_TARGETS = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE))


def test_every_service_is_there() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker", "worker-gpu", "prometheus"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"migrate"}))
def test_long_running_services_have_healthchecks(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1


def _module_exists(module: str) -> bool:
    base = ROOT / Path(*module.split("."))
    return (base / "__main__.py").exists() or base.with_suffix(".py").exists()


def _defines(module: str, attribute: str) -> bool:
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == attribute for node in tree.body)


def _check_command(command: list[str]) -> None:
    if command[:2] == ["python", "-m"]:
        assert _module_exists(command[2]), command
    elif command[0] == "uvicorn":
        module, attribute = command[command.index("--factory") + 1].split(":")
        assert _defines(module, attribute), command
    elif command[0] == "alembic":
        assert (ROOT / "alembic.ini").exists() and (ROOT / "migrations" / "env.py").exists()
    else:
        raise AssertionError(f"unrecognised command {command}")


@pytest.mark.parametrize("name", ["migrate", "api", "worker", "worker-gpu"])
def test_kiln_services_run_code_that_exists(name: str) -> None:
    service = SERVICES[name]
    _check_command(service["command"])
    check = service.get("healthcheck", {}).get("test", [])
    if check[1:3] == ["python", "-m"]:
        _check_command(check[1:])
    assert service["build"]["target"] in DOCKER_TARGETS
    env = service["environment"]
    assert "@postgres:5432/" in env["KILN_DATABASE_URL"] and env["KILN_BROKER_URL"].startswith("redis://redis:6379")


def test_api_image_has_no_torch_and_the_worker_image_does() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    api_stage = dockerfile.split("AS api")[1].split("FROM")[0]
    worker_stage = dockerfile.split("AS worker")[1]
    assert "torch" not in api_stage and "pip install ." in api_stage
    assert "torch==2.13.0" in worker_stage and "'.[train]'" in worker_stage


def test_gpu_worker_reserves_nvidia_devices_and_builds_cuda_torch() -> None:
    gpu = SERVICES["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]


def test_workers_and_api_share_the_artifact_volume() -> None:
    for name in ("api", "worker", "worker-gpu"):
        assert "kiln-data:/data" in SERVICES[name]["volumes"]
        assert SERVICES[name]["environment"]["KILN_DATA_DIR"] == "/data"


def test_prometheus_scrapes_the_api_with_the_mounted_config() -> None:
    (mount,) = SERVICES["prometheus"]["volumes"]
    source = ROOT / mount.split(":")[0]
    config = yaml.safe_load(source.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "api:8000" in targets


def test_pyproject_pins_torch_to_the_local_cpu_build() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.findall(r'"torch[^"]*"', text) == ['"torch==2.13.0"']
