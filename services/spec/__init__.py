"""The job spec language: Keras names, pure Python, no torch."""

from services.spec.base import Shape, ShapeError
from services.spec.budget import Budget, Footprint, check_budget
from services.spec.graph import Graph, GraphInput, Node, resolve
from services.spec.job import (
    AugmentationSpec,
    DataSpec,
    DistributedSpec,
    EarlyStoppingSpec,
    GanSpec,
    JobSpec,
    NoiseSpec,
    OptimizerSpec,
    ScheduleSpec,
    TextSpec,
    TrainingSpec,
)
from services.spec.layers_conv import (
    Conv1DLayer,
    Conv2DLayer,
    Conv2DTransposeLayer,
    GlobalPooling1DLayer,
    GlobalPooling2DLayer,
    Pooling1DLayer,
    Pooling2DLayer,
    UpSampling2DLayer,
)
from services.spec.layers_core import (
    ActivationLayer,
    BatchNormalizationLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    LayerNormalizationLayer,
    ReshapeLayer,
)
from services.spec.layers_merge import ConcatenateLayer, MergeLayer
from services.spec.layers_sequence import (
    BidirectionalLayer,
    EmbeddingLayer,
    GRULayer,
    LSTMLayer,
    PatchEmbeddingLayer,
    PositionalEmbeddingLayer,
    SimpleRNNLayer,
    TransformerEncoderLayer,
)
from services.spec.model import InputSpec, Layer, ModelSpec
from services.spec.shapes import (
    check_job_against_dataset,
    final_activation,
    has_dynamic_time_axis,
    infer_layers,
    infer_shapes,
    input_dtype,
    output_activation,
)

__all__ = [
    "ConcatenateLayer", "NoiseSpec", "Graph", "GraphInput", "InputSpec", "MergeLayer", "Node", "resolve",
    "AugmentationSpec", "Budget", "DistributedSpec", "Footprint", "TextSpec", "check_budget", "infer_layers",
    "ActivationLayer", "BatchNormalizationLayer", "BidirectionalLayer", "Conv1DLayer", "Conv2DLayer",
    "Conv2DTransposeLayer", "DataSpec", "DenseLayer", "DropoutLayer", "EarlyStoppingSpec", "EmbeddingLayer",
    "FlattenLayer", "GRULayer", "GanSpec", "GlobalPooling1DLayer", "GlobalPooling2DLayer", "JobSpec", "LSTMLayer", "Layer",
    "LayerNormalizationLayer", "ModelSpec", "OptimizerSpec", "PatchEmbeddingLayer", "Pooling1DLayer", "Pooling2DLayer",
    "PositionalEmbeddingLayer", "ReshapeLayer", "ScheduleSpec", "Shape", "ShapeError", "SimpleRNNLayer",
    "TrainingSpec", "TransformerEncoderLayer", "UpSampling2DLayer", "check_job_against_dataset", "final_activation",
    "has_dynamic_time_axis", "infer_shapes", "input_dtype", "output_activation",
]  # fmt: skip
