"""Write a full-size weights folder with seeded random weights under the official file names.

    python -m scripts.seeded --out DIR [--mappers purple_hair,mohawk] [--no-clip]

DIR then works as ``--weights DIR`` for the CLI, the app and the benchmarks: every network has
its real architecture and file format (so loading, memory and timings are those of the real
model set), only the numbers are random. It holds ``stylegan2-ffhq-config-f.pt`` (g_ema +
latent_avg), ``e4e_ffhq_encode.pt`` (encoder + bundled decoder, as the real file),
``model_ir_se50.pth``, ``fs3.npy`` (unit rows, 5376 x 512), ``mappers/<name>.pt`` and
``clip-vit-base-patch32/`` (ViT-B/32 with a byte-level tokenizer; see ``scripts.seeded.clip``).
The dlib landmark model is not written: it is real and comes from ``face-recognition-models``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from scripts.seeded import generator_for
from scripts.seeded.clip import make_clip_folder
from scripts.seeded.e4e import make_e4e_checkpoint
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.mapper import mapper_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint


def seeded_fs3(n_rows: int = 5376, dim: int = 512, seed: int = 7) -> np.ndarray:
    """(n_rows, dim) float32 unit rows in the official ``fs3.npy`` layout."""
    rows = torch.randn(n_rows, dim, generator=generator_for("fs3", seed))
    return torch.nn.functional.normalize(rows, dim=1).numpy().astype(np.float32)


def write_weights_folder(
    out: Path, *, mappers: tuple[str, ...] = ("purple_hair",), clip: bool = True
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gen = make_stylegan2_checkpoint(size=1024, channel_multiplier=2)
    torch.save(gen, out / "stylegan2-ffhq-config-f.pt")
    torch.save(make_e4e_checkpoint(decoder=gen["g_ema"]), out / "e4e_ffhq_encode.pt")
    torch.save(make_irse50_checkpoint(), out / "model_ir_se50.pth")
    np.save(out / "fs3.npy", seeded_fs3())
    (out / "mappers").mkdir(exist_ok=True)
    for i, name in enumerate(mappers):
        ckpt = mapper_checkpoint(seed=100 + i)
        ckpt["opts"]["description"] = name.replace("_", " ")
        torch.save(ckpt, out / "mappers" / f"{name}.pt")
    if clip:
        make_clip_folder(out / "clip-vit-base-patch32", full_size=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write the weights into")
    ap.add_argument("--mappers", default="purple_hair", help="comma-separated mapper names to write")
    ap.add_argument("--no-clip", action="store_true", help="skip the CLIP folder")
    args = ap.parse_args()
    names = tuple(n for n in args.mappers.split(",") if n)
    write_weights_folder(args.out, mappers=names, clip=not args.no_clip)
    print(f"wrote seeded full-size weights to {args.out}")


if __name__ == "__main__":
    main()
