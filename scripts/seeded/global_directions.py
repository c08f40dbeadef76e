"""Seeded inputs for the StyleCLIP global-directions parity tests.

* ``seeded_fs3``: a (5376, 512) float32 relevance matrix in the official ``fs3.npy`` layout, unit
  rows. Rows are noise plus a heavy-tailed multiple of one hidden direction ``u``, so that a Δt
  along ``u`` moves hundreds of channels at β = 0.1 and a few at β = 0.29 (a plain random matrix
  would move almost none above 0.15 and make β thresholding untestable).
* ``seeded_s_std``: 26 per-layer S standard deviations (positive float32), FFHQ 1024 layout, in
  the order of the official ``S_mean_std`` file.
* ``seeded_dts``: text directions: ``aligned`` (along ``u``), ``random`` (an unrelated unit
  vector) and ``weak`` (0.1 × random: no channel reaches β = 0.1, the auto-β fallback). For seed 0
  the aligned count falls from 21 channels at β 0.24 to exactly 20 at 0.25, so the auto-β rule's
  strict ">" (0.24, not 0.25) is tested; the random one falls from 33 at 0.12 to 18 at 0.13.
* ``seeded_clip_state_dict``: per-key seeded weights for the tiny transformers CLIP of
  ``tests/tiny_clip.py`` (independent of transformers' initialisation order), and
  ``DT_PROMPTS``, the (target, neutral) pairs whose Δt the tests compare.

Every tensor comes from ``scripts.seeded.generator_for(key, seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from scripts.seeded import Init, generator_for, randn, seeded_state_dict

FFHQ_S_DIMS = (512,) * 15 + (256,) * 3 + (128,) * 3 + (64,) * 3 + (32,) * 2  # 26 S layers, 9088 channels
FS3_ROWS = 5376  # S layers [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]
CLIP_DIM = 512
TAIL_SCALE = 0.025  # scale of the heavy-tailed (Student-t, 3 dof) alignment of fs3 rows with u

DT_PROMPTS = (
    ("face with glasses", "face"),
    ("a smiling woman with red hair", "a woman"),
)


def _randn(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=generator_for(key, seed))


def _hidden_direction(seed: int) -> torch.Tensor:
    u = _randn("fs3.direction", (CLIP_DIM,), seed)
    return u / u.norm()


def seeded_fs3(seed: int = 0) -> np.ndarray:
    """(5376, 512) float32 with unit rows."""
    noise = _randn("fs3.noise", (FS3_ROWS, CLIP_DIM), seed) / math.sqrt(CLIP_DIM)
    z = _randn("fs3.tail.normal", (FS3_ROWS,), seed)
    chi2 = (_randn("fs3.tail.chi", (FS3_ROWS, 3), seed) ** 2).sum(1) / 3
    coef = TAIL_SCALE * z / chi2.sqrt()  # Student-t with 3 degrees of freedom
    rows = noise + coef[:, None] * _hidden_direction(seed)
    rows = rows / rows.norm(dim=1, keepdim=True)
    return rows.numpy().astype(np.float32)


def seeded_s_std(seed: int = 0, dims: Iterable[int] = FFHQ_S_DIMS) -> list[np.ndarray]:
    """Per-layer S std, uniform in [0.05, 0.5): a list of float32 arrays, one per S layer."""
    return [
        (torch.rand(d, generator=generator_for(f"s_std.{i}", seed)) * 0.45 + 0.05).numpy().astype(np.float32)
        for i, d in enumerate(dims)
    ]


def seeded_dts(seed: int = 0) -> dict[str, np.ndarray]:
    """Text directions (512,) float32: ``aligned`` and ``random`` are unit, ``weak`` has norm 0.1."""
    v = _randn("dt.random", (CLIP_DIM,), seed)
    v = v / v.norm()
    return {
        "aligned": _hidden_direction(seed).numpy().astype(np.float32),
        "random": v.numpy().astype(np.float32),
        "weak": (0.1 * v).numpy().astype(np.float32),
    }


def _clip_rule(key: str, shape: tuple[int, ...]) -> Init:
    if key == "logit_scale":
        return randn(0.0, math.log(100.0))  # trained CLIP's temperature
    if "norm" in key:  # layer norms (incl. transformers' "pre_layrnorm")
        return randn(0.1, 1.0) if key.endswith(".weight") else randn(0.1)
    if "embedding" in key and len(shape) != 4:  # token / position / class embeddings
        return randn(0.5)
    if key.endswith(".bias"):
        return randn(0.1)
    fan_in = math.prod(shape[1:])  # linear (out, in) and patch conv (out, in, k, k)
    return randn(1.0 / math.sqrt(fan_in))


def seeded_clip_state_dict(spec: Iterable[tuple[str, tuple[int, ...], torch.dtype]], seed: int = 0):
    """Seeded weights for a transformers ``CLIPModel`` given its state-dict spec (key, shape, dtype)."""
    return seeded_state_dict(spec, seed, _clip_rule)


def clip_spec(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]
