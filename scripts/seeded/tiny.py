"""A tiny ``--weights`` folder with seeded random weights, for tests, screenshots and benchmarks.

    python -m scripts.seeded.tiny --out DIR

Same official file names and formats as ``python -m scripts.seeded`` (``scripts/seeded/__main__.py``),
with networks small enough to load in a second and run an edit in milliseconds on a CPU: a 32-px
StyleGAN2 64 channels wide (8 W+ rows of 512), a narrow e4e and IR-SE, a 32-px CLIP, a 16-d
relevance matrix and one mapper (``purple_hair``). ``DIR/s_stats/`` holds S statistics from 1000
samples (the official recipe's 100k are needless here); pass it as ``--s-stats``. Start the app
on it with

    python app.py --weights DIR --models ffhq --offline --s-stats DIR/s_stats

The pictures are noise (the numbers are random), but every code path is the real one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from scripts.seeded.clip import make_clip_folder
from scripts.seeded.e4e import make_e4e_checkpoint
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.mapper import mapper_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint

SIZE = 32  # generator resolution in px (n_latent 8)
WIDTHS = {4: 64, 8: 64, 16: 64, 32: 64}  # channels per resolution; config f's 512 render 50x slower
TINY_IRSE = {"widths": (16, 32, 48, 64), "units": (1, 1, 1, 1)}
S_STATS_SAMPLES = 1000


def write_tiny_weights(out: Path) -> Path:
    """Writes generator, e4e, IR-SE, CLIP, fs3 and the ``purple_hair`` mapper into ``out``.

    Returns:
        ``out``.
    """
    from editing.editor import layout_of
    from models.stylegan2 import Generator

    out.mkdir(parents=True, exist_ok=True)
    gen = make_stylegan2_checkpoint(size=SIZE, n_mlp=2, seed=21, widths=WIDTHS)
    torch.save(gen, out / "stylegan2-ffhq-config-f.pt")
    torch.save(make_e4e_checkpoint(seed=32, n_styles=8, **TINY_IRSE), out / "e4e_ffhq_encode.pt")
    torch.save(make_irse50_checkpoint(**TINY_IRSE), out / "model_ir_se50.pth")
    make_clip_folder(out / "clip-vit-base-patch32", seed=0, image_size=32, patch=8, context_length=64)
    layout = layout_of(Generator.from_state_dict(gen["g_ema"]))
    rows = torch.randn(layout.n_covered_channels, 16, generator=torch.Generator().manual_seed(0))
    np.save(out / "fs3.npy", torch.nn.functional.normalize(rows, dim=1).numpy())
    (out / "mappers").mkdir(exist_ok=True)
    ckpt = mapper_checkpoint(levels=("coarse", "medium"), stylegan_size=SIZE, seed=5)
    torch.save(ckpt, out / "mappers" / "purple_hair.pt")
    return out


def write_tiny_s_stats(weights: Path, out: Path) -> Path:
    """S statistics of the generator in ``weights`` from ``S_STATS_SAMPLES`` samples, into ``out``.

    Returns:
        ``out`` (a precompute folder for ``--s-stats``).
    """
    from editing.editor import layout_of, load_generator
    from editing.precompute import layout_metadata, s_statistics, save_precomputed

    g, w_avg = load_generator(weights / "stylegan2-ffhq-config-f.pt")
    stats = s_statistics(g, w_avg, n_samples=S_STATS_SAMPLES)
    return save_precomputed(out, stats, None, {"layout": layout_metadata(layout_of(g))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write the weights into")
    args = ap.parse_args()
    write_tiny_weights(args.out)
    write_tiny_s_stats(args.out, args.out / "s_stats")
    print(f"wrote tiny seeded weights to {args.out} (S statistics in {args.out / 's_stats'})")


if __name__ == "__main__":
    main()
