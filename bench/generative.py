"""Generative networks judged, not assumed: a digits28 CNN classifier trained through Kiln judges Kiln's GAN, its
conditional GAN and its denoising autoencoder; the anomaly autoencoder is scored on held-out digits and on noise.

- GAN (examples/gan_digits28.json): 1,000 generated digits are classified; the figures are the mean top-class
  probability and the classes covered (predicted for at least 2% of the samples). Target: >= 9 of 10.
- Conditional GAN (examples/cgan_digits28.json): 1,000 digits, 100 asked for per class; the share the classifier
  agrees with the class asked for. Target: >= 90%.
- Denoising (examples/denoising_autoencoder_digits28.json): held-out digits with the noise it trained on; the
  reconstruction's error against the clean image, as a ratio to the noisy image's error. Below 1 removes noise.
- Anomaly detection (examples/anomaly_autoencoder_digits.json): the share of held-out digits flagged (about
  1 - percentile) and of uniform-noise images (about 100%).
- Speed: Kiln's wall time per GAN epoch against a hand-written PyTorch DCGAN loop on the same networks and rows
  (the same steps: one discriminator and one generator step per batch), as a ratio. Target: <= 1.10.

Everything runs in this process on the CPU, every model through `train_and_export` as a worker runs it, and every
sample through the exported ONNX file in onnxruntime, as serving runs it.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.data.builtins import load_builtin  # noqa: E402
from services.spec import JobSpec, check_job_against_dataset  # noqa: E402
from services.training.builder import build_network  # noqa: E402
from services.training.pipeline import ParityCheck, TrainingOutcome, train_and_export  # noqa: E402

SAMPLES, THREADS = 1000, 2
PARITY = ParityCheck(rows=64, atol=1e-4, rtol=1e-3)
CLASSIFIER = {
    "model_name": "judge", "data": {"dataset": "digits28"},
    "model": {"input_shape": [28, 28, 1], "layers": [
        {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"}, {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Conv2D", "filters": 64, "kernel_size": 3, "activation": "relu"}, {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "Flatten"}, {"type": "Dropout", "rate": 0.3}, {"type": "Dense", "units": 10, "activation": "softmax"}]},
    "training": {"loss": "sparse_categorical_crossentropy", "epochs": 12, "batch_size": 32,
                 "optimizer": {"name": "adam", "learning_rate": 0.002}},
}  # fmt: skip


def example(name: str, **training: Any) -> dict[str, Any]:
    body = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    body["training"] |= training
    return body


def train(body: dict[str, Any], folder: Path) -> tuple[TrainingOutcome, ort.InferenceSession]:
    spec = JobSpec.model_validate(body)
    data = load_builtin(spec.data.dataset)
    check_job_against_dataset(spec, data.info)
    path = folder / f"{spec.model_name}.onnx"
    outcome = train_and_export(spec, data, device=torch.device("cpu"), onnx_path=path, parity=PARITY, on_epoch_end=lambda r: None)
    return outcome, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def generated(session: ort.InferenceSession, latent_dim: int, labels: np.ndarray | None) -> np.ndarray:
    feeds = {"z": np.random.default_rng(2026).standard_normal((SAMPLES, latent_dim)).astype(np.float32)}
    if labels is not None:
        feeds["label"] = labels.reshape(-1, 1).astype(np.int64)
    (samples,) = session.run(None, feeds)
    return samples


def judge(classifier: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    (probabilities,) = classifier.run(None, {"input": images.reshape(-1, 28, 28, 1).astype(np.float32)})
    return probabilities


def hand_written_dcgan(body: dict[str, Any], epochs: int) -> float:
    """Median seconds per epoch (after the first) of a plain PyTorch loop over the example's two networks."""
    spec = JobSpec.model_validate(body)
    torch.manual_seed(0)
    generator = build_network(spec.gan.generator, fuse_output_activation=False).trainable()
    discriminator = build_network(spec.gan.discriminator, fuse_output_activation=True).trainable()
    training = spec.training
    g_opt = torch.optim.Adam(generator.parameters(), lr=training.optimizer.learning_rate, betas=(0.5, 0.999), eps=1e-7)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=training.optimizer.learning_rate, betas=(0.5, 0.999), eps=1e-7)
    x = torch.from_numpy(load_builtin("digits28").x_train.reshape(-1, 28, 28, 1).astype(np.float32))
    batch, latent = training.batch_size, spec.gan.latent_dim
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        generator.train()
        discriminator.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            real = x[order[start : start + batch]]
            n = len(real)
            fake = generator(torch.randn(n, latent))
            logits = torch.cat([discriminator(real), discriminator(fake.detach())]).reshape(-1)
            targets = torch.cat([torch.full((n,), 1.0 - training.label_smoothing), torch.zeros(n)])
            d_loss = F.binary_cross_entropy_with_logits(logits, targets)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            verdict = discriminator(fake).reshape(-1)
            g_loss = F.binary_cross_entropy_with_logits(verdict, torch.ones_like(verdict))
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        judged, judge_session = train(CLASSIFIER, work)
        classifier = judge_session
        print(f"judge: digits28 CNN, test accuracy {judged.metrics['test_accuracy']:.4f}")

        gan, session = train(example("gan_digits28"), work)
        probabilities = judge(classifier, generated(session, 32, None))
        shares = np.bincount(probabilities.argmax(axis=1), minlength=10) / SAMPLES
        covered = int((shares >= 0.02).sum())
        print(f"GAN: {gan.metrics['epochs']:.0f} epochs, {SAMPLES} samples: mean top-class probability "
              f"{probabilities.max(axis=1).mean():.3f}, classes covered {covered}/10 (target >= 9), "
              f"shares {' '.join(f'{s:.2f}' for s in shares)}")  # fmt: skip
        kiln_epoch = statistics.median(r.duration_s for r in gan.history[1:])

        cgan, session = train(example("cgan_digits28"), work)
        asked = np.arange(SAMPLES) % 10
        agreement = float((judge(classifier, generated(session, 32, asked)).argmax(axis=1) == asked).mean())
        print(f"conditional GAN: {cgan.metrics['epochs']:.0f} epochs, classifier agrees with the class asked for on "
              f"{agreement:.1%} of {SAMPLES} (target >= 90%)")  # fmt: skip

        body = example("denoising_autoencoder_digits28")
        _, session = train(body, work)
        clean = load_builtin("digits28").x_test.reshape(-1, 784).astype(np.float32)
        sigma = body["data"]["noise"]["gaussian"]
        noisy = (clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)).astype(np.float32)
        reconstruction = session.run(["reconstruction"], {"image": noisy})[0]
        ratio = float(np.square(reconstruction - clean).mean() / np.square(noisy - clean).mean())
        print(f"denoising: Gaussian sigma {sigma}, reconstruction error / noisy error against the clean image = {ratio:.3f}")

        anomaly, session = train(example("anomaly_autoencoder_digits"), work)
        assert anomaly.anomaly is not None
        threshold, test = anomaly.anomaly["threshold"], load_builtin("digits").x_test.astype(np.float32)
        noise = np.random.default_rng(0).uniform(0, 16, (1000, 64)).round().astype(np.float32)
        flagged = [float((_scores(session, rows) > threshold).mean()) for rows in (test, noise)]
        print(f"anomaly: {anomaly.anomaly['percentile']:g}th-percentile threshold flags {flagged[0]:.2%} of held-out digits "
              f"(about {100 - anomaly.anomaly['percentile']:g}%) and {flagged[1]:.1%} of uniform noise (about 100%)")  # fmt: skip

        epochs = 8
        base = hand_written_dcgan(copy.deepcopy(example("gan_digits28")), epochs)
        print(f"speed: GAN epoch on {THREADS} threads, hand-written PyTorch DCGAN loop {base * 1000:.0f} ms, "
              f"Kiln {kiln_epoch * 1000:.0f} ms, "
              f"Kiln / hand-written = {kiln_epoch / base:.3f} (target <= 1.10)")  # fmt: skip


def _scores(session: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    reconstruction = session.run(["reconstruction"], {"pixels": rows})[0]
    return np.square(reconstruction - rows).mean(axis=1)


if __name__ == "__main__":
    main()
