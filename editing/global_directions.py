"""StyleCLIP global directions: a text direction Δt in CLIP space mapped to a StyleSpace edit Δs.

Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery", ICCV 2021, section 6
("global directions"). Compatible with orpatashnik/StyleCLIP ``global_torch/StyleCLIP.py`` and
``global_directions/MapTS.py`` (``zeroshot_classifier``, ``GetDt``, ``GetBoundary``, ``SplitS``),
the auto-β rule of ``global_directions/Inference.py`` (``GetDt2``), and the official ``fs3.npy``
relevance layout. Pure functions: no model is loaded here and no state is kept.

The maths, for a generator with S layers ``l`` of ``dims[l]`` channels:

1. Δt: each text is put in the 79 prompt templates, encoded by CLIP, L2-normalised, averaged and
   renormalised; Δt = normalise(t_target − t_neutral).
2. r = fs3 · Δt, one relevance value per covered channel (``fs3`` rows are unit CLIP directions).
3. Channels with |r| < β are zeroed, the survivors are counted and divided by max |r|.
4. The vector is split per covered layer and scaled by that layer's S std; toRGB layers and layers
   above 128 px get zeros.
5. s' = s + α · Δs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# CLIP's 80 ImageNet prompt templates minus "a photo of many {}.", in StyleCLIP's order
# (``imagenet_templates`` in StyleCLIP's MapTS.py / StyleCLIP.py). The templates are from OpenAI CLIP
# (github.com/openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb), MIT licence,
# Copyright (c) 2021 OpenAI.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

DEFAULT_ALPHA = 4.1  # manipulation strength (StyleCLIP GUI default; slider -10..10)
DEFAULT_BETA = 0.15  # disentanglement threshold on |r| (StyleCLIP default; slider 0.08..0.3)
# Relevance (fs3) covers the non-toRGB layers up to this resolution (StyleCLIP SingleChannel.py:
# "below or equal to 128 resolution"); finer layers mostly change texture, not semantics.
MAX_RELEVANCE_RESOLUTION = 128
# Auto-β candidates: np.arange(0.1, 0.3, 0.01) as in StyleCLIP Inference.py, rounded to the
# values the arange stands for (0.12, not 0.12000000000000001).
AUTO_BETAS: tuple[float, ...] = tuple(round(0.1 + 0.01 * i, 2) for i in range(20))
AUTO_BETA_CHANNELS = 20  # auto-β keeps the largest β that moves MORE than this many channels (FFHQ)

_ZERO_DIRECTION_NORM = 1e-6  # |t_target − t_neutral| below this: the texts encode the same thing


class TextEncoder(Protocol):
    """What Δt needs from CLIP: ``editing.clip_text.ClipEncoder`` satisfies it."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:  # (N, D) L2-normalised
        ...


# --------------------------------------------------------------------------------------------
# Δt from text


def prompt_embedding(
    clip: TextEncoder, text: str, *, templates: Sequence[str] = IMAGENET_TEMPLATES
) -> torch.Tensor:
    """CLIP embedding of a text averaged over prompt templates (StyleCLIP ``zeroshot_classifier``).

    Args:
        clip: a text encoder whose ``encode_text`` returns L2-normalised (N, D) embeddings.
        text: the description, e.g. ``"face with glasses"``; non-empty.
        templates: format strings with one ``{}``; defaults to the 79 ImageNet templates.
    Returns:
        (D,) float32 unit vector on the encoder's device.
    Raises:
        ValueError: ``text`` is empty or not a string.
    """
    _check_text(text, "text")
    if not templates or any(not isinstance(t, str) or t.count("{}") != 1 for t in templates):
        raise ValueError("templates must be a non-empty sequence of strings with exactly one '{}' each")
    return _template_mean(clip, text, templates)


def delta_t(clip: TextEncoder, target: str, neutral: str) -> torch.Tensor:
    """The text direction Δt = normalise(t_target − t_neutral) (StyleCLIP ``GetDt``).

    Args:
        clip: a text encoder whose ``encode_text`` returns L2-normalised (N, D) embeddings.
        target: what the edited face should show, e.g. ``"face with glasses"``.
        neutral: the same description without the attribute, e.g. ``"face"``.
    Returns:
        (D,) float32 unit vector on the encoder's device.
    Raises:
        ValueError: ``target`` or ``neutral`` is empty, or both describe the same thing (their
            template-averaged embeddings coincide, so there is no direction).
    """
    _check_text(target, "target")
    _check_text(neutral, "neutral")
    same = f"target and neutral describe the same thing ({target!r} vs {neutral!r}): there is no direction"
    if target.strip() == neutral.strip():
        raise ValueError(same)
    t_target = _template_mean(clip, target, IMAGENET_TEMPLATES)  # (D,)
    t_neutral = _template_mean(clip, neutral, IMAGENET_TEMPLATES)  # (D,)
    diff = t_target - t_neutral
    norm = torch.linalg.vector_norm(diff)
    if not norm > _ZERO_DIRECTION_NORM:  # also catches NaN
        raise ValueError(same)
    return diff / norm


def _check_text(text: object, name: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} is empty: describe the face in a few words")


def _template_mean(clip: TextEncoder, text: str, templates: Sequence[str]) -> torch.Tensor:
    with torch.inference_mode():
        feats = clip.encode_text([t.format(text) for t in templates]).float()  # (79, D), unit rows
        mean = feats.mean(dim=0)
        mean = mean / torch.linalg.vector_norm(mean)
    return mean.clone()  # cloned outside inference mode: a normal tensor, usable with autograd


# --------------------------------------------------------------------------------------------
# StyleSpace layout


@dataclass(frozen=True)
class StyleSpaceLayout:
    """The S layers of a generator, in generation order, and which of them relevance covers.

    Attributes:
        dims: channels of each S layer (the modulation's output size = the conv's input channels).
        is_torgb: whether each S layer drives a toRGB layer.
        resolutions: the output resolution (px) of each S layer's conv.
        covered: S indices that have relevance rows, ascending; row blocks of ``fs3`` follow
            this order (FFHQ 1024: [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15] -> 5376 rows).
    """

    dims: tuple[int, ...]
    is_torgb: tuple[bool, ...]
    resolutions: tuple[int, ...]
    covered: tuple[int, ...]

    def __post_init__(self):
        for name in ("dims", "is_torgb", "resolutions", "covered"):  # hashable, immutable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.dims)
        if n == 0 or len(self.is_torgb) != n or len(self.resolutions) != n:
            raise ValueError(
                f"dims, is_torgb and resolutions must have the same non-zero length, got "
                f"{len(self.dims)}, {len(self.is_torgb)}, {len(self.resolutions)}"
            )
        if any(int(d) <= 0 for d in self.dims):
            raise ValueError(f"dims must be positive, got {self.dims}")
        if list(self.covered) != sorted(set(self.covered)):
            raise ValueError(f"covered must be ascending without repeats, got {self.covered}")
        for i in self.covered:
            if not 0 <= i < n:
                raise ValueError(f"covered index {i} is outside the {n} S layers")
            if self.is_torgb[i]:
                raise ValueError(f"covered index {i} is a toRGB layer; relevance covers only convs")

    @classmethod
    def from_layers(
        cls,
        dims: Sequence[int],  # channels per S layer, generation order
        is_torgb: Sequence[bool],  # True for the S layers of toRGB convs
        resolutions: Sequence[int],  # output resolution (px) per S layer
        *,
        max_relevance_resolution: int = MAX_RELEVANCE_RESOLUTION,  # px; covered = non-toRGB at <= this
    ) -> StyleSpaceLayout:
        """Build a layout from per-S-layer metadata with StyleCLIP's coverage rule.

        Covered layers are the non-toRGB layers at ``<= max_relevance_resolution`` px. The rule is
        absolute, not relative to the generator's size: generators of 128 px or less (e.g. 64 px)
        have every non-toRGB layer covered, larger ones have the same 11 covered layers as FFHQ.
        """
        dims = tuple(int(d) for d in dims)
        is_torgb = tuple(bool(t) for t in is_torgb)
        resolutions = tuple(int(r) for r in resolutions)
        if len(is_torgb) != len(dims) or len(resolutions) != len(dims):
            raise ValueError(
                f"dims, is_torgb and resolutions must have the same length, got "
                f"{len(dims)}, {len(is_torgb)}, {len(resolutions)}"
            )
        covered = tuple(
            i for i in range(len(dims)) if not is_torgb[i] and resolutions[i] <= max_relevance_resolution
        )
        return cls(dims=dims, is_torgb=is_torgb, resolutions=resolutions, covered=covered)

    @property
    def n_layers(self) -> int:
        return len(self.dims)

    @property
    def n_channels(self) -> int:
        """All S channels (9088 at 1024 px, multiplier 2)."""
        return sum(self.dims)

    @property
    def covered_dims(self) -> tuple[int, ...]:
        return tuple(self.dims[i] for i in self.covered)

    @property
    def n_covered_channels(self) -> int:
        """Rows of the relevance matrix (5376 at 1024 px, multiplier 2)."""
        return sum(self.covered_dims)

    @property
    def torgb_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.is_torgb) if t)


def layout_for(size: int, channel_multiplier: int = 2) -> StyleSpaceLayout:
    """The S layout of a rosinality StyleGAN2 generator of the given size.

    Channels per resolution as in rosinality/stylegan2-pytorch ``model.py`` (512 up to 32 px, then
    256·m, 128·m, 64·m, 32·m, 16·m for 64 … 1024 px). S layers: ``conv1`` and ``to_rgb1`` at 4 px,
    then per resolution R = 8 … size the upsampling conv (dims = channels at R/2), the second conv
    and toRGB (dims = channels at R).

    Args:
        size: output resolution, a power of two in [4, 1024].
        channel_multiplier: the generator's channel multiplier (2 for config-f).
    Returns:
        The layout; covered layers follow ``StyleSpaceLayout.from_layers``.
    """
    if not isinstance(size, int) or size < 4 or size > 1024 or size & (size - 1):
        raise ValueError(f"size must be a power of two between 4 and 1024, got {size!r}")
    if not isinstance(channel_multiplier, int) or channel_multiplier < 1:
        raise ValueError(f"channel_multiplier must be a positive integer, got {channel_multiplier!r}")
    m = channel_multiplier
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m}
    channels[1024] = 16 * m
    dims, is_torgb, resolutions = [channels[4], channels[4]], [False, True], [4, 4]
    res = 8
    while res <= size:
        dims += [channels[res // 2], channels[res], channels[res]]
        is_torgb += [False, False, True]
        resolutions += [res, res, res]
        res *= 2
    return StyleSpaceLayout.from_layers(dims, is_torgb, resolutions)


def ffhq_1024_layout() -> StyleSpaceLayout:
    """FFHQ config-f (1024 px, multiplier 2): 26 S layers, 9088 channels, 5376 covered."""
    return layout_for(1024, 2)


# --------------------------------------------------------------------------------------------
# Δs from Δt


def relevance_scores(fs3: torch.Tensor | np.ndarray, dt: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Relevance r = fs3 · Δt of every covered S channel to the text direction.

    Args:
        fs3: (C, D) relevance matrix, one unit CLIP direction per covered channel (official
            ``fs3.npy`` layout: C = 5376, D = 512); any float dtype, numpy or torch.
        dt: (D,) text direction (normally the unit vector from ``delta_t``).
    Returns:
        (C,) float32 on fs3's device.
    """
    fs3 = _as_float_tensor(fs3, "fs3")
    dt = _as_float_tensor(dt, "dt", device=fs3.device)
    if fs3.ndim != 2:
        raise ValueError(f"fs3 must be 2-D (channels, clip_dim), got shape {tuple(fs3.shape)}")
    if dt.ndim != 1 or dt.shape[0] != fs3.shape[1]:
        raise ValueError(f"dt must have shape ({fs3.shape[1]},) to match fs3, got {tuple(dt.shape)}")
    return fs3 @ dt


def channels_moved(relevance: torch.Tensor | np.ndarray, beta: float) -> int:
    """How many channels a threshold β keeps (|r| ≥ β); cheap enough for a live slider.

    Args:
        relevance: (C,) from ``relevance_scores`` (compute it once per prompt).
        beta: threshold ≥ 0.
    """
    relevance = _as_float_tensor(relevance, "relevance")
    if relevance.ndim != 1:
        raise ValueError(f"relevance must be 1-D, got shape {tuple(relevance.shape)}")
    return int(_keep_mask(relevance, _check_beta(beta)).sum())


def delta_s(
    fs3: torch.Tensor | np.ndarray,
    dt: torch.Tensor | np.ndarray,
    beta: float,
    s_std: Sequence[torch.Tensor | np.ndarray],
    layout: StyleSpaceLayout,
) -> tuple[list[torch.Tensor], int]:
    """The StyleSpace direction Δs for a text direction (StyleCLIP ``GetBoundary`` + ``SplitS``).

    Args:
        fs3: (C, D) relevance matrix, rows in the order of ``layout.covered``.
        dt: (D,) text direction from ``delta_t``.
        beta: disentanglement threshold ≥ 0; channels with |r| < β do not move.
        s_std: per-S-layer standard deviations of S, ``layout.n_layers`` arrays of ``dims[l]``.
        layout: the generator's S layout; ``layout.n_covered_channels`` must equal C.
    Returns:
        (ds, n): ``ds`` is a list of ``layout.n_layers`` float32 tensors of shape (dims[l],) on
        fs3's device, zero on toRGB and uncovered layers, with max |ds_l / std_l| = 1 over the
        moved channels; ``n`` is the number of channels moved. When no channel reaches β every
        ``ds`` is zero and ``n`` is 0 (upstream divides by zero there).
    """
    if not isinstance(layout, StyleSpaceLayout):
        raise ValueError(f"layout must be a StyleSpaceLayout, got {type(layout).__name__}")
    r = relevance_scores(fs3, dt)
    if r.shape[0] != layout.n_covered_channels:
        raise ValueError(
            f"fs3 has {r.shape[0]} rows but the layout covers {layout.n_covered_channels} channels "
            f"(layers {list(layout.covered)})"
        )
    keep = _keep_mask(r, _check_beta(beta))
    n_moved = int(keep.sum())
    stds = _check_s_std(s_std, layout, device=r.device)
    ds_flat = torch.where(keep, r, torch.zeros_like(r))
    peak = ds_flat.abs().max()
    if peak > 0:  # no channel at or above β (or r == 0 everywhere): a zero direction, not 0 / 0
        ds_flat = ds_flat / peak
    chunks = iter(torch.split(ds_flat, list(layout.covered_dims)))
    covered = set(layout.covered)
    ds = []
    for i, dim in enumerate(layout.dims):
        if i in covered:
            ds.append(next(chunks) * stds[i])
        else:
            ds.append(torch.zeros(dim, dtype=r.dtype, device=r.device))
    return ds, n_moved


def apply_delta_s(
    styles: Sequence[torch.Tensor], delta_s: Sequence[torch.Tensor], alpha: float
) -> list[torch.Tensor]:
    """s' = s + α · Δs for every S layer (StyleCLIP ``MSCode``).

    Args:
        styles: the S tensors, each (B, dims[l]) (or (dims[l],)), any float dtype and device.
        delta_s: per-layer Δs from ``delta_s``, (dims[l],); cast to each style's dtype and device.
        alpha: edit strength (negative reverses the edit).
    Returns:
        A new list. Layers whose Δs is all zero (toRGB, uncovered, not moved), and every layer when
        α = 0, are the input tensors themselves, so they are reproduced exactly.
    """
    alpha = _check_number(alpha, "alpha")
    if len(styles) != len(delta_s):
        raise ValueError(f"styles has {len(styles)} layers but delta_s has {len(delta_s)}")
    out = []
    for i, (s, ds) in enumerate(zip(styles, delta_s, strict=True)):
        ds = torch.as_tensor(ds)
        if ds.ndim != 1 or s.shape[-1] != ds.shape[0]:
            raise ValueError(f"styles[{i}] has shape {tuple(s.shape)} but delta_s[{i}] has {tuple(ds.shape)}")
        if alpha == 0 or not bool(ds.any()):
            out.append(s)
        else:
            out.append(s + alpha * ds.to(device=s.device, dtype=s.dtype))
    return out


def auto_beta(
    fs3: torch.Tensor | np.ndarray,
    dt: torch.Tensor | np.ndarray,
    *,
    betas: Sequence[float] = AUTO_BETAS,
    channel_threshold: int = AUTO_BETA_CHANNELS,
) -> tuple[float, int]:
    """The largest β that still moves more than ``channel_threshold`` channels (StyleCLIP GUI rule).

    Upstream (``global_directions/Inference.py``, ``GetDt2``) scans ``np.arange(0.1, 0.3, 0.01)``
    and keeps the largest β with ``num_c > c_threshold`` (20 for FFHQ, 100 for other datasets);
    when no β qualifies it falls back to 0.1. Since the count only falls as β grows, this is the
    last β before the count drops to ``channel_threshold`` or below.

    Args:
        fs3: (C, D) relevance matrix.
        dt: (D,) text direction.
        betas: candidate thresholds, ascending.
        channel_threshold: the count must exceed this.
    Returns:
        (beta, n): the chosen β and the number of channels it moves. When no candidate qualifies,
        β is the smallest candidate (0.1) and ``n`` its (≤ channel_threshold) count.
    """
    betas = [_check_beta(b) for b in betas]
    if not betas or betas != sorted(betas):
        raise ValueError(f"betas must be a non-empty ascending sequence, got {betas}")
    if isinstance(channel_threshold, bool) or not isinstance(channel_threshold, int) or channel_threshold < 0:
        raise ValueError(f"channel_threshold must be a non-negative integer, got {channel_threshold!r}")
    r = relevance_scores(fs3, dt)
    counts = [int(_keep_mask(r, b).sum()) for b in betas]
    qualified = [i for i, n in enumerate(counts) if n > channel_threshold]
    i = qualified[-1] if qualified else 0
    return betas[i], counts[i]


def _keep_mask(r: torch.Tensor, beta: float) -> torch.Tensor:
    # Compare in float64: a float32 |r| against the exact β (NumPy 2 does the same upstream when β
    # is a float64 scalar); float32 would round β itself.
    return r.abs().double() >= beta


def _check_number(x: object, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {x!r}")
    if not math.isfinite(float(x)):
        raise ValueError(f"{name} must be finite, got {x}")
    return float(x)


def _check_beta(beta: object) -> float:
    beta = _check_number(beta, "beta")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return beta


def _check_s_std(
    s_std: Sequence[torch.Tensor | np.ndarray], layout: StyleSpaceLayout, *, device: torch.device
) -> list[torch.Tensor | None]:
    if len(s_std) != layout.n_layers:
        raise ValueError(f"s_std must hold {layout.n_layers} per-layer arrays, got {len(s_std)}")
    stds: list[torch.Tensor | None] = [None] * layout.n_layers
    for i in layout.covered:
        std = _as_float_tensor(s_std[i], f"s_std[{i}]", device=device).reshape(-1)
        if std.shape[0] != layout.dims[i]:
            raise ValueError(f"s_std[{i}] has {std.shape[0]} values, layer {i} has {layout.dims[i]} channels")
        stds[i] = std
    return stds


def _as_float_tensor(x: object, name: str, *, device: torch.device | None = None) -> torch.Tensor:
    try:
        t = torch.as_tensor(x)
    except Exception as exc:
        raise ValueError(f"{name} must be an array or tensor, got {type(x).__name__}") from exc
    if not t.is_floating_point():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float32)
