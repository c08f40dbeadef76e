"""StyleCLIP latent mapper: a residual W+ -> W+ network with one small MLP per level of detail.

Paper: Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery" (ICCV 2021),
section 5 ("latent mapper"). The W+ rows are split into coarse, medium and fine levels; each
enabled level has its own mapping (PixelNorm + 4 equalized-lr linear layers with lr multiplier
0.01 and fused leaky ReLU); a disabled level outputs zeros, so an edit ``w + s * M(w)`` leaves
its rows unchanged.

Compatible with orpatashnik/StyleCLIP ``mapper/latent_mappers.py`` (``LevelsMapper``): the
state-dict keys of :class:`LevelsMapper` are exactly those following the ``mapper.`` prefix of
the official mapper files (``course_mapping.mapping.{1..4}.{weight,bias}``, ``medium_mapping...``,
``fine_mapping...``; note the upstream spelling ``course``); a disabled level is absent from the
file. Two upstream quirks that change the numbers are kept: PixelNorm normalises over dim 1,
which for the (B, rows, 512) input of a level is the W+ row axis, not the channel axis; and the
fused leaky ReLU adds its bias on the last dim.

Split rule. Upstream slices ``[:4]``, ``[4:8]``, ``[8:]`` whatever the generator size. With two
W+ rows per resolution (the StyleGAN paper's counting) these fixed boundaries are a split by
resolution: coarse = 4-8 px, medium = 16-32 px, fine = 64 px and up. We keep that rule for every
size (``split=(4, 8)``: the first row of the medium and of the fine level, clipped to
``n_latent``): 18 rows at 1024 px give [0:4] / [4:8] / [8:18], 14 rows at 256 px
[0:4] / [4:8] / [8:14], 10 rows at 64 px [0:4] / [4:8] / [8:10], which is also what the upstream
code computes at those sizes. An enabled level that would cover no row (e.g. ``fine`` with 8
rows at 32 px) is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from models.ops import EqualLinear, PixelNorm

LEVELS: tuple[str, ...] = ("coarse", "medium", "fine")  # in W+ row order
MODULE_NAMES: dict[str, str] = {  # level -> attribute / state-dict prefix (upstream spelling)
    "coarse": "course_mapping",
    "medium": "medium_mapping",
    "fine": "fine_mapping",
}
N_LINEAR = 4  # linear layers per level (upstream: fixed)
LR_MUL = 0.01  # learning-rate multiplier of every linear layer (upstream: fixed)


def level_rows(
    n_latent: int,  # W+ rows of the generator (2 * log2(size) - 2: 18 at 1024 px, 10 at 64 px)
    split: tuple[int, int] = (4, 8),  # first W+ row of the medium level and of the fine level
) -> dict[str, range]:
    """The W+ rows each level covers, e.g. ``{"coarse": range(0, 4), "medium": range(4, 8),
    "fine": range(8, 18)}`` for 18 rows. Boundaries beyond ``n_latent`` are clipped (empty ranges)."""
    if n_latent < 1:
        raise ValueError(f"n_latent must be positive, got {n_latent}")
    if len(split) != 2 or not 0 <= split[0] <= split[1]:
        raise ValueError(f"split must be two row indices 0 <= medium_start <= fine_start, got {split}")
    a, b = min(split[0], n_latent), min(split[1], n_latent)
    return {"coarse": range(0, a), "medium": range(a, b), "fine": range(b, n_latent)}


class LevelMapping(nn.Module):
    """One level's MLP (upstream ``Mapper``): PixelNorm over dim 1, then 4 x EqualLinear + lrelu.

    State-dict keys: ``mapping.{1..4}.{weight,bias}`` (index 0 is the parameter-free PixelNorm).
    """

    def __init__(
        self,
        latent_dim: int = 512,  # width of a W+ row
    ):
        super().__init__()
        layers: list[nn.Module] = [PixelNorm()]
        layers += [
            EqualLinear(latent_dim, latent_dim, lr_mul=LR_MUL, activation=True) for _ in range(N_LINEAR)
        ]
        self.mapping = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3, f"expected (B, rows, C), got {tuple(x.shape)}"
        return self.mapping(x)  # (B, rows, C)


class LevelsMapper(nn.Module):
    """Residual W+ mapper ``M``: (B, n_latent, C) -> (B, n_latent, C), zeros on disabled levels.

    Weights are not loaded here: build with :meth:`from_state_dict` (levels read from the file),
    or construct and train. The edit itself is ``editing.mapper.apply_mapper``.
    """

    def __init__(
        self,
        levels: Iterable[str] = LEVELS,  # enabled levels, any of "coarse", "medium", "fine"
        n_latent: int = 18,  # W+ rows of the generator (18 at 1024 px)
        split: tuple[int, int] = (4, 8),  # first W+ row of the medium level and of the fine level
        latent_dim: int = 512,  # width of a W+ row
    ):
        super().__init__()
        levels = tuple(levels)
        unknown = [lv for lv in levels if lv not in LEVELS]
        if unknown:
            raise ValueError(f"levels: unknown level(s) {unknown}; choose from {list(LEVELS)}")
        if not levels:
            raise ValueError("levels: at least one level must be enabled")
        self.levels = tuple(lv for lv in LEVELS if lv in levels)  # canonical (row) order
        self.n_latent = n_latent
        self.split = (int(split[0]), int(split[1]))
        self.latent_dim = latent_dim
        self.rows = level_rows(n_latent, self.split)
        empty = [lv for lv in self.levels if len(self.rows[lv]) == 0]
        if empty:
            raise ValueError(
                f"levels: {empty} cover no W+ row with n_latent={n_latent} and split={self.split}; "
                "this mapper does not fit this generator"
            )
        for lv in self.levels:
            setattr(self, MODULE_NAMES[lv], LevelMapping(latent_dim))

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],  # keys without the "mapper." prefix
        n_latent: int = 18,  # W+ rows of the generator the mapper is applied to
        split: tuple[int, int] = (4, 8),  # first W+ row of the medium level and of the fine level
    ) -> LevelsMapper:
        """Build a mapper with the levels present in ``state_dict`` and load it strictly.

        Raises:
            ValueError: no level present, unknown / missing keys (all listed), or wrong shapes.
        """
        prefixes = {name: lv for lv, name in MODULE_NAMES.items()}
        present = {prefixes[k.split(".", 1)[0]] for k in state_dict if k.split(".", 1)[0] in prefixes}
        if not present:
            raise ValueError(
                "state_dict holds no LevelsMapper level (expected keys like "
                f"'course_mapping.mapping.1.weight'); found: {sorted(state_dict)[:8]}"
            )
        first = next((k for k in state_dict if k.endswith(".mapping.1.weight")), None)
        latent_dim = int(state_dict[first].shape[-1]) if first is not None else 512
        mapper = cls(levels=present, n_latent=n_latent, split=split, latent_dim=latent_dim)
        mapper.load_state_dict_strict(state_dict)
        return mapper

    def load_state_dict_strict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """``load_state_dict(strict=True)`` raising one ValueError that lists every missing key,
        unexpected key and shape mismatch (the mapper has no rebuildable buffers)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [
            f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            for k, v in own.items()
            if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            if shapes:
                parts.append(f"shape mismatches: {shapes}")
            raise ValueError(f"latent mapper state dict (levels {list(self.levels)}): " + "; ".join(parts))
        self.load_state_dict(dict(state_dict), strict=True)

    def forward(self, w_plus: torch.Tensor) -> torch.Tensor:
        assert w_plus.ndim == 3 and w_plus.shape[1:] == (self.n_latent, self.latent_dim), (
            f"expected (B, {self.n_latent}, {self.latent_dim}), got {tuple(w_plus.shape)}"
        )
        parts = []
        for lv in LEVELS:
            r = self.rows[lv]
            x = w_plus[:, r.start : r.stop]  # (B, rows, C)
            if lv in self.levels:
                parts.append(getattr(self, MODULE_NAMES[lv])(x))
            else:
                parts.append(torch.zeros_like(x))
        return torch.cat(parts, dim=1)  # (B, n_latent, C)

    def extra_repr(self) -> str:
        rows = ", ".join(f"{lv}=[{self.rows[lv].start}:{self.rows[lv].stop}]" for lv in self.levels)
        return f"levels: {rows}, n_latent={self.n_latent}"
