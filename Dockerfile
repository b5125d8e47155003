# syntax=docker/dockerfile:1
# One Dockerfile, two targets: `api` (no torch: onnxruntime and numpy only) and `worker` (torch).
# CPU torch by default; for CUDA build the worker with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KILN_DATA_DIR=/data
RUN useradd --create-home --uid 1000 kiln && mkdir /data && chown kiln /data
WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY api ./api
COPY worker ./worker
COPY services ./services
COPY migrations ./migrations
COPY examples ./examples

FROM base AS api
RUN pip install .
USER kiln
EXPOSE 8000
CMD ["python", "-m", "api"]

FROM base AS worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX_URL} torch==2.13.0 && pip install '.[train]'
USER kiln
EXPOSE 9101
CMD ["python", "-m", "worker"]
