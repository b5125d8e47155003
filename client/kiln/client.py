"""`kiln.Client`: every call Kiln's REST API offers a person, as Python."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.http import Http
from kiln.inputs import rows_of
from kiln.results import Dataset, Job, Prediction, Study, Version


class Client:
    """A Kiln server: `url` (default KILN_URL, else http://127.0.0.1:8000) and `api_key` (default KILN_API_KEY, else
    ./var/api-key when the server is this machine)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.http = Http(url, api_key, timeout=timeout)

    @property
    def url(self) -> str:
        return self.http.url

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Jobs.
    def train(self, spec: dict[str, Any] | str | Path, *, name: str | None = None) -> Job:
        """Submit a job (a body, or a JSON file's path); sent with an Idempotency-Key, so a retried POST trains once."""
        body = _body(spec)
        if name:
            body["model_name"] = name
        raw = self.http.json("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}, idempotent=True)
        return Job.of(raw, self)

    def job(self, job_id: str) -> Job:
        return Job.of(self.http.json("GET", f"/v1/jobs/{job_id}"), self)

    def jobs(self, *, state: str | None = None, limit: int = 50) -> list[Job]:
        params = {"limit": limit} | ({"state": state} if state else {})
        return [Job.of(j, self) for j in self.http.json("GET", "/v1/jobs", params=params)["data"]]

    def cancel(self, job_id: str) -> Job:
        return Job.of(self.http.json("POST", f"/v1/jobs/{job_id}/cancel", idempotent=True), self)

    # Studies.
    def study(self, spec: dict[str, Any] | str | Path) -> Study:
        return Study.of(self.http.json("POST", "/v1/studies", json=_body(spec)))

    def get_study(self, study_id: str) -> Study:
        return Study.of(self.http.json("GET", f"/v1/studies/{study_id}"))

    # Models and versions.
    def models(self) -> list[dict[str, Any]]:
        return list(self.http.json("GET", "/v1/models")["data"])

    def versions(self, name: str) -> list[Version]:
        return [Version.of(v) for v in self.http.json("GET", f"/v1/models/{name}/versions")["data"]]

    def version(self, name: str, version: int | None = None, alias: str | None = None) -> Version:
        """A version by number, by alias, or the one predict serves by default (`production`, else the latest)."""
        if version is None:
            model = self.http.json("GET", f"/v1/models/{name}")
            aliases = model.get("aliases") or {}
            version = aliases.get(alias) if alias else aliases.get("production", model.get("latest_version"))
            if version is None:
                raise KilnError(f"model '{name}' has {'no alias ' + repr(alias) if alias else 'no versions'}", code="not_found")
        return Version.of(self.http.json("GET", f"/v1/models/{name}/versions/{version}"))

    def set_alias(self, name: str, alias: str, version: int | None = None, *, weights: dict[int, int] | None = None,
                  mirror: int | None = None) -> Version:  # fmt: skip
        """Point an alias at `version`, or split it by relative `weights` ({3: 90, 4: 10}); `mirror` gets a copy of each
        request. Returns the version taking the most requests (its `raw["rollout"]` has the split)."""
        body: dict[str, Any] = {"version": version} if weights is None else {
            "versions": [{"version": v, "weight": w} for v, w in weights.items()]}  # fmt: skip
        if mirror is not None:
            body["mirror"] = mirror
        return Version.of(self.http.json("PUT", f"/v1/models/{name}/aliases/{alias}", json=body))

    def download(self, name: str, version: int, path: str | Path) -> Path:
        """The version's ONNX file, written to `path` (through a temporary file, so a cut download leaves nothing)."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.part")
        with self.http.session.stream("GET", f"/v1/models/{name}/versions/{version}/artifact") as response:
            if response.status_code >= 400:
                response.read()
                raise KilnError.of(response.status_code, response.json())
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        partial.replace(target)
        return target

    # Serving.
    def predict(self, model: str, x: Any, *, version: int | None = None, alias: str | None = None) -> Prediction:
        """Predict rows: a numpy array or list, a string of text, or a path to a .npy, .csv or image file (resized and scaled
        to the model's input as training saw it). The outputs come back as an array, with label names for a classifier."""
        target = self.version(model, version, alias)  # how to read `x`; a split alias may be served by another version
        raw = self.http.json("POST", f"{_served_by(model, version, alias)}/predict", json={"inputs": rows_of(x, target)},
                             idempotent=True)  # fmt: skip
        return Prediction.of(raw, target.labels)

    def detect(self, model: str, x: Any, *, version: int | None = None, alias: str | None = None,
               threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
        target = self.version(model, version, alias)
        body = {"inputs": rows_of(x, target)} | ({"threshold": threshold} if threshold is not None else {})
        return dict(self.http.json("POST", f"{_served_by(model, version, alias)}/detect", json=body, idempotent=True))

    def generate(self, model: str, *, n: int = 16, seed: int | None = None, labels: list[int | str] | None = None,
                 version: int | None = None, png: bool = False) -> np.ndarray | bytes:  # fmt: skip
        """A generator's samples as an array (n, *sample_shape), or with `png` the server's grid of them as PNG bytes."""
        path = f"/v1/models/{model}/versions/{version}/generate" if version else f"/v1/models/{model}/generate"
        body = {"n": n} | ({"seed": seed} if seed is not None else {}) | ({"labels": labels} if labels else {})
        headers = {"Accept": "image/png"} if png else {}
        response = self.http.request("POST", path, json=body, headers=headers, idempotent=True)
        return response.content if png else np.asarray(response.json()["outputs"], dtype=np.float32)

    # Datasets.
    def upload(self, path: str | Path, *, progress: Callable[[int, int], None] | None = None, **options: str) -> Dataset:
        """Upload a CSV, text CSV, NPZ or image ZIP, streamed from disk (never read whole); `options` are the form's fields
        (target, format, text_column, image_size, task, name); `progress(sent, total)` is called as it goes."""
        source = Path(path)
        total = source.stat().st_size
        with open(source, "rb") as raw:
            reader = _Counting(raw, total, progress)
            files = {"file": (source.name, reader, "application/octet-stream")}
            response = self.http.request("POST", "/v1/datasets", files=files, data={k: str(v) for k, v in options.items()},
                                         idempotent=False, timeout=None)  # fmt: skip
        return Dataset.of(response.json())

    def datasets(self) -> list[Dataset]:
        return [Dataset.of(d) for d in self.http.json("GET", "/v1/datasets")["data"]]


def _body(spec: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    try:
        return dict(json.loads(Path(spec).read_text()))
    except (OSError, ValueError) as err:
        raise KilnError(f"cannot read the spec {spec}: {err}", code="invalid_file") from err


class _Counting:
    """A file that reports how much of it has been read (httpx reads it in chunks as it sends)."""

    def __init__(self, raw: Any, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.raw, self.total, self.progress, self.sent = raw, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.sent += len(chunk)
        if self.progress is not None:
            self.progress(self.sent, self.total)
        return bytes(chunk)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())

    def fileno(self) -> int:
        return int(self.raw.fileno())


def _served_by(model: str, version: int | None, alias: str | None) -> str:
    """The path a call goes to: a version, or an alias (or the default), so the server picks within a split."""
    if version is not None:
        return f"/v1/models/{model}/versions/{version}"
    return f"/v1/models/{model}/aliases/{alias}" if alias else f"/v1/models/{model}"
