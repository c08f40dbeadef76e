"""Train the demo e4e encoder: a narrow ``models.e4e.Encoder4Editing`` that inverts the 64 px procedural
faces of ``editing.demo.faces`` into the W+ space of the demo generator (issue 4, offline demo set).

Paper: Tov et al., "Designing an Encoder for StyleGAN Image Manipulation" (SIGGRAPH 2021); the file is
in the format of omertov/encoder4editing ``training/coach.py`` (``{"state_dict": {"encoder.*"},
"opts", "latent_avg" (n_latent, 512)}``), loaded by ``editing.editor.load_encoder``. The network is
the real class with a small IR-SE backbone, a 64 px input and narrow map2style heads.

Training data are rendered faces with a known latent: z ~ N(0, I) is decoded by
``scripts.demo.train_generator.z_to_params`` into the parameters the generator was trained to draw,
the face is rendered (the encoder never sees generator samples as inputs), and the loss is

    l1_lambda * L1(G(W+), face) + grad_lambda * L1 of image gradients + w_lambda * |W+ - w(z)|^2 / 512

through the frozen generator, with w(z) = G.mapping(z) broadcast to every row (the W-space prior
that keeps codes editable, e4e's motivation). Evaluation inverts faces drawn from the renderer's own
prior (``render_batch``), which z_to_params only approximates.

``python -m scripts.demo.train_encoder --generator demo_models/stylegan2-demo.pt
--out demo_models/e4e_demo_encode.pt [--steps N] [--minutes M] [--seed S] [--threads T]``;
deterministic for a given seed, step count and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from editing.demo.faces import render_batch
from editing.editor import load_encoder, load_generator
from editing.weights import stored_state_dict
from models.e4e import Encoder4Editing
from models.stylegan2 import Generator
from scripts.demo.train_generator import fast_synthesis, image_loss, psnr, render_targets


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Architecture and optimisation of the demo encoder."""

    input_size: int = 64  # encoder input in pixels (the generator's size)
    widths: tuple[int, ...] = (16, 32, 64, 128)  # IR-SE stage widths
    units: tuple[int, ...] = (1, 2, 2, 1)  # IR-SE units per stage
    head_width: int = 48  # conv channels of the map2style heads
    batch: int = 16  # faces per step
    code_steps: int = 3000  # first phase: steps regressing W+ onto the known w(z) (no rendering by G)
    steps: int = 1000  # second phase: steps of the full loss through the generator
    lr: float = 1e-3  # Adam learning rate
    l1_lambda: float = 1.0  # pixel L1 weight
    grad_lambda: float = 1.0  # image-gradient L1 weight
    w_lambda: float = 1.0  # weight of the squared W+ error per latent dimension
    seed: int = 0  # seeds the initialisation and every batch of z


def make_encoder(config: EncoderTrainConfig, n_styles: int) -> Encoder4Editing:
    """A freshly initialised (seeded) encoder with ``n_styles`` heads."""
    torch.manual_seed(config.seed)
    return Encoder4Editing(
        n_styles=n_styles,
        latent_dim=512,
        input_size=config.input_size,
        widths=config.widths,
        units=config.units,
        head_width=config.head_width,
    )


def encoder_loss(
    encoder: Encoder4Editing,
    g: Generator,
    latent_avg: torch.Tensor,
    face: torch.Tensor,
    w: torch.Tensor | None,
    config: EncoderTrainConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of a batch.

    Args:
        encoder, g: the encoder (trained) and the generator (frozen).
        latent_avg: (n_latent, 512) offset of the codes.
        face: (B, 3, S, S) rendered faces in [-1, 1], S = encoder.input_size = g.size.
        w: (B, 512) their known latents, or None (image loss only).
        config: loss weights.
    Returns:
        ``(loss, reconstruction (B, 3, S, S))``.
    """
    w_plus = encoder(face) + latent_avg  # (B, n_latent, 512)
    recon = fast_synthesis(g, w_plus)
    loss = config.l1_lambda * image_loss(recon, face, config.grad_lambda / max(config.l1_lambda, 1e-8))
    if w is not None and config.w_lambda:
        loss = loss + config.w_lambda * (w_plus - w[:, None, :]).pow(2).mean()
    return loss, recon


@torch.no_grad()
def evaluate(
    encoder: Encoder4Editing, g: Generator, latent_avg: torch.Tensor, seed: int = 4321, n: int = 64
) -> dict[str, float]:
    """Inversion PSNR on ``n`` faces from the renderer's prior (``render_batch(seed, n)``)."""
    images, _ = render_batch(seed, n, g.size)
    faces = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    values = []
    for i in range(0, n, 16):
        w_plus = encoder(faces[i : i + 16]) + latent_avg
        values.append(psnr(g.synthesis(w_plus), faces[i : i + 16]))
    v = torch.cat(values)
    return {"inversion_psnr_mean": float(v.mean()), "inversion_psnr_p10": float(v.quantile(0.1))}


def known_latent_batch(g: Generator, batch: int, z_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` rendered faces (B, 3, S, S) in [-1, 1] and their latents w = G.mapping(z) (B, 512),
    for fresh z drawn from ``z_gen``."""
    z = torch.randn(batch, 512, generator=z_gen)
    with torch.no_grad():
        return render_targets(z, g.size), g.mapping(z)


def train(
    g: Generator,
    latent_avg: torch.Tensor,
    config: EncoderTrainConfig,
    minutes: float | None = None,
    log: Callable[[str], None] = print,
    log_every: int = 100,
    init: Encoder4Editing | None = None,
) -> tuple[Encoder4Editing, dict]:
    """Train an encoder for the frozen generator ``g`` (its latent_avg (1, 512) or (n_latent, 512)):
    ``config.code_steps`` steps of W+ regression onto the known latents, then ``config.steps`` of the
    full loss. ``init`` continues from an existing encoder instead of a fresh one.

    Returns:
        ``(encoder in eval mode, stats)`` with steps done, seconds and the final running loss.
    """
    if g.size != config.input_size:
        raise ValueError(f"config.input_size ({config.input_size}) must equal the generator size {g.size}")
    g = g.eval().requires_grad_(False)
    latent_avg = latent_avg.reshape(-1, 512).expand(g.n_latent, 512)
    encoder = (make_encoder(config, g.n_latent) if init is None else init).train()
    z_gen = torch.Generator().manual_seed(config.seed + 1)
    start = time.perf_counter()
    if config.code_steps:
        # The demo generator's W is the attribute code itself (constructed mapping), so the faces'
        # latents are known exactly: regress onto them first, which needs no synthesis pass.
        opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.9, 0.99))
        running = None
        for step in range(1, config.code_steps + 1):
            frac = step / config.code_steps
            opt.param_groups[0]["lr"] = config.lr * (0.55 + 0.45 * math.cos(math.pi * frac))
            face, w = known_latent_batch(g, config.batch, z_gen)
            opt.zero_grad(set_to_none=True)
            loss = (encoder(face) + latent_avg - w[:, None, :]).pow(2).mean()
            loss.backward()
            opt.step()
            value = float(loss.detach())
            running = value if running is None else 0.98 * running + 0.02 * value
            if step % log_every == 0 or step == config.code_steps:
                elapsed = time.perf_counter() - start
                log(f"code step {step}/{config.code_steps}  W+ MSE {running:.5f}  {elapsed / 60:.1f} min")
    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.9, 0.99))
    running, step = None, 0
    for step in range(1, config.steps + 1):
        frac = max(0.0, (step / config.steps - 0.5) / 0.5)  # cosine decay over the last half
        opt.param_groups[0]["lr"] = config.lr * (0.55 + 0.45 * math.cos(math.pi * frac))
        face, w = known_latent_batch(g, config.batch, z_gen)
        opt.zero_grad(set_to_none=True)
        loss, _ = encoder_loss(encoder, g, latent_avg, face, w, config)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        elapsed = time.perf_counter() - start
        if step % log_every == 0 or step == config.steps:
            msg = f"step {step}/{config.steps}  loss {running:.4f}  {elapsed / 60:.1f} min"
            if step % (5 * log_every) == 0:
                encoder.eval()
                msg += (
                    f"  inversion PSNR {evaluate(encoder, g, latent_avg, n=16)['inversion_psnr_mean']:.2f} dB"
                )
                encoder.train()
            log(msg)
        if minutes is not None and elapsed > minutes * 60:
            log(f"time cap of {minutes} min reached at step {step}")
            break
    stats = {"steps": step, "seconds": round(time.perf_counter() - start, 1), "final_loss": running}
    return encoder.eval(), stats


def save_encoder(
    encoder: Encoder4Editing,
    latent_avg: torch.Tensor,
    config: EncoderTrainConfig,
    path: Path,
    half: bool = False,
) -> None:
    """Write the e4e-format file: ``encoder.*`` weights, plain ``opts`` and latent_avg (n_latent, 512).

    ``half`` stores the floating-point weights as float16 (half the file; the loader casts them back
    to float32), as the shipped demo file does to keep the demo set under 30 MB.
    """
    sd = {f"encoder.{k}": v for k, v in stored_state_dict(encoder.state_dict(), half=half).items()}
    stylegan_size = 2 ** ((encoder.n_styles + 2) // 2)
    opts = {
        "encoder_type": "Encoder4Editing",
        "dataset_type": "demo_faces",
        "stylegan_size": stylegan_size,
        "input_size": config.input_size,
        "start_from_latent_avg": True,
        "train_decoder": False,
        **{
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()
            if k != "input_size"
        },
    }
    rows = latent_avg.reshape(-1, 512).expand(encoder.n_styles, 512).clone().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "opts": opts, "latent_avg": rows}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=Path("demo_models/stylegan2-demo.pt"))
    parser.add_argument("--out", type=Path, required=True, help="where to write the .pt file")
    parser.add_argument("--steps", type=int, default=EncoderTrainConfig.steps, help="full-loss steps")
    parser.add_argument(
        "--code-steps", type=int, default=EncoderTrainConfig.code_steps, help="W+ regression steps first"
    )
    parser.add_argument("--init", type=Path, default=None, help="continue from this encoder file")
    parser.add_argument("--lr", type=float, default=EncoderTrainConfig.lr, help="Adam learning rate")
    parser.add_argument("--batch", type=int, default=EncoderTrainConfig.batch, help="faces per step")
    parser.add_argument("--half", action="store_true", help="store the weights as float16")
    parser.add_argument("--minutes", type=float, default=None, help="optional wall-clock cap")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g, w_avg = load_generator(args.generator)
    config = EncoderTrainConfig(
        steps=args.steps, code_steps=args.code_steps, seed=args.seed, lr=args.lr, batch=args.batch
    )
    init = load_encoder(args.init)[0].train().requires_grad_(True) if args.init else None
    encoder, stats = train(g, w_avg, config, args.minutes, init=init)
    latent_avg = w_avg.reshape(1, 512).expand(g.n_latent, 512)
    metrics = {**stats, **evaluate(encoder, g, latent_avg), "threads": args.threads}
    save_encoder(encoder, latent_avg, config, args.out, half=args.half)
    args.out.with_suffix(".json").write_text(
        json.dumps({"config": asdict(config), "metrics": metrics}, indent=2) + "\n"
    )
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
