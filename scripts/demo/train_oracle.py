"""Train the demo attribute oracle: ``models.oracle.AttributeOracle`` regressing the parameters of the
procedural faces of ``editing.demo.faces`` (issue 4, offline demo set), used only to *measure* edits.

Not a port of anything upstream. Every step renders a fresh batch of faces from the renderer's prior
(face ``i`` of step ``t`` is ``sample_params(face_rng(data_seed, t * batch + i))``), degrades them the way
the demo generator's outputs differ from clean renders (:func:`degrade`: a 1 px shift, Gaussian blur or a
down/up-sampling, a small colour jitter, JPEG artefacts, noise) and minimises, per VECTOR_DIMS group,
cross-entropy (one-hot groups), binary cross-entropy (booleans), squared error over the range squared
(continuous, weighted by ``cont_lambda``) and squared error of (cos, sin) (background hue).

Evaluation (:func:`evaluate`): per-attribute accuracy / MAE on held-out renders (``render_batch(EVAL_SEED,
n)``), clean and blurred with a fixed Gaussian (sigma 1 px) — the oracle must read the generator's
slightly blurry faces as well as the renders.

``python -m scripts.demo.train_oracle --out demo_models/oracle.pt [--steps N] [--minutes M] [--seed S]
[--threads T]`` writes the weights and ``oracle.json`` (config, metrics); deterministic for a given
seed, step count and thread count.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from editing.demo.faces import (
    VECTOR_DIMS,
    VECTOR_SIZE,
    FaceParams,
    attribute_slice,
    change_attribute,
    face_rng,
    params_to_vector,
    render_batch,
    render_face,
    sample_params,
)
from editing.demo.oracle import ATTRIBUTES, attribute_errors, decode, load_oracle, save_oracle
from editing.weights import round_to_half
from models.oracle import AttributeOracle

EVAL_SEED = 987_654  # held-out faces; training draws from data seed 1000 + seed
EVAL_BLUR_SIGMA = 1.0  # the fixed blur of the "blurred" evaluation, in pixels


@dataclass(frozen=True)
class OracleTrainConfig:
    """Architecture, data and optimisation of the demo oracle."""

    size: int = 64  # input resolution in pixels
    widths: tuple[int, ...] = (24, 48, 64, 96)  # conv stage widths
    hidden: int = 128  # hidden fully-connected width
    batch: int = 64  # faces per step
    steps: int = 1500  # optimisation steps
    lr: float = 2e-3  # Adam learning rate (cosine decay to 2 % over the run)
    weight_decay: float = 1e-4  # AdamW weight decay
    cont_lambda: float = 8.0  # weight of the continuous attributes' normalised squared error
    blend_share: float = 0.0  # share of each batch that is a face blended with a one-attribute variant
    seed: int = 0  # seeds the initialisation, the faces and the augmentation


# ---------------------------------------------------------------------------- data
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def render_params(params: list[FaceParams], size: int) -> torch.Tensor:
    """Render faces -> (B, 3, size, size) float32 in [-1, 1]."""
    return to_tensor(np.stack([np.asarray(render_face(p, size)) for p in params]))


def gaussian_blur(img: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, one sigma per image.

    Args:
        img: (B, C, H, W).
        sigma: (B,) or a float, in pixels (> 0).
    Returns:
        (B, C, H, W).
    """
    b, c, h, w = img.shape
    sigma = torch.as_tensor(sigma, dtype=img.dtype).expand(b).clamp_min(1e-3)
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B * C, 2r + 1)
    y = F.pad(img.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of one (3, H, W) image in [-1, 1] at ``quality`` (PIL, deterministic)."""
    arr = ((img.permute(1, 2, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def degrade(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random degradations standing in for the demo generator's imperfections.

    Per image: a shift of up to 1 px (p = 0.3, edges replicated); a Gaussian blur of sigma U(0.3, 1.2)
    (p = 0.6) or else a down/up-sampling through U{32..56} px (p = 0.2); colour jitter (contrast
    U(0.92, 1.08), brightness U(-0.05, 0.05), per-channel gain U(0.96, 1.04)); a JPEG round trip at
    quality U{40..90} (p = 0.3); Gaussian noise of std U(0, 0.04) (p = 0.5). Clamped to [-1, 1].

    Args:
        img: (B, 3, S, S) clean faces in [-1, 1].
        rng: numpy generator for every random choice (advanced in place).
    Returns:
        (B, 3, S, S) float32 in [-1, 1].
    """
    b, _, s, _ = img.shape
    out = img.clone()
    shift = rng.integers(-1, 2, size=(b, 2)) * (rng.random(b) < 0.3)[:, None]
    for i in np.flatnonzero(np.abs(shift).sum(axis=1)):
        dy, dx = int(shift[i, 0]), int(shift[i, 1])
        padded = F.pad(out[i : i + 1], (1, 1, 1, 1), mode="replicate")
        out[i] = padded[0, :, 1 + dy : 1 + dy + s, 1 + dx : 1 + dx + s]
    u = rng.random(b)
    blur = u < 0.6
    if blur.any():
        idx = torch.from_numpy(np.flatnonzero(blur))
        sigma = torch.from_numpy(rng.uniform(0.3, 1.2, size=len(idx)).astype(np.float32))
        out[idx] = gaussian_blur(out[idx], sigma)
    for i in np.flatnonzero((u >= 0.6) & (u < 0.8)):
        small = int(rng.integers(32, 57))
        low = F.interpolate(out[i : i + 1], size=(small, small), mode="area")
        out[i] = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)[0]
    contrast = torch.from_numpy(rng.uniform(0.92, 1.08, size=(b, 1, 1, 1)).astype(np.float32))
    bright = torch.from_numpy(rng.uniform(-0.05, 0.05, size=(b, 1, 1, 1)).astype(np.float32))
    gain = torch.from_numpy(rng.uniform(0.96, 1.04, size=(b, 3, 1, 1)).astype(np.float32))
    out = ((out + 1.0) * gain * contrast - 1.0 + bright).clamp(-1.0, 1.0)
    for i in np.flatnonzero(rng.random(b) < 0.3):
        out[i] = jpeg(out[i], int(rng.integers(40, 91)))
    std = rng.uniform(0.0, 0.04, size=b) * (rng.random(b) < 0.5)
    noise = rng.standard_normal(size=out.shape).astype(np.float32) * std[:, None, None, None]
    return (out + torch.from_numpy(noise.astype(np.float32))).clamp(-1.0, 1.0)


# Attributes an edit changes that a face cannot show "half-way" in the renderer: a half-edited face is
# the pixel blend of the two renders, and its label the blend of the two one-hot / binary labels.
BLENDED = ("hair_colour", "hair_style", "glasses", "lipstick")


def blend_rows(
    img: torch.Tensor, params: list[FaceParams], rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Faces part-way through a one-attribute edit: each face blended with itself after one BLENDED
    attribute changed, ``(1 - t) A + t B`` with t ~ U(0, 1), and the same blend of the two label
    vectors. Edited faces look like this (a latent moved part of the way); the first oracle, trained on
    whole faces only, read another hair *style* on 17-22 % of renders blended 25-50 % towards purple
    or blond hair, which counted as a broken edit.

    Returns:
        (B, 3, size, size) images and (B, VECTOR_SIZE) soft label vectors.
    """
    out, labels = [], []
    for a_img, a in zip(img, params, strict=True):
        b = change_attribute(a, BLENDED[int(rng.integers(len(BLENDED)))], rng)
        t = float(rng.uniform(0.0, 1.0))
        out.append((1.0 - t) * a_img + t * render_params([b], size)[0])
        labels.append((1.0 - t) * params_to_vector(a) + t * params_to_vector(b))
    return torch.stack(out), np.stack(labels)


def training_batch(step: int, config: OracleTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The degraded faces and target vectors of one step: ((B, 3, S, S), (B, VECTOR_SIZE))."""
    first = step * config.batch
    params = [sample_params(face_rng(1000 + config.seed, first + i)) for i in range(config.batch)]
    img = render_params(params, config.size)
    target = np.stack([params_to_vector(p) for p in params])
    n_blend = round(config.batch * config.blend_share)
    if n_blend:
        rng = np.random.default_rng([config.seed, step, 11])
        img[:n_blend], target[:n_blend] = blend_rows(img[:n_blend], params[:n_blend], rng, config.size)
    img = degrade(img, np.random.default_rng([config.seed, step, 7]))
    return img, torch.from_numpy(target.astype(np.float32))


# ---------------------------------------------------------------------------- loss
_GROUPS = [(attribute_slice(a), VECTOR_DIMS[attribute_slice(a)][0]) for a in ATTRIBUTES]


def oracle_loss(raw: torch.Tensor, target: torch.Tensor, cont_lambda: float) -> torch.Tensor:
    """Sum over attributes of the per-kind loss (see the module doc), averaged over the batch.

    Args:
        raw: (B, VECTOR_SIZE) oracle outputs.
        target: (B, VECTOR_SIZE) ``params_to_vector`` of the true parameters.
        cont_lambda: weight of the continuous attributes' squared error over range squared.
    Returns:
        Scalar loss.
    """
    if raw.shape != target.shape or raw.shape[1] != VECTOR_SIZE:
        raise ValueError(f"raw and target must both be (B, {VECTOR_SIZE}), got {raw.shape}, {target.shape}")
    loss = raw.new_zeros(())
    for sl, dim in _GROUPS:
        if dim.kind == "onehot":
            # soft labels (blended faces); for one-hot labels this is the usual class cross-entropy
            loss = loss + F.cross_entropy(raw[:, sl], target[:, sl])
        elif dim.kind == "binary":
            loss = loss + F.binary_cross_entropy_with_logits(raw[:, sl], target[:, sl])
        elif dim.kind == "circular":
            loss = loss + (raw[:, sl] - target[:, sl]).pow(2).sum(dim=1).mean()
        else:
            err = (raw[:, sl] - target[:, sl]) / (dim.high - dim.low)
            loss = loss + cont_lambda * err.pow(2).mean()
    return loss


# ---------------------------------------------------------------------------- training
def log_line(msg: str) -> None:
    """Progress lines, flushed at once (the log is usually redirected to a file)."""
    print(msg, flush=True)


def make_oracle(config: OracleTrainConfig) -> AttributeOracle:
    """A freshly initialised (seeded) oracle."""
    torch.manual_seed(config.seed)
    return AttributeOracle(VECTOR_SIZE, input_size=config.size, widths=config.widths, hidden=config.hidden)


@torch.no_grad()
def evaluate(oracle: AttributeOracle, n: int = 512, size: int = 64) -> dict[str, dict[str, float]]:
    """Per-attribute accuracy / MAE (see ``attribute_errors``) on ``n`` held-out renders, clean and
    blurred (Gaussian, sigma ``EVAL_BLUR_SIGMA`` px)."""
    was_training = oracle.training
    oracle.eval()
    images, params = render_batch(EVAL_SEED, n, size)
    clean = to_tensor(images)
    result = {}
    for name, img in (("clean", clean), ("blurred", gaussian_blur(clean, EVAL_BLUR_SIGMA))):
        raw = torch.cat([oracle(img[i : i + 128]) for i in range(0, n, 128)])
        result[name] = {k: round(v, 4) for k, v in attribute_errors(decode(raw), params).items()}
    oracle.train(was_training)
    return result


def train(
    config: OracleTrainConfig,
    minutes: float | None = None,
    log: Callable[[str], None] = log_line,
    log_every: int = 100,
    init: AttributeOracle | None = None,
) -> tuple[AttributeOracle, dict]:
    """Train an oracle from scratch, or go on training ``init`` (same architecture).

    Returns:
        ``(oracle in eval mode, stats)`` with steps done, seconds and the final running loss.
    """
    oracle = make_oracle(config)
    if init is not None:
        oracle.load_state_dict(init.state_dict(), strict=True)
    oracle.train()
    opt = torch.optim.AdamW(oracle.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = time.perf_counter()
    running, step = None, 0
    for step in range(1, config.steps + 1):
        opt.param_groups[0]["lr"] = config.lr * (0.02 + 0.49 * (1 + math.cos(math.pi * step / config.steps)))
        img, target = training_batch(step, config)
        loss = oracle_loss(oracle(img), target, config.cont_lambda)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        elapsed = time.perf_counter() - start
        if step % log_every == 0 or step == config.steps:
            msg = f"step {step}/{config.steps}  loss {running:.4f}  {elapsed / 60:.1f} min"
            if step % (10 * log_every) == 0:
                m = evaluate(oracle, n=128, size=config.size)["blurred"]
                msg += "  blurred: " + " ".join(f"{k} {v:.3f}" for k, v in m.items())
            log(msg)
        if minutes is not None and elapsed > minutes * 60:
            log(f"time cap of {minutes} min reached at step {step}")
            break
    stats = {"steps": step, "seconds": round(time.perf_counter() - start, 1), "final_loss": running}
    return oracle.eval(), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    parser.add_argument("--steps", type=int, default=OracleTrainConfig.steps, help="optimisation steps")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, data and augmentation seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--init", type=Path, default=None, help="go on training this oracle file")
    parser.add_argument("--lr", type=float, default=OracleTrainConfig.lr, help="AdamW learning rate")
    parser.add_argument(
        "--blend-share",
        type=float,
        default=0.0,
        help="share of each batch blended with a one-attribute variant",
    )
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (loads as float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = OracleTrainConfig(steps=args.steps, seed=args.seed, lr=args.lr, blend_share=args.blend_share)
    init = load_oracle(args.init) if args.init else None
    oracle, stats = train(config, args.minutes, init=init)
    if args.half:
        round_to_half(oracle)  # the metrics are those of the stored weights
    metrics = {**stats, **evaluate(oracle, size=config.size), "threads": args.threads, "half": args.half}
    save_oracle(oracle, config.hidden, args.out, half=args.half)
    metrics["file_bytes"] = args.out.stat().st_size
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"config": asdict(config), "init": str(args.init) if args.init else None, "metrics": metrics},
            indent=2,
        )
        + "\n"
    )
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
