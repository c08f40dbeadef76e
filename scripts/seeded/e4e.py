"""Seeded e4e checkpoints in the official file format, and seeded 256 px inputs.

Format (omertov/encoder4editing ``training/coach.py`` ``__get_save_dict``, loaded by
``models/psp.py``): ``{"state_dict": {"encoder.*", "decoder.*"}, "opts": vars(opts),
"latent_avg": (18, 512)}``. ``encoder.*`` = the IR-SE50 backbone keys (``input_layer.*``,
``body.0..23.*``, shared with ``scripts.seeded.irse``), ``styles.{i}.convs.{0,2,..}.{weight,bias}``,
``styles.{i}.linear.{weight,bias}``, ``latlayer{1,2}.{weight,bias}``; ``decoder.*`` = a StyleGAN2
``g_ema`` (passed in, e.g. from ``scripts.seeded.stylegan2``; omitted when not given, as the
encoder never reads it). ``opts`` is a plain dict of str / int / float / bool / None / lists, like
the real file's argparse namespace. The key list is written out here from the format,
independently of ``models.e4e``.

Init: backbone as ``scripts.seeded.irse``; head convs N(0, 2 / fan_in) (LeakyReLU follows), their
biases N(0, 0.1^2); lateral 1x1 convs N(0, 1 / fan_in); the equalized-lr linear weights N(0, 1)
(upstream's own init, scaled by 1/sqrt(512) at run time), biases N(0, 0.1^2); latent_avg a
shared N(0, 1) row plus N(0, 0.5^2) per row (the rows of a real average latent are equal).

``python -m scripts.seeded.e4e --out DIR`` writes ``e4e_ffhq_encode.pt`` (with a seeded 1024 px
generator from ``scripts.seeded.stylegan2`` as ``decoder.*``, like the real file) and
``e4e_input.pt`` for the scratch script that runs the reference implementation.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.seeded import Init, generator_for, randn, seeded_state_dict
from scripts.seeded.irse import IRSE50_UNITS, IRSE50_WIDTHS, Spec, backbone_rule, backbone_spec, seeded_faces

SEED = 7
COARSE_END, MIDDLE_END = 3, 7  # head i reads c3 (i < 3), p2 (i < 7) or p1


def encoder_spec(
    n_styles: int = 18,
    latent_dim: int = 512,
    input_size: int = 256,
    widths: Sequence[int] = IRSE50_WIDTHS,
    units: Sequence[int] = IRSE50_UNITS,
    prefix: str = "encoder.",
) -> Spec:
    """(key, shape, dtype) of the ``encoder.*`` entries of an e4e file, in state-dict order."""
    f = torch.float32
    spec = backbone_spec(widths, units, prefix)
    top = widths[-1]
    for i in range(n_styles):
        spatial = input_size // (16 if i < COARSE_END else 8 if i < MIDDLE_END else 4)
        for j in range(int(math.log2(spatial))):
            c_in = top if j == 0 else latent_dim
            spec.append((f"{prefix}styles.{i}.convs.{2 * j}.weight", (latent_dim, c_in, 3, 3), f))
            spec.append((f"{prefix}styles.{i}.convs.{2 * j}.bias", (latent_dim,), f))
        spec.append((f"{prefix}styles.{i}.linear.weight", (latent_dim, latent_dim), f))
        spec.append((f"{prefix}styles.{i}.linear.bias", (latent_dim,), f))
    for name, c_in in (("latlayer1", widths[2]), ("latlayer2", widths[1])):
        spec.append((f"{prefix}{name}.weight", (top, c_in, 1, 1), f))
        spec.append((f"{prefix}{name}.bias", (top,), f))
    return spec


def encoder_rule(key: str, shape: tuple[int, ...]) -> Init | None:
    name = key.removeprefix("encoder.")
    if name.startswith("styles."):
        if name.endswith(".bias"):
            return randn(0.1)
        if ".linear." in name:
            return randn(1.0)
        return randn(math.sqrt(2.0 / (shape[1] * shape[2] * shape[3])))
    if name.startswith("latlayer"):
        return randn(0.1) if name.endswith(".bias") else randn(math.sqrt(1.0 / shape[1]))
    return backbone_rule(name, shape)


def e4e_opts(stylegan_size: int) -> dict[str, Any]:
    """A plain opts dict with the value types of the real file (argparse namespace of train.py)."""
    return {
        "exp_dir": "experiments/seeded",
        "dataset_type": "ffhq_encode",
        "encoder_type": "Encoder4Editing",
        "batch_size": 8,
        "learning_rate": 0.0001,
        "train_decoder": False,
        "start_from_latent_avg": True,
        "lpips_lambda": 0.8,
        "id_lambda": 0.5,
        "stylegan_size": stylegan_size,
        "checkpoint_path": None,
        "save_interval": None,
        "progressive_steps": [0, 20000, 22000, 24000],
        "update_param_list": None,
        "device": "cuda:0",
    }


def make_e4e_checkpoint(
    seed: int = SEED,
    n_styles: int = 18,
    latent_dim: int = 512,
    input_size: int = 256,
    widths: Sequence[int] = IRSE50_WIDTHS,
    units: Sequence[int] = IRSE50_UNITS,
    decoder: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """A seeded e4e file's contents: ``{"state_dict", "opts", "latent_avg" (n_styles, latent_dim)}``.

    Args:
        seed: global seed of ``seeded_state_dict``.
        n_styles, latent_dim, input_size, widths, units: the encoder configuration (official:
            18, 512, 256, IR-SE50); smaller values give tiny test files with the same key names.
        decoder: optional generator weights stored under ``decoder.*`` (the real file bundles its
            generator); the encoder never reads them.
    """
    sd = seeded_state_dict(encoder_spec(n_styles, latent_dim, input_size, widths, units), seed, encoder_rule)
    if decoder:
        sd.update({f"decoder.{k}": v for k, v in decoder.items()})
    g = generator_for(f"latent_avg/{n_styles}x{latent_dim}", seed)
    shared = torch.randn(1, latent_dim, generator=g)
    latent_avg = shared + 0.5 * torch.randn(n_styles, latent_dim, generator=g)
    stylegan_size = 2 ** ((n_styles + 2) // 2)
    return {"state_dict": sd, "opts": e4e_opts(stylegan_size), "latent_avg": latent_avg}


def seeded_input(batch: int = 1, size: int = 256, seed: int = SEED) -> torch.Tensor:
    """(batch, 3, size, size) float32 smooth random images in [-1, 1]."""
    return seeded_faces(batch, size, "e4e_input", seed)


def write_files(out: Path) -> None:
    from scripts.seeded.stylegan2 import make_stylegan2_checkpoint  # the bundled 1024 px config-f g_ema

    out.mkdir(parents=True, exist_ok=True)
    decoder = make_stylegan2_checkpoint(size=1024, channel_multiplier=2)["g_ema"]
    torch.save(make_e4e_checkpoint(decoder=decoder), out / "e4e_ffhq_encode.pt")
    torch.save(seeded_input(1, 256), out / "e4e_input.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the seeded files into")
    write_files(parser.parse_args().out)
