"""GAN inversion with e4e: aligned face → 256 px → encoder → W+ (incl. latent_avg) → reconstruction.

Paper: Tov et al., "Designing an Encoder for StyleGAN Image Manipulation" (SIGGRAPH 2021).
Compatible with omertov/encoder4editing ``models/psp.py`` (inference path of ``pSp.forward`` with
``input_code=False``, ``randomize_noise=False``): the encoder's codes are offset by the
checkpoint's ``latent_avg`` and decoded with the generator's fixed noise buffers.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from editing.synthesis import pil_to_tensor

ENCODER_SIZE = 256  # e4e's input resolution


def encode(encoder: nn.Module, img: torch.Tensor, latent_avg: torch.Tensor) -> torch.Tensor:
    """W+ codes of faces.

    Args:
        encoder: an e4e ``Encoder4Editing`` returning (B, n_latent, 512) codes without latent_avg.
        img: (B, 3, S, S) float in [-1, 1], FFHQ-aligned faces; S is the encoder's ``input_size``
            (256 for the official e4e).
        latent_avg: (512,) or (n_latent, 512), the checkpoint's average latent.
    Returns:
        (B, n_latent, 512) float32 W+.
    """
    size = getattr(encoder, "input_size", ENCODER_SIZE)
    if img.ndim != 4 or img.shape[1:] != (3, size, size):
        raise ValueError(f"img must be (B, 3, {size}, {size}), got {tuple(img.shape)}")
    codes = encoder(img)  # (B, n_latent, 512)
    return (codes.float() + latent_avg.to(codes.device, torch.float32)).float()


def face_to_tensor(
    aligned: Image.Image, device: torch.device | str = "cpu", size: int = ENCODER_SIZE
) -> torch.Tensor:
    """An aligned face (any size) to the encoder's (1, 3, size, size) input in [-1, 1]."""
    return pil_to_tensor(aligned, size).to(device)
