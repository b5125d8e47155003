"""The job spec language: Keras names, pure Python, no torch."""

from services.spec.model import (
    ActivationLayer,
    DataSpec,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    JobSpec,
    Layer,
    ModelSpec,
    OptimizerSpec,
    TrainingSpec,
)
from services.spec.shapes import Shape, check_job_against_dataset, infer_shapes

__all__ = [
    "ActivationLayer",
    "DataSpec",
    "DenseLayer",
    "DropoutLayer",
    "FlattenLayer",
    "JobSpec",
    "Layer",
    "ModelSpec",
    "OptimizerSpec",
    "Shape",
    "TrainingSpec",
    "check_job_against_dataset",
    "infer_shapes",
]
