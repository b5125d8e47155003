"""Torch modules for Keras layers on channels-last data.

Keras images are `(B, H, W, C)` and sequences `(B, T, F)`; torch convolutions want channels at
axis 1. `ChannelsFirst` moves the last axis to axis 1 and back: both moves are views, so a
convolution sees a channels_last-strided tensor (which oneDNN and cuDNN run natively) and
exported graphs keep Keras' layout, with transposes that onnxruntime folds away.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ChannelsFirst(nn.Module):
    """Runs `inner` with the channel axis moved from last to 1, then moves it back.

    `rank` counts the batch axis: 3 for sequences, 4 for images. The permutations are spelt
    with positive axes because the exported Transpose must not carry negative ones.
    """

    def __init__(self, inner: nn.Module, rank: int) -> None:
        super().__init__()
        self.inner = inner
        self.to_first = (0, rank - 1, *range(1, rank - 1))  # (B, *S, C) -> (B, C, *S)
        self.to_last = (0, *range(2, rank), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(self.to_first)).permute(self.to_last)


class Pad(nn.Module):
    """Zero padding given as (left, right, top, bottom), the order F.pad reads."""

    def __init__(self, amounts: tuple[int, ...]) -> None:
        super().__init__()
        self.amounts = amounts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.amounts)


class Crop2d(nn.Module):
    """Crops (top, bottom, left, right) rows/columns of a (B, C, H, W) tensor."""

    def __init__(self, top: int, bottom: int, left: int, right: int) -> None:
        super().__init__()
        self.box = (top, bottom, left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.box
        return x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape)


class GlobalPool(nn.Module):
    """Mean or max over the axes between batch and channels: (B, T, F) -> (B, F), (B, H, W, C) -> (B, C)."""

    def __init__(self, mode: str, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.mode, self.dims = mode, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims) if self.mode == "avg" else x.amax(dim=self.dims)


class Recurrent(nn.Module):
    """SimpleRNN, LSTM or GRU, one direction or both, returning the last state or the whole sequence."""

    def __init__(self, rnn: nn.RNNBase, *, dropout: float, return_sequences: bool, merge_mode: str) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn
        self.return_sequences = return_sequences
        self.merge_mode = merge_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(self.dropout(x))  # out: (B, T, dirs * H)
        if self.return_sequences:
            if self.rnn.bidirectional and self.merge_mode == "sum":
                forward, backward = out.chunk(2, dim=-1)
                return forward + backward
            return out
        h_n = state[0] if isinstance(state, tuple) else state  # (dirs, B, H): each direction's final state
        if not self.rnn.bidirectional:
            return h_n[0]
        return h_n[0] + h_n[1] if self.merge_mode == "sum" else torch.cat([h_n[0], h_n[1]], dim=-1)


class AddPositions(nn.Module):
    """A learned vector per position, added to a (B, T, F) sequence."""

    def __init__(self, length: int, features: int) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.empty(1, length, features))
        nn.init.trunc_normal_(self.positions, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.positions


class PatchEmbedding(nn.Module):
    """ViT stem: (B, H, W, C) -> non-overlapping patches projected to `dim` -> (B, N, dim) plus positions."""

    def __init__(self, channels: int, patch_size: int, dim: int, patches: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)
        self.positions = AddPositions(patches, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.project(x.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W) -> (B, dim, H/p, W/p)
        return self.positions(patches.flatten(2).transpose(1, 2))  # -> (B, N, dim)
