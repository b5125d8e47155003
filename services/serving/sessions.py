"""onnxruntime sessions, loaded once per artifact and kept in a bounded LRU cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.serving.signature import Signature, read_signature


def session_options() -> ort.SessionOptions:
    """Options chosen for many small concurrent requests rather than one large one.

    One intra-op thread per run: the API serves requests on several threads already, and for
    models of this size splitting one run across threads costs more in hand-off than it saves.
    Full graph optimisation folds constants and fuses MatMul+Add once, at load time.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=session_options(), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class LoadedModel:
    session: ort.InferenceSession
    signature: Signature

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run([t.name for t in self.signature.outputs], inputs)


def _warm_up(model: LoadedModel) -> None:
    """One run on zeros, so the first real request does not pay for lazy initialisation."""
    feeds = {t.name: np.zeros([1 if d == -1 else d for d in t.shape], dtype=t.dtype) for t in model.signature.inputs}
    model.run(feeds)


class OnnxSessionCache:
    """At most `capacity` sessions, keyed by artifact sha256, least recently used evicted first."""

    def __init__(self, *, capacity: int, path_for: Callable[[str], Path], on_size: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self._path_for = path_for
        self._on_size = on_size or (lambda size: None)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, sha256: str) -> LoadedModel | None:
        """The loaded model, or None if it is not loaded (never loads: safe on the event loop)."""
        with self._lock:
            model = self._models.get(sha256)
            if model is not None:
                self._models.move_to_end(sha256)
            return model

    def get(self, sha256: str) -> LoadedModel:
        """The loaded model, loading and warming it on a miss (this blocks: call it off the event loop)."""
        model = self.cached(sha256)
        if model is not None:
            return model
        loaded = self._load(sha256)  # outside the lock: loading one model must not stall the others
        with self._lock:
            model = self._models.setdefault(sha256, loaded)
            self._models.move_to_end(sha256)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            self._on_size(len(self._models))
            return model

    def _load(self, sha256: str) -> LoadedModel:
        session = load_session(self._path_for(sha256))
        model = LoadedModel(session, read_signature(session))
        _warm_up(model)
        return model

    def __len__(self) -> int:
        return len(self._models)
