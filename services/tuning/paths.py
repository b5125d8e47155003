"""Paths into a job body: `training.optimizer.learning_rate`, `model.layers[0].units`."""

from __future__ import annotations

import copy
import re
from typing import Any

from services.errors import InvalidSpec

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


def parse(path: str) -> list[str | int]:
    """The keys and list indices of `path`, or InvalidSpec naming it."""
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _PART.fullmatch(piece)
        if match is None:
            raise InvalidSpec(f"'{path}' is not a path: expected names joined by dots, each with optional [index]es, "
                              "e.g. model.layers[0].units", field=f"search_space.{path}")  # fmt: skip
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return parts


def check(body: dict[str, Any], path: str) -> None:
    """That `path` names a value the job has (its defaults spelt out): InvalidSpec naming the path and where it stops."""
    node: Any = body
    walked = ""
    for part in parse(path):
        here = f"{walked}[{part}]" if isinstance(part, int) else f"{walked}.{part}" if walked else part
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = f"has {len(node)} item(s)" if isinstance(node, list) else "is not a list"
                raise InvalidSpec(f"'{path}' does not exist in the job: {walked or 'the job'} {size}", field=f"search_space.{path}")
        elif not isinstance(node, dict) or part not in node:
            if isinstance(node, dict):
                known = ", ".join(sorted(str(k) for k in node))
                why = f"{walked or 'the job'} has no '{part}' (it has {known})"
            else:
                why = f"{walked} is {'not set' if node is None else 'not an object'} in the job: give it there to search inside it"
            raise InvalidSpec(f"'{path}' does not exist in the job: {why}", field=f"search_space.{path}")
        node = node[part]
        walked = here
    if isinstance(node, dict | list):
        raise InvalidSpec(f"'{path}' names an object, not a value: search a number, string or boolean inside it",
                          field=f"search_space.{path}")  # fmt: skip


def value(body: dict[str, Any], path: str) -> Any:
    """The value at `path` (already checked)."""
    node: Any = body
    for part in parse(path):
        node = node[part]
    return node


def assign(body: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` with each path set to its value (every path already checked)."""
    out = copy.deepcopy(body)
    for path, value in values.items():
        *parents, last = parse(path)
        node: Any = out
        for part in parents:
            node = node[part]
        node[last] = value
    return out
