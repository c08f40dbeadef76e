"""Training StyleCLIP latent mappers: learn ``M`` so that ``G(w + 0.1 * M(w))`` matches a text.

Paper: Patashnik et al., "StyleCLIP: Text-Driven Manipulation of StyleGAN Imagery" (ICCV 2021),
section 5. Compatible with orpatashnik/StyleCLIP ``mapper/training/coach.py`` (loop and losses),
``mapper/options/train_options.py`` (defaults), ``mapper/training/ranger.py`` (optimiser),
``mapper/styleclip_mapper.py`` / ``mapper/latent_mappers.py`` (network, here
:class:`models.latent_mapper.LevelsMapper`) and ``criteria/clip_loss.py`` / ``criteria/id_loss.py``
(here :meth:`editing.clip_text.ClipEncoder.clip_loss` and :class:`models.irse.IDLoss`).

One step on a batch ``w`` (B, n_latent, 512) of training latents, as upstream::

    w_hat = w + strength * M(w)                                   (strength 0.1)
    x, x_hat = G(w), G(w_hat)                                     (constant noise; x without grad)
    loss = clip_lambda * mean_b(1 - cos(CLIP(x_hat_b), t))
         + latent_l2_lambda * mean((w_hat - w)^2)                 (nn.MSELoss)
         + id_lambda * mean_b(1 - cos(ArcFace(x_hat_b), ArcFace(x_b)))

Only ``M`` is trained; the generator, CLIP and ArcFace are frozen. Batches are drawn without
replacement from a seeded permutation per epoch (upstream: a shuffling ``DataLoader`` with
``drop_last``); the batch of step ``i`` is a pure function of ``(seed, i)``, which makes a run
resumable bit for bit from a small training-state file (:func:`save_training_state`).

Differences from upstream, all deliberate:

* ``loss_size`` (default 256): the CLIP and ID losses see the generator's skip image at 256 px
  instead of the 1024-px image (synthesis stops there, several times cheaper per step). Both
  losses look at 224 / 256 px anyway, but W+ rows that only act above 256 px (rows 14-17 at
  1024 px) then get gradients from the latent-L2 term only. ``loss_size=None`` is upstream.
* The ID reference features are those of ``x`` rendered the same way as ``x_hat``.
* Latents: upstream trains on e4e inversions of CelebA-HQ (``train_faces.pt``) or, without a
  file, on random ``z`` mapped and truncated with psi 0.7 (:func:`sample_latents`).
* The optimiser is upstream's Ranger (:class:`Ranger`, written here from its description:
  RAdam + Lookahead + gradient centralisation, same constants); ``optimizer="adam"`` is
  upstream's ``--optim_name adam``.
* No validation set / best-model tracking inside the loop: :func:`evaluate_mapper` computes the
  same losses on held-out latents when the caller wants them.

Outputs: :func:`mapper_checkpoint` builds the official file layout
``{"state_dict": {"mapper.<key>": fp32}, "opts": {...}}`` without the ``decoder.*`` copy of the
generator (12.6 MB for three levels, like the ``mapper.*`` part of the official files), which
:func:`editing.mapper.load_mapper` reads back strictly.

Everything here is a pure function of the given frozen models: no device or dtype is chosen
(the mapper follows the generator's device, in float32), precision is the caller's optional
autocast context (the mapper itself always runs in float32).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editing.checks import check_float, check_int
from editing.mapper import apply_mapper
from editing.weights import load_torch_file
from models.latent_mapper import LEVELS, LR_MUL, LevelsMapper
from models.stylegan2 import Generator

OPTIMIZERS = ("ranger", "adam")
LOSS_SIZES = (32, 64, 128, 256, 512, 1024)  # CLIP's resampling needs a multiple of 32
MAX_STEPS = 10_000_000
MAX_BATCH = 1024
MAX_LR = 10.0
MAX_LAMBDA = 1e4
STATE_FORMAT = "styleclip-mapper-training/1"
DEFAULT_TRUNCATION = 0.7  # psi of upstream's random training latents (coach.configure_datasets)
DEFAULT_N_LATENTS = 5000  # upstream --train_dataset_size
# settings that may change between a run and its resumption (they do not change the trajectory)
RESUMABLE_CHANGES = ("steps", "log_every", "save_every", "preview_every")


@dataclass(frozen=True)
class MapperTrainingSettings:
    """Hyper-parameters of one mapper training run; defaults are upstream's ``train_options.py``.

    Raises:
        ValueError: naming the field, for a value of the wrong type, non-finite or out of range,
            or when every level is disabled.
    """

    steps: int = 50_000  # optimiser steps (upstream --max_steps)
    batch_size: int = 2  # latents per step (upstream --batch_size)
    lr: float = 0.5  # learning rate (upstream --learning_rate, for Ranger)
    optimizer: str = "ranger"  # "ranger" (upstream default) or "adam"
    clip_lambda: float = 1.0  # weight of 1 - cos(CLIP(x_hat), t)
    latent_l2_lambda: float = 0.8  # weight of mean((w_hat - w)^2)
    id_lambda: float = 0.1  # weight of the ArcFace identity loss; 0 = no identity network needed
    no_coarse: bool = False  # no coarse mapper: W+ rows [0:4] stay unchanged
    no_medium: bool = False  # no medium mapper: rows [4:8] stay unchanged
    no_fine: bool = False  # no fine mapper: rows [8:] stay unchanged
    strength: float = 0.1  # w_hat = w + strength * M(w) (upstream: fixed 0.1)
    loss_size: int | None = 256  # px of the images the losses see (capped at the generator's); None = full
    seed: int = 0  # mapper init and batch order
    log_every: int = 50  # report losses to on_step's caller every N steps (upstream --board_interval)
    save_every: int = 2000  # write the training state every N steps; 0 = only at the end
    preview_every: int = 100  # hand (x, x_hat) to on_step every N steps; 0 = never

    def __post_init__(self):
        check_int(self.steps, "steps", 1, MAX_STEPS)
        check_int(self.batch_size, "batch_size", 1, MAX_BATCH)
        object.__setattr__(self, "lr", check_float(self.lr, "lr", 0.0, MAX_LR, open_low=True))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        clip_lambda = check_float(self.clip_lambda, "clip_lambda", 0.0, MAX_LAMBDA, open_low=True)
        object.__setattr__(self, "clip_lambda", clip_lambda)
        l2 = check_float(self.latent_l2_lambda, "latent_l2_lambda", 0.0, MAX_LAMBDA)
        object.__setattr__(self, "latent_l2_lambda", l2)
        object.__setattr__(self, "id_lambda", check_float(self.id_lambda, "id_lambda", 0.0, MAX_LAMBDA))
        for name in ("no_coarse", "no_medium", "no_fine"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.no_coarse and self.no_medium and self.no_fine:
            raise ValueError("no_coarse, no_medium, no_fine: at least one level must be trained")
        strength = check_float(self.strength, "strength", 0.0, 10.0, open_low=True)
        object.__setattr__(self, "strength", strength)
        if self.loss_size is not None and (
            isinstance(self.loss_size, bool) or self.loss_size not in LOSS_SIZES
        ):
            raise ValueError(f"loss_size must be None or one of {LOSS_SIZES}, got {self.loss_size!r}")
        check_int(self.seed, "seed", 0, 2**63 - 1)
        check_int(self.log_every, "log_every", 0, MAX_STEPS)
        check_int(self.save_every, "save_every", 0, MAX_STEPS)
        check_int(self.preview_every, "preview_every", 0, MAX_STEPS)

    @property
    def levels(self) -> tuple[str, ...]:
        """The trained levels in W+ row order, e.g. ``("coarse", "medium")``."""
        off = {"coarse": self.no_coarse, "medium": self.no_medium, "fine": self.no_fine}
        return tuple(lv for lv in LEVELS if not off[lv])

    def as_dict(self) -> dict[str, Any]:
        """Plain values, e.g. for the training-state file (``MapperTrainingSettings(**d)`` inverts it)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StepLosses:
    """The losses of one step (on its batch, before its update); unused terms are None."""

    step: int  # 1-based index of the step in the whole run (resumptions included)
    clip: float  # mean_b 1 - cos(CLIP(x_hat_b), t)
    l2: float | None  # mean((w_hat - w)^2), unweighted; None when latent_l2_lambda == 0
    id: float | None  # mean_b 1 - cos(ArcFace(x_hat_b), ArcFace(x_b)), unweighted; None when off
    total: float  # clip_lambda * clip + latent_l2_lambda * l2 + id_lambda * id

    def as_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after each update.

    Attributes:
        step: steps done so far in the run (resumed steps included), 1..total.
        total: steps planned (``settings.steps``).
        losses: this step's losses.
        seconds: wall time of this step (forward, backward, update).
        log: True every ``settings.log_every`` steps and at the last step (print then).
        preview: every ``preview_every`` steps, ``torch.cat([x, x_hat])``: (2B, 3, S, S) float32
            CPU in ~[-1, 1], the batch's original then edited images at the loss resolution; else None.
    """

    step: int
    total: int
    losses: StepLosses
    seconds: float
    log: bool
    preview: torch.Tensor | None = None


@dataclass(frozen=True)
class MapperTrainingResult:
    """The outcome of :func:`train_mapper`.

    Attributes:
        mapper: the trained mapper, float32 on the CPU, eval mode.
        state: the training state after the last step (see :func:`training_state`), CPU tensors.
        history: the losses of the steps run by this call, in order.
        steps: steps done in the whole run (resumed ones included).
        cancelled: True when ``on_step`` stopped the run before ``settings.steps``.
    """

    mapper: LevelsMapper
    state: dict[str, Any]
    history: tuple[StepLosses, ...]
    steps: int
    cancelled: bool


# ------------------------------------------------------------------------------------ optimiser
class Ranger(torch.optim.Optimizer):
    """RAdam with Lookahead and gradient centralisation, as upstream's ``mapper/training/ranger.py``.

    Per parameter and step ``t`` (float32 state):

    * gradient centralisation: for tensors with more than one dim, subtract the gradient's mean
      over all dims but the first;
    * Adam moments ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``;
    * RAdam: with ``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)``,
      if ``rho_t > sma_threshold`` the step is ``-lr * r_t / (1 - b1^t) * m / (sqrt(v) + eps)`` with
      ``r_t = sqrt((1 - b2^t) (rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))``,
      else the un-normalised momentum step ``-lr / (1 - b1^t) * m``;
    * Lookahead: every ``k`` steps the slow copy moves ``alpha`` of the way to the fast weights
      and the fast weights are reset to it.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: Adam's (b1, b2); upstream (0.95, 0.999).
        eps: added to ``sqrt(v)``; upstream 1e-5.
        alpha: Lookahead interpolation; upstream 0.5.
        k: Lookahead period in steps; upstream 6.
        sma_threshold: RAdam's variance-rectification threshold; upstream 5.
        weight_decay: decay ``p -= weight_decay * lr * p`` before the update (upstream 0).
        centralize: gradient centralisation of multi-dim tensors (upstream on).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        alpha: float = 0.5,
        k: int = 6,
        sma_threshold: float = 5.0,
        weight_decay: float = 0.0,
        centralize: bool = True,
    ):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not k >= 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            alpha=alpha,
            k=int(k),
            sma_threshold=sma_threshold,
            weight_decay=weight_decay,
            centralize=centralize,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                grad = p.grad.to(torch.float32, copy=True)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    state["slow_buffer"] = p.detach().clone()
                if group["centralize"] and grad.ndim > 1:
                    grad -= grad.mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)

                p32 = p.detach().float()
                if group["weight_decay"] != 0:
                    p32.add_(p32, alpha=-group["weight_decay"] * lr)
                beta2_t = beta2**t
                sma_inf = 2.0 / (1.0 - beta2) - 1.0
                sma_t = sma_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
                if sma_t > group["sma_threshold"]:
                    rect = math.sqrt(
                        (1 - beta2_t)
                        * (sma_t - 4)
                        / (sma_inf - 4)
                        * (sma_t - 2)
                        / sma_t
                        * sma_inf
                        / (sma_inf - 2)
                    )
                    step_size = rect / (1.0 - beta1**t)
                    p32.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size * lr)
                else:
                    p32.add_(exp_avg, alpha=-lr / (1.0 - beta1**t))
                p.copy_(p32)

                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss


def make_optimizer(settings: MapperTrainingSettings, params) -> torch.optim.Optimizer:
    """The optimiser of ``settings`` (Ranger or Adam with upstream's defaults) over ``params``."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr)
    return Ranger(params, lr=settings.lr)


# ------------------------------------------------------------------------------------ latents
def sample_latents(
    generator: Generator,
    w_avg: torch.Tensor,
    n: int,
    *,
    seed: int = 0,
    truncation: float = DEFAULT_TRUNCATION,
    chunk: int = 1024,
) -> torch.Tensor:
    """Upstream's random training latents: ``z ~ N(0, I)`` → mapping → truncation → every W+ row.

    Args:
        generator: the StyleGAN2 generator (its mapping network runs on its device).
        w_avg: (1, 512) or (512,) average w.
        n: number of latents.
        seed: seed of the z draws (CPU generator, so the same on every device).
        truncation: psi in [0, 1]; upstream 0.7.
        chunk: latents mapped per forward pass.
    Returns:
        (n, n_latent, 512) float32 CPU tensor, every row of a latent equal.
    """
    check_int(n, "n", 1, 10_000_000)
    check_int(seed, "seed", 0, 2**63 - 1)
    truncation = check_float(truncation, "truncation", 0.0, 1.0)
    check_int(chunk, "chunk", 1, 1 << 20)
    device = _device_of(generator)
    w_avg = w_avg.reshape(1, -1).to(device, torch.float32)
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.style_dim, generator=rng)
    out = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            w = generator.mapping(z[i : i + chunk].to(device)).float()  # (b, 512)
            out.append(generator.truncate(w, w_avg, truncation).cpu())
    w = torch.cat(out)  # (n, 512)
    return w[:, None, :].expand(-1, generator.n_latent, -1).contiguous()


def load_latents(path: str | os.PathLike, n_latent: int) -> torch.Tensor:
    """Training latents: (N, n_latent, 512) or one (n_latent, 512) latent, from a ``.npy`` file or a
    ``.pt`` file holding one tensor (upstream's ``train_faces.pt`` / ``test_faces.pt``, read with
    ``weights_only=True``).

    Raises:
        ValueError: not a numeric array of that shape, or non-finite values.
    Returns:
        (N, n_latent, 512) float32 CPU tensor.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".pt"):
        raise ValueError(f"latents must be a .npy or .pt file of shape (N, {n_latent}, 512), got {path.name}")
    if suffix == ".pt":
        obj = load_torch_file(path)
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path.name} must hold one tensor of W+ latents, found {type(obj).__name__}")
        arr = obj.detach().float().numpy()
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path.name} is not a readable .npy array ({exc})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (n_latent, 512) or arr.shape[0] < 1:
        raise ValueError(f"{path.name} must hold W+ latents of shape (N, {n_latent}, 512), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path.name} must hold floating-point latents, got {arr.dtype}")
    w = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not torch.isfinite(w).all():
        raise ValueError(f"{path.name} contains NaN or infinite values")
    return w


def latents_fingerprint(latents: torch.Tensor) -> dict[str, Any]:
    """Shape and an order-sensitive checksum of a latent set (to check a resumption uses the same)."""
    per_row = latents.detach().sum(dim=tuple(range(1, latents.ndim)), dtype=torch.float64).cpu()  # (N,)
    weights = torch.arange(1, per_row.numel() + 1, dtype=torch.float64)
    return {"shape": list(latents.shape), "checksum": float((per_row * weights).sum())}


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the latents of step ``step`` (0-based): epoch ``step // (n // batch_size)`` is a
    seeded permutation of ``range(n)`` cut into ``n // batch_size`` batches (the rest is dropped,
    as upstream's ``drop_last``). Returns (batch_size,) int64."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"need at least batch_size={batch_size} latents, got {n}")
    epoch, i = divmod(step, per_epoch)
    rng = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    perm = torch.randperm(n, generator=rng)
    return perm[i * batch_size : (i + 1) * batch_size]


# ------------------------------------------------------------------------------------ mapper
def init_mapper(settings: MapperTrainingSettings, n_latent: int, latent_dim: int = 512) -> LevelsMapper:
    """A fresh mapper with upstream's init (weights ``N(0, 1) / lr_mul``, biases 0), seeded by
    ``settings.seed`` without touching the global RNG. Float32, CPU."""
    with torch.device("meta"):
        mapper = LevelsMapper(levels=settings.levels, n_latent=n_latent, latent_dim=latent_dim)
    mapper = mapper.to_empty(device="cpu")
    rng = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        for name, p in mapper.named_parameters():  # registration order: deterministic
            if name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=rng) / LR_MUL)
            else:
                p.zero_()
    return mapper


def mapper_opts(
    settings: MapperTrainingSettings,
    *,
    description: str,
    stylegan_size: int,
    steps_done: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``opts`` of a mapper file: upstream's option names where they exist, plain values only."""
    opts: dict[str, Any] = {
        "description": description,
        "mapper_type": "LevelsMapper",
        "work_in_stylespace": False,
        "no_coarse_mapper": settings.no_coarse,
        "no_medium_mapper": settings.no_medium,
        "no_fine_mapper": settings.no_fine,
        "stylegan_size": int(stylegan_size),
        "batch_size": settings.batch_size,
        "learning_rate": settings.lr,
        "optim_name": settings.optimizer,
        "clip_lambda": settings.clip_lambda,
        "latent_l2_lambda": settings.latent_l2_lambda,
        "id_lambda": settings.id_lambda,
        "max_steps": settings.steps,
        # not upstream options
        "steps_done": int(steps_done),
        "strength": settings.strength,
        "loss_size": settings.loss_size,
        "seed": settings.seed,
    }
    for k, v in (extra or {}).items():
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise ValueError(f"extra[{k!r}] must be a plain value (str, int, float, bool, None), got {v!r}")
        opts.setdefault(k, v)
    return opts


def mapper_checkpoint(
    mapper: LevelsMapper, opts: Mapping[str, Any], dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """The official mapper-file layout: ``{"state_dict": {"mapper.<key>": fp32 CPU}, "opts": opts}``.

    Tensors are contiguous copies (no shared storage), so the saved file holds only the mapper.
    ``dtype=torch.float16`` halves the file (the shipped demo mappers); loaders cast back to fp32.
    """
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    state_dict = {
        f"mapper.{k}": v.detach().to("cpu", dtype).contiguous().clone()
        for k, v in mapper.state_dict().items()
    }
    return {"state_dict": state_dict, "opts": dict(opts)}


def save_mapper_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write :func:`mapper_checkpoint`'s dict with ``torch.save`` (atomically: temp file + rename)."""
    return _atomic_save(dict(checkpoint), Path(path))


# ------------------------------------------------------------------------------------ state
def training_state(
    *,
    step: int,
    mapper: LevelsMapper,
    optimizer: torch.optim.Optimizer,
    settings: MapperTrainingSettings,
    text_features: torch.Tensor,
    description: str,
    n_latent: int,
    stylegan_size: int,
    latents: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a resumption needs, as CPU tensors and plain containers (``weights_only`` safe).

    The batch order is a pure function of ``(settings.seed, step)`` (:func:`batch_indices`), so the
    RNG position is the step itself.
    """
    return {
        "format": STATE_FORMAT,
        "step": int(step),
        "mapper": {k: v.detach().cpu().clone() for k, v in mapper.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()),
        "settings": settings.as_dict(),
        "text_features": text_features.detach().float().cpu().reshape(1, -1).clone(),
        "description": description,
        "n_latent": int(n_latent),
        "stylegan_size": int(stylegan_size),
        "latents": dict(latents),
        "meta": dict(meta or {}),
    }


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write a training state (atomically: temp file + rename)."""
    return _atomic_save(dict(state), Path(path))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state` (``weights_only=True``).

    Raises:
        ValueError: the file is not a mapper training state.
    """
    state = load_torch_file(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{Path(path).name} is not a mapper training state ({STATE_FORMAT})")
    return state


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _atomic_save(obj: Any, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def _device_of(generator: Generator) -> torch.device:
    return next(generator.parameters()).device


def _check_resume(state: Mapping[str, Any], settings: MapperTrainingSettings, n_latent: int, size: int):
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"resume is not a mapper training state ({STATE_FORMAT})")
    old = dict(state["settings"])
    new = settings.as_dict()
    diff = [k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k]]
    if diff:
        pairs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
        raise ValueError(f"settings differ from the resumed run's ({pairs}); only {RESUMABLE_CHANGES} may")
    if int(state["n_latent"]) != n_latent or int(state["stylegan_size"]) != size:
        raise ValueError(
            f"resume was trained for a {state['stylegan_size']} px generator ({state['n_latent']} W+ rows), "
            f"not this {size} px one"
        )
    if int(state["step"]) > settings.steps:
        raise ValueError(f"steps={settings.steps} is below the {state['step']} steps already done")


# ------------------------------------------------------------------------------------ training
def _text_features(clip: Any, text: str | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, str]:
    if isinstance(text, str):
        if not text.strip():
            raise ValueError("text must be a non-empty description, e.g. 'purple hair'")
        with torch.no_grad():
            feats = clip.encode_text([text])
        description = text
    elif isinstance(text, torch.Tensor):
        feats, description = text, ""
    else:
        raise ValueError(f"text must be a string or a CLIP text embedding tensor, got {type(text).__name__}")
    feats = feats.detach().reshape(1, -1).to(device, torch.float32)
    if not torch.isfinite(feats).all():
        raise ValueError("text features contain NaN or infinite values")
    return feats, description


def evaluate_mapper(
    generator: Generator,
    clip: Any,
    text_features: torch.Tensor,
    mapper: LevelsMapper,
    latents: torch.Tensor,
    *,
    settings: MapperTrainingSettings = MapperTrainingSettings(),
    identity: Any = None,
    batch_size: int = 8,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> dict[str, float | None]:
    """The training losses averaged over ``latents`` (e.g. a held-out set), without gradients.

    Args:
        generator, clip, identity: as in :func:`train_mapper`.
        text_features: (1, D) or (D,) unit CLIP text embedding.
        mapper: the mapper, on the generator's device.
        latents: (N, n_latent, 512) W+ latents (any device).
        settings: strength, loss weights and ``loss_size`` to use.
        batch_size: latents per forward pass.
        autocast: optional precision context factory for the generator and loss networks.
    Returns:
        ``{"clip", "l2", "id", "total"}`` means over the N latents (``id`` None without identity /
        with ``id_lambda == 0``; ``l2`` is reported whatever ``latent_l2_lambda``).
    """
    _check_latents(latents, generator)
    device = _device_of(generator)
    text_features = text_features.detach().reshape(1, -1).to(device, torch.float32)
    size = generator.size if settings.loss_size is None else min(settings.loss_size, generator.size)
    context = autocast if autocast is not None else contextlib.nullcontext
    use_id = identity is not None and settings.id_lambda > 0
    sums = {"clip": 0.0, "l2": 0.0, "id": 0.0}
    n = latents.shape[0]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            w = latents[i : i + batch_size].to(device, torch.float32)
            w_hat = apply_mapper(mapper, w, settings.strength)
            with context():
                x_hat = generator.synthesis(w_hat, out_size=size)
                sums["clip"] += clip.clip_loss(x_hat, text_features).float().sum().item()
                if use_id:
                    x = generator.synthesis(w, out_size=size)
                    cos = (identity.features(x_hat).float() * identity.features(x).float()).sum(1)
                    sums["id"] += (1 - cos).sum().item()
            sums["l2"] += ((w_hat - w) ** 2).mean(dim=(1, 2)).sum().item()
    out: dict[str, float | None] = {k: v / n for k, v in sums.items()}
    if not use_id:
        out["id"] = None
    out["total"] = (
        settings.clip_lambda * out["clip"]
        + settings.latent_l2_lambda * out["l2"]
        + (settings.id_lambda * out["id"] if out["id"] is not None else 0.0)
    )
    return out


def _check_latents(latents: torch.Tensor, generator: Generator) -> None:
    expected = (generator.n_latent, generator.style_dim)
    if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or tuple(latents.shape[1:]) != expected:
        shape = tuple(getattr(latents, "shape", ()))
        raise ValueError(f"latents must be an (N, {expected[0]}, {expected[1]}) tensor, got {shape}")
    if not latents.is_floating_point() or not torch.isfinite(latents).all():
        raise ValueError("latents must be finite floating-point values")


def train_mapper(
    generator: Generator,
    clip: Any,
    text: str | torch.Tensor,
    latents: torch.Tensor,
    *,
    settings: MapperTrainingSettings = MapperTrainingSettings(),
    identity: Any = None,
    mapper: LevelsMapper | None = None,
    resume: Mapping[str, Any] | str | os.PathLike | None = None,
    state_path: str | os.PathLike | None = None,
    meta: Mapping[str, Any] | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> MapperTrainingResult:
    """Train a StyleCLIP latent mapper for one text (StyleCLIP §5, upstream ``Coach.train``).

    Call with gradients allowed (not under ``torch.inference_mode()``). The generator, CLIP and
    identity networks must be frozen and in eval mode (``FaceEditor`` does that); only the mapper
    gets gradients. The mapper lives on the generator's device in float32.

    Args:
        generator: StyleGAN2 generator (``n_latent`` W+ rows; the mapper is built for it).
        clip: a :class:`~editing.clip_text.ClipEncoder` (``encode_text``, ``clip_loss``).
        text: the target description (encoded with ``clip``), or its (1, D) / (D,) unit CLIP
            text embedding (the checkpoint's ``description`` is then empty).
        latents: (N, n_latent, 512) training W+ latents, N >= batch_size, on any device (batches
            are moved to the generator's device): e4e inversions or :func:`sample_latents`.
        settings: hyper-parameters, see :class:`MapperTrainingSettings`.
        identity: a :class:`~models.irse.IDLoss`; required when ``settings.id_lambda > 0``.
        mapper: optional starting weights (e.g. fine-tuning an official mapper) with exactly the
            levels of ``settings``; None = a fresh seeded init (:func:`init_mapper`).
        resume: a training state (dict from :func:`load_training_state`, or its path) to continue
            from; its settings must equal ``settings`` except ``steps`` and the intervals, and the
            latents must be the same. Continuing gives the same weights as an uninterrupted run.
        state_path: where to write the training state every ``save_every`` steps, at the end and
            when cancelled; None = never.
        meta: plain values stored in the training state (e.g. where the latents came from).
        on_step: called after every update with a :class:`StepInfo`; returning ``False`` stops
            the run cleanly after that update.
        autocast: zero-argument factory of the precision context for the generator and the loss
            networks (e.g. ``FaceEditor.autocast``); the mapper always runs in float32.
    Returns:
        :class:`MapperTrainingResult`; build the mapper file with :func:`mapper_checkpoint`.
    Raises:
        ValueError: bad shapes, too few latents, missing identity network, an incompatible resume.
    """
    if not isinstance(settings, MapperTrainingSettings):
        raise ValueError(f"settings must be a MapperTrainingSettings, got {type(settings).__name__}")
    _check_latents(latents, generator)
    n = latents.shape[0]
    if n < settings.batch_size:
        raise ValueError(f"latents: need at least batch_size={settings.batch_size} latents, got {n}")
    use_id = settings.id_lambda > 0
    if use_id and identity is None:
        raise ValueError("identity: an IDLoss is required when id_lambda > 0 (or set id_lambda=0)")
    device = _device_of(generator)
    text_features, description = _text_features(clip, text, device)
    n_latent, size_full = generator.n_latent, generator.size
    fingerprint = latents_fingerprint(latents)

    if resume is not None and mapper is not None:
        raise ValueError("give either mapper (starting weights) or resume (a training state), not both")
    if resume is not None:
        state = load_training_state(resume) if isinstance(resume, (str, os.PathLike)) else resume
        _check_resume(state, settings, n_latent, size_full)
        old = state["latents"]
        if list(old["shape"]) != fingerprint["shape"] or not math.isclose(
            old["checksum"], fingerprint["checksum"], rel_tol=1e-9, abs_tol=1e-6
        ):
            raise ValueError("latents differ from those of the resumed run")
        if not torch.allclose(state["text_features"].float().cpu(), text_features.cpu(), atol=1e-5):
            raise ValueError(f"text differs from the resumed run's ({state.get('description')!r})")
        description = description or state.get("description", "")
        start = int(state["step"])
        net = LevelsMapper.from_state_dict(state["mapper"], n_latent=n_latent)
        if net.levels != settings.levels:
            raise ValueError(f"resume: its levels {net.levels} differ from settings' {settings.levels}")
    elif mapper is not None:
        if not isinstance(mapper, LevelsMapper) or mapper.n_latent != n_latent:
            raise ValueError(f"mapper must be a LevelsMapper for {n_latent} W+ rows")
        if mapper.levels != settings.levels:
            raise ValueError(f"mapper levels {mapper.levels} differ from settings' levels {settings.levels}")
        net = LevelsMapper.from_state_dict(mapper.state_dict(), n_latent=n_latent, split=mapper.split)
        start = 0
    else:
        net = init_mapper(settings, n_latent, generator.style_dim)
        start = 0
    net = net.to(device, torch.float32).train()
    params = list(net.parameters())
    optimizer = make_optimizer(settings, params)
    if resume is not None:
        optimizer.load_state_dict(state["optimizer"])

    size = size_full if settings.loss_size is None else min(settings.loss_size, size_full)
    context = autocast if autocast is not None else contextlib.nullcontext
    use_l2 = settings.latent_l2_lambda > 0

    def current_state(step: int) -> dict[str, Any]:
        return training_state(
            step=step,
            mapper=net,
            optimizer=optimizer,
            settings=settings,
            text_features=text_features,
            description=description,
            n_latent=n_latent,
            stylegan_size=size_full,
            latents=fingerprint,
            meta=meta,
        )

    history: list[StepLosses] = []
    cancelled = False
    step = start
    with torch.enable_grad():
        while step < settings.steps:
            t0 = time.perf_counter()
            idx = batch_indices(n, settings.batch_size, settings.seed, step)
            w = latents[idx.to(latents.device)].to(device, torch.float32)  # (B, n_latent, 512)
            with torch.no_grad(), context():
                x = generator.synthesis(w, out_size=size)  # (B, 3, S, S)
                source_features = identity.features(x).float() if use_id else None
            w_hat = apply_mapper(net, w, settings.strength)  # fp32, outside autocast
            with context():
                x_hat = generator.synthesis(w_hat, out_size=size)
                c_loss = clip.clip_loss(x_hat, text_features).float().mean()
                i_loss = identity.loss_from_features(x_hat, source_features).float() if use_id else None
            loss = settings.clip_lambda * c_loss
            l2 = None
            if use_l2:
                l2 = ((w_hat - w) ** 2).mean()
                loss = loss + settings.latent_l2_lambda * l2
            if i_loss is not None:
                loss = loss + settings.id_lambda * i_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
            optimizer.step()
            step += 1

            losses = StepLosses(
                step=step,
                clip=c_loss.item(),
                l2=None if l2 is None else l2.item(),
                id=None if i_loss is None else i_loss.item(),
                total=loss.item(),
            )
            history.append(losses)
            if state_path is not None and settings.save_every and step % settings.save_every == 0:
                save_training_state(state_path, current_state(step))
            if on_step is not None:
                preview = None
                if settings.preview_every and step % settings.preview_every == 0:
                    preview = torch.cat([x, x_hat.detach()]).float().cpu()
                log = step == settings.steps or bool(settings.log_every and step % settings.log_every == 0)
                info = StepInfo(
                    step=step,
                    total=settings.steps,
                    losses=losses,
                    seconds=time.perf_counter() - t0,
                    log=log,
                    preview=preview,
                )
                if on_step(info) is False:
                    cancelled = step < settings.steps
                    break
            del x, x_hat, w_hat, loss, c_loss, i_loss, l2

    final = current_state(step)
    if state_path is not None:
        save_training_state(state_path, final)
    out = LevelsMapper.from_state_dict(final["mapper"], n_latent=n_latent, split=net.split).eval()
    return MapperTrainingResult(
        mapper=out, state=final, history=tuple(history), steps=step, cancelled=cancelled
    )


# ------------------------------------------------------------------------------------ command line
# Flags whose value comes from the training state on --resume (None = not given on the command line).
_SETTING_FLAGS = {
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "clip_lambda": "--clip-lambda",
    "latent_l2_lambda": "--l2-lambda",
    "id_lambda": "--id-lambda",
    "strength": "--strength",
    "loss_size": "--loss-size",
    "seed": "--seed",
}


def _loss_size_arg(text: str) -> int | str:
    if text.lower() in ("full", "none"):
        return "full"  # not None: None means "not given" (default, or the resumed run's value)
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'full' or one of {LOSS_SIZES}, got {text!r}") from None


def add_train_mapper_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train-mapper`` options (model options such as ``--weights`` are added by the CLI)."""
    p = parser
    p.add_argument("--prompt", default=None, help="target description, e.g. 'purple hair'")
    p.add_argument("--out", type=Path, required=True, help="the mapper file to write (.pt)")
    p.add_argument(
        "--latents", type=Path, default=None, help="training W+ (N, n_latent, 512): .npy or upstream's .pt"
    )
    p.add_argument(
        "--n-latents",
        type=int,
        default=None,
        help=f"random training latents when no --latents (default {DEFAULT_N_LATENTS})",
    )
    p.add_argument(
        "--truncation", type=float, default=None, help=f"psi of random latents (default {DEFAULT_TRUNCATION})"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (default 50000)")
    p.add_argument("--batch-size", type=int, default=None, help="latents per step (default 2)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.5)")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="ranger (default) or adam")
    p.add_argument("--clip-lambda", type=float, default=None, help="CLIP loss weight (default 1.0)")
    p.add_argument(
        "--l2-lambda",
        dest="latent_l2_lambda",
        type=float,
        default=None,
        help="latent L2 weight (default 0.8)",
    )
    p.add_argument("--id-lambda", type=float, default=None, help="identity loss weight (default 0.1)")
    p.add_argument("--no-coarse", action="store_true", help="do not edit the coarse W+ rows [0:4]")
    p.add_argument("--no-medium", action="store_true", help="do not edit the medium W+ rows [4:8]")
    p.add_argument("--no-fine", action="store_true", help="do not edit the fine W+ rows [8:]")
    p.add_argument("--strength", type=float, default=None, help="w + strength * M(w) (default 0.1)")
    p.add_argument(
        "--loss-size",
        type=_loss_size_arg,
        default=None,
        help="px of the images the losses see: 256 (default, faster) or 'full' (upstream)",
    )
    p.add_argument("--seed", type=int, default=None, help="mapper init, batch order, random latents")
    p.add_argument("--resume", type=Path, default=None, help="continue from a training state file")
    p.add_argument("--state", type=Path, default=None, help="training state to write (default OUT.state.pt)")
    p.add_argument("--save-every", type=int, default=None, help="write the state every N steps (2000)")
    p.add_argument("--log-every", type=int, default=None, help="print progress every N steps (50)")
    p.add_argument(
        "--half", action="store_true", help="store the mapper weights as float16 (half the file size)"
    )


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_train_mapper(
    args: argparse.Namespace,
    editor_factory: Callable[[tuple[str, ...]], Any],
    *,
    log: Callable[[str], None] = _print_err,
) -> dict[str, Any]:
    """``python -m editing train-mapper``: train a mapper, write it and its training state.

    Bad arguments fail before any model is loaded. With ``--resume`` the settings, prompt and
    latent source come from the state file; ``--steps`` and the intervals may change, any other
    training flag given must agree with the state.

    Args:
        args: parsed by a parser set up with :func:`add_train_mapper_arguments`.
        editor_factory: ``components -> FaceEditor`` (with ``.generator``, ``.w_avg``, ``.clip``,
            ``.identity``, ``.autocast()``), e.g. the CLI's weight-folder loader.
        log: receives one progress line every ``--log-every`` steps (default: stderr).
    Returns:
        A JSON-able summary: output paths, steps, final losses, seconds per step, levels.
    Raises:
        ValueError: bad arguments, an unreadable latents file, an incompatible resume.
    """
    out = Path(args.out)
    if out.suffix.lower() != ".pt":
        raise ValueError(f"--out {out} must end in .pt")
    if not out.parent.exists():
        raise ValueError(f"the folder {out.parent} does not exist")
    state_path = Path(args.state) if args.state is not None else out.with_name(out.stem + ".state.pt")
    if not state_path.parent.exists():
        raise ValueError(f"the folder {state_path.parent} does not exist")
    given = {k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k) is not None}
    if given.get("loss_size") == "full":
        given["loss_size"] = None
    levels = {"no_coarse": args.no_coarse, "no_medium": args.no_medium, "no_fine": args.no_fine}
    intervals = {
        k: v
        for k, v in {"steps": args.steps, "save_every": args.save_every, "log_every": args.log_every}.items()
        if v is not None
    }

    resume = None
    if args.resume is not None:
        if not Path(args.resume).is_file():
            raise ValueError(f"--resume {args.resume} does not exist")
        resume = load_training_state(args.resume)
        base = dict(resume["settings"])
        conflicts = [
            f"{_SETTING_FLAGS[k]} {v!r} (state: {base[k]!r})" for k, v in given.items() if base.get(k) != v
        ]
        conflicts += [
            f"--{k.replace('_', '-')} (state: {base[k]!r})" for k, v in levels.items() if v and not base[k]
        ]
        if conflicts:
            raise ValueError("--resume: these options differ from the resumed run: " + "; ".join(conflicts))
        settings = MapperTrainingSettings(**{**base, **intervals})
        meta = dict(resume.get("meta") or {})
        if args.prompt is not None and args.prompt != resume.get("description"):
            raise ValueError(f"--prompt differs from the resumed run's {resume.get('description')!r}")
        prompt = resume.get("description") or ""
        if args.latents is not None and str(args.latents) != meta.get("latents"):
            raise ValueError(f"--latents differs from the resumed run's {meta.get('latents')!r}")
        latents_file = meta.get("latents")
        n_latents = meta.get("n_latents", DEFAULT_N_LATENTS)
        truncation = meta.get("truncation", DEFAULT_TRUNCATION)
        if not prompt:
            raise ValueError("--resume: the state file has no prompt")
    else:
        if not args.prompt or not args.prompt.strip():
            raise ValueError("--prompt is required, e.g. --prompt 'purple hair'")
        prompt = args.prompt
        settings = MapperTrainingSettings(**given, **levels, **intervals)
        latents_file = None if args.latents is None else str(args.latents)
        n_latents = DEFAULT_N_LATENTS if args.n_latents is None else args.n_latents
        truncation = DEFAULT_TRUNCATION if args.truncation is None else args.truncation
        check_int(n_latents, "--n-latents", 1, 10_000_000)
        check_float(truncation, "--truncation", 0.0, 1.0)
    if latents_file is not None and not Path(latents_file).is_file():
        raise ValueError(f"--latents {latents_file} does not exist")
    meta = {"latents": latents_file}
    if latents_file is None:
        meta.update(n_latents=n_latents, truncation=truncation, latents_seed=settings.seed)

    t0 = time.perf_counter()
    components = ("generator", "clip", "identity") if settings.id_lambda > 0 else ("generator", "clip")
    editor = editor_factory(components)
    t_load = time.perf_counter() - t0
    g = editor.generator
    if latents_file is not None:
        latents = load_latents(latents_file, g.n_latent)
    else:
        latents = sample_latents(g, editor.w_avg, n_latents, seed=settings.seed, truncation=truncation)

    times: list[float] = []

    def progress(info: StepInfo) -> None:
        times.append(info.seconds)
        if info.log:
            recent = times[-(settings.log_every or 1) :]
            lo = info.losses
            parts = [f"step {info.step}/{info.total}", f"loss {lo.total:.4f}", f"clip {lo.clip:.4f}"]
            if lo.l2 is not None:
                parts.append(f"l2 {lo.l2:.5f}")
            if lo.id is not None:
                parts.append(f"id {lo.id:.4f}")
            parts.append(f"{sum(recent) / len(recent):.3f} s/step")
            log("  ".join(parts))

    t1 = time.perf_counter()
    result = train_mapper(
        g,
        editor.clip,
        prompt,
        latents,
        settings=settings,
        identity=editor.identity if settings.id_lambda > 0 else None,
        resume=resume,
        state_path=state_path,
        meta=meta,
        on_step=progress,
        autocast=editor.autocast,
    )
    opts = mapper_opts(
        settings,
        description=prompt,
        stylegan_size=g.size,
        steps_done=result.steps,
        extra={"latents_train_path": latents_file or "", "train_dataset_size": int(latents.shape[0])},
    )
    dtype = torch.float16 if getattr(args, "half", False) else torch.float32
    save_mapper_checkpoint(out, mapper_checkpoint(result.mapper, opts, dtype))
    last = result.history[-1].as_dict() if result.history else None
    return {
        "out": str(out),
        "state": str(state_path),
        "description": prompt,
        "levels": list(settings.levels),
        "steps": result.steps,
        "steps_this_run": len(result.history),
        "resumed_from": None if resume is None else int(resume["step"]),
        "n_latents": int(latents.shape[0]),
        "final_losses": last,
        "seconds_per_step": round(sum(times) / len(times), 4) if times else None,
        "timings": {"load": round(t_load, 3), "train": round(time.perf_counter() - t1, 3)},
    }
