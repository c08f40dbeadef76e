"""README figures of the offline demo set: a grid of generated faces and one edit per method.

    python -m scripts.demo.figures --out docs/demo

Writes ``faces.png`` (seeded faces of the demo generator, ψ 0.7) and ``edits.png`` (rows: a seeded
face, then its global-direction, latent-mapper and latent-optimisation edits for the same prompts,
with the settings of the demo evaluation, read from ``editing.evaluate.EvalConfig``).
Everything goes through ``FaceEditor`` on ``--models demo``; images are upscaled 3× with
nearest-neighbour so the 64-px pixels stay visible.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from editing.edits import MapperSettings
from editing.evaluate import EvalConfig
from editing.model_sets import load_editor

SCALE = 3


def to_array(img: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> (H*SCALE, W*SCALE, 3) uint8."""
    arr = ((img[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return np.kron(arr, np.ones((SCALE, SCALE, 1), dtype=np.uint8))


def face_grid(editor, seeds: range, columns: int) -> Image.Image:
    """Seeded faces in a grid."""
    tiles = [to_array(editor.render(editor.latent_from_seed(s, truncation=0.7))) for s in seeds]
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return Image.fromarray(np.concatenate(rows, axis=0))


def edits_figure(editor, seed: int, optimise_steps: int) -> Image.Image:
    """Columns: source, global, mapper, optimisation; one row per prompt the evaluation checks (those
    the generator draws), with its settings (blank where there is no mapper)."""
    cfg = EvalConfig()
    latent = editor.latent(editor.latent_from_seed(seed, truncation=cfg.truncation))
    source = to_array(editor.render_latent(latent))
    blank = np.full_like(source, 255)
    mappers = set(editor.mapper_names())
    label_w = 110
    rows = []
    for spec in cfg.readable_prompts:
        g = editor.edit_global(latent, cfg.global_settings(spec), metrics=False)
        mapper = next((n for n in spec.mappers if n in mappers), None)
        m = (
            to_array(
                editor.edit_mapper(
                    latent, MapperSettings(mapper, strength=cfg.mapper_strength(spec)), metrics=False
                ).image
            )
            if mapper is not None
            else blank
        )
        settings = dataclasses.replace(cfg.optimization_settings(spec), steps=optimise_steps)
        o = editor.edit_optimize(latent, spec.target, settings, metrics=False)
        tiles = [source, to_array(g.image), m, to_array(o.image)]
        row = Image.new("RGB", (label_w + source.shape[1] * 4, source.shape[0]), "white")
        row.paste(Image.fromarray(np.concatenate(tiles, axis=1)), (label_w, 0))
        ImageDraw.Draw(row).text((6, source.shape[0] // 2 - 6), spec.label, fill="black")
        rows.append(row)
    header = Image.new("RGB", (rows[0].width, 18), "white")
    draw = ImageDraw.Draw(header)
    for i, name in enumerate(("source", "global", "mapper", "optimise")):
        draw.text((label_w + i * source.shape[1] + 6, 3), name, fill="black")
    out = Image.new("RGB", (rows[0].width, header.height + sum(r.height for r in rows)), "white")
    out.paste(header, (0, 0))
    y = header.height
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=3, help="face of the edits figure")
    parser.add_argument("--steps", type=int, default=40, help="optimisation steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    editor = load_editor(
        "demo", components=("generator", "clip", "identity", "global"), precision="fp32", log=print
    )
    args.out.mkdir(parents=True, exist_ok=True)
    face_grid(editor, range(24), 8).save(args.out / "faces.png", optimize=True)
    edits_figure(editor, args.seed, args.steps).save(args.out / "edits.png", optimize=True)
    print(f"wrote {args.out / 'faces.png'} and {args.out / 'edits.png'}")


if __name__ == "__main__":
    main()
