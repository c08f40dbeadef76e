"""Conversions between generator tensors, PIL images and latent files.

Images in the networks are float NCHW in [-1, 1] (``img``); images for people are PIL RGB
(``image``). Conversions round like the reference repos (``(x + 1) / 2 * 255``, clamped, rounded).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tensor_to_pil(img: torch.Tensor) -> Image.Image | list[Image.Image]:
    """Generator output to PIL.

    Args:
        img: (3, H, W) or (B, 3, H, W) float in [-1, 1] (values outside are clamped).
    Returns:
        One PIL RGB image for 3-D input or B == 1, else a list.
    """
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"img must be (B, 3, H, W), got {tuple(img.shape)}")
    arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(a, "RGB") for a in arr]
    return images[0] if len(images) == 1 else images


def pil_to_tensor(
    image: Image.Image, size: int | None = None, resample: int = Image.BILINEAR
) -> torch.Tensor:
    """PIL to a (1, 3, size, size) float32 tensor in [-1, 1], resized when needed.

    The default resampling is PIL's (antialiased) bilinear, which is what e4e's
    ``transforms.Resize((256, 256))`` applies to PIL images upstream.
    """
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), resample)
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def save_latent(path: str | os.PathLike, w_plus: torch.Tensor) -> None:
    """Write a W+ latent as ``.npy`` float32, shape (18, 512) for one face or (B, 18, 512)."""
    arr = w_plus.detach().float().cpu().numpy()
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    np.save(Path(path), arr, allow_pickle=False)


def load_latent(path: str | os.PathLike, n_latent: int, style_dim: int = 512) -> torch.Tensor:
    """Read a W+ ``.npy`` (n_latent, 512), (1, n_latent, 512) or a W (512,) broadcast to W+.

    Returns:
        (1, n_latent, style_dim) float32.
    Raises:
        ValueError: the file is not a latent of this generator's shape, or holds NaN/inf.
    """
    try:
        arr = np.load(Path(path), allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npy latent ({exc})") from exc
    if arr.ndim == 1:
        arr = np.broadcast_to(arr, (n_latent, arr.shape[0]))
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (n_latent, style_dim):
        raise ValueError(f"{path} holds shape {arr.shape}; this generator needs ({n_latent}, {style_dim})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)
