"""A tiny CLIP in exactly the transformers folder format of openai/clip-vit-base-patch32 (tests)."""

from __future__ import annotations

from pathlib import Path

from scripts.seeded.clip import make_clip_folder


def make_tiny_clip_folder(
    folder: Path, *, seed: int = 0, image_size: int = 32, patch: int = 8, context_length: int = 16
) -> Path:
    """A seeded tiny CLIPModel folder; see :func:`scripts.seeded.clip.make_clip_folder`."""
    return make_clip_folder(
        folder, seed=seed, image_size=image_size, patch=patch, context_length=context_length
    )
