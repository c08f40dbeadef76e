"""StyleCLIP latent optimisation: move a latent so that its image matches a text under CLIP.

Paper: Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery" (ICCV 2021),
section 4. Compatible with orpatashnik/StyleCLIP ``optimization/run_optimization.py`` (loop,
``get_lr`` schedule, StyleSpace variant ``--work_in_stylespace``), ``criteria/clip_loss.py`` and
``criteria/id_loss.py`` (here :meth:`editing.clip_text.ClipEncoder.clip_loss` and
:class:`models.irse.IDLoss`).

The objective, minimised with Adam from a copy of the starting latent ``w0``::

    edit:            CLIP(G(w), t) + l2_lambda * sum((w - w0)^2) + id_lambda * (1 - cos(f(G(w)), f(G(w0))))
    free_generation: CLIP(G(w), t)

with the learning rate of step ``i`` given by :func:`scheduled_lr` at ``t = i / steps`` (zero at
step 0, as upstream). In StyleSpace (``space="s"``) the variables are the S tensors of every
non-toRGB layer (toRGB styles stay fixed, as upstream) and the L2 term sums over all S tensors.

Differences from upstream, all deliberate:

* ``loss_size``: the CLIP and ID losses are computed on the generator's skip image at
  ``loss_size`` pixels (default 256) instead of the full 1024-px image. Synthesis stops there, so
  a step is several times cheaper; W+ rows / S layers that only act above ``loss_size`` receive no
  gradient and stay at their starting values. ``loss_size=None`` is upstream's full-resolution loss.
* The ID reference is the starting latent rendered the same way as the optimised one (at
  ``loss_size``), so the ID loss is exactly 0 at the start.
* Upstream's free generation starts from the mean latent (``truncation=0`` in
  :func:`start_latent`); the app starts from a seeded random face truncated by ``truncation``.
* The result is the latent after the last update (upstream returns the image rendered before it).
* ``augment`` (default 0 = upstream): the CLIP loss is the mean over that many randomly shifted,
  scaled and noised views of the image (:func:`augmented_views`, seeded, so a run is repeatable), as
  CLIP-guided generators since CLIPDraw / VQGAN-CLIP do with cut-outs. A small CLIP's gradient at a
  single image need not point towards the attribute; averaged over views it more often does. The
  offline demo set uses 4 views (its optimisation: 29 % -> 44 % on validation faces, see
  ``editing.evaluate``); the ID and L2 terms are unchanged.
* ``jitter`` (default 0 = upstream): the CLIP loss is the mean over the latent and
  ``jitter_samples - 1`` neighbours, the latent plus Gaussian noise of ``jitter`` standard deviations
  of each W dimension (:func:`w_std_of`; the same noise on every W+ row), redrawn every step from a
  seeded generator; the L2 and ID terms stay on the latent itself (averaged over the neighbours, the
  ID term mostly pulled each one back from its own noise, and λ_ID > 0 no longer kept the identity
  attributes closer than λ_ID = 0 on the demo set). As the views average the gradient over
  what the image could look like, the neighbours average it over nearby faces: a CLIP gradient that
  happens to point along another attribute at one face mostly does not at its neighbours, and an
  attribute CLIP cannot see at all in the latent's faint first steps shows in a neighbour. On the
  offline demo set (jitter 0.3, 4 samples): see ``editing.evaluate``.
* ``levels`` (default all three = upstream): only the W+ rows of the given coarse / medium / fine
  levels (the latent mappers' split, :data:`LEVEL_SPLIT`) are variables; the others stay exactly
  ``w0``, get no gradient and add nothing to the L2 term. Like a mapper's levels, it keeps an edit
  off the rows of attributes it should not touch (the demo set's hair colours: medium + fine keeps the
  hair style, see ``editing.evaluate.PROMPTS``).

Measured on the full-size seeded models (``/work/scratch/opt/bench_full.py``; random weights, so
losses say nothing about faces): 10 steps from the same start reach final full-resolution CLIP
losses 1.0335 (losses at 256 px) and 1.0362 (at 1024 px), 0.26 % apart, the per-step losses within
0.7 %. Per step on the shared 2-core CPU (least-contended of several runs, CLIP + ID + L2): 256 px
1.3 s bf16 / 2.2 s fp32, 1024 px 2.4 s bf16 / 4.3 s fp32; the generator's backward pass dominates.

Everything here is a pure function of the given (frozen, eval-mode) models: no device or dtype
is chosen, tensors follow ``w_init``, and precision is the caller's optional autocast context.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from editing.checks import check_float, check_int
from models.latent_mapper import LEVELS, level_rows
from models.stylegan2 import Generator

MODES = ("edit", "free_generation")
SPACES = ("w+", "s")
MAX_STEPS = 5000
MAX_LR = 10.0
MAX_LAMBDA = 1e4
MAX_AUGMENT = 32  # CLIP views per step
MAX_JITTER = 2.0  # largest latent jitter, in standard deviations of each W dimension
MAX_JITTER_SAMPLES = 16  # latents per step when jittering
JITTER_SEED = 0  # the jitter of a run is drawn from a CPU generator seeded with this
AUGMENT_SHIFT = 0.15  # largest shift and scale change of a view, in half-widths (0.15 = 7.5 % of the image)
AUGMENT_NOISE = 0.1  # std of the Gaussian noise added to a view ([-1, 1] pixel range)
AUGMENT_SEED = 0  # the views of a run are drawn from a CPU generator seeded with this
LEVEL_SPLIT = (4, 8)  # first W+ row of the medium and of the fine level, as for the latent mappers
LOSS_SIZES = (32, 64, 128, 256, 512, 1024)  # CLIP's resampling needs a multiple of 32
LR_RAMPDOWN = 0.25  # fraction of the run over which the lr decays to 0 (cosine), upstream get_lr
LR_RAMPUP = 0.05  # fraction of the run over which the lr rises linearly from 0


@dataclass(frozen=True)
class OptimizationSettings:
    """Settings of one latent optimisation (defaults: the StyleCLIP optimisation notebook).

    Raises:
        ValueError: naming the field, for a value of the wrong type, non-finite or out of range.
    """

    steps: int = 40  # Adam steps (upstream CLI: 300)
    lr: float = 0.1  # peak learning rate of the schedule
    l2_lambda: float = 0.008  # weight of sum((w - w0)^2); edit mode only
    id_lambda: float = 0.005  # weight of the ArcFace ID loss; edit mode only (upstream CLI: 0)
    mode: str = "edit"  # "edit": stay close to the start; "free_generation": CLIP loss only
    truncation: float = 0.7  # psi of the seeded random start (see start_latent)
    space: str = "w+"  # variables: "w+" (the W+ latent) or "s" (StyleSpace, toRGB styles fixed)
    loss_size: int | None = 256  # px of the image the losses see (capped at the generator's); None = full
    preview_every: int = 10  # hand a preview image to on_step every N steps; 0 = never
    augment: int = 0  # CLIP loss averaged over this many augmented views; 0 = the image itself (upstream)
    levels: tuple[str, ...] = LEVELS  # W+ levels whose rows move (space "w+"); upstream: all three
    # W+ only: the CLIP loss averaged over the latent and jitter_samples - 1 neighbours, each the latent
    # plus Gaussian noise of this many W standard deviations (per dimension, same on every row), redrawn
    # every step; the L2 and ID terms stay on the latent; 0 = the latent alone (upstream)
    jitter: float = 0.0
    # latents the CLIP loss is averaged over when jitter > 0 (the latent itself first)
    jitter_samples: int = 4

    def __post_init__(self):
        check_int(self.steps, "steps", 1, MAX_STEPS)
        object.__setattr__(self, "lr", check_float(self.lr, "lr", 0.0, MAX_LR, open_low=True))
        object.__setattr__(self, "l2_lambda", check_float(self.l2_lambda, "l2_lambda", 0.0, MAX_LAMBDA))
        object.__setattr__(self, "id_lambda", check_float(self.id_lambda, "id_lambda", 0.0, MAX_LAMBDA))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "truncation", check_float(self.truncation, "truncation", 0.0, 1.0))
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.loss_size is not None and (
            isinstance(self.loss_size, bool) or self.loss_size not in LOSS_SIZES
        ):
            raise ValueError(f"loss_size must be None or one of {LOSS_SIZES}, got {self.loss_size!r}")
        check_int(self.preview_every, "preview_every", 0, MAX_STEPS)
        check_int(self.augment, "augment", 0, MAX_AUGMENT)
        levels = tuple(self.levels) if isinstance(self.levels, (tuple, list)) else None
        if not levels or any(lv not in LEVELS for lv in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {self.levels!r}")
        object.__setattr__(self, "levels", tuple(lv for lv in LEVELS if lv in levels))
        object.__setattr__(self, "jitter", check_float(self.jitter, "jitter", 0.0, MAX_JITTER))
        check_int(self.jitter_samples, "jitter_samples", 2, MAX_JITTER_SAMPLES)
        if self.jitter > 0 and self.space != "w+":
            raise ValueError("jitter moves the W+ latent: it needs space 'w+'")


def levels_from_text(text: str) -> tuple[str, ...]:
    """``"fine, medium"`` -> ``("fine", "medium")`` (command-line form of ``levels``; checked by
    :class:`OptimizationSettings`)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclass(frozen=True)
class StepLosses:
    """The losses of one step, on the image rendered before that step's update (batch 1).

    ``l2`` and ``id`` are None when the term is not part of the objective (free generation,
    a zero weight, or no identity network); ``total`` is the weighted sum that was minimised.
    """

    clip: float  # 1 - cos(CLIP image, text)
    l2: float | None  # sum((w - w0)^2), unweighted
    id: float | None  # 1 - cos(ArcFace(image), ArcFace(start image)), unweighted
    total: float  # clip + l2_lambda * l2 + id_lambda * id
    lr: float  # learning rate used by this step's update


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after each update.

    Attributes:
        step: updates done so far, 1..total.
        total: updates planned (``settings.steps``).
        losses: this step's losses.
        preview: every ``preview_every`` steps, the image this step's losses were computed on
            (the latent before this update), (1, 3, S, S) float32 CPU in ~[-1, 1] with S the loss
            resolution; None on other steps.
    """

    step: int
    total: int
    losses: StepLosses
    preview: torch.Tensor | None = None


@dataclass(frozen=True)
class OptimizationResult:
    """The outcome of :func:`optimize_latent`.

    Attributes:
        w_plus: (1, n_latent, 512) float32 CPU, detached: the optimised W+ (``space="w+"``) or the
            unchanged starting W+ (``space="s"``).
        s_delta: None, or one (dim_l,) float32 CPU tensor per S layer to add to the styles of
            ``w_plus`` (the given ``s_offset`` plus, in S space, what the optimisation moved).
            ``(w_plus, s_delta)`` is exactly an :class:`editing.edits.EditableLatent`.
        history: the losses of every step done, in order.
        steps: updates done (``len(history)``).
        cancelled: True when ``on_step`` stopped the run before ``settings.steps``.
    """

    w_plus: torch.Tensor
    s_delta: tuple[torch.Tensor, ...] | None
    history: tuple[StepLosses, ...]
    steps: int
    cancelled: bool


def augmented_views(
    img: torch.Tensor,
    views: int,
    generator: torch.Generator,
    *,
    shift: float = AUGMENT_SHIFT,
    noise: float = AUGMENT_NOISE,
) -> torch.Tensor:
    """``views`` randomly moved copies of a batch of images, for an averaged CLIP loss.

    Each copy is zoomed by a factor in [1 - shift, 1 + shift] about the centre and shifted by up to
    ``shift`` half-widths in x and y (bilinear, the border pixels repeat), then Gaussian noise of std
    ``noise`` is added. Differentiable in ``img``; the random draws come from ``generator`` (CPU).

    Args:
        img: (B, 3, H, W) images in [-1, 1], any float dtype and device.
        views: copies per image, >= 1.
        generator: CPU ``torch.Generator`` the draws come from.
    Returns:
        (views * B, 3, H, W): view ``k`` of image ``b`` at index ``k * B + b``.
    """
    check_int(views, "views", 1, MAX_AUGMENT)
    if img.ndim != 4:
        raise ValueError(f"img must be (B, 3, H, W), got {tuple(img.shape)}")
    b = img.shape[0]
    n = views * b
    zoom = 1.0 + (torch.rand(n, generator=generator) * 2.0 - 1.0) * shift
    offset = (torch.rand(n, 2, generator=generator) * 2.0 - 1.0) * shift
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = zoom
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = offset
    x = img.repeat(views, 1, 1, 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return x


def scheduled_lr(
    t: float, initial_lr: float, rampdown: float = LR_RAMPDOWN, rampup: float = LR_RAMPUP
) -> float:
    """StyleCLIP's learning-rate schedule (``get_lr``): linear warm-up, cosine ramp-down.

    ``lr(t) = initial_lr * min(1, t / rampup) * (0.5 - 0.5 * cos(pi * min(1, (1 - t) / rampdown)))``.

    Args:
        t: progress ``step / steps`` in [0, 1] (upstream uses ``i / steps`` for i = 0..steps-1,
            so the first step has lr 0 and the last one a small positive lr).
        initial_lr: the peak learning rate.
        rampdown: fraction of the run, at the end, over which the lr decays to 0.
        rampup: fraction of the run, at the start, over which the lr rises from 0.
    Returns:
        The learning rate, in [0, initial_lr].
    """
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"t must be in [0, 1], got {t!r}")
    if not (rampdown > 0 and rampup > 0):
        raise ValueError(f"rampdown and rampup must be positive, got {rampdown!r} and {rampup!r}")
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup)
    return initial_lr * ramp


def start_latent(generator: Generator, w_avg: torch.Tensor, *, seed: int, truncation: float) -> torch.Tensor:
    """The seeded random start of free generation: ``w_avg + psi * (mapping(z) - w_avg)`` on every row.

    ``truncation=0`` gives upstream's free-generation start (the mean latent on all rows);
    ``0.7`` is upstream's random start for ``--mode edit`` without a latent file.

    Args:
        generator: the StyleGAN2 generator (its mapping network is used).
        w_avg: (1, 512) or (512,) average w; the result is on its device.
        seed: seed of z ~ N(0, I) (drawn on the CPU, so the same on every device).
        truncation: psi in [0, 1].
    Returns:
        (1, n_latent, 512) W+ in the generator's dtype (float32), detached.
    """
    check_int(seed, "seed", 0, 2**63 - 1)
    truncation = check_float(truncation, "truncation", 0.0, 1.0)
    dtype = generator.input.input.dtype
    w_avg = w_avg.reshape(1, -1).to(dtype)
    z = torch.randn(1, generator.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = generator.truncate(generator.mapping(z.to(w_avg.device, dtype)), w_avg, truncation)  # (1, 512)
    return w[:, None, :].expand(-1, generator.n_latent, -1).contiguous()


def w_std_of(generator: Generator, *, n: int = 4096, seed: int = 0, batch: int = 1024) -> torch.Tensor:
    """The standard deviation of each W dimension under the mapping network, (style_dim,) float32 on
    the generator's device: the scale of :attr:`OptimizationSettings.jitter`.

    Estimated from ``n`` latents z ~ N(0, I) drawn on the CPU with ``seed`` (the same on every
    device). Dimensions the mapping never varies get 0, so they are never jittered.
    """
    check_int(n, "n", 2, 1_000_000)
    device = generator.input.input.device
    dtype = generator.input.input.dtype
    draws = torch.Generator().manual_seed(seed)
    total = torch.zeros(generator.style_dim, dtype=torch.float64)
    total_sq = torch.zeros(generator.style_dim, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), generator.style_dim, generator=draws)
            w = generator.mapping(z.to(device, dtype)).double().cpu()
            total += w.sum(0)
            total_sq += (w * w).sum(0)
    var = (total_sq - total * total / n) / (n - 1)
    return var.clamp_min(0).sqrt().float().to(device)


def optimize_latent(
    generator: Generator,
    clip: Any,
    text_features: torch.Tensor,
    w_init: torch.Tensor,
    *,
    settings: OptimizationSettings = OptimizationSettings(),
    identity: Any = None,
    source_features: torch.Tensor | None = None,
    s_offset: Sequence[torch.Tensor] | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
    autocast: Callable[[], AbstractContextManager] | None = None,
    w_std: torch.Tensor | None = None,
) -> OptimizationResult:
    """Optimise a latent so that its image matches ``text_features`` under CLIP (StyleCLIP §4).

    Only the latent gets gradients; the models are used as they are (they should be frozen and in
    eval mode: ``FaceEditor`` does that). No graph outlives a step. Call with gradients allowed
    (not under ``torch.inference_mode()``).

    Args:
        generator: StyleGAN2 generator on the device of ``w_init``.
        clip: a :class:`~editing.clip_text.ClipEncoder` (anything with ``clip_loss(img, text)``
            returning (B,) losses).
        text_features: (1, D) or (D,) unit CLIP text embedding of the target description.
        w_init: (1, n_latent, 512) starting W+ (an inverted photo, or :func:`start_latent`).
        settings: hyper-parameters, see :class:`OptimizationSettings`.
        identity: a :class:`~models.irse.IDLoss` (``features``, ``loss_from_features``); the ID
            term is used in edit mode when given and ``settings.id_lambda > 0``.
        source_features: (1, 512) identity features to keep; None = those of the start image
            rendered at the loss resolution.
        s_offset: optional StyleSpace offset of the starting latent (one (dim_l,) or (1, dim_l)
            tensor per S layer), added to the styles of every render; in S space it is part of
            the starting point.
        on_step: called after every update with a :class:`StepInfo`; returning ``False`` stops
            the run cleanly after that update (any other return value continues).
        autocast: a zero-argument factory of the precision context to run the forward passes in,
            e.g. ``FaceEditor.autocast`` (bf16); None = the tensors' own dtype.
        w_std: (512,) standard deviation of each W dimension under the mapping network
            (:func:`w_std_of`); needed when ``settings.jitter > 0``, which scales the noise by it.
    Returns:
        :class:`OptimizationResult` with the final latent on the CPU in float32.
    Raises:
        ValueError: wrong shapes or dtypes (``w_init``, ``text_features``, ``s_offset``,
            ``source_features``, ``w_std``), non-finite inputs, ``settings`` of the wrong type, or
            jitter without ``w_std``.
    """
    if not isinstance(settings, OptimizationSettings):
        raise ValueError(f"settings must be an OptimizationSettings, got {type(settings).__name__}")
    expected = (1, generator.n_latent, generator.style_dim)
    if not isinstance(w_init, torch.Tensor) or tuple(w_init.shape) != expected:
        raise ValueError(f"w_init must be a {expected} tensor, got {tuple(getattr(w_init, 'shape', ()))}")
    if w_init.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"w_init must be float32 (or float64 for reference checks), got {w_init.dtype}")
    if not torch.isfinite(w_init).all():
        raise ValueError("w_init contains NaN or infinite values")
    device, dtype = w_init.device, w_init.dtype  # the latent's; autocast decides the models' compute dtype
    text_features = text_features.detach().reshape(1, -1).to(device, dtype)
    embed_dim = getattr(clip, "embed_dim", text_features.shape[1])
    if text_features.shape[1] != embed_dim or not torch.isfinite(text_features).all():
        raise ValueError(f"text_features must be {embed_dim} finite values, got {tuple(text_features.shape)}")
    layers = generator.style_layers()
    if s_offset is not None:
        if len(s_offset) != len(layers):
            raise ValueError(f"s_offset must hold {len(layers)} tensors, got {len(s_offset)}")
        s_offset = [d.detach().reshape(1, -1).to(device, dtype) for d in s_offset]
        for layer, d in zip(layers, s_offset, strict=True):
            if d.shape[1] != layer.dim:
                raise ValueError(f"s_offset[{layer.index}] must have {layer.dim} channels, got {d.shape[1]}")

    jitter = None
    if settings.jitter > 0:
        if w_std is None:
            raise ValueError("jitter needs w_std, the standard deviation of each W dimension (w_std_of)")
        if not isinstance(w_std, torch.Tensor) or w_std.numel() != generator.style_dim:
            raise ValueError(
                f"w_std must be a ({generator.style_dim},) tensor, got {tuple(getattr(w_std, 'shape', ()))}"
            )
        if not (torch.isfinite(w_std).all() and (w_std >= 0).all()):
            raise ValueError("w_std must be finite and non-negative")
        jitter = (settings.jitter * w_std.detach().reshape(1, 1, -1)).to(device, dtype)  # (1, 1, 512)

    edit = settings.mode == "edit"
    use_id = edit and identity is not None and settings.id_lambda > 0
    use_l2 = edit and settings.l2_lambda > 0
    size = generator.size if settings.loss_size is None else min(settings.loss_size, generator.size)
    context = autocast if autocast is not None else contextlib.nullcontext

    w0 = w_init.detach()
    with torch.no_grad():
        styles_w0 = [s.to(dtype) for s in generator.w_plus_to_styles(w0)]  # [(1, dim_l)]
        styles0 = styles_w0 if s_offset is None else [s + d for s, d in zip(styles_w0, s_offset, strict=True)]
        if use_id:
            if source_features is None:
                with context():
                    source_features = identity.features(
                        generator.synthesis_from_styles(styles0, out_size=size)
                    )
            source_features = source_features.detach().to(device, dtype)

    if settings.space == "w+":
        latent = w0.clone().requires_grad_(True)  # (1, n_latent, 512)
        params = [latent]
        rows = level_rows(generator.n_latent, LEVEL_SPLIT)
        moving = torch.zeros(1, generator.n_latent, 1, dtype=torch.bool, device=device)
        for lv in settings.levels:
            moving[:, rows[lv]] = True

        def current() -> torch.Tensor:  # rows of the other levels stay w0 (and get no gradient)
            return latent if len(settings.levels) == len(LEVELS) else torch.where(moving, latent, w0)

        def styles_now() -> list[torch.Tensor]:
            w = current()
            if jitter is not None:
                # the latent itself first, then its jittered neighbours: (jitter_samples, n_latent, 512)
                k = settings.jitter_samples - 1
                noise = torch.randn(k, 1, w.shape[-1], generator=jitter_draws).to(device, dtype) * jitter
                w = torch.cat([w, w + noise])
            styles = generator.w_plus_to_styles(w)
            return styles if s_offset is None else [s + d for s, d in zip(styles, s_offset, strict=True)]

        def l2_now() -> torch.Tensor:
            return ((current() - w0) ** 2).sum()
    else:
        s_vars = [
            s.clone().requires_grad_(not layer.is_torgb) for s, layer in zip(styles0, layers, strict=True)
        ]
        params = [s for s in s_vars if s.requires_grad]

        def styles_now() -> list[torch.Tensor]:
            return s_vars

        def l2_now() -> torch.Tensor:
            return sum(
                ((s - s0) ** 2).sum() for s, s0 in zip(params, _trainable(styles0, layers), strict=True)
            )

    optimizer = torch.optim.Adam(params, lr=settings.lr)
    views = torch.Generator().manual_seed(AUGMENT_SEED) if settings.augment else None
    jitter_draws = torch.Generator().manual_seed(JITTER_SEED)
    samples = settings.jitter_samples if jitter is not None else 1  # images per step
    history: list[StepLosses] = []
    cancelled = False
    with torch.enable_grad():
        for i in range(settings.steps):
            lr = scheduled_lr(i / settings.steps, settings.lr)
            optimizer.param_groups[0]["lr"] = lr
            with context():
                # (samples, 3, S, S): the latent's image, then those of its jittered neighbours
                img = generator.synthesis_from_styles(styles_now(), out_size=size)
                if views is None:
                    c_loss = clip.clip_loss(img, text_features).to(dtype).sum() / samples
                else:  # the mean over the views and samples
                    seen = augmented_views(img, settings.augment, views)
                    c_loss = clip.clip_loss(seen, text_features).to(dtype).sum() / (
                        settings.augment * samples
                    )
                # like the L2 term, the identity term regularises the latent itself (img[:1]): averaged
                # over the neighbours it would mostly pull each one back from its own noise
                i_loss = identity.loss_from_features(img[:1], source_features).to(dtype) if use_id else None
            loss = c_loss
            l2 = None
            if use_l2:
                l2 = l2_now()
                loss = loss + settings.l2_lambda * l2
            if i_loss is not None:
                loss = loss + settings.id_lambda * i_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
            optimizer.step()

            losses = StepLosses(
                clip=c_loss.item(),
                l2=None if l2 is None else l2.item(),
                id=None if i_loss is None else i_loss.item(),
                total=loss.item(),
                lr=lr,
            )
            history.append(losses)
            if on_step is not None:
                step = i + 1
                preview = None
                if settings.preview_every and step % settings.preview_every == 0:
                    preview = img[:1].detach().float().cpu()
                if (
                    on_step(StepInfo(step=step, total=settings.steps, losses=losses, preview=preview))
                    is False
                ):
                    cancelled = step < settings.steps
                    break
            del img, loss, c_loss, i_loss, l2

    w_plus = w0.float().cpu() if settings.space == "s" else current().detach().float().cpu()
    if settings.space == "s":
        s_delta = tuple((s - s_w).detach()[0].float().cpu() for s, s_w in zip(s_vars, styles_w0, strict=True))
    elif s_offset is not None:
        s_delta = tuple(d[0].float().cpu() for d in s_offset)
    else:
        s_delta = None
    return OptimizationResult(
        w_plus=w_plus.contiguous(),
        s_delta=s_delta,
        history=tuple(history),
        steps=len(history),
        cancelled=cancelled,
    )


def _trainable(styles: Sequence[torch.Tensor], layers: Sequence[Any]) -> list[torch.Tensor]:
    """The styles of the layers optimised in S space (all but toRGB), in order."""
    return [s for s, layer in zip(styles, layers, strict=True) if not layer.is_torgb]
