"""The client package stands alone: it imports nothing of the server's, and depends on httpx, rich, typer and numpy only."""

from __future__ import annotations

import ast
import tomllib

from tests.conftest import ROOT

CLIENT = ROOT / "client"


def test_the_client_imports_nothing_from_the_server() -> None:
    sources = sorted((CLIENT / "kiln").rglob("*.py"))
    assert len(sources) >= 5
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in ("api", "services", "worker", "tests"), f"{path.name} imports {name}"


def test_its_dependencies_are_httpx_rich_typer_and_numpy_with_plot_extras() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert sorted(d.split("==")[0] for d in project["dependencies"]) == ["httpx", "numpy", "rich", "typer"]
    assert sorted(d.split("==")[0] for d in project["optional-dependencies"]["plot"]) == ["pillow", "plotext"]
    assert project["scripts"] == {"kiln": "kiln.cli:main"}
