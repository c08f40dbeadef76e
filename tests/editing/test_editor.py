"""FaceEditor: device/precision resolution and the pipeline steps on tiny seeded models."""

from __future__ import annotations

import pytest
import torch

from editing.editor import FaceEditor, pick_precision
from models.stylegan2 import Generator
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint


@pytest.fixture(scope="module")
def tiny_generator() -> tuple[Generator, torch.Tensor]:
    ckpt = make_stylegan2_checkpoint(size=32, channel_multiplier=1, n_mlp=2, seed=11)
    return Generator.from_state_dict(ckpt["g_ema"]).eval(), ckpt["latent_avg"]


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    assert pick_precision("auto", cpu) in ("fp32", "bf16")
    assert pick_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        pick_precision("fp8", cpu)


def test_bf16_render_stays_close_to_fp32(tiny_generator):
    g, w_avg = tiny_generator
    ed32 = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="fp32")
    ed16 = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="bf16")
    assert ed16.precision == "bf16"
    w = ed32.latent_from_seed(5)
    a, b = ed32.render(w), ed16.render(w)
    assert a.dtype == b.dtype == torch.float32 and a.shape == (1, 3, 32, 32)
    err = (a - b).abs().max().item()
    assert 0 < err < 0.1  # bf16 really ran, and stayed close


def test_seed_latents_are_deterministic_and_validated(tiny_generator):
    g, w_avg = tiny_generator
    ed = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="fp32")
    a, b, c = ed.latent_from_seed(1), ed.latent_from_seed(1), ed.latent_from_seed(2)
    assert a.shape == (1, g.n_latent, 512) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(ed.latent_from_seed(1, truncation=0.0)[0, 0], ed.w_avg[0], atol=1e-6)
    for bad in ({"seed": -1}, {"seed": 1, "truncation": 1.5}, {"seed": 1, "truncation": float("nan")}):
        with pytest.raises(ValueError):
            ed.latent_from_seed(**bad)
    assert ed.render(a, size=8).shape == (1, 3, 8, 8)
