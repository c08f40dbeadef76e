"""CLIP ViT-B/32 through ``transformers``, with StyleCLIP's differentiable image preprocessing.

The OpenAI weights are used as ``openai/clip-vit-base-patch32`` in transformers format (never the
``clip`` package, which imports torchvision). Image preprocessing follows StyleCLIP
(orpatashnik/StyleCLIP ``criteria/clip_loss.py``): the generator's image in [-1, 1] is upsampled
×7 with nearest neighbour and average-pooled by ``size / 32`` to 224 px, which is an exact area
resampling for power-of-two sizes and is differentiable. Upstream feeds the [-1, 1] image without
CLIP's mean/std normalisation; ``normalize=False`` reproduces that (the official mappers were
trained so), ``normalize=True`` applies CLIP's own normalisation.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(img: torch.Tensor, *, image_size: int = 224, normalize: bool = False) -> torch.Tensor:
    """Resample a generator image to CLIP's input size, differentiably.

    Args:
        img: (B, 3, H, W) float in [-1, 1], H == W and ``H * 7`` divisible by ``image_size``
            (true for every power of two from 32 up).
        image_size: CLIP's input size (224 for ViT-B/32).
        normalize: map [-1, 1] to [0, 1] and apply CLIP's mean/std (upstream StyleCLIP does not).
    Returns:
        (B, 3, image_size, image_size), same dtype and device.
    """
    if img.ndim != 4 or img.shape[1] != 3 or img.shape[2] != img.shape[3]:
        raise ValueError(f"img must be (B, 3, H, H), got {tuple(img.shape)}")
    size = img.shape[-1]
    if (size * 7) % image_size:
        raise ValueError(f"image size {size} does not resample to CLIP's {image_size}: use a power of two")
    # Nearest x7 then average pooling is a linear map applied to rows and columns separately:
    # x = A @ img @ A^T with A (image_size, size). As two small matmuls it equals the upstream
    # two-step resampling to float rounding and costs ~25x less (forward and backward) at 1024 px.
    a = _resample_matrix(size, image_size, img.device, img.dtype)
    x = a @ img @ a.T
    if normalize:
        mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = ((x + 1) / 2 - mean) / std
    return x


@functools.lru_cache(maxsize=16)
def _resample_matrix(size: int, image_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(image_size, size) weights of StyleCLIP's nearest x7 + avg-pool resampling along one axis."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd whoever built it first
        eye = torch.eye(size, dtype=torch.float64).repeat_interleave(7, dim=1)  # (size, 7 size)
        pooled = F.avg_pool1d(eye[None], kernel_size=size * 7 // image_size)[0]  # (size, image_size)
        return pooled.T.contiguous().to(device=device, dtype=dtype)


def _reference_preprocess(img: torch.Tensor, image_size: int) -> torch.Tensor:
    """Upstream's literal two-step resampling (kept for tests)."""
    x = F.interpolate(img, scale_factor=7, mode="nearest")
    return F.avg_pool2d(x, kernel_size=img.shape[-1] * 7 // image_size)


class ClipEncoder(nn.Module):
    """CLIP image and text towers with L2-normalised outputs in the joint embedding space.

    Args:
        model: a ``transformers.CLIPModel``.
        tokenizer: its tokenizer.
        normalize: apply CLIP's mean/std to generator images (see module docstring).
    """

    def __init__(
        self,
        model: nn.Module,  # transformers.CLIPModel
        tokenizer,  # transformers CLIP tokenizer
        normalize: bool = False,  # CLIP mean/std on generator images
    ):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.image_size = int(model.config.vision_config.image_size)
        self.embed_dim = int(model.config.projection_dim)

    @classmethod
    def from_folder(cls, folder: str | Path, *, normalize: bool = False) -> ClipEncoder:
        """Load a transformers-format CLIP folder (``config.json``, weights, tokenizer files)."""
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local folder: a bar per load only clutters logs and stderr
        folder = str(folder)
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, normalize=normalize)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings, (N, D) L2-normalised, float32. Over-long texts are truncated."""
        if isinstance(texts, str):
            texts = [texts]
        tok = self.tokenizer(
            list(texts),
            padding="longest",  # = upstream's 77-token padding: the causal mask hides pads from EOS
            truncation=True,
            max_length=self.model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        out = self.model.text_model(
            input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
        )
        feats = self.model.text_projection(out.pooler_output)
        return F.normalize(feats.float(), dim=-1)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """Image embeddings of generator images (B, 3, H, W) in [-1, 1]: (B, D) L2-normalised."""
        x = clip_preprocess(img, image_size=self.image_size, normalize=self.normalize)
        x = x.to(dtype=next(self.model.parameters()).dtype)
        out = self.model.vision_model(pixel_values=x)
        feats = self.model.visual_projection(out.pooler_output)
        return F.normalize(feats.float(), dim=-1)

    def clip_loss(self, img: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """StyleCLIP's CLIP loss, 1 − cos(image, text) (= 1 − logit/100), per image: (B,)."""
        img_feats = self.encode_image(img)
        return 1 - (img_feats * text_features.to(img_feats)).sum(-1)
