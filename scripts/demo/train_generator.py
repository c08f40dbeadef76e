"""Train the demo StyleGAN2 generator: a narrow 64 px ``models.stylegan2.Generator`` that decodes
z ~ N(0, I) into the procedural cartoon faces of ``editing.demo.faces`` (issue 4, offline demo set).

Not a GAN: a fixed, deterministic map :func:`z_to_params` turns the first :data:`N_CODE_DIMS`
dimensions of the (pixel-normalised) z into renderer parameters whose distribution matches
``sample_params``' priors, one attribute per dimension: continuous attributes are monotone in theirs
(the standard-normal CDF rescaled to the attribute's range), binary ones and categories are cut at the
prior's cumulative shares. The mapping network is *constructed* to output that face's attribute code
(``params_to_vector`` rescaled to [0, 2]) in the first VECTOR_SIZE dimensions of w and zeros elsewhere
(:func:`construct_mapping`: hinge units + least squares, exact to ~1e-3), so W is the space of
attributes, every attribute along its own axis. The synthesis network is then trained to draw the
rendered face from that w (L1 on pixels and on image gradients, fresh z every step, so the data are
infinite and nothing is memorised).

The network is the real class in rosinality's key layout (Karras et al., "Analyzing and Improving the
Image Quality of StyleGAN", CVPR 2020; rosinality/stylegan2-pytorch ``model.py``), only narrower:
``channels`` per resolution and ``n_mlp`` mapping layers, ``style_dim`` 512 so that every W/S-space
method works unchanged. Noise strengths stay at zero (frozen), so ``noise_mode`` does not matter.
The file is the official ``{"g_ema": state_dict, "latent_avg": (512,)}``.

``python -m scripts.demo.train_generator --out demo_models/stylegan2-demo.pt [--steps N]
[--minutes M] [--seed S] [--threads T]``; deterministic for a given seed, step count and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from editing.demo.faces import (
    BEARD_PRIOR,
    BEARD_SAMPLED_RANGE,
    EYE_COLOUR_PRIOR,
    EYE_COLOURS,
    GLASSES_PRIOR,
    HAIR_COLOUR_PRIOR,
    HAIR_COLOURS,
    HAIR_STYLE_PRIOR,
    HAIR_STYLES,
    LIPSTICK_PRIOR,
    MOUTH_CENTRE,
    VECTOR_DIMS,
    VECTOR_SIZE,
    FaceParams,
    attribute_slice,
    change_attribute,
    params_to_vector,
    render_face,
)
from editing.weights import round_to_half as round_module_to_half
from editing.weights import stored_state_dict
from models.ops import LRELU_GAIN, LRELU_SLOPE
from models.stylegan2 import DEMOD_EPS, Generator

# z dimensions read by z_to_params, in this order
_CONTINUOUS = ("smile", "age", "skin_tone", "face_width", "eye_size", "nose_size", "background_hue")
_BINARY = ("glasses", "beard", "lipstick")
_CATEGORICAL = (
    ("hair_colour", HAIR_COLOURS, HAIR_COLOUR_PRIOR),
    ("hair_style", HAIR_STYLES, HAIR_STYLE_PRIOR),
    ("eye_colour", EYE_COLOURS, EYE_COLOUR_PRIOR),
)
N_CODE_DIMS = len(_CONTINUOUS) + len(_BINARY) + len(_CATEGORICAL)  # 13
AGE_SHAPE = (1.4, 2.0)  # Kumaraswamy(a, b) quantile, close to sample_params' Beta(1.4, 2.0)


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """Architecture and optimisation of the demo generator."""

    size: int = 64  # output resolution in pixels
    channels: dict[int, int] = field(
        default_factory=lambda: {4: 128, 8: 128, 16: 128, 32: 64, 64: 32}
    )  # feature widths per resolution
    n_mlp: int = 2  # mapping layers (>= 2: one hinge layer, one combination layer, identities after)
    batch: int = 16  # faces per step
    steps: int = 8000  # optimisation steps of the synthesis network
    lr: float = 2e-3  # Adam learning rate of the synthesis network
    grad_lambda: float = 1.0  # weight of the L1 loss on horizontal / vertical image differences
    detail_lambda: float = 0.0  # extra L1 weight on pixels of fine target detail (see image_loss)
    l2_lambda: float = 0.0  # weight of a squared-error term (draws thin lines faintly where L1 erases them)
    knot_spacing: float = 0.4  # spacing of the mapping's hinge knots over [-4, 4] (z units)
    step_width: float = 0.01  # width of the mapping's ramps at category / binary thresholds (z units)
    # share of each batch that is a face part-way through a one-attribute edit (see soft_batch)
    soft_share: float = 0.0
    # extra weight of the (detail-weighted) squared and absolute error in a soft box around the mouth,
    # where smile and lipstick are drawn in lines 1-2 px thick (see mouth_weight)
    mouth_lambda: float = 0.0
    # "attribute": every S channel of a convolution reads one attribute's code dimensions only;
    # "dimension": one code dimension only (hair colours / styles split); "": dense. toRGB styles are
    # constant when grouped (see group_style_inputs)
    grouped_styles: str = ""
    seed: int = 0  # seeds the initialisation and every batch of z


def z_to_params(z: np.ndarray) -> FaceParams:
    """The face a latent decodes to (the training target's parameters).

    Args:
        z: (512,) or (style_dim,) float; it is pixel-normalised first (as the mapping network does),
            so z and any positive multiple of it give the same face.
    Returns:
        The :class:`FaceParams`; for z ~ N(0, I) each attribute follows ``sample_params``' prior
        (age approximately), independently of the others.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 1 or z.shape[0] < N_CODE_DIMS:
        raise ValueError(f"z must be a vector of at least {N_CODE_DIMS} values, got shape {z.shape}")
    zn = z / math.sqrt(float(np.mean(z * z)) + 1e-8)
    return params_from_uniform(_normal_cdf(zn[:N_CODE_DIMS]))


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard-normal CDF, clipped away from 0 and 1."""
    u = 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x, dtype=np.float64) / math.sqrt(2.0)))
    return np.clip(u, 1e-12, 1 - 1e-12)


def params_from_uniform(u: np.ndarray) -> FaceParams:
    """The face of :data:`N_CODE_DIMS` uniform(0, 1) values (one per attribute, in the order of
    ``_CONTINUOUS``, ``_BINARY``, ``_CATEGORICAL``); each attribute depends on its own value only."""
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (N_CODE_DIMS,):
        raise ValueError(f"u must have shape ({N_CODE_DIMS},), got {u.shape}")
    values: dict[str, object] = {}
    i = 0
    for name in _CONTINUOUS:
        x = float(u[i])
        i += 1
        if name == "age":
            a, b = AGE_SHAPE
            x = (1.0 - (1.0 - x) ** (1.0 / b)) ** (1.0 / a)
        elif name in ("smile", "face_width", "eye_size", "nose_size"):
            x = 2.0 * x - 1.0
        values[name] = min(x, 1.0 - 1e-9) if name == "background_hue" else x
    for name in _BINARY:
        x = float(u[i])
        i += 1
        if name == "glasses":
            values[name] = x > 1.0 - GLASSES_PRIOR
        elif name == "lipstick":
            values[name] = x > 1.0 - LIPSTICK_PRIOR
        else:  # beard: 0 below the threshold, then linear over the sampled range
            t = 1.0 - BEARD_PRIOR
            low, high = BEARD_SAMPLED_RANGE
            values[name] = 0.0 if x <= t else low + (high - low) * (x - t) / BEARD_PRIOR
    for name, choices, prior in _CATEGORICAL:
        # one dimension per categorical attribute, cut at the prior's cumulative shares: every output
        # is a step function of a single input, which the mapping network learns far more easily
        # than an arg-max over several dimensions
        edges = np.cumsum(prior)[:-1]
        values[name] = choices[int(np.searchsorted(edges, float(u[i]), side="right"))]
        i += 1
    return FaceParams(**values)


_CODE_LOW = np.array([d.low for d in VECTOR_DIMS])
_CODE_HIGH = np.array([d.high for d in VECTOR_DIMS])


def code_of(p: FaceParams, style_dim: int = 512) -> torch.Tensor:
    """A face's attribute code as a w (style_dim,) float32: what G.mapping outputs for it."""
    code = 2.0 * (params_to_vector(p) - _CODE_LOW) / (_CODE_HIGH - _CODE_LOW)
    w = torch.zeros(style_dim)
    w[:VECTOR_SIZE] = torch.from_numpy(code).float()
    return w


def attribute_code(z: torch.Tensor) -> torch.Tensor:
    """(B, 512) latents -> (B, VECTOR_SIZE) float32: ``params_to_vector`` of their faces, each
    dimension rescaled from its range to [0, 2] (non-negative, where the mapping's final leaky ReLU
    has its full slope). The first VECTOR_SIZE dimensions of w are trained
    towards it, so that W holds every attribute along its own axis (smooth, linear edits)."""
    return torch.stack([code_of(z_to_params(row), VECTOR_SIZE) for row in z.double().numpy()])


def render_targets(z: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 512) latents -> (B, 3, size, size) float32 rendered faces in [-1, 1]."""
    images = [np.asarray(render_face(z_to_params(row), size)) for row in z.double().numpy()]
    arr = np.stack(images).astype(np.float32) / 127.5 - 1.0  # (B, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _code_curves(x: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For each z dimension d < N_CODE_DIMS: ``(d, outputs, curves)`` where ``outputs`` are the attribute
    code dimensions that depend on it and ``curves`` (len(outputs), len(x)) their values along z_d = x
    (the other attributes held at their medians)."""
    u_grid = _normal_cdf(x)
    out = []
    for d in range(N_CODE_DIMS):
        rows = []
        for u_d in u_grid:
            u = np.full(N_CODE_DIMS, 0.5)
            u[d] = u_d
            rows.append(params_to_vector(params_from_uniform(u)))
        v = 2.0 * (np.stack(rows) - _CODE_LOW) / (_CODE_HIGH - _CODE_LOW)  # (len(x), VECTOR_SIZE)
        outputs = np.flatnonzero(v.max(0) - v.min(0) > 1e-9)
        out.append((d, outputs, v[:, outputs].T))
    return out


def construct_mapping(g: Generator, config: GeneratorTrainConfig) -> dict[str, float]:
    """Sets the mapping network's weights so that w = G.mapping(z) is :func:`attribute_code` (z) in its
    first VECTOR_SIZE dimensions and 0 in the others, up to a piecewise-linear approximation.

    The map from z to the attribute code is fixed by the data (:func:`z_to_params`) and every code
    dimension is a function of one z dimension, so it needs no learning: layer 1 holds hinge units
    ``lrelu(z_d - t)`` at knots every ``knot_spacing`` over [-4, 4] plus a pair ``step_width`` apart at
    each jump (category and binary thresholds), layer 2 their least-squares combination, later layers
    the identity (their inputs are non-negative, where the leaky ReLU is linear). Learning the same map
    by gradient descent through 512 inputs was the bottleneck of the first runs (code error 0.3 on a
    0-2 scale after 1200 steps): W did not pin down the face and the synthesis learnt blurred averages.

    Returns:
        ``{"max_abs_error", "mean_abs_error"}`` of the fit over z_d in [-4.5, 4.5], away from the jumps.
    """
    if config.n_mlp < 2:
        raise ValueError(f"the constructed mapping needs n_mlp >= 2, got {config.n_mlp}")
    dim = g.style_dim
    x = np.linspace(-4.5, 4.5, 9001)
    knots_uniform = np.arange(-4.0, 4.0 + 1e-9, config.knot_spacing)
    layer1_w = np.zeros((dim, dim))
    layer1_b = np.zeros(dim)
    layer2_w = np.zeros((dim, dim))
    layer2_b = np.zeros(dim)
    unit = 0
    errors: list[np.ndarray] = []

    def hinge(v: np.ndarray) -> np.ndarray:  # the fused leaky ReLU with its gain
        return np.where(v >= 0, v, LRELU_SLOPE * v) * LRELU_GAIN

    for d, outputs, curves in _code_curves(x):
        jumps = np.flatnonzero(np.abs(np.diff(curves, axis=1)).max(0) > 0.05)
        edges = 0.5 * (x[jumps] + x[jumps + 1])
        knots = np.sort(
            np.concatenate([knots_uniform, edges - config.step_width / 2, edges + config.step_width / 2])
        )
        if unit + len(knots) > dim:
            raise ValueError("too many hinge units for the mapping width; raise knot_spacing")
        idx = np.arange(unit, unit + len(knots))
        layer1_w[idx, d] = 1.0
        layer1_b[idx] = -knots
        unit += len(knots)
        basis = hinge(x[:, None] - knots[None, :])  # (len(x), K)
        design = np.concatenate([basis, np.ones((len(x), 1))], axis=1)
        away = np.ones(len(x), dtype=bool)
        for e in edges:
            away &= np.abs(x - e) > config.step_width
        # layer 2 pre-activation = code / gain, so that gain * lrelu(.) gives the code back
        coef, *_ = np.linalg.lstsq(design[away], curves[:, away].T / LRELU_GAIN, rcond=None)
        layer2_w[np.ix_(outputs, idx)] = coef[:-1].T
        layer2_b[outputs] = coef[-1]
        fit = hinge(design @ coef)
        errors.append(np.abs(fit[away] - curves[:, away].T).ravel())
    layers = [m for m in g.style if hasattr(m, "lr_mul")]
    weights = [(layer1_w, layer1_b), (layer2_w, layer2_b)]
    weights += [(np.eye(dim) / LRELU_GAIN, np.zeros(dim))] * (len(layers) - 2)
    with torch.no_grad():
        for layer, (w_eff, b_eff) in zip(layers, weights, strict=True):
            layer.weight.copy_(torch.from_numpy(w_eff / layer.scale).float())
            layer.bias.copy_(torch.from_numpy(b_eff / layer.lr_mul).float())
    err = np.concatenate(errors)
    return {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean())}


def zero_unused_style_inputs(g: Generator) -> int:
    """Zeroes every style affine's weights on the w dimensions the constructed mapping never outputs
    (VECTOR_SIZE onwards); returns how many columns were zeroed per layer.

    Training never changes them (their input is always 0, so their gradient is 0) and the faces of
    G.mapping do not depend on them, but left at their random initialisation they are live inputs of
    every W+ edit: before this, 93-95 % of the CLIP loss gradient with respect to W+ went into these
    untrained directions (optimisation and mappers moved the face along arbitrary mixtures of S
    channels) and e4e's small outputs there added noise. Zero, they make G(w) depend only on the
    attribute code, exactly as G.mapping's faces always did.
    """
    with torch.no_grad():
        for layer in g.style_layers():
            g.get_submodule(layer.module).conv.modulation.weight[:, VECTOR_SIZE:] = 0.0
    return g.style_dim - VECTOR_SIZE


GROUPINGS = ("attribute", "dimension")


def attribute_groups(grouping: str = "attribute") -> dict[str, list[int]]:
    """The code dimensions (w indices) of every style group, in VECTOR_DIMS order.

    ``"attribute"``: 13 groups, one per attribute (hair colour's six one-hot dimensions are one group,
    the background hue's cos/sin another); ``"dimension"``: 26 groups, one per code dimension.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(VECTOR_DIMS):
        key = (
            d.name
            if grouping == "dimension"
            else d.name.split("=")[0].removesuffix("_cos").removesuffix("_sin")
        )
        groups.setdefault(key, []).append(i)
    return groups


def style_group_assignment(
    g: Generator, grouping: str = "attribute", n_samples: int = 4000, seed: int = 1, min_channels: int = 0
) -> dict[str, list[int]]:
    """Which group each S channel of every convolution is given: ``{module: [group index per channel]}``
    (groups of :func:`attribute_groups`; toRGB layers are not listed).

    A channel goes to the group that explains most of its style's variance over G.mapping's faces now
    (so that masking keeps as much of the trained network as possible), except that every group first
    takes the channels it explains best in each layer, ``min_channels`` of them (default: 1 per 32
    channels for attributes, 1 per 64 for dimensions, at least 1), so each group reaches every
    resolution.
    """
    groups = list(attribute_groups(grouping).values())
    with torch.no_grad():
        w = g.mapping(torch.randn(n_samples, g.style_dim, generator=torch.Generator().manual_seed(seed)))
        w = w[:, :VECTOR_SIZE] - w[:, :VECTOR_SIZE].mean(0)
        out = {}
        for layer in g.style_layers():
            if layer.is_torgb:
                continue
            mod = g.get_submodule(layer.module).conv.modulation
            a = (mod.weight * mod.scale)[:, :VECTOR_SIZE]
            var = torch.stack([(w[:, idx] @ a[:, idx].T).var(0) for idx in groups], 1)  # (C, groups)
            share = var / var.sum(1, keepdim=True).clamp_min(1e-12)
            assigned = torch.full((a.shape[0],), -1, dtype=torch.long)
            quota = min_channels or max(1, round(a.shape[0] / (32 if grouping == "attribute" else 64)))
            for k in range(len(groups)):
                free = (assigned < 0).nonzero().flatten()
                best = free[share[free, k].argsort(descending=True)[:quota]]
                assigned[best] = k
            rest = assigned < 0
            assigned[rest] = share[rest].argmax(1)
            out[layer.module] = assigned.tolist()
    return out


def group_style_inputs(g: Generator, assignment: dict[str, list[int]], grouping: str = "attribute") -> None:
    """Zeroes every style weight outside a channel's own attribute (and all code inputs of toRGB).

    The demo generator was trained with dense style affines: each S channel mixed three or more
    attributes (the dominant one explained 35-44 % of a channel's variance), so no channel, and no
    thresholded set of channels as global directions picks, changes one attribute alone; even with the
    attribute oracle in place of CLIP, global directions edited only 28 % of faces cleanly (50 % after
    the dimension grouping; demo_models/README.md). With one group per channel, the S channels are
    disentangled by construction, as StyleSpace (Wu et al., CVPR 2021) found the FFHQ generator's to
    be; toRGB styles (which global directions never move, as upstream) become constants so that no
    attribute is drawn through them.
    """
    apply_style_masks(g, style_masks(g, assignment, grouping))


def style_masks(
    g: Generator, assignment: dict[str, list[int]], grouping: str = "attribute"
) -> dict[str, torch.Tensor]:
    """``{module: bool mask of its style affine's weight}``: True where :func:`group_style_inputs` keeps
    a weight (a channel's own group's code dimensions; nothing for toRGB)."""
    groups = list(attribute_groups(grouping).values())
    masks = {}
    for layer in g.style_layers():
        keep = torch.zeros_like(g.get_submodule(layer.module).conv.modulation.weight, dtype=torch.bool)
        if not layer.is_torgb:
            for c, k in enumerate(assignment[layer.module]):
                keep[c, groups[k]] = True
        masks[layer.module] = keep
    return masks


def apply_style_masks(g: Generator, masks: dict[str, torch.Tensor]) -> None:
    """Zeroes the style weights outside ``masks`` (see :func:`style_masks`)."""
    with torch.no_grad():
        for module, keep in masks.items():
            g.get_submodule(module).conv.modulation.weight.mul_(keep)


def make_generator(config: GeneratorTrainConfig) -> Generator:
    """A freshly initialised generator (seeded) with the constructed mapping (frozen, like the noise
    strengths, which stay at zero) and zero style weights on the unused w dimensions."""
    torch.manual_seed(config.seed)
    g = Generator(size=config.size, n_mlp=config.n_mlp, channels=config.channels)
    construct_mapping(g, config)
    zero_unused_style_inputs(g)
    for name, p in g.named_parameters():
        if name.endswith("noise.weight") or name.startswith("style."):
            p.requires_grad_(False)
    return g


def make_optimizer(g: Generator, config: GeneratorTrainConfig) -> torch.optim.Optimizer:
    """Adam over the synthesis network (the mapping is constructed, not trained)."""
    return torch.optim.Adam([p for p in g.parameters() if p.requires_grad], lr=config.lr, betas=(0.9, 0.99))


def mouth_weight(size: int) -> torch.Tensor:
    """(1, 1, size, size) weight, 1 on a box around the renderer's mouth (``MOUTH_CENTRE`` ± 0.125 of
    the width across, ± 0.06 down; every face is FFHQ-aligned, so the mouth is always there), falling
    to 0 over 2 px outside it. At 64 px it holds every closed mouth and >= 90 % of an open grin's
    pixels (the lower lip of the widest reaches 4 px further down)."""
    mx, my = MOUTH_CENTRE
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size

    def ramp(d: torch.Tensor, half: float) -> torch.Tensor:
        return (1.0 - (d.abs() - half).clamp(min=0.0) * size / 2.0).clamp(min=0.0)

    wx, wy = ramp(c - mx, 0.125), ramp(c - my, 0.06)
    return (wy[:, None] * wx[None, :])[None, None]


def image_loss(
    img: torch.Tensor,
    target: torch.Tensor,
    grad_lambda: float,
    detail_lambda: float = 0.0,
    l2_lambda: float = 0.0,
    mouth_lambda: float = 0.0,
) -> torch.Tensor:
    """L1 on pixels plus ``grad_lambda`` times L1 on horizontal and vertical differences (edges), plus
    ``detail_lambda`` times an L1 weighted by the target's local detail |target - box3x3(target)|
    (eyes, mouth, glasses frames, wrinkles: a few pixels each, which a plain L1 learns last), plus
    ``l2_lambda`` times the squared error weighted the same way: where a thin line's position is still
    uncertain, L1's optimum is the median (no line at all) while the squared error's is a faint line.
    ``mouth_lambda`` adds both (L1 and 4 x squared, detail-weighted) again inside :func:`mouth_weight`.

    Args:
        img, target: (B, 3, H, W) in [-1, 1].
    Returns:
        Scalar loss.
    """
    loss = (img - target).abs().mean()
    if grad_lambda:
        dx = (img.diff(dim=3) - target.diff(dim=3)).abs().mean()
        dy = (img.diff(dim=2) - target.diff(dim=2)).abs().mean()
        loss = loss + grad_lambda * 0.5 * (dx + dy)
    if detail_lambda:
        smooth = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
        detail = (target - smooth).abs().sum(1, keepdim=True)  # (B, 1, H, W), 0 on flat regions
        loss = loss + detail_lambda * (detail * (img - target).abs()).mean()
    if l2_lambda:
        smooth = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
        weight = 1.0 + (target - smooth).abs().sum(1, keepdim=True)
        loss = loss + l2_lambda * (weight * (img - target).pow(2)).mean()
    if mouth_lambda:
        smooth = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
        weight = (1.0 + (target - smooth).abs().sum(1, keepdim=True)) * mouth_weight(target.shape[-1])
        err = (img - target).abs()
        loss = loss + mouth_lambda * (weight * (err + 4.0 * err.pow(2))).mean()
    return loss


def _modconv(conv, x: torch.Tensor, style: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``ModulatedConv2d.forward`` rewritten for training batches: the style scales the input and the
    demodulation scales the output, so the convolution weight is shared by the batch (no grouped
    convolution). Same maths as the module (checked by the tests)."""
    weight = conv.scale * conv.weight[0]  # (out, in, k, k)
    x = x * style[:, :, None, None]
    if conv.upsample:
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    else:
        out = F.conv2d(x, weight, padding=conv.padding)
    if conv.demodulate:
        demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum([2, 3]).t() + DEMOD_EPS)  # (B, out)
        out = out * demod[:, :, None, None]
    if conv.upsample:
        return conv.blur(out, bias)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def fast_synthesis(g: Generator, w: torch.Tensor) -> torch.Tensor:
    """``g.synthesis(w)`` for w (B, 512) or W+ (B, n_latent, 512) with all noise strengths zero,
    batched without grouped convolutions (faster to train on CPU).

    Returns:
        (B, 3, size, size) images.
    """
    if any(float(m.noise.weight) != 0.0 for m in [g.conv1, *g.convs]):
        raise ValueError("fast_synthesis needs every noise strength at zero")
    styles = g.w_plus_to_styles(w)

    def styled(layer, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(_modconv(layer.conv, x, s, layer.activate.bias), LRELU_SLOPE) * LRELU_GAIN

    x = g.input(styles[0].shape[0])
    x = styled(g.conv1, x, styles[0])
    skip = _modconv(g.to_rgb1.conv, x, styles[1], g.to_rgb1.bias.view(3))
    for k in range(g.log_size - 2):
        s_up, s_conv, s_rgb = styles[2 + 3 * k : 5 + 3 * k]
        x = styled(g.convs[2 * k], x, s_up)
        x = styled(g.convs[2 * k + 1], x, s_conv)
        rgb = g.to_rgbs[k]
        skip = _modconv(rgb.conv, x, s_rgb, rgb.bias.view(3)) + rgb.upsample(skip)
    return skip


# Editable attributes soft_batch moves part of the way; continuous ones are rendered at the in-between
# value, the others (a face has glasses or not, one hair style) are drawn as the blend of both renders.
SOFT_ATTRIBUTES = ("hair_colour", "hair_style", "glasses", "beard", "smile", "lipstick", "age")
_SOFT_RENDERED = tuple(a for a in SOFT_ATTRIBUTES if VECTOR_DIMS[attribute_slice(a)][0].kind == "continuous")


def soft_batch(
    z: torch.Tensor, rng: np.random.Generator, size: int, style_dim: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces part-way through a one-attribute edit, and what they should look like.

    Each z's face A gets one attribute of SOFT_ATTRIBUTES changed (face B) and a fraction t ~ U(0, 1):
    w = (1 - t) code(A) + t code(B) and the target is A rendered with the in-between value (beard,
    smile, age) or (1 - t) render(A) + t render(B) (hair colour / style, glasses, lipstick). Without
    these the generator only ever saw the corners of the one-hot codes, while every edit method moves a
    latent part of the way: 75-100 % of the way to glasses, the oracle's age reading jumped on 25-28 %
    of faces (0-8 % after this stage; demo_models/README.md).

    Returns:
        w (B, style_dim) and targets (B, 3, size, size) in [-1, 1].
    """
    ws, targets = [], []
    for row in z.double().numpy():
        a = z_to_params(row)
        attribute = SOFT_ATTRIBUTES[int(rng.integers(len(SOFT_ATTRIBUTES)))]
        b = change_attribute(a, attribute, rng)
        t = float(rng.uniform(0.0, 1.0))
        ws.append((1.0 - t) * code_of(a, style_dim) + t * code_of(b, style_dim))
        if attribute in _SOFT_RENDERED:
            mid = (1.0 - t) * getattr(a, attribute) + t * getattr(b, attribute)
            img = np.asarray(render_face(replace(a, **{attribute: mid}), size)).astype(np.float32)
        else:
            img_a = np.asarray(render_face(a, size)).astype(np.float32)
            img_b = np.asarray(render_face(b, size)).astype(np.float32)
            img = (1.0 - t) * img_a + t * img_b
        targets.append(torch.from_numpy(img / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(ws), torch.stack(targets).contiguous()


def train_step(
    g: Generator,
    opt: torch.optim.Optimizer,
    z: torch.Tensor,
    target: torch.Tensor,
    grad_lambda: float,
    detail_lambda: float = 0.0,
    l2_lambda: float = 0.0,
    w: torch.Tensor | None = None,
    mouth_lambda: float = 0.0,
) -> float:
    """One Adam step of G(z) (or of the given w's) towards the rendered target; returns the loss
    before the step."""
    opt.zero_grad(set_to_none=True)
    if w is None:
        with torch.no_grad():
            w = g.mapping(z)
    loss = image_loss(fast_synthesis(g, w), target, grad_lambda, detail_lambda, l2_lambda, mouth_lambda)
    loss.backward()
    opt.step()
    return float(loss.detach())


def psnr(img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, 3, H, W) images in [-1, 1] (peak-to-peak 2), img clamped first."""
    mse = (img.clamp(-1, 1) - target).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def evaluate(g: Generator, seed: int = 12345, n: int = 64) -> dict[str, float]:
    """Mean and 10th-percentile PSNR of G(z) against its rendered target on held-out z."""
    z = torch.randn(n, g.style_dim, generator=torch.Generator().manual_seed(seed))
    values = torch.cat(
        [psnr(g(z[i : i + 16]), render_targets(z[i : i + 16], g.size)) for i in range(0, n, 16)]
    )
    return {"psnr_mean": float(values.mean()), "psnr_p10": float(values.quantile(0.1))}


def train(
    config: GeneratorTrainConfig,
    minutes: float | None = None,
    log: Callable[[str], None] = print,
    log_every: int = 200,
    snapshot: Callable[[Generator], None] | None = None,
    init: dict[str, torch.Tensor] | None = None,
    stop_after: int | None = None,
) -> tuple[Generator, dict]:
    """Train from scratch.

    Args:
        config: architecture and optimisation.
        minutes: optional wall-clock cap; stopping early makes the result depend on the machine.
        log: progress printer.
        log_every: steps between log lines.
        snapshot: called with the generator (in eval mode) at every held-out evaluation.
        init: a ``g_ema`` state dict to continue from (a second stage) instead of a fresh synthesis.
        stop_after: stop after this many steps (the schedule still spans ``config.steps``); with it a
            run that hit ``minutes`` at step N can be reproduced exactly.
    Returns:
        ``(generator in eval mode, stats)`` with steps done, seconds and the final running loss.
    """
    g = make_generator(config)
    if init is not None:
        g.load_state_dict(init, strict=True)
        zero_unused_style_inputs(g)  # files written before the columns were zeroed
    grouping = config.grouped_styles
    assignment = style_group_assignment(g, grouping) if grouping else None
    masks = style_masks(g, assignment, grouping) if assignment is not None else None
    if masks is not None:
        apply_style_masks(g, masks)
    g.train()
    opt = make_optimizer(g, config)
    base_lrs = [group["lr"] for group in opt.param_groups]
    z_gen = torch.Generator().manual_seed(config.seed + 1)
    soft_rng = np.random.default_rng(config.seed + 2)
    start = time.perf_counter()
    running, step = None, 0
    for step in range(1, config.steps + 1):
        # cosine decay over the last half
        frac = max(0.0, (step / config.steps - 0.5) / 0.5)
        for group, lr in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = lr * (0.55 + 0.45 * math.cos(math.pi * frac)) if frac > 0 else lr
        z = torch.randn(config.batch, g.style_dim, generator=z_gen)
        with torch.no_grad():
            w = g.mapping(z)
        n_soft = round(config.batch * config.soft_share)
        target = render_targets(z[n_soft:], config.size)  # the first n_soft faces are soft_batch's
        if n_soft:
            w_soft, target_soft = soft_batch(z[:n_soft], soft_rng, config.size, g.style_dim)
            w, target = torch.cat([w_soft, w[n_soft:]]), torch.cat([target_soft, target])
        loss = train_step(
            g,
            opt,
            z,
            target,
            config.grad_lambda,
            config.detail_lambda,
            config.l2_lambda,
            w,
            config.mouth_lambda,
        )
        if masks is not None:
            apply_style_masks(g, masks)  # Adam's momentum must not refill the zeroed weights
        running = loss if running is None else 0.98 * running + 0.02 * loss
        elapsed = time.perf_counter() - start
        if step % log_every == 0 or step == config.steps:
            msg = f"step {step}/{config.steps}  loss {running:.4f}  {elapsed / 60:.1f} min"
            if step % (5 * log_every) == 0:
                msg += f"  held-out PSNR {evaluate(g.eval(), n=16)['psnr_mean']:.2f} dB"
                if snapshot is not None:
                    snapshot(g)
                g.train()
            log(msg)
        if minutes is not None and elapsed > minutes * 60:
            log(f"time cap of {minutes} min reached at step {step}")
            break
        if stop_after is not None and step >= stop_after:
            break
    stats = {"steps": step, "seconds": round(time.perf_counter() - start, 1), "final_loss": running}
    if assignment is not None:
        stats["style_groups"] = assignment
    return g.eval(), stats


def is_mapping_key(key: str) -> bool:
    """Keys ``save_generator(half=True)`` keeps float32: the mapping network (``style.*``). Its stored
    weights are the constructed ones divided by the equalised-lr scale and lr multiplier (up to 2.8e5,
    beyond float16's 65504), and its hinges 0.01 apart need float32's precision."""
    return key.startswith("style.")


def round_to_half(g: Generator) -> Generator:
    """The generator a ``save_generator(half=True)`` file loads as, in place (synthesis weights rounded
    to float16 and back), so that metrics measure the weights that are shipped."""
    return round_module_to_half(g, keep_float32=is_mapping_key)


def save_generator(g: Generator, path: Path, n_avg: int = 10_000, half: bool = False) -> None:
    """Write ``{"g_ema", "latent_avg" (512,)}``; latent_avg is the mean of ``n_avg`` seeded samples.

    ``half`` stores the synthesis network's weights as float16 (all but :func:`is_mapping_key`; the
    loader's strict ``load_state_dict`` casts them back to the model's float32), after
    :func:`round_to_half`, so latent_avg is that of the stored weights; latent_avg itself stays float32.
    """
    if half:
        round_to_half(g)
    with torch.no_grad():
        latent_avg = g.mean_latent(n_avg, generator=torch.Generator().manual_seed(0))[0]
    sd = stored_state_dict(g.state_dict(), half=half, keep_float32=is_mapping_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"g_ema": sd, "latent_avg": latent_avg.clone()}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    parser.add_argument("--steps", type=int, default=GeneratorTrainConfig.steps, help="optimisation steps")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N steps (same schedule)")
    parser.add_argument("--init", type=Path, default=None, help="continue from this generator file")
    parser.add_argument("--lr", type=float, default=GeneratorTrainConfig.lr, help="Adam learning rate")
    parser.add_argument(
        "--detail-lambda", type=float, default=0.0, help="extra L1 weight on detailed target pixels"
    )
    parser.add_argument("--l2-lambda", type=float, default=0.0, help="weight of a squared-error term")
    parser.add_argument(
        "--soft-share",
        type=float,
        default=0.0,
        help="share of each batch part-way through a one-attribute edit",
    )
    parser.add_argument(
        "--grouped-styles",
        choices=GROUPINGS,
        default="",
        help="one attribute (or one code dimension) per S channel, constant toRGB styles",
    )
    parser.add_argument(
        "--mouth-lambda", type=float, default=0.0, help="extra error weight in a box around the mouth"
    )
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (loads as float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = GeneratorTrainConfig(
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        detail_lambda=args.detail_lambda,
        l2_lambda=args.l2_lambda,
        soft_share=args.soft_share,
        grouped_styles=args.grouped_styles,
        mouth_lambda=args.mouth_lambda,
    )
    init = torch.load(args.init, weights_only=True)["g_ema"] if args.init else None
    g, stats = train(
        config,
        args.minutes,
        snapshot=lambda g: save_generator(g, args.out, n_avg=1000),
        init=init,
        stop_after=args.stop_after,
    )
    style_groups = stats.pop("style_groups", None)
    if args.half:
        round_to_half(g)  # the metrics are those of the stored weights
    metrics = {**stats, **evaluate(g), "threads": args.threads, "half": args.half}
    save_generator(g, args.out, half=args.half)
    config_dict = {
        k: ({str(r): c for r, c in v.items()} if k == "channels" else v) for k, v in asdict(config).items()
    }
    report = {
        "config": config_dict,
        "init": str(args.init) if args.init else None,
        "stop_after": args.stop_after,
        "metrics": metrics,
    }
    if style_groups is not None:  # {module: attribute index per S channel}, see attribute_groups
        groups = list(attribute_groups(config.grouped_styles))
        report["style_groups"] = {
            "grouping": config.grouped_styles,
            "groups": groups,
            "channels": style_groups,
        }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
