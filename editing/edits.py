"""What an edit starts from and returns: latents that may carry a StyleSpace offset, per-method
settings (frozen dataclasses), per-result metrics, and the latent file formats.

A face is a W+ latent (1, n_latent, 512). Global directions (StyleCLIP section 6) edit StyleSpace
rather than W+, and an S edit has no exact W+ equivalent, so an :class:`EditableLatent` is W+ plus
an optional per-S-layer offset. Chained edits compose: a mapper edit changes W+ and keeps the
offset, a global edit adds to the offset.

Files: ``.npy`` holds W+ only, (n_latent, 512) or (1, n_latent, 512) float32 (what e4e and the
official repos exchange); ``.npz`` holds ``w_plus`` plus ``s_delta_<i>`` arrays, one per S layer,
written and read without pickles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from editing.mapper import DEFAULT_STRENGTH

ALPHA_RANGE = (-10.0, 10.0)  # the StyleCLIP GUI slider
BETA_RANGE = (0.0, 1.0)  # the GUI offers 0.08–0.3; |r| ≤ 1 (unit vectors), so β = 1 moves almost nothing
STRENGTH_RANGE = (-1.0, 1.0)  # mapper step (trained at 0.1)
MAX_PROMPT_CHARS = 300  # CLIP reads 77 tokens; longer text is refused, not silently cut


def check_prompt(text: object, name: str = "target") -> str:
    """A usable prompt, stripped; ValueError for non-strings, empty or absurdly long text."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ValueError(f"{name} is empty: describe the change in a few words, e.g. 'smiling face'")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS}")
    return text


def check_range(x: object, name: str, lo: float, hi: float) -> float:
    """A finite number within [lo, hi]; ValueError naming ``name`` otherwise."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {x!r}")
    x = float(x)
    if not math.isfinite(x) or not lo <= x <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}, got {x:g}")
    return x


@dataclass(frozen=True)
class EditableLatent:
    """W+ plus an optional StyleSpace offset.

    Attributes:
        w_plus: (1, n_latent, 512) float32 on CPU.
        s_delta: None, or one (dim_l,) float32 CPU tensor per S layer added to the styles.
    """

    w_plus: torch.Tensor
    s_delta: tuple[torch.Tensor, ...] | None = None

    def __post_init__(self):
        w = self.w_plus
        if not isinstance(w, torch.Tensor) or w.ndim != 3 or w.shape[0] != 1:
            raise ValueError(f"w_plus must be a (1, n_latent, dim) tensor, got {getattr(w, 'shape', w)!r}")
        if not torch.isfinite(w).all():
            raise ValueError("w_plus contains NaN or infinite values")
        if self.s_delta is not None:
            if any(not isinstance(d, torch.Tensor) or d.ndim != 1 for d in self.s_delta):
                raise ValueError("s_delta must be a sequence of 1-D tensors, one per S layer")
            if not all(torch.isfinite(d).all() for d in self.s_delta):
                raise ValueError("s_delta contains NaN or infinite values")

    def with_w_plus(self, w_plus: torch.Tensor) -> EditableLatent:
        return EditableLatent(w_plus.detach().float().cpu(), self.s_delta)

    def add_s_delta(self, delta: Sequence[torch.Tensor]) -> EditableLatent:
        """This latent with ``delta`` added to its S offset."""
        delta = [d.detach().float().cpu() for d in delta]
        if self.s_delta is not None:
            if len(delta) != len(self.s_delta):
                raise ValueError(f"delta has {len(delta)} layers, the latent's offset {len(self.s_delta)}")
            delta = [a + b for a, b in zip(self.s_delta, delta, strict=True)]
        return EditableLatent(self.w_plus, tuple(delta))


@dataclass(frozen=True)
class GlobalSettings:
    """Global direction edit (StyleCLIP section 6). ``beta=None`` picks β automatically."""

    target: str  # what the face should show, e.g. "face with glasses"
    neutral: str = "face"  # the same description without the attribute
    alpha: float = 4.1  # strength along Δs (negative reverses the edit)
    beta: float | None = 0.15  # disentanglement threshold; None = auto-β

    def __post_init__(self):
        object.__setattr__(self, "target", check_prompt(self.target, "target"))
        object.__setattr__(self, "neutral", check_prompt(self.neutral, "neutral"))
        object.__setattr__(self, "alpha", check_range(self.alpha, "alpha", *ALPHA_RANGE))
        if self.beta is not None:
            object.__setattr__(self, "beta", check_range(self.beta, "beta", *BETA_RANGE))


@dataclass(frozen=True)
class MapperSettings:
    """Latent-mapper edit (StyleCLIP section 5): w' = w + strength · M(w)."""

    mapper: str  # a registry name ("purple_hair") or a locally trained mapper's name
    strength: float = DEFAULT_STRENGTH

    def __post_init__(self):
        if not isinstance(self.mapper, str) or not self.mapper.strip():
            raise ValueError("mapper must name a mapper, e.g. 'purple_hair'")
        object.__setattr__(self, "strength", check_range(self.strength, "strength", *STRENGTH_RANGE))


@dataclass(frozen=True)
class EditMetrics:
    """How an edit scored.

    Attributes:
        clip_similarity: cos(CLIP(edited image), CLIP(target text)); higher = closer to the text.
        clip_similarity_source: the same for the unedited image (the gain is the difference).
        directional: cos(CLIP(edited) − CLIP(source), Δt), StyleCLIP/NADA's directional score.
        identity_similarity: ArcFace cosine between the source and edited faces (None without
            an identity network).
        changed: what moved: channels (global), W+ rows (mapper, optimisation).
    """

    clip_similarity: float | None
    clip_similarity_source: float | None
    directional: float | None
    identity_similarity: float | None
    changed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "clip_similarity": self.clip_similarity,
            "clip_similarity_source": self.clip_similarity_source,
            "directional": self.directional,
            "identity_similarity": self.identity_similarity,
            **self.changed,
        }


@dataclass(frozen=True)
class EditResult:
    """An edited face.

    Attributes:
        latent: the edited latent (feed it back in to chain edits).
        image: (1, 3, size, size) float32 CPU render in ~[-1, 1].
        metrics: scores, or None when not requested.
        info: method-specific details (β used, channels moved, mapper levels, steps, …).
        timings: seconds per stage.
    """

    latent: EditableLatent
    image: torch.Tensor
    metrics: EditMetrics | None
    info: dict
    timings: dict[str, float]


# ---------------------------------------------------------------------------------- files
def save_latent_file(path: str | os.PathLike, latent: EditableLatent) -> None:
    """``.npy``: W+ (n_latent, 512) only; ``.npz``: W+ and the S offset (if any)."""
    path = Path(path)
    w = latent.w_plus[0].numpy().astype(np.float32)
    if path.suffix == ".npy":
        np.save(path, w)
    elif path.suffix == ".npz":
        arrays = {"w_plus": w}
        if latent.s_delta is not None:
            arrays.update(
                {f"s_delta_{i}": d.numpy().astype(np.float32) for i, d in enumerate(latent.s_delta)}
            )
        np.savez(path, **arrays)
    else:
        raise ValueError(f"latent files end in .npy or .npz, got {path.name}")


def load_latent_file(path: str | os.PathLike, n_latent: int, style_dims: Sequence[int]) -> EditableLatent:
    """Read a ``.npy`` W+ or an ``.npz`` written by :func:`save_latent_file` (no pickles).

    Args:
        n_latent: W+ rows the generator expects.
        style_dims: channels of each S layer, to validate an S offset.
    Raises:
        ValueError: unreadable file, wrong shapes, non-finite values.
    """
    from editing.synthesis import load_latent

    path = Path(path)
    if path.suffix == ".npy":
        return EditableLatent(load_latent(path, n_latent))
    if path.suffix != ".npz":
        raise ValueError(f"latent files end in .npy or .npz, got {path.name}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:
        raise ValueError(f"{path.name} is not a readable .npz latent file ({type(exc).__name__})") from exc
    if "w_plus" not in arrays:
        raise ValueError(f"{path.name} has no 'w_plus' array")
    w = arrays["w_plus"].astype(np.float32).reshape(-1, *arrays["w_plus"].shape[-2:])
    if w.shape != (1, n_latent, 512):
        raise ValueError(f"{path.name}: w_plus must be ({n_latent}, 512), got {arrays['w_plus'].shape}")
    keys = sorted((k for k in arrays if k.startswith("s_delta_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    s_delta = None
    if keys:
        if len(keys) != len(style_dims):
            raise ValueError(
                f"{path.name}: {len(keys)} S offsets, the generator has {len(style_dims)} S layers"
            )
        s_delta = []
        for i, (k, dim) in enumerate(zip(keys, style_dims, strict=True)):
            a = arrays[k].astype(np.float32).reshape(-1)
            if k != f"s_delta_{i}" or a.shape[0] != dim:
                raise ValueError(f"{path.name}: {k} has {a.shape[0]} values, S layer {i} has {dim}")
            s_delta.append(torch.from_numpy(a.copy()))
        s_delta = tuple(s_delta)
    return EditableLatent(torch.from_numpy(w.copy()), s_delta)
