"""Seeded StyleCLIP latent-mapper checkpoints in the official file format, and seeded W+ inputs.

Format (orpatashnik/StyleCLIP ``mapper/training/coach.py``): ``{"state_dict": {"mapper.<level>_mapping
.mapping.{1..4}.{weight,bias}", optionally "decoder.*"}, "opts": {...}}`` with the upstream
spelling ``course_mapping`` for the coarse level; a disabled level is absent. The key list is
written out here from the format, independently of ``models.latent_mapper``.

Init: stored weights ~ N(0, 100^2), i.e. upstream's own init ``randn / lr_mul``, so that after the
run-time scale ``lr_mul / sqrt(512)`` each layer is He-initialised and activations stay O(1)
through the 4 layers; stored biases ~ N(0, 10^2) (0.1 after ``lr_mul``) so the bias path is
exercised. W+ inputs ~ N(0, 1) plus a per-sample shared row (real W+ rows are correlated).

``python -m scripts.seeded.mapper --out DIR`` writes ``mapper_all.pt``, ``mapper_no_fine.pt``,
``mapper_all_64px.pt`` and the matching ``w_plus*.pt`` for the scratch script that runs the
reference implementation.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import torch

from scripts.seeded import generator_for, randn, seeded_state_dict

SEED = 3
LEVEL_PREFIXES = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}
ALL_LEVELS = ("coarse", "medium", "fine")
NO_FINE = ("coarse", "medium")  # like the 7 official hairstyle / expression mappers

# name -> (levels, n_latent, stylegan_size)
CASES: dict[str, tuple[tuple[str, ...], int, int]] = {
    "all": (ALL_LEVELS, 18, 1024),
    "no_fine": (NO_FINE, 18, 1024),
    "all_64px": (ALL_LEVELS, 10, 64),
}


def mapper_spec(
    levels: Iterable[str], latent_dim: int = 512
) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) of the official ``mapper.*`` keys for the given levels."""
    spec = []
    for lv in ALL_LEVELS:
        if lv not in levels:
            continue
        prefix = f"mapper.{LEVEL_PREFIXES[lv]}.mapping"
        for i in range(1, 5):
            spec.append((f"{prefix}.{i}.weight", (latent_dim, latent_dim), torch.float32))
            spec.append((f"{prefix}.{i}.bias", (latent_dim,), torch.float32))
    return spec


def _rule(key: str, shape: tuple[int, ...]):
    return randn(100.0) if key.endswith(".weight") else randn(10.0)


def mapper_checkpoint(
    levels: Iterable[str] = ALL_LEVELS,
    stylegan_size: int = 1024,
    seed: int = SEED,
    decoder: dict[str, torch.Tensor] | None = None,
) -> dict:
    """A seeded mapper file's contents: ``{"state_dict": {"mapper.*", "decoder.*"}, "opts": {...}}``.

    Args:
        levels: enabled levels, any of ``ALL_LEVELS``.
        stylegan_size: recorded in ``opts`` (the official files say 1024).
        seed: global seed of ``seeded_state_dict``.
        decoder: optional generator weights stored under ``decoder.*`` (the official files bundle one).
    """
    levels = tuple(levels)
    sd = seeded_state_dict(mapper_spec(levels), seed, _rule)
    if decoder:
        sd.update({f"decoder.{k}": v for k, v in decoder.items()})
    opts = {
        "mapper_type": "LevelsMapper",
        "no_coarse_mapper": "coarse" not in levels,
        "no_medium_mapper": "medium" not in levels,
        "no_fine_mapper": "fine" not in levels,
        "work_in_stylespace": False,
        "stylegan_size": stylegan_size,
        "description": "seeded test mapper",
    }
    return {"state_dict": sd, "opts": opts}


def seeded_w_plus(batch: int = 2, n_latent: int = 18, seed: int = SEED) -> torch.Tensor:
    """(batch, n_latent, 512) float32 W+ inputs: a shared row per sample plus per-row noise."""
    g = generator_for(f"w_plus/{batch}x{n_latent}", seed)
    shared = torch.randn(batch, 1, 512, generator=g)
    return shared + torch.randn(batch, n_latent, 512, generator=g)


def case(name: str) -> tuple[dict, torch.Tensor]:
    """The checkpoint and W+ input of a golden case in :data:`CASES`."""
    levels, n_latent, size = CASES[name]
    return mapper_checkpoint(levels, stylegan_size=size), seeded_w_plus(2, n_latent)


def write_files(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        ckpt, w_plus = case(name)
        torch.save(ckpt, out / f"mapper_{name}.pt")
        torch.save(w_plus, out / f"w_plus_{name}.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the seeded files into")
    write_files(parser.parse_args().out)
