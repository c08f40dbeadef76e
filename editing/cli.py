"""Command line for scripting: ``python -m editing COMMAND …``.

Commands:
    align IMAGE --out ALIGNED.png [--size 1024] [--face N]
    invert IMAGE --out-latent W.npy --out-image REC.png [--no-align] [--face N] [--weights DIR]
    generate --seed N [--truncation 0.7] --out IMG.png [--out-latent W.npy] [--weights DIR]

On bad input or missing weights the command prints one line ``error: …`` to stderr and exits
with status 2 (``--verbose`` prints the details too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from editing.errors import FaceEditingError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None, help="folder holding the official model files")
    p.add_argument("--offline", action="store_true", help="never download (also: HF_HUB_OFFLINE=1)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, …")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto (default: bf16 where the CPU/GPU has native bf16), fp32 or bf16",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m editing", description="Text-driven face editing.")
    parser.add_argument("--verbose", action="store_true", help="print error details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("align", help="detect a face and write its FFHQ-aligned crop")
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=1024, help="output size in pixels (default 1024)")
    p.add_argument("--face", type=int, default=0, help="which face, 0 = largest (default)")

    p = sub.add_parser("invert", help="invert a photo into W+ with e4e and render the reconstruction")
    p.add_argument("image", type=Path)
    p.add_argument("--out-latent", type=Path, required=True, help="W+ as .npy (n_latent, 512)")
    p.add_argument("--out-image", type=Path, required=True, help="reconstruction PNG")
    p.add_argument("--no-align", action="store_true", help="the image is already FFHQ-aligned")
    p.add_argument("--face", type=int, default=0, help="which face, 0 = largest (default)")
    _add_model_args(p)

    p = sub.add_parser("generate", help="a random face from a seed")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--truncation", type=float, default=0.7, help="psi in [0, 1] (default 0.7)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--out-latent", type=Path, default=None, help="also write its W+ as .npy")
    _add_model_args(p)
    return parser


def _editor(args: argparse.Namespace, components: tuple[str, ...]):
    from editing.editor import FaceEditor
    from editing.weights import WeightStore

    store = WeightStore(local_dir=args.weights, offline=True if args.offline else None)
    return FaceEditor.from_weights(store, components=components, device=args.device, precision=args.precision)


def _check_out(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path} must end in {' or '.join(suffixes)}")
    if not path.parent.exists():
        raise ValueError(f"the folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> dict:
    """Execute one parsed command; returns a summary (printed as JSON)."""
    from editing.synthesis import save_latent

    t0 = time.perf_counter()
    if args.command == "align":
        from editing.align import FaceAligner, load_image

        _check_out(args.out, (".png", ".jpg", ".jpeg", ".webp"))
        if not 16 <= args.size <= 4096:
            raise ValueError(f"--size must be between 16 and 4096, got {args.size}")
        faces = FaceAligner().align(load_image(args.image), output_size=args.size)
        if not 0 <= args.face < len(faces):
            raise ValueError(f"--face {args.face} is out of range: {len(faces)} face(s) found")
        faces[args.face].image.save(args.out)
        return {"faces": len(faces), "out": str(args.out), "seconds": round(time.perf_counter() - t0, 3)}

    if args.command == "invert":
        _check_out(args.out_latent, (".npy",))
        _check_out(args.out_image, (".png", ".jpg", ".jpeg", ".webp"))
        components = ("generator", "encoder") if args.no_align else ("generator", "encoder", "aligner")
        editor = _editor(args, components)
        t1 = time.perf_counter()
        result = editor.invert(args.image, align=not args.no_align, face_index=args.face)
        save_latent(args.out_latent, result.w_plus)
        result.reconstruction.save(args.out_image)
        return {
            "models": editor.name,
            "load_seconds": round(t1 - t0, 3),
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
            "out_latent": str(args.out_latent),
            "out_image": str(args.out_image),
        }

    if args.command == "generate":
        _check_out(args.out, (".png", ".jpg", ".jpeg", ".webp"))
        if args.out_latent is not None:
            _check_out(args.out_latent, (".npy",))
        editor = _editor(args, ("generator",))
        w_plus = editor.latent_from_seed(args.seed, args.truncation)
        editor.render_image(w_plus).save(args.out)
        if args.out_latent is not None:
            save_latent(args.out_latent, w_plus)
        return {
            "models": editor.name,
            "seed": args.seed,
            "out": str(args.out),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except (FaceEditingError, ValueError, FileNotFoundError, IsADirectoryError) as exc:
        text = str(exc).strip() or type(exc).__name__
        first, _, rest = text.partition("\n")
        print(f"error: {first}", file=sys.stderr)
        if args.verbose and rest:
            print(rest, file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
