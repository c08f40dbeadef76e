"""StyleGAN2 generator: parity with the references, StyleSpace layout, strict loading, edge cases.

Goldens (``tests/golden/stylegan2.json``) come from two reference implementations run on the seeded
checkpoints of ``scripts.seeded.stylegan2`` (official rosinality file layout, loaded with
``strict=True``): rosinality/stylegan2-pytorch ``model.py`` for mapping, W+ synthesis with the fixed
noise buffers and the 256-px toRGB skip image; orpatashnik/StyleCLIP ``models/stylegan2/model.py``
for the 26 style vectors and S-space synthesis (``input_is_stylespace``). Both ran as scratch copies
with the compiled CUDA ops replaced by their own native CPU paths. To regenerate::

    python -m scripts.seeded.stylegan2 --out /work/scratch/stylegan2/files
    python /work/scratch/stylegan2/make_golden.py   # references -> tests/golden/stylegan2.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.stylegan2 import Generator, infer_generator_config, load_generator_state
from scripts.seeded.stylegan2 import CASES, case, make_stylegan2_checkpoint, style_dims, stylegan2_spec

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "stylegan2.json").read_text())
TOL = 1e-4


def _err(t: torch.Tensor, g: dict) -> float:
    """Max abs deviation of ``t`` from a golden summary (strided sample, moments, channel stats)."""
    assert list(t.shape) == g["shape"]
    t = t.detach().double()
    flat = t.reshape(-1)
    errs = [
        (flat[:: g["stride"]] - torch.tensor(g["sample"], dtype=torch.float64)).abs().max().item(),
        abs(flat.mean().item() - g["mean"]),
        abs(flat.std().item() - g["std"]),
        abs(flat.abs().max().item() - g["absmax"]),
    ]
    if "channel_mean" in g:
        errs.append((t.mean(dim=(0, 2, 3)) - torch.tensor(g["channel_mean"])).abs().max().item())
        errs.append((t.std(dim=(0, 2, 3)) - torch.tensor(g["channel_std"])).abs().max().item())
    return max(errs)


def _tiny(size: int = 32, channel_multiplier: int = 1, n_mlp: int = 2, seed: int = 3) -> Generator:
    ckpt = make_stylegan2_checkpoint(size, channel_multiplier, n_mlp, seed)
    return Generator.from_state_dict(ckpt["g_ema"]).eval()


@pytest.mark.parametrize("name", ["64_m1", "1024"])
def test_parity_with_references(name: str):
    torch.set_num_threads(2)
    gold = GOLDEN["cases"][name]
    c = case(name)
    assert math.isclose(c["z"].double().sum().item(), gold["z_sum"], rel_tol=1e-9), "seeded inputs changed"
    assert math.isclose(c["w_plus"].double().sum().item(), gold["w_plus_sum"], rel_tol=1e-9)
    size, m, n_mlp, _ = CASES[name]
    g = Generator.from_state_dict(c["checkpoint"]["g_ema"]).eval()
    assert (g.size, g.channel_multiplier, g.n_mlp, g.n_styles) == (size, m, n_mlp, len(gold["styles"]))
    errors = {}
    with torch.inference_mode():
        errors["mapping"] = _err(g.mapping(c["z"]), gold["mapping"])
        errors["synthesis"] = _err(g.synthesis(c["w_plus"]), gold["synthesis"])
        errors["skip"] = _err(g.synthesis(c["w_plus"], out_size=gold["skip_size"]), gold["skip"])
        styles = g.w_plus_to_styles(c["w_plus"])
        errors["styles"] = max(_err(s, gs) for s, gs in zip(styles, gold["styles"], strict=True))
        edited = [s + d for s, d in zip(styles, c["style_deltas"], strict=True)]
        errors["s_synthesis"] = _err(g.synthesis_from_styles(edited), gold["s_synthesis"])
    assert max(errors.values()) <= TOL, errors
    # the goldens are non-degenerate images, and the S edit really changed the picture
    assert 0.1 < gold["synthesis"]["std"] < 1.5 and gold["synthesis"]["absmax"] < 5
    assert (
        abs(gold["s_synthesis"]["mean"] - gold["synthesis"]["mean"])
        + abs(gold["s_synthesis"]["std"] - gold["synthesis"]["std"])
        > 1e-3
    )


def test_official_key_names_and_shapes():
    with torch.device("meta"):
        sd = Generator(size=1024).state_dict()
    spec = stylegan2_spec(1024, 2, 8)  # written from the format description, not from the model
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == [(k, tuple(s)) for k, s, _ in spec]
    assert sum(v.numel() for k, v in sd.items() if not k.startswith("noises.")) > 30_000_000
    assert "style.8.weight" in sd and "style.9.weight" not in sd
    assert sd["convs.15.conv.weight"].shape == (1, 32, 32, 3, 3)
    assert sd["to_rgbs.7.conv.modulation.weight"].shape == (32, 512)
    assert sd["noises.noise_16"].shape == (1, 1, 1024, 1024)


def test_style_layout_matches_the_stylespace_table():
    with torch.device("meta"):
        g = Generator(size=1024)
    layers = g.style_layers()
    assert [layer.dim for layer in layers] == style_dims(1024, 2)
    assert len(layers) == 26 and sum(layer.dim for layer in layers) == 9088
    assert sum(layer.dim for layer in layers if layer.is_torgb) == 3040
    assert [layer.index for layer in layers if layer.is_torgb] == list(range(1, 26, 3))
    assert [layer.w_index for layer in layers][:8] == [0, 1, 1, 2, 3, 3, 4, 5]
    assert [layer.w_index for layer in layers][-3:] == [15, 16, 17]
    assert [layer.module for layer in layers][23:] == ["convs.14", "convs.15", "to_rgbs.7"]


@pytest.mark.parametrize(
    ("size", "m", "n_mlp"), [(8, 2, 1), (32, 1, 2), (64, 1, 3), (256, 2, 8), (1024, 2, 8)]
)
def test_config_is_inferred_from_shapes(size: int, m: int, n_mlp: int):
    with torch.device("meta"):
        sd = Generator(size=size, channel_multiplier=m, n_mlp=n_mlp).state_dict()
    expected_m = m if size >= 64 else 2
    assert infer_generator_config(sd) == {
        "size": size,
        "style_dim": 512,
        "n_mlp": n_mlp,
        "channel_multiplier": expected_m,
    }


def test_strict_loading_lists_bad_keys_and_rebuilds_only_constant_buffers():
    ckpt = make_stylegan2_checkpoint(32, 1, 2, seed=5)
    sd = ckpt["g_ema"]
    ref = Generator.from_state_dict(sd).eval()
    # blur kernels and noise buffers may be absent: rebuilt, output unchanged for kernels
    partial = {k: v for k, v in sd.items() if not k.endswith((".blur.kernel", ".upsample.kernel"))}
    g = Generator(size=32, channel_multiplier=1, n_mlp=2)
    rebuilt = load_generator_state(g, partial)
    assert rebuilt and all("kernel" in k for k in rebuilt)
    w = torch.randn(1, g.n_latent, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(g.eval().synthesis(w), ref.synthesis(w))
    no_noise = {k: v for k, v in sd.items() if not k.startswith("noises.")}
    fresh = Generator(size=32, channel_multiplier=1, n_mlp=2)
    assert len(load_generator_state(fresh, no_noise)) == g.num_layers
    # anything else is an error naming every offending key
    bad = dict(sd)
    del bad["conv1.conv.weight"], bad["to_rgbs.0.bias"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as e:
        load_generator_state(Generator(size=32, channel_multiplier=1, n_mlp=2), bad)
    msg = str(e.value)
    assert "conv1.conv.weight" in msg and "to_rgbs.0.bias" in msg and "extra.weight" in msg
    wrong = dict(sd)
    wrong["conv1.activate.bias"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"conv1\.activate\.bias.*\(7,\)"):
        load_generator_state(Generator(size=32, channel_multiplier=1, n_mlp=2), wrong)
    with pytest.raises(ValueError, match="not a StyleGAN2"):
        Generator.from_state_dict({"foo": torch.zeros(1)})


def test_w_broadcast_skip_sizes_and_noise_modes():
    g = _tiny()
    w = g.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():
        full = g.synthesis(w)
        assert full.shape == (2, 3, 32, 32)
        assert torch.equal(full, g.synthesis(w[:, None].expand(-1, g.n_latent, -1)))
        assert torch.equal(full, g.synthesis(w, out_size=32))
        for s in (4, 8, 16):
            assert g.synthesis(w, out_size=s).shape == (2, 3, s, s)
        assert torch.equal(g.synthesis(w), full)  # const noise is deterministic
        assert not torch.equal(g.synthesis(w, noise_mode="random"), full)
        # W+ rows act locally: the last row only feeds the last toRGB
        w_plus = w[:, None].repeat(1, g.n_latent, 1)
        w_plus[:, -1] += 1.0
        styles_a, styles_b = g.w_plus_to_styles(w), g.w_plus_to_styles(w_plus)
        pairs = enumerate(zip(styles_a, styles_b, strict=True))
        changed = [i for i, (a, b) in pairs if not torch.equal(a, b)]
        assert changed == [g.n_styles - 1]
    for bad in (3, 64, 12, 2):
        with pytest.raises(ValueError, match="out_size"):
            g.synthesis(w, out_size=bad)
    with pytest.raises(ValueError, match="w_plus"):
        g.synthesis(torch.zeros(1, 5, 512))
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(w, noise_mode="fresh")
    with pytest.raises(ValueError, match="styles"):
        g.synthesis_from_styles(g.w_plus_to_styles(w)[:-1])
    with pytest.raises(ValueError, match="z must be"):
        g.mapping(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="size"):
        Generator(size=48)


def test_truncation_mean_latent_and_forward():
    g = _tiny(seed=4)
    w_avg = g.mean_latent(2048, generator=torch.Generator().manual_seed(0))
    assert w_avg.shape == (1, 512)
    torch.manual_seed(0)
    assert torch.allclose(w_avg, g.mapping(torch.randn(2048, 512)).mean(0, keepdim=True))
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(2))
    w = g.mapping(z)
    assert torch.allclose(Generator.truncate(w, w_avg, 1.0), w, atol=1e-6)
    assert torch.allclose(Generator.truncate(w, w_avg, 0.0), w_avg.expand_as(w))
    half = Generator.truncate(w, w_avg, 0.5)
    assert torch.allclose(half - w_avg, 0.5 * (w - w_avg), atol=1e-6)
    with torch.inference_mode():
        assert torch.equal(g(z), g.synthesis(w))
        assert torch.allclose(g(z, truncation=0.5, truncation_latent=w_avg), g.synthesis(half))
    with pytest.raises(ValueError, match="truncation_latent"):
        g(z, truncation=0.7)


def test_gradients_reach_w_plus_through_the_skip_path():
    g = _tiny(seed=6)
    w = torch.zeros(1, g.n_latent, 512, requires_grad=True)
    g.synthesis(w, out_size=16).square().mean().backward()
    grad = w.grad.abs().sum(dim=2)[0]
    n_used = 2 * 4 - 2  # W+ rows feeding layers up to the 16-px toRGB (a 16-px network has 6)
    assert (grad[:n_used] > 0).all() and (grad[n_used:] == 0).all()


def test_narrow_generators_round_trip_through_their_state_dict():
    widths = {4: 64, 8: 64, 16: 32, 32: 16, 64: 8}
    torch.manual_seed(0)
    g = Generator(size=64, style_dim=64, n_mlp=2, channels=widths).eval()
    sd = g.state_dict()
    assert infer_generator_config(sd) == {"size": 64, "style_dim": 64, "n_mlp": 2, "channels": widths}
    h = Generator.from_state_dict(sd).eval()
    assert h.channels == widths and [la.dim for la in h.style_layers()][-3:] == [16, 8, 8]
    w = g.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():
        assert torch.equal(g.synthesis(w), h.synthesis(w))
        assert h.synthesis(w).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="channels"):
        Generator(size=64, channels={4: 8, 8: 8})


def test_style_gradient_path_equals_the_fused_form():
    """With gradients to the latent only, wide layers use the non-fused modulation: same maths."""
    g = _tiny(size=64, seed=8)
    g.requires_grad_(False)
    w = torch.randn(2, g.n_latent, 512, generator=torch.Generator().manual_seed(3), requires_grad=True)
    img_u = g.synthesis(w)
    (grad_u,) = torch.autograd.grad(img_u.square().mean(), w)
    g.requires_grad_(True)  # weight gradients wanted: the fused form runs everywhere
    img_f = g.synthesis(w)
    (grad_f,) = torch.autograd.grad(img_f.square().mean(), w)
    assert (img_u - img_f).abs().max() < 1e-5
    assert (grad_u - grad_f).abs().max() < 1e-6 * max(1.0, grad_f.abs().max().item()) + 1e-8
    with torch.inference_mode():
        assert torch.allclose(g.synthesis(w.detach()), img_f, atol=1e-5)
