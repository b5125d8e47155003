"""The 20-line baseline: FastAPI + onnxruntime, no registry, validation or metrics. `KILN_BENCH_MODEL` is the ONNX file."""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request

session = ort.InferenceSession(os.environ["KILN_BENCH_MODEL"], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict:
    body = await request.json()
    x = np.asarray(body["inputs"], dtype=np.float32)
    (outputs,) = session.run(None, {input_name: x})
    return {"outputs": outputs.tolist()}
