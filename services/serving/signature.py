"""A model's input/output signature, read from its ONNX graph, and the check of a request against it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from services.errors import InvalidInput

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32, int64 ...
    shape: tuple[int, ...]  # -1 marks a dynamic axis

    def describe(self, rows: str = "N") -> str:
        dims = [rows if d == -1 and i == 0 else str(d) for i, d in enumerate(self.shape)]
        return f"({', '.join(dims)}) {self.dtype}"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(t) | {"shape": list(t.shape)} for t in self.inputs],
            "outputs": [asdict(t) | {"shape": list(t.shape)} for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        def tensors(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)

        return cls(tensors(data["inputs"]), tensors(data["outputs"]))


def _tensor(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)


def read_signature(session: ort.InferenceSession) -> Signature:
    """The signature onnxruntime sees: symbolic dimensions become -1."""
    return Signature(tuple(map(_tensor, session.get_inputs())), tuple(map(_tensor, session.get_outputs())))


def check_input(spec: TensorSpec, array: np.ndarray) -> None:
    """Raise InvalidInput unless `array` has the dtype and the fixed dimensions `spec` asks for."""
    fits = array.ndim == len(spec.shape) and all(d in (-1, got) for d, got in zip(spec.shape, array.shape, strict=False))
    if not fits or array.dtype != np.dtype(spec.dtype):
        got_dims = ["N" if i == 0 else str(d) for i, d in enumerate(array.shape)] if array.ndim else []
        got = f"({', '.join(got_dims)}) {array.dtype}"
        raise InvalidInput(f"expected {spec.describe()}, got {got}", field="inputs")
