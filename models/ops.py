"""Shared building blocks of the StyleGAN2 family, in pure PyTorch.

Equalized-learning-rate linear layers, the fused bias + leaky ReLU, pixel norm and a reference
``upfirdn2d`` (upsample, FIR filter, downsample) that runs on any device. Numerically these follow
rosinality/stylegan2-pytorch (``model.py``, ``op/upfirdn2d.py`` native path, ``op/fused_act.py``)
so that checkpoints in that format produce the same images; no compiled extension is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def fused_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor, negative_slope: float = LRELU_SLOPE, scale: float = LRELU_GAIN
) -> torch.Tensor:
    """leaky_relu(x + bias) * scale, the bias broadcast over dim 1 (or the last dim for 2-D/3-D input
    as upstream does for linear layers: for (B, C) the channel axis is dim 1, for (B, n, C) the last)."""
    if x.ndim == 3:
        bias = bias.view(1, 1, -1)
    else:
        bias = bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x + bias.to(x.dtype), negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU + gain, with the bias stored as ``bias`` (C,)."""

    def __init__(
        self,
        channels: int,  # number of channels (size of the bias)
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """x * rsqrt(mean(x^2, dim=1) + 1e-8). For (B, n, C) input this normalises over dim 1, as the
    StyleCLIP mapper does upstream (a quirk kept for checkpoint compatibility)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate.

    The stored weight is multiplied at run time by ``lr_mul / sqrt(in_dim)`` and the stored bias by
    ``lr_mul``; with ``activation=True`` a fused leaky ReLU (gain sqrt 2) follows.
    """

    def __init__(
        self,
        in_dim: int,  # input features
        out_dim: int,  # output features
        bias: bool = True,  # learnable bias
        bias_init: float = 0.0,  # initial bias value (1 for style modulations)
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        activation: bool = False,  # apply fused leaky ReLU
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale
        if self.activation:
            out = F.linear(x, weight)
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


def make_kernel(k: list[int] | torch.Tensor) -> torch.Tensor:
    """A normalised 2-D FIR kernel: outer product of a 1-D kernel, summing to 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with ``kernel`` (flipped, i.e. true convolution),
    downsample. ``x`` is (B, C, H, W); the same padding is used on both axes, as in rosinality."""
    pad0, pad1 = pad
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        out = out.reshape(b * c, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(b * c, 1, h * up, w * up)
    out = F.pad(out, [max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    out = out[
        :, :, max(-pad0, 0) : out.shape[2] - max(-pad1, 0), max(-pad0, 0) : out.shape[3] - max(-pad1, 0)
    ]
    weight = torch.flip(kernel, [0, 1]).view(1, 1, kh, kw).to(dtype=out.dtype, device=out.device)
    out = F.conv2d(out, weight)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[2], out.shape[3])
