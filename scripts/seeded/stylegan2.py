"""Seeded StyleGAN2 generator checkpoints in the official rosinality file format, and seeded inputs.

Format (rosinality/stylegan2-pytorch ``convert_weight.py``, ``stylegan2-ffhq-config-f.pt``):
``{"g_ema": <Generator state_dict>, "latent_avg": (512,)}``. The key list is written out here from
the format description (``/work/shared/reference/checkpoints.md`` section 1), independently of
``models.stylegan2``; the scratch script that produces the goldens checks it against the reference
module's own ``state_dict()``.

Init (finite, image-like activations, every code path exercised):

* mapping ``style.{i}.weight`` ~ N(0, 100^2) (upstream's own ``randn / lr_mul``: He-initialised
  after the run-time scale ``0.01 / sqrt(512)``), ``.bias`` ~ N(0, 10^2) (0.1 after ``lr_mul``);
* conv weights and the constant input ~ N(0, 1) (upstream init; demodulation normalises them);
* modulation weights ~ N(0, 1), modulation biases ~ 1 + N(0, 0.2^2) (the stored bias includes
  the +1 of ``bias_init=1``), so styles are O(1) and vary by channel;
* toRGB weights ~ N(0, 0.15^2) and biases ~ N(0, 0.05^2), so that the summed skip image stays
  within about [-2, 2] like a trained generator's output;
* noise strengths ~ U(0.05, 0.3) and activation biases ~ N(0, 0.1^2): the noise path matters;
* blur kernels are the exact constants outer([1, 3, 3, 1]) / 16 (= /64 · 4, as in the file);
* noise buffers ~ N(0, 1), ``latent_avg`` ~ N(0, 0.5^2).

``python -m scripts.seeded.stylegan2 --out DIR`` writes ``stylegan2_1024.pt`` (config f) and
``stylegan2_64_m1.pt`` (64 px, multiplier 1, 3 mapping layers) plus the matching inputs
(``inputs_*.pt``: z, W+ and one S offset per style layer) for the scratch script that runs the
reference implementations.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from scripts.seeded import Init, generator_for, randn, seeded_state_dict, uniform

SEED = 7
STYLE_DIM = 512

# name -> (size, channel_multiplier, n_mlp, W+ batch); z always has Z_BATCH rows
Z_BATCH = 4
CASES: dict[str, tuple[int, int, int, int]] = {
    "1024": (1024, 2, 8, 1),
    "64_m1": (64, 1, 3, 2),
}


def channels(size: int, channel_multiplier: int) -> dict[int, int]:
    """Feature channels per resolution (rosinality ``Generator.channels``), up to ``size``."""
    m = channel_multiplier
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m}
    table[1024] = 16 * m
    return {r: c for r, c in table.items() if r <= size}


def _blur_kernel() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 16.0  # outer / 64 * factor^2


def stylegan2_spec(
    size: int = 1024,  # output resolution (power of two, 8..1024)
    channel_multiplier: int = 2,  # 2 for config f
    n_mlp: int = 8,  # mapping layers
    style_dim: int = STYLE_DIM,  # width of z / w
    widths: dict[int, int] | None = None,  # explicit {resolution: channels}, replaces the table
) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) of every ``g_ema`` entry, in the file's order."""
    f32 = torch.float32
    ch = channels(size, channel_multiplier) if widths is None else dict(widths)
    log_size = int(math.log2(size))
    spec: list[tuple[str, tuple[int, ...], torch.dtype]] = []
    for i in range(1, n_mlp + 1):
        spec += [(f"style.{i}.weight", (style_dim, style_dim), f32), (f"style.{i}.bias", (style_dim,), f32)]

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        spec.append((f"{prefix}.conv.weight", (1, cout, cin, 3, 3), f32))
        if up:
            spec.append((f"{prefix}.conv.blur.kernel", (4, 4), f32))
        spec.append((f"{prefix}.conv.modulation.weight", (cin, style_dim), f32))
        spec.append((f"{prefix}.conv.modulation.bias", (cin,), f32))
        spec.append((f"{prefix}.noise.weight", (1,), f32))
        spec.append((f"{prefix}.activate.bias", (cout,), f32))

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        spec.append((f"{prefix}.bias", (1, 3, 1, 1), f32))
        if up:
            spec.append((f"{prefix}.upsample.kernel", (4, 4), f32))
        spec.append((f"{prefix}.conv.weight", (1, 3, cin, 1, 1), f32))
        spec.append((f"{prefix}.conv.modulation.weight", (cin, style_dim), f32))
        spec.append((f"{prefix}.conv.modulation.bias", (cin,), f32))

    spec.append(("input.input", (1, ch[4], 4, 4), f32))
    styled("conv1", ch[4], ch[4], up=False)
    to_rgb("to_rgb1", ch[4], up=False)
    cin = ch[4]
    for k, lvl in enumerate(range(3, log_size + 1)):
        cout = ch[2**lvl]
        styled(f"convs.{2 * k}", cin, cout, up=True)
        styled(f"convs.{2 * k + 1}", cout, cout, up=False)
        cin = cout
    for k, lvl in enumerate(range(3, log_size + 1)):
        to_rgb(f"to_rgbs.{k}", ch[2**lvl], up=True)
    for j in range(2 * (log_size - 2) + 1):
        r = 2 ** ((j + 5) // 2)
        spec.append((f"noises.noise_{j}", (1, 1, r, r), f32))
    return spec


def _rule(key: str, shape: tuple[int, ...]) -> Init:
    if key.endswith("kernel"):
        return lambda g, s: _blur_kernel()
    if key.startswith("style."):
        return randn(100.0) if key.endswith(".weight") else randn(10.0)
    if key.endswith("modulation.bias"):
        return randn(0.2, 1.0)
    if key.endswith("noise.weight"):
        return uniform(0.05, 0.3)
    if key.endswith("activate.bias"):
        return randn(0.1)
    if key.startswith("to_rgb") and key.endswith(".conv.weight"):
        return randn(0.15)
    if key.startswith("to_rgb") and key.endswith(".bias"):
        return randn(0.05)
    return randn(1.0)  # conv / modulation weights, constant input, noise buffers


def make_stylegan2_checkpoint(
    size: int = 1024,  # output resolution
    channel_multiplier: int = 2,  # 2 for config f
    n_mlp: int = 8,  # mapping layers
    seed: int = SEED,  # global seed of ``seeded_state_dict``
    widths: dict[int, int] | None = None,  # explicit {resolution: channels} (narrow test generators)
) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
    """A seeded checkpoint's contents: ``{"g_ema": state_dict, "latent_avg": (512,)}``."""
    sd = seeded_state_dict(stylegan2_spec(size, channel_multiplier, n_mlp, widths=widths), seed, _rule)
    latent_avg = torch.randn(STYLE_DIM, generator=generator_for("latent_avg", seed)) * 0.5
    return {"g_ema": sd, "latent_avg": latent_avg}


def seeded_z(batch: int = Z_BATCH, seed: int = SEED) -> torch.Tensor:
    """(batch, 512) float32 standard-normal z."""
    return torch.randn(batch, STYLE_DIM, generator=generator_for(f"z/{batch}", seed))


def seeded_w_plus(batch: int = 1, n_latent: int = 18, seed: int = SEED) -> torch.Tensor:
    """(batch, n_latent, 512) float32 W+: a shared row per sample plus per-row noise (real W+ rows
    are correlated), lrelu-skewed like mapping outputs."""
    g = generator_for(f"w_plus/{batch}x{n_latent}", seed)
    shared = torch.randn(batch, 1, STYLE_DIM, generator=g)
    w = shared + 0.5 * torch.randn(batch, n_latent, STYLE_DIM, generator=g)
    return torch.nn.functional.leaky_relu(w, 0.2) * math.sqrt(2.0)


def style_dims(size: int, channel_multiplier: int) -> list[int]:
    """Channels of the S layers in generation order (26 at 1024 px): conv1, to_rgb1, then per
    resolution the upsampling conv, the second conv and toRGB."""
    ch = channels(size, channel_multiplier)
    dims = [ch[4], ch[4]]
    for lvl in range(3, int(math.log2(size)) + 1):
        r = 2**lvl
        dims += [ch[r // 2], ch[r], ch[r]]
    return dims


def seeded_style_deltas(dims: list[int], batch: int = 1, seed: int = SEED) -> list[torch.Tensor]:
    """One (batch, dim) N(0, 0.3^2) offset per S layer: an S-space edit applied to every layer."""
    return [
        0.3 * torch.randn(batch, d, generator=generator_for(f"s_delta/{i}/{batch}", seed))
        for i, d in enumerate(dims)
    ]


def case(name: str) -> dict:
    """Checkpoint and inputs of a golden case in :data:`CASES`."""
    size, m, n_mlp, batch = CASES[name]
    n_latent = 2 * int(math.log2(size)) - 2
    return {
        "checkpoint": make_stylegan2_checkpoint(size, m, n_mlp),
        "z": seeded_z(Z_BATCH),
        "w_plus": seeded_w_plus(batch, n_latent),
        "style_deltas": seeded_style_deltas(style_dims(size, m), batch),
    }


def write_files(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        c = case(name)
        torch.save(c["checkpoint"], out / f"stylegan2_{name}.pt")
        inputs = {"z": c["z"], "w_plus": c["w_plus"]}
        inputs.update({f"style_delta_{i}": d for i, d in enumerate(c["style_deltas"])})
        torch.save(inputs, out / f"inputs_{name}.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the seeded files into")
    write_files(parser.parse_args().out)
