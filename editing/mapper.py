"""StyleCLIP latent-mapper editing: load an official mapper file and apply ``w + s * M(w)``.

Paper: Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery" (ICCV 2021),
section 5. Compatible with orpatashnik/StyleCLIP ``mapper/scripts/inference.py``
(``w_hat = w + 0.1 * net.mapper(w)``) and its checkpoint format ``{"state_dict": {"mapper.*",
"decoder.*"}, "opts": {...}}``; only the ``mapper.*`` keys are read. The network itself is
:class:`models.latent_mapper.LevelsMapper`.

These functions are pure and differentiable: inference callers wrap them in
``torch.inference_mode()``; mapper training (later) calls :func:`apply_mapper` with gradients on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from editing.errors import WeightsCorruptError
from editing.weights import read_mapper_checkpoint
from models.latent_mapper import LEVELS, LevelsMapper

DEFAULT_STRENGTH = 0.1  # the step upstream inference uses: w_hat = w + 0.1 * M(w)


@dataclass(frozen=True)
class LevelInfo:
    """One mapper level, for display: which W+ rows it covers and whether it edits them."""

    name: str  # "coarse", "medium" or "fine"
    rows: range  # W+ rows of this level, e.g. range(0, 4)
    enabled: bool  # False: the level is absent from the file and its rows stay unchanged


def apply_mapper(
    mapper: LevelsMapper,
    w_plus: torch.Tensor,
    strength: float = DEFAULT_STRENGTH,
) -> torch.Tensor:
    """Edit W+ latents with a latent mapper: ``w_plus + strength * mapper(w_plus)``.

    Rows of disabled levels are returned exactly unchanged, and ``strength=0`` returns the input
    values exactly (the mapper output is always finite).

    Args:
        mapper: the loaded mapper, on the device and dtype of ``w_plus``.
        w_plus: (B, n_latent, 512) latents, e.g. from e4e inversion or the mapping network.
        strength: step along the mapper direction; 0.1 is what the mapper was trained with.
    Returns:
        (B, n_latent, 512) edited latents, same dtype and device as ``w_plus``.
    """
    expected = (mapper.n_latent, mapper.latent_dim)
    if w_plus.ndim != 3 or tuple(w_plus.shape[1:]) != expected:
        raise ValueError(f"w_plus must be (B, {expected[0]}, {expected[1]}), got {tuple(w_plus.shape)}")
    if not math.isfinite(strength):
        raise ValueError(f"strength must be finite, got {strength}")
    return w_plus + strength * mapper(w_plus)  # (B, n_latent, 512)


def mapper_levels(mapper: LevelsMapper) -> tuple[LevelInfo, ...]:
    """The three levels in W+ row order, with their rows and whether the mapper edits them."""
    return tuple(LevelInfo(lv, mapper.rows[lv], lv in mapper.levels) for lv in LEVELS)


def edited_rows(mapper: LevelsMapper) -> tuple[int, ...]:
    """W+ row indices the mapper can change (those of its enabled levels), ascending."""
    return tuple(i for info in mapper_levels(mapper) if info.enabled for i in info.rows)


def mapper_from_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    opts: Mapping[str, Any],
    n_latent: int = 18,
    split: tuple[int, int] = (4, 8),
    name: str = "mapper",
) -> LevelsMapper:
    """Build a mapper from a checkpoint's ``mapper.*`` weights (prefix removed) and its ``opts``.

    Args:
        state_dict: mapper weights as returned by ``editing.weights.read_mapper_checkpoint``.
        opts: the file's training options (may be empty); checked against the weights.
        n_latent: W+ rows of the generator the edit is decoded with (18 at 1024 px).
        split: first W+ row of the medium and of the fine level (see ``models.latent_mapper``).
        name: file name for error messages.
    Returns:
        The mapper in eval mode, float32 on the CPU.
    Raises:
        WeightsCorruptError: the weights are not a StyleCLIP LevelsMapper or contradict ``opts``.
        ValueError: the file was trained for a generator with a different number of W+ rows.
    """
    if opts.get("work_in_stylespace") or opts.get("mapper_type", "LevelsMapper") != "LevelsMapper":
        kind = "a StyleSpace mapper" if opts.get("work_in_stylespace") else f"a {opts.get('mapper_type')}"
        raise WeightsCorruptError(f"{name} is {kind}; only StyleCLIP LevelsMapper files in W+ are supported.")
    size = opts.get("stylegan_size")
    if size is not None and 2 * int(math.log2(int(size))) - 2 != n_latent:
        raise ValueError(
            f"n_latent={n_latent} does not fit {name}, which was trained for a {size} px generator "
            f"({2 * int(math.log2(int(size))) - 2} W+ rows)"
        )
    try:
        mapper = LevelsMapper.from_state_dict(state_dict, n_latent=n_latent, split=split)
    except ValueError as exc:
        raise WeightsCorruptError(f"{name} is not a valid StyleCLIP latent mapper: {exc}") from exc
    flags = {"coarse": "no_coarse_mapper", "medium": "no_medium_mapper", "fine": "no_fine_mapper"}
    contradicted = [
        lv for lv, flag in flags.items() if flag in opts and bool(opts[flag]) == (lv in mapper.levels)
    ]
    if contradicted:
        raise WeightsCorruptError(
            f"{name} is inconsistent: its options and its weights disagree on the levels {contradicted}."
        )
    return mapper.eval()


def load_mapper(
    path: str | os.PathLike,
    n_latent: int = 18,
    split: tuple[int, int] = (4, 8),
) -> LevelsMapper:
    """Load an official StyleCLIP mapper file (``mappers/<name>.pt``); the bundled generator is ignored.

    Args:
        path: the ``.pt`` file (``torch.load(weights_only=True)``).
        n_latent: W+ rows of the generator the edit is decoded with (18 at 1024 px).
        split: first W+ row of the medium and of the fine level.
    Returns:
        The mapper in eval mode, float32 on the CPU; move it with ``.to(device, dtype)``.
    """
    state_dict, opts = read_mapper_checkpoint(path)
    return mapper_from_checkpoint(
        state_dict, opts, n_latent=n_latent, split=split, name=os.path.basename(path)
    )
