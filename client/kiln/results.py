"""Typed results: what the server answers, with the handful of fields people read named, and the rest in `.raw`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.client import Client

FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Job:
    id: str
    model_name: str
    state: str
    epoch: int
    epochs: int
    version: int | None
    error: str | None
    history: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)
    client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, raw: dict[str, Any], client: Client | None = None) -> Job:
        return cls(raw["id"], raw["model_name"], raw["state"], raw.get("epoch", 0), raw.get("epochs", 0), raw.get("version"),
                   raw.get("error"), raw.get("history", []), raw, client)  # fmt: skip

    @property
    def done(self) -> bool:
        return self.state in FINAL

    def _client(self) -> Client:
        if self.client is None:
            raise KilnError("this Job is not bound to a Client")
        return self.client

    def refresh(self) -> Job:
        return self._client().job(self.id)

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's event stream (`epoch`, `warning`, `state`, `end`), resumed after a dropped connection."""
        return self._client().http.events(f"/v1/jobs/{self.id}/events")

    def cancel(self) -> Job:
        return self._client().cancel(self.id)

    def wait(self, *, progress: bool = False, timeout: float = 3600.0) -> Job:
        """Until the job ends (following its events); with `progress`, a bar per epoch on stderr. The finished Job."""
        if progress:
            from kiln.progress import follow

            return follow(self, self._client())
        deadline = time.monotonic() + timeout
        for name, data in self.events():
            if name == "end":
                return Job.of(data, self.client)
            if time.monotonic() > deadline:
                break
        return self.refresh()


@dataclass
class Version:
    model: str
    version: int
    task: str | None
    metrics: dict[str, Any]
    labels: list[str] | None
    signature: dict[str, Any]
    aliases: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Version:
        return cls(raw["model"], raw["version"], raw.get("task"), raw.get("metrics", {}), raw.get("labels"), raw.get("signature", {}),
                   raw.get("aliases", []), raw)  # fmt: skip

    @property
    def input_shape(self) -> list[int]:
        """The first input's shape without the batch axis."""
        return list(self.signature["inputs"][0]["shape"][1:])

    @property
    def input_range(self) -> list[float] | None:
        """The values an image's pixels took in training ([0, 1], or [0, 16] for `digits`); None for other data."""
        return (self.raw.get("dataset") or {}).get("input_range")


@dataclass
class Dataset:
    id: str
    name: str
    n_samples: int
    feature_shape: list[int]
    target: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Dataset:
        return cls(raw["id"], raw["name"], raw["n_samples"], raw["feature_shape"], raw.get("target", {}), raw)


@dataclass
class Study:
    id: str
    study_name: str
    state: str
    best_trial: int | None
    best_version: int | None
    trials: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Study:
        return cls(raw["id"], raw["study_name"], raw["state"], raw.get("best_trial"), raw.get("best_version"), raw.get("trials", []), raw)


@dataclass
class Prediction:
    """A predict answer: the outputs as an array, and each row's label name for a classifier."""

    model: str
    version: int
    outputs: np.ndarray
    labels: list[str] | None
    class_names: list[str] | None = None  # every class, in output order (for a table of probabilities)

    @classmethod
    def of(cls, raw: dict[str, Any], class_names: list[str] | None) -> Prediction:
        return cls(raw["model"], raw["version"], np.asarray(raw["outputs"], dtype=np.float64), raw.get("labels"), class_names)
