"""Command line for scripting: ``python -m editing COMMAND …``.

Commands:
    edit [INPUT] --method global|mapper|optimize --target TEXT --out OUT.png [options]
        INPUT is a photo, a W+ ``.npy`` or a latent ``.npz`` (omit it and pass --seed for a random
        face); writes OUT.png, OUT.json (parameters, metrics, timings), OUT.npy (the edited W+)
        and, when the edit lives in StyleSpace, OUT.npz (W+ plus the S offset, to chain edits)
    precompute [--out precomputed/NAME] [--n-samples 100000] [--n-images 100] [--stats-only] …
    train-mapper --prompt TEXT --out MAPPER.pt [--latents W.npy] [--steps N] [--resume STATE.pt] …
    align IMAGE --out ALIGNED.png [--size 1024] [--face N]
    invert IMAGE --out-latent W.npy --out-image REC.png [--no-align] [--face N] [--weights DIR]
    generate --seed N [--truncation 0.7] --out IMG.png [--out-latent W.npy] [--weights DIR]
    evaluate [--models demo] [--faces 20] [--methods global,mapper,optimize] [--prompts …] [--steps 40]
        [--json OUT.json] [--seed 0]: every method on every prompt over seeded demo faces, judged by
        the attribute oracle; prints a table ending in ``overall success: X%``

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
    p.add_argument(
        "--models",
        default="auto",
        choices=("auto", "ffhq", "demo"),
        help="model set: auto (default: FFHQ when its weights are present or downloadable, else the "
        "offline demo set), ffhq or demo",
    )
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

    p = sub.add_parser("edit", help="edit a face from a text prompt with one of the StyleCLIP methods")
    p.add_argument("input", type=Path, nargs="?", default=None, help="photo, W+ .npy or latent .npz")
    p.add_argument("--method", required=True, choices=("global", "mapper", "optimize"))
    p.add_argument("--target", default=None, help="what the edited face should show")
    p.add_argument("--neutral", default="face", help="the same without the attribute (default 'face')")
    p.add_argument("--alpha", type=float, default=4.1, help="global: strength, -10..10 (default 4.1)")
    p.add_argument("--beta", default="0.15", help="global: threshold 0..1 or 'auto' (default 0.15)")
    p.add_argument("--mapper", default=None, help="mapper: an official name (e.g. purple_hair) or a .pt file")
    p.add_argument("--strength", type=float, default=0.1, help="mapper: step (default 0.1)")
    p.add_argument("--steps", type=int, default=None, help="optimize: Adam steps (default 40)")
    p.add_argument("--lr", type=float, default=None, help="optimize: learning rate (default 0.1)")
    p.add_argument("--l2-lambda", type=float, default=None, help="optimize: latent L2 weight (0.008)")
    p.add_argument("--id-lambda", type=float, default=None, help="optimize: identity weight (0.005)")
    p.add_argument(
        "--augment", type=int, default=None, help="optimize: CLIP loss over N augmented views (0 = upstream)"
    )
    p.add_argument(
        "--levels",
        default=None,
        help="optimize: W+ levels that move, comma-separated of coarse,medium,fine (default all, upstream)",
    )
    p.add_argument(
        "--jitter",
        type=float,
        default=None,
        help="optimize: CLIP loss averaged over the latent and 3 neighbours jittered by this many W standard "
        "deviations (0 = upstream)",
    )
    p.add_argument("--mode", default="edit", choices=("edit", "free_generation"), help="optimize mode")
    p.add_argument("--seed", type=int, default=None, help="random face when no INPUT is given")
    p.add_argument("--truncation", type=float, default=0.7, help="psi for --seed faces (default 0.7)")
    p.add_argument("--face", type=int, default=0, help="which face of a photo, 0 = largest")
    p.add_argument("--no-align", action="store_true", help="the photo is already FFHQ-aligned")
    p.add_argument("--no-metrics", action="store_true", help="skip the CLIP/identity scores")
    p.add_argument(
        "--s-stats",
        type=Path,
        default=None,
        help="global: a precompute folder with S statistics (default: computed once and cached)",
    )
    p.add_argument("--out", type=Path, required=True, help="edited image (.png/.jpg/.webp)")
    _add_model_args(p)

    from editing.mapper_training import add_train_mapper_arguments

    p = sub.add_parser("train-mapper", help="train a StyleCLIP latent mapper for a text prompt")
    add_train_mapper_arguments(p)
    _add_model_args(p)

    from editing.precompute import add_precompute_arguments

    p = sub.add_parser("precompute", help="S statistics and channel relevance for global directions")
    add_precompute_arguments(p)
    _add_model_args(p)

    from editing.evaluate import add_evaluate_arguments

    p = sub.add_parser(
        "evaluate",
        help="success rate of every method and prompt on the demo set, judged by the attribute oracle",
    )
    add_evaluate_arguments(p)

    p = sub.add_parser("generate", help="a random face from a seed")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--truncation", type=float, default=0.7, help="psi in [0, 1] (default 0.7)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--out-latent", type=Path, default=None, help="also write its W+ as .npy")
    _add_model_args(p)
    return parser


def _editor(args: argparse.Namespace, components: tuple[str, ...], mappers: dict | None = None):
    from editing.model_sets import load_editor

    return load_editor(
        args.models,
        weights=args.weights,
        offline=True if args.offline else None,
        components=components,
        device=args.device,
        precision=args.precision,
        mappers=mappers,
        s_stats=getattr(args, "s_stats", None),
        log=lambda line: setattr(args, "models_note", line),
    )


LATENT_SUFFIXES = (".npy", ".npz")


def _run_edit(args: argparse.Namespace, t0: float) -> dict:
    from editing.edits import GlobalSettings, MapperSettings, load_latent_file, save_latent_file
    from editing.synthesis import tensor_to_pil

    _check_out(args.out, (".png", ".jpg", ".jpeg", ".webp"))
    if args.input is None and args.seed is None:
        raise ValueError("give an INPUT (photo, .npy or .npz) or --seed N for a random face")
    if args.input is not None and args.seed is not None:
        raise ValueError("give either an INPUT or --seed, not both")
    if args.input is not None and not args.input.is_file():
        raise ValueError(f"{args.input} does not exist or is not a file")
    is_photo = args.input is not None and args.input.suffix.lower() not in LATENT_SUFFIXES

    # settings first: bad parameters fail before any model is loaded
    mappers = None
    if args.method == "global":
        if args.target is None:
            raise ValueError("--target is required for global directions, e.g. --target 'face with glasses'")
        beta = None if str(args.beta).lower() == "auto" else _float(args.beta, "--beta")
        settings = GlobalSettings(args.target, neutral=args.neutral, alpha=args.alpha, beta=beta)
    elif args.method == "mapper":
        if not args.mapper:
            raise ValueError("--mapper is required, e.g. --mapper purple_hair or --mapper my_mapper.pt")
        name = args.mapper
        if name.endswith(".pt"):
            path = Path(name)
            if not path.is_file():
                raise ValueError(f"mapper file {path} does not exist")
            name = path.stem
            mappers = {name: path}
        settings = MapperSettings(name, strength=args.strength)
    else:
        from editing.optimization import OptimizationSettings, levels_from_text

        if args.target is None:
            raise ValueError("--target is required for optimisation, e.g. --target 'a smiling face'")
        given = {
            k: v
            for k, v in {
                "steps": args.steps,
                "lr": args.lr,
                "l2_lambda": args.l2_lambda,
                "id_lambda": args.id_lambda,
                "augment": args.augment,
                "jitter": args.jitter,
                "mode": args.mode,
                "levels": None if args.levels is None else levels_from_text(args.levels),
            }.items()
            if v is not None
        }
        settings = OptimizationSettings(**given)

    components = ["generator", "clip", "identity"]
    if is_photo:
        components += ["encoder"] if args.no_align else ["encoder", "aligner"]
    if args.method == "global":
        components.append("global")
    editor = _editor(args, tuple(components), mappers=mappers)
    t1 = time.perf_counter()

    inversion = None
    if args.seed is not None:
        latent = editor.latent(editor.latent_from_seed(args.seed, args.truncation))
    elif is_photo:
        inversion = editor.invert(args.input, align=not args.no_align, face_index=args.face)
        latent = editor.latent(inversion.w_plus)
    else:
        dims = [layer.dim for layer in editor.generator.style_layers()]
        latent = load_latent_file(args.input, editor.n_latent, dims)

    metrics = not args.no_metrics
    if args.method == "global":
        result = editor.edit_global(latent, settings, metrics=metrics)
    elif args.method == "mapper":
        result = editor.edit_mapper(
            latent, settings, metrics=metrics, target=args.target, neutral=args.neutral
        )
    else:
        result = editor.edit_optimize(latent, args.target, settings, metrics=metrics, seed=args.seed or 0)

    tensor_to_pil(result.image).save(args.out)
    outputs = {"image": str(args.out)}
    w_path = args.out.with_suffix(".npy")
    save_latent_file(w_path, result.latent)
    outputs["w_plus"] = str(w_path)
    if result.latent.s_delta is not None:
        save_latent_file(args.out.with_suffix(".npz"), result.latent)
        outputs["latent_npz"] = str(args.out.with_suffix(".npz"))
    summary = {
        "models": editor.name,
        "models_note": getattr(args, "models_note", None),
        "method": args.method,
        "input": str(args.input)
        if args.input is not None
        else {"seed": args.seed, "truncation": args.truncation},
        "parameters": _settings_dict(settings),
        "info": result.info,
        "metrics": result.metrics.as_dict() if result.metrics is not None else None,
        "timings": {
            "load": round(t1 - t0, 3),
            **({f"invert_{k}": round(v, 3) for k, v in inversion.timings.items()} if inversion else {}),
            **{k: round(v, 3) for k, v in result.timings.items()},
            "total": round(time.perf_counter() - t0, 3),
        },
        "outputs": outputs,
    }
    json_path = args.out.with_suffix(".json")
    outputs["json"] = str(json_path)
    json_path.write_text(json.dumps(summary, indent=1))
    return summary


def _float(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number or 'auto', got {text!r}") from None


def _settings_dict(settings) -> dict:
    import dataclasses

    out = {}
    for k, v in dataclasses.asdict(settings).items():
        if isinstance(v, tuple) and all(isinstance(x, str) for x in v):  # e.g. levels
            out[k] = list(v)
        elif isinstance(v, (int, float, str, bool, type(None))):
            out[k] = v
    return out


def _check_out(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path} must end in {' or '.join(suffixes)}")
    if not path.parent.exists():
        raise ValueError(f"the folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> dict | str:
    """Execute one parsed command; returns a summary (printed as JSON), or for ``evaluate`` its table."""
    from editing.synthesis import save_latent

    t0 = time.perf_counter()
    if args.command == "edit":
        return _run_edit(args, t0)
    if args.command == "precompute":
        from editing.precompute import run_precompute

        return run_precompute(args, lambda components: _editor(args, tuple(components)))
    if args.command == "evaluate":
        from editing.evaluate import run_evaluate

        return run_evaluate(args, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.command == "train-mapper":
        from editing.mapper_training import run_train_mapper

        return run_train_mapper(args, lambda components: _editor(args, tuple(components)))
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
        if isinstance(summary, dict) and getattr(args, "models_note", None):
            summary.setdefault("models_note", args.models_note)
    except (FaceEditingError, ValueError, FileNotFoundError, IsADirectoryError) as exc:
        text = str(exc).strip() or type(exc).__name__
        first, _, rest = text.partition("\n")
        print(f"error: {first}", file=sys.stderr)
        if args.verbose and rest:
            print(rest, file=sys.stderr)
        return 2
    print(summary if isinstance(summary, str) else json.dumps(summary))
    return 0
