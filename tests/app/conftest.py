"""Tiny seeded models in the official file formats (a ``--weights`` folder), and the app on them."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from editing.editor import layout_of
from models.stylegan2 import Generator
from scripts.seeded.e4e import make_e4e_checkpoint
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.mapper import mapper_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint
from tests.tiny_clip import make_tiny_clip_folder

SIZE = 32  # n_latent 8
TINY_IRSE = {"widths": (16, 32, 48, 64), "units": (1, 1, 1, 1)}


@pytest.fixture(scope="session")
def app_weights(tmp_path_factory) -> Path:
    """generator, e4e, IR-SE, CLIP, fs3 and one mapper under their official names."""
    d = tmp_path_factory.mktemp("app_weights")
    gen = make_stylegan2_checkpoint(size=SIZE, n_mlp=2, seed=21)
    torch.save(gen, d / "stylegan2-ffhq-config-f.pt")
    torch.save(make_e4e_checkpoint(seed=32, n_styles=8, **TINY_IRSE), d / "e4e_ffhq_encode.pt")
    torch.save(make_irse50_checkpoint(**TINY_IRSE), d / "model_ir_se50.pth")
    make_tiny_clip_folder(d / "clip-vit-base-patch32", context_length=64)
    layout = layout_of(Generator.from_state_dict(gen["g_ema"]))
    rows = torch.randn(layout.n_covered_channels, 16, generator=torch.Generator().manual_seed(0))
    np.save(d / "fs3.npy", torch.nn.functional.normalize(rows, dim=1).numpy())
    (d / "mappers").mkdir()
    ckpt = mapper_checkpoint(levels=("coarse", "medium"), stylegan_size=SIZE, seed=5)
    torch.save(ckpt, d / "mappers" / "purple_hair.pt")
    return d


@pytest.fixture(scope="session")
def app_s_stats(app_weights) -> Path:
    """S statistics from 1000 samples (the official recipe's 100k is too slow for tests)."""
    from editing.editor import load_generator
    from editing.precompute import layout_metadata, s_statistics, save_precomputed

    g, w_avg = load_generator(app_weights / "stylegan2-ffhq-config-f.pt")
    stats = s_statistics(g, w_avg, n_samples=1000)
    return save_precomputed(
        app_weights.parent / "app_s_stats", stats, None, {"layout": layout_metadata(layout_of(g))}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
