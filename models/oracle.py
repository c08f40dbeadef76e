"""Attribute oracle: a small CNN that regresses the procedural-face parameters from an image.

Part of the offline demo model set (issue 4). The oracle reads back the parameters of
``editing.demo.faces`` (smile, hair colour, glasses, skin tone, ...) from a 64 px face, so that a text
edit made with the demo generator can be *measured*: the edited attribute should move, the others
should not. It is deliberately independent of CLIP (it never sees text and is trained only on
renders), so it cannot share CLIP's blind spots. Not a port of anything upstream; the role is that of
the attribute classifiers used to score edits in StyleCLIP (Patashnik et al., ICCV 2021, section 7) and
in StyleSpace (Wu et al., CVPR 2021), here a plain VGG-style network (Simonyan & Zisserman, ICLR 2015).

Output layout: one value per dimension of ``editing.demo.faces.VECTOR_DIMS`` (``VECTOR_SIZE`` of them),
*raw*: logits for the ``onehot`` groups (softmax within a group) and ``binary`` dimensions (sigmoid),
the value itself for ``continuous`` and ``circular`` dimensions. ``editing.demo.oracle`` turns it into
attribute values. Weights are not loaded here: construct, then ``load_state_dict`` (strict).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ORACLE_INPUT_SIZE = 64  # images of any other size are resampled to this by oracle_input


def oracle_input(img: torch.Tensor, size: int = ORACLE_INPUT_SIZE) -> torch.Tensor:
    """Resample a batch of faces to the oracle's resolution.

    Downscaling averages areas (``F.interpolate(mode="area")``, exact box filtering for integer
    factors, like the renderer's own supersampling); upscaling is bilinear. A ``size`` px input is
    returned unchanged.

    Args:
        img: (B, 3, H, W) float in [-1, 1], an FFHQ-aligned face (square or not).
        size: the oracle's input resolution.
    Returns:
        (B, 3, size, size), same dtype and device.
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"img must be (B, 3, H, W), got {tuple(img.shape)}")
    h, w = img.shape[2:]
    if (h, w) == (size, size):
        return img
    if h >= size and w >= size:
        return F.interpolate(img, size=(size, size), mode="area")
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)


class ConvBlock(nn.Sequential):
    """conv3x3 (no bias) -> BatchNorm -> ReLU; keys ``0.weight``, ``1.{weight,bias,running_*}``."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        stride: int = 1,  # 2 halves H and W
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class AttributeOracle(nn.Module):
    """(B, 3, S, S) face in [-1, 1] -> (B, out_dim) raw attribute vector.

    ``len(widths)`` stages, each a stride-2 block followed by a stride-1 block, then the
    ``S / 2**len(widths)`` square feature map is flattened (position matters: the mouth and the eyes
    are always in the same place in an aligned face) into a hidden layer and the output layer.
    State-dict keys: ``features.{i}.{0,1}.*`` (blocks), ``head.0.*`` (hidden linear), ``head.1.*``
    (its BatchNorm), ``head.4.*`` (output linear).
    """

    def __init__(
        self,
        out_dim: int,  # size of the output vector (editing.demo.faces.VECTOR_SIZE)
        input_size: int = ORACLE_INPUT_SIZE,  # S, input resolution in pixels
        widths: Sequence[int] = (24, 48, 64, 96),  # channels of each stage
        hidden: int = 128,  # width of the hidden fully-connected layer
        dropout: float = 0.1,  # dropout before the output layer (training only)
    ):
        super().__init__()
        self.widths = tuple(int(c) for c in widths)
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        if input_size % 2 ** len(self.widths):
            raise ValueError(f"input_size must be a multiple of {2 ** len(self.widths)}, got {input_size}")
        self.out_dim = out_dim
        self.input_size = input_size
        side = input_size // 2 ** len(self.widths)
        blocks: list[nn.Module] = []
        prev = 3
        for c in self.widths:
            blocks += [ConvBlock(prev, c, stride=2), ConvBlock(c, c)]
            prev = c
        self.features = nn.Sequential(*blocks)
        # BatchNorm before the hidden ReLU: without it most hidden units die early in training
        # (measured: 84 % after 50 steps), starving the easy attributes of capacity.
        self.head = nn.Sequential(
            nn.Linear(prev * side * side, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        assert img.ndim == 4 and img.shape[1:] == (3, s, s), (
            f"expected (B, 3, {s}, {s}), got {tuple(img.shape)}"
        )
        x = self.features(img)  # (B, widths[-1], S / 2**n, S / 2**n)
        return self.head(x.flatten(1))  # (B, out_dim)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, widths={self.widths}, out_dim={self.out_dim}"
