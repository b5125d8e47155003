"""Pay torch's one-off start-up costs (kernel selection, autograd, the ONNX exporter) before the first job."""

from __future__ import annotations

import tempfile

import torch
from torch import nn


def warm_up(device: torch.device) -> None:
    """A few optimizer steps and one export of a tiny network: about a second, once per process."""
    network = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4)).to(device)
    optimizer = torch.optim.Adam(network.parameters())
    x, y = torch.randn(32, 8, device=device), torch.randint(0, 4, (32,), device=device)
    for _ in range(3):
        loss = nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        torch.onnx.export(
            network,
            (torch.zeros(2, 8),),
            f"{tmp}/warm.onnx",
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}},
            input_names=["input"],
        )
