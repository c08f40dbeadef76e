"""Seeded CLIP folders in exactly the transformers format of ``openai/clip-vit-base-patch32``.

The real tokenizer's 49,408-entry BPE vocabulary cannot be downloaded here, so the tokenizer is
the same byte-level BPE with no merges (one token per character): a genuine ``CLIPTokenizer``
folder that ``CLIPTokenizer.from_pretrained`` loads. ``full_size=True`` gives the ViT-B/32
architecture (vision 768 wide, 12 layers, 224 px, patch 32; text 512 wide, 12 layers; projection
512) with random weights, for benchmarks and full-size plumbing; the default is a tiny model for tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_unicode() -> list[str]:
    """The 256 printable stand-ins GPT-2/CLIP byte-level BPE uses for bytes."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_clip_folder(
    folder: Path,
    *,
    seed: int = 0,  # torch seed of the random weights
    full_size: bool = False,  # the ViT-B/32 architecture instead of a tiny one
    image_size: int = 32,  # tiny model only: input resolution
    patch: int = 8,  # tiny model only: patch size
    context_length: int = 16,  # tiny model only: text token budget (77 at full size)
) -> Path:
    """Write config.json, model.safetensors and tokenizer files for a seeded CLIPModel.

    ``context_length`` is the text tower's token budget (77 in the real CLIP; the byte-level
    tokenizer here spends one token per character, so prompt templates need more than 16).
    """
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if full_size:
        context_length = 77
    chars = _byte_unicode()
    vocab_list = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "do_lower_case": True}
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )
    special = dict(
        vocab_size=len(vocab),
        max_position_embeddings=context_length,
        eos_token_id=vocab["<|endoftext|>"],
        bos_token_id=vocab["<|startoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    if full_size:
        config = CLIPConfig(text_config=special)  # every other field: the ViT-B/32 defaults
    else:
        config = CLIPConfig(
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, **special
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=patch,
            ),
            projection_dim=16,
        )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    return folder
