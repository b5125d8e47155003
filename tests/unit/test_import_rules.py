"""The API process stays small: it never loads torch, and services never import an entrypoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROBE = """
import sys, tempfile
from fastapi.testclient import TestClient
from api.main import create_app
from services.config import Settings
from alembic import command
from alembic.config import Config
settings = Settings(data_dir=tempfile.mkdtemp())
config = Config("alembic.ini"); config.attributes["url"] = settings.database_url
command.upgrade(config, "head")
with TestClient(create_app(settings)) as client:
    client.get("/healthz"); client.get("/metrics"); client.get("/openapi.json")
    client.post("/v1/jobs", json={"model_name": "x"})
    client.post("/v1/models/x/versions/1/predict", json={"inputs": [[1.0]]})
heavy = ("torch", "sklearn", "services.training", "services.usecases.training", "worker.tasks")
loaded = sorted(m for m in sys.modules if m.startswith(heavy))
print("LOADED", loaded)
"""


def test_api_process_never_imports_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout


def _imports(folder: str) -> list[tuple[Path, str]]:
    pattern = re.compile(r"^\s*(?:from|import)\s+([\w.]+)", re.MULTILINE)
    return [(path, name) for path in (ROOT / folder).rglob("*.py") for name in pattern.findall(path.read_text())]


def test_services_import_no_entrypoint_or_web_framework() -> None:
    bad = [(p.name, n) for p, n in _imports("services") if n.split(".")[0] in {"api", "worker", "fastapi", "starlette", "celery"}]
    assert bad == []


def test_only_services_training_imports_torch() -> None:
    allowed = {ROOT / "services" / "training", ROOT / "services" / "usecases" / "training.py"}
    bad = [
        (str(p.relative_to(ROOT)), n)
        for folder in ("services", "api")
        for p, n in _imports(folder)
        if n.split(".")[0] == "torch" and not any(p == a or a in p.parents for a in allowed)
    ]
    assert bad == []
