"""Response schemas: one family per resource (`JobPublic`, `JobsPublic(data, count)`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from api.v2_codec import DATATYPES, MAX_RANK
from services.data.catalogue import DatasetInfo
from services.registry.entities import DatasetRecord, Job, JobState, ModelSummary, ModelVersion, Rollout


class EpochPublic(BaseModel):
    epoch: int
    loss: float
    val_loss: float | None
    metrics: dict[str, float]
    duration_s: float
    image: str | None = Field(default=None, description="A GAN's epoch: where its PNG of the fixed latent batch's samples is.")


class WarningPublic(BaseModel):
    epoch: int = Field(description="The epoch that gave it.")
    message: str


class JobSummary(BaseModel):
    id: uuid.UUID
    state: JobState
    model_name: str
    queue: str
    attempt: int
    error: str | None
    version: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    study_id: uuid.UUID | None = Field(default=None, description="The study whose trial this job runs.")
    trial_number: int | None = Field(default=None, description="Which trial of that study.")
    kind: str = Field(default="supervised", description="supervised, autoencoder or gan.")
    epoch: int = Field(default=0, description="The last finished epoch; 0 until the first ends.")
    epochs: int = Field(default=0, description="Epochs asked for.")

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        spec = job.spec
        epochs = (spec.get("training") or {}).get("epochs", 0)  # an odd stored spec spoils only its own row
        derived = {"kind": spec.get("kind", "supervised"), "epoch": job.epoch, "epochs": epochs if isinstance(epochs, int) else 0}
        return cls(**{name: getattr(job, name) for name in cls.model_fields if name not in derived}, **derived)


class JobPublic(JobSummary):
    cancel_requested: bool = Field(default=False, description="A cancel was asked; the job stops at its next batch.")
    lease_owner: str | None = Field(default=None, description="The worker running this attempt.")
    heartbeat_at: datetime | None = Field(default=None, description="When that worker last said it was alive.")
    checkpoint_epoch: int | None = Field(default=None, description="The epoch a re-delivered attempt resumes after.")
    history: list[EpochPublic]
    warnings: list[WarningPublic] = Field(default_factory=list, description="What training noticed: a GAN's instability, "
                                          "a non-finite loss.")  # fmt: skip

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        summary = JobSummary.of(job).model_dump()
        history = [
            EpochPublic(epoch=e.epoch, loss=e.train_loss, val_loss=e.val_loss, metrics=e.metrics, duration_s=e.duration_s,
                        image=f"/v1/jobs/{job.id}/epochs/{e.epoch}/image" if e.drawn else None)
            for e in job.history
        ]  # fmt: skip
        return cls(**summary, history=history,
                   cancel_requested=job.cancel_requested, lease_owner=job.lease_owner, heartbeat_at=job.heartbeat_at,
                   checkpoint_epoch=job.checkpoint_epoch, warnings=[WarningPublic(**w) for w in job.warnings])  # fmt: skip


class JobsPublic(BaseModel):
    data: list[JobSummary]
    count: int


class WeightPublic(BaseModel):
    version: int
    weight: int = Field(description="Relative: the version takes weight / total of the alias's requests.")
    share: float = Field(description="weight / total, from 0 to 1.")


class RolloutPublic(BaseModel):
    versions: list[WeightPublic] = Field(description="The versions the alias splits its requests between (one for a plain alias).")
    mirror: int | None = Field(description="The version that gets a copy of each request; its answers are never returned.")

    @classmethod
    def of(cls, rollout: Rollout) -> RolloutPublic:
        total = sum(weight for _, weight in rollout.weights)
        return cls(versions=[WeightPublic(version=v, weight=w, share=w / total) for v, w in rollout.weights], mirror=rollout.mirror)


class AliasPublic(RolloutPublic):
    model: str
    alias: str
    version: int = Field(description="The version taking the most requests; the only one for a plain alias.")


class ModelPublic(BaseModel):
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int
    aliases: dict[str, int] | None = Field(default=None, description="Each alias's version (a split alias: the one taking the "
                                           "most requests); `rollouts` has the split and the mirror.")  # fmt: skip
    rollouts: dict[str, RolloutPublic] | None = None

    @classmethod
    def of(cls, model: ModelSummary, aliases: dict[str, int] | None = None, rollouts: dict[str, Rollout] | None = None) -> ModelPublic:
        return cls(name=model.name, created_at=model.created_at, latest_version=model.latest_version,
                   version_count=model.version_count, aliases=aliases,
                   rollouts={a: RolloutPublic.of(r) for a, r in rollouts.items()} if rollouts is not None else None)  # fmt: skip


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class ArtifactPublic(BaseModel):
    sha256: str
    size: int


def _summary(preprocessing: dict[str, Any] | None) -> dict[str, Any] | None:
    if not preprocessing or preprocessing.get("kind") != "text":
        return preprocessing
    return {"kind": "text", "sequence_length": preprocessing["sequence_length"], "vocabulary_size": len(preprocessing["vocabulary"])}


class VersionPublic(BaseModel):
    model: str
    version: int
    job_id: uuid.UUID | None
    artifact: ArtifactPublic
    signature: dict[str, Any]
    metrics: dict[str, Any]
    spec: dict[str, Any]
    hyperparameters: dict[str, Any]
    dataset: dict[str, Any]
    labels: list[str] | None
    preprocessing: dict[str, Any] | None  # the vocabulary itself is in the ONNX metadata and the artifact
    serving: dict[str, Any] | None
    task: str | None = Field(default=None, description="classifier, regressor, autoencoder (which answers detect) or generator "
                             "(a GAN's, which answers generate); null for an uploaded ONNX model")  # fmt: skip
    anomaly: dict[str, Any] | None = Field(default=None, description="An autoencoder's reconstruction-error percentiles and threshold.")
    weights: ArtifactPublic | None = Field(default=None, description="The PyTorch state dict (safetensors) at .../weights; "
                                           "null for uploads and versions registered before weights were kept.")  # fmt: skip
    parent: dict[str, Any] | None = Field(default=None, description="Transfer learning: the base version it copied layers "
                                          "from, and which of them were frozen.")  # fmt: skip
    generation: dict[str, Any] | None = Field(default=None, description="A generator's latent_dim, classes, labels, sample_shape "
                                              "and value_range.")  # fmt: skip
    aliases: list[str]
    created_at: datetime

    @classmethod
    def of(cls, v: ModelVersion, aliases: dict[str, int]) -> VersionPublic:
        return cls(
            model=v.model_name,
            version=v.version,
            job_id=v.job_id,
            artifact=ArtifactPublic(sha256=v.artifact_sha256, size=v.artifact_size),
            signature=v.signature,
            metrics=v.metrics,
            spec=v.spec,
            hyperparameters=v.hyperparameters,
            dataset=v.dataset,
            labels=v.labels,
            preprocessing=_summary(v.preprocessing),
            serving=v.serving,
            task=v.task,
            anomaly=v.anomaly,
            generation=v.generation,
            parent=v.parent,
            weights=ArtifactPublic(sha256=v.weights_sha256, size=v.weights_size or 0) if v.weights_sha256 else None,
            aliases=sorted(alias for alias, number in aliases.items() if number == v.version),
            created_at=v.created_at,
        )


class AliasedVersionPublic(VersionPublic):
    """What moving an alias answers: the version it now points at (a split: the one taking the most requests), and its split."""

    rollout: RolloutPublic


class VersionsPublic(BaseModel):
    data: list[VersionPublic]
    count: int


class PredictRequest(BaseModel):
    inputs: list[Any] | dict[str, list[Any]] = Field(
        description="One row per sample, each shaped like the model's input; for a model with several inputs, "
        'an object naming each: {"x": rows, "y": rows}.'
    )
    output: str | None = Field(
        default=None,
        description="Which of the model's outputs to return (default: the first, "
        "the one trained on); a functional model's extra outputs are its embeddings or bottlenecks.",
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    outputs: list[Any]
    labels: list[str] | None = Field(default=None, description="The predicted class name of each row, for classifiers.")


class DatasetPublic(BaseModel):
    id: str  # the name of a built-in, the uuid of an upload; either goes in a job's data.dataset
    name: str
    source: str  # "builtin" or "upload"
    format: str
    n_samples: int
    feature_shape: list[int]
    dtype: str
    target: dict[str, Any]
    sha256: str | None = None
    size: int | None = None
    created_at: datetime | None = None

    @classmethod
    def of_upload(cls, record: DatasetRecord) -> DatasetPublic:
        return cls(
            id=str(record.id), name=record.name, source="upload", format=record.format, n_samples=record.n_samples,
            feature_shape=list(record.feature_shape), dtype=record.dtype, target=record.target, sha256=record.sha256,
            size=record.size, created_at=record.created_at,
        )  # fmt: skip

    @classmethod
    def of_builtin(cls, info: DatasetInfo) -> DatasetPublic:
        target: dict[str, Any] = (
            {"kind": "classification", "class_names": list(info.class_names)}
            if info.task == "classification"
            else {"kind": "regression", "n_targets": info.n_targets}
        )
        return cls(id=info.name, name=info.description, source="builtin", format="builtin", n_samples=info.n_samples,
                   feature_shape=list(info.feature_shape), dtype=info.dtype, target=target)  # fmt: skip


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


# The Open Inference Protocol v2 infer bodies. The hot path parses them itself (api.v2_codec); these
# models document them in OpenAPI, so clients and schemathesis see their exact shape.
_PARAMETERS = Field(default=None, description="Free-form parameters, such as binary_data_size or binary_data_output.")
_DATATYPE = Field(description="The tensor's element type.", json_schema_extra={"enum": list(DATATYPES)})
_SHAPE = Field(description="The size of each dimension, outermost first.", max_length=MAX_RANK)


class RequestInput(BaseModel):
    name: str = Field(min_length=1, description="The model input this tensor feeds.")
    shape: list[Annotated[int, Field(ge=0)]] = _SHAPE
    datatype: str = _DATATYPE
    parameters: dict[str, Any] | None = _PARAMETERS
    data: list[Any] = Field(description="The values, flat or nested, in row-major order (binary tensors follow the JSON header instead).")


class RequestOutput(BaseModel):
    name: str = Field(description="A model output to return; by default every output is returned.")
    parameters: dict[str, Any] | None = _PARAMETERS


class InferenceRequest(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{"id": "1", "inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [[0.5, 1.0, 1.5, 2.0]]}]}]}}  # fmt: skip
    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = _PARAMETERS
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int] = _SHAPE
    datatype: str = _DATATYPE
    parameters: dict[str, Any] | None = _PARAMETERS
    data: list[Any] | None = Field(default=None, description="The values, flat in row-major order (absent for binary data).")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = _PARAMETERS
    outputs: list[ResponseOutput]


class InferenceError(BaseModel):
    error: str
    request_id: str | None = None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its nested models inlined: an OpenAPI $ref resolves from the document's root."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    result: dict[str, Any] = inline(schema)
    return result


def _v2_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": inline_schema(InferenceError)}}}


V2_INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {"content": {"application/json": {"schema": inline_schema(InferenceRequest)}}, "required": True},
    "responses": {
        "200": {
            "description": "The outputs: JSON, or with binary_data the JSON header then the raw tensors (Inference-Header-Content-Length).",
            "content": {
                "application/json": {"schema": inline_schema(InferenceResponse)},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },  # fmt: skip
        "400": _v2_error("The body does not fit the protocol or the model's inputs; the message names the field."),
        "404": _v2_error("No such model or version."),
    },
}
