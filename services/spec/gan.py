"""A GAN job's checks against its dataset: the two networks' shapes, and the options a GAN cannot take.

Keras' DCGAN example: the generator maps z ([latent_dim]) to a sample, the discriminator maps a sample to
one logit. Its conditional GAN example appends the one-hot class to z and, as extra channels, to every pixel
of the discriminator's input. Every mismatch is a 422 naming the network and the shape expected.
"""

from __future__ import annotations

from services.data.catalogue import DatasetInfo
from services.errors import InvalidSpec
from services.spec.base import Shape, fields_under, show
from services.spec.graph import Graph, resolve
from services.spec.job import JobSpec
from services.spec.model import ModelSpec
from services.spec.weights import penalized_argument


def sample_classes(spec: JobSpec, dataset: DatasetInfo) -> int:
    """The classes a conditional GAN appends (0 for an unconditional one)."""
    return dataset.n_classes if spec.gan.conditional else 0


def discriminator_input(sample: Shape, classes: int) -> Shape:
    """What the discriminator reads: the sample, with the one-hot class as extra channels (or extra values when flat)."""
    return (*sample[:-1], sample[-1] + classes)


def check_gan_against_dataset(spec: JobSpec, dataset: DatasetInfo) -> None:
    from services.spec.shapes import check_trainable  # shapes imports this module

    _check_options(spec, dataset)
    gan = spec.gan
    classes = sample_classes(spec, dataset)
    with fields_under("model.generator"):
        generator = resolve(gan.generator)
    with fields_under("model.discriminator"):
        discriminator = resolve(gan.discriminator)
    for graph, field, name in ((generator, "model.generator", "generator"), (discriminator, "model.discriminator", "discriminator")):
        if len(graph.inputs) != 1 or graph.inputs[0].dtype != "float32" or len(graph.outputs) != 1:
            raise InvalidSpec(f"the {name} takes one input of numbers and has one output", field=f"{field}.inputs")
        with fields_under(field):
            check_trainable(graph)
        _check_unpenalized(graph, field, name)
    wanted = (gan.latent_dim + classes,)
    if generator.inputs[0].shape != wanted:
        why = f"latent_dim {gan.latent_dim} + {classes} classes, one-hot" if classes else f"latent_dim {gan.latent_dim}"
        raise InvalidSpec(f"the generator takes z: its input_shape must be {list(wanted)} ({why}), not {list(generator.inputs[0].shape)}",
                          field=_input_field(gan.generator.inputs is None, "model.generator"))  # fmt: skip
    sample = generator.output.shape
    features = tuple(dataset.feature_shape)
    if sample not in (features, (*features, 1), (dataset.n_features,)):
        layouts = " or ".join(str(list(s)) for s in dict.fromkeys([features, (*features, 1), (dataset.n_features,)]))
        raise InvalidSpec(
            f"the generator outputs {list(sample)} but '{dataset.name}' samples are {list(features)}: end it with {layouts} "
            "(channels last, e.g. Reshape)",
            field=f"model.generator.{generator.output.field.removeprefix('model.')}",
        )
    expected = discriminator_input(sample, classes)
    if discriminator.inputs[0].shape != expected:
        why = f" (the generator's {list(sample)} with {classes} one-hot class values appended)" if classes else " (the generator's samples)"
        raise InvalidSpec(f"the discriminator reads {list(expected)}{why}, but its input_shape is {list(discriminator.inputs[0].shape)}",
                          field=_input_field(gan.discriminator.inputs is None, "model.discriminator"))  # fmt: skip
    _check_logit(discriminator, gan.discriminator)


def _input_field(sequential: bool, prefix: str) -> str:
    return f"{prefix}.input_shape" if sequential else f"{prefix}.inputs[0].shape"


def _check_unpenalized(graph: Graph, field: str, name: str) -> None:
    """A GAN's steps add no regularizer penalty and apply no constraint: refused rather than silently dropped."""
    for node in graph.by_index():
        if (argument := penalized_argument(node.layer)) is not None:
            raise InvalidSpec(f"the {name}'s layer '{node.name}' has {argument}: GANs train without regularizers or "
                              "constraints", field=f"{field}.{node.field.removeprefix('model.')}.{argument}")  # fmt: skip


def _check_logit(discriminator: Graph, model: ModelSpec) -> None:
    from services.spec.shapes import final_activation, output_activation

    output = discriminator.output
    field = f"model.discriminator.{output.field.removeprefix('model.')}"
    if output.shape != (1,):
        raise InvalidSpec(f"the discriminator maps a sample to one logit: it outputs {show(output.shape)}; end it with Dense(1)",
                          field=field)  # fmt: skip
    if output_activation(output.layer) == "linear" and final_activation(model) == "sigmoid":  # a sigmoid, then Dropout
        raise InvalidSpec("the discriminator's sigmoid must be its last layer's activation (or left out, for a logit)", field=field)
    if output_activation(output.layer) not in ("linear", "sigmoid"):
        raise InvalidSpec(f"the discriminator's last activation is '{output_activation(output.layer)}': use none (a logit) or sigmoid",
                          field=field)  # fmt: skip


def _check_options(spec: JobSpec, dataset: DatasetInfo) -> None:
    """What a GAN cannot take: it has no validation loss, learns from samples in the dataset's own range, and trains
    two networks with the non-saturating binary cross-entropy."""
    data, training = spec.data, spec.training
    if dataset.dtype == "text" or dataset.vocabulary_size:
        held = "text" if dataset.dtype == "text" else "token ids"
        raise InvalidSpec(f"a GAN draws samples of numbers; '{dataset.name}' holds {held}", field="data.dataset")
    if spec.gan.conditional and dataset.task != "classification":
        raise InvalidSpec(f"a conditional GAN draws samples of a class; '{dataset.name}' has no classes", field="model.conditional")
    refused = {
        "data.validation_split": (data.validation_split > 0, "a GAN has no validation loss: drop data.validation_split"),
        "data.normalization": (data.normalization != "none", "a generator draws in the data's own range: drop data.normalization"),
        "data.augmentation": (data.augmentation is not None, "data.augmentation applies to supervised jobs"),
        "data.noise": (data.noise is not None, "data.noise applies to autoencoders"),
        "training.loss": (training.loss != "binary_crossentropy", "a GAN trains on the non-saturating cross-entropy: drop training.loss"),
        "training.early_stopping": (training.early_stopping is not None, "a GAN has no loss to stop on: drop training.early_stopping"),
        "training.lr_schedule": (training.lr_schedule.name != "constant", "a GAN trains at constant rates: drop training.lr_schedule"),
        "training.metrics": (training.metrics is not None, "a GAN reports d_loss, g_loss, d_x and d_g_z: drop training.metrics"),
        "training.anomaly": (training.anomaly is not None, 'training.anomaly applies to "kind": "autoencoder"'),
        "training.fine_tune": (training.fine_tune is not None, "training.fine_tune unfreezes a base: GANs take none"),
    }  # fmt: skip
    for field, (bad, message) in refused.items():
        if bad:
            raise InvalidSpec(message, field=field)


def check_not_gan_options(spec: JobSpec) -> None:
    """The GAN-only training options, refused elsewhere."""
    training = spec.training
    for field, bad in (("discriminator_optimizer", training.discriminator_optimizer is not None),
                       ("label_smoothing", training.label_smoothing > 0), ("label_noise", training.label_noise > 0)):  # fmt: skip
        if bad:
            raise InvalidSpec(f'training.{field} trains a GAN\'s discriminator: set "kind": "gan"', field=f"training.{field}")
