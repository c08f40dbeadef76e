"""Latency of the photo → aligned face → W+ → image pipeline at full size, on this machine.

Full-size networks with seeded random weights (the real architectures and file formats: the
numbers hold for the real weights, which cannot be downloaded here), the real dlib alignment on
the example photo, and ``FaceEditor`` exactly as the app and CLI use it. Every timing is the
median of ``--repeats`` runs after one warm-up; ratios compare precisions measured in this one
run. Reduced precision counts only when its output stays within 35 dB PSNR of float32.

    python benchmarks/bench_pipeline.py [--threads 2] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editing.align import FaceAligner, load_image  # noqa: E402
from editing.editor import FaceEditor  # noqa: E402
from editing.synthesis import psnr  # noqa: E402
from models.e4e import e4e_from_checkpoint  # noqa: E402
from models.irse import IRSE50, IDLoss  # noqa: E402
from models.stylegan2 import Generator  # noqa: E402
from scripts.seeded.e4e import make_e4e_checkpoint  # noqa: E402
from scripts.seeded.irse import make_irse50_checkpoint  # noqa: E402
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint, seeded_w_plus  # noqa: E402

PSNR_FLOOR = 35.0


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (and the result)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd synthesis (slow start)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} after a warm-up")

    rss0 = rss_mb()
    t = time.perf_counter()
    gen_ckpt = make_stylegan2_checkpoint(size=1024)
    generator = Generator.from_state_dict(gen_ckpt["g_ema"]).eval()
    encoder, latent_avg = e4e_from_checkpoint(make_e4e_checkpoint(decoder=None))
    identity = IDLoss(IRSE50.from_state_dict(make_irse50_checkpoint()))
    from transformers import CLIPConfig, CLIPModel

    clip = CLIPModel(CLIPConfig()).eval()  # the ViT-B/32 architecture (random weights)
    aligner = FaceAligner()
    aligner.detect(load_image(ROOT / "assets" / "astronaut.png"))  # loads dlib's models
    gc.collect()
    load_s = time.perf_counter() - t
    n_params = sum(p.numel() for m in (generator, encoder, identity, clip) for p in m.parameters())
    results: dict[str, float] = {
        "model_set_params_M": n_params / 1e6,
        "model_set_peak_rss_MB": rss_mb() - rss0,
        "model_set_build_s": load_s,
    }
    print(
        f"full-size model set (G 1024, e4e, IR-SE50, CLIP B/32, dlib): {n_params / 1e6:.0f} M parameters, "
        f"peak RSS +{results['model_set_peak_rss_MB']:.0f} MB, built in {load_s:.1f} s"
    )

    photo = load_image(ROOT / "assets" / "astronaut.png")
    w_plus = seeded_w_plus(1, generator.n_latent) * 0.5 + gen_ckpt["latent_avg"]
    ms, faces = timed(lambda: aligner.align(photo, output_size=1024), args.repeats)
    results["align_1024_ms"] = ms
    aligned = faces[0].image

    rows = []
    ref: dict[str, torch.Tensor] = {}
    for precision in ("fp32", "bf16"):
        ed = FaceEditor(
            generator=generator,
            w_avg=gen_ckpt["latent_avg"],
            encoder=encoder,
            encoder_latent_avg=latent_avg,
            aligner=aligner,
            device="cpu",
            precision=precision,
        )
        ms_1024, img_1024 = timed(lambda ed=ed: ed.render(w_plus), args.repeats)
        ms_256, img_256 = timed(lambda ed=ed: ed.render(w_plus, size=256), args.repeats)
        ms_enc, w_enc = timed(lambda ed=ed: ed.encode(aligned), args.repeats)
        ms_inv, inv = timed(lambda ed=ed: ed.invert(photo), args.repeats)
        rec = ed.render(inv.w_plus)
        if precision == "fp32":
            ref = {"1024": img_1024, "256": img_256, "rec": rec}
        q = {k: psnr(v, ref[k]) for k, v in {"1024": img_1024, "256": img_256, "rec": rec}.items()}
        rows.append((precision, ms_1024, ms_256, ms_enc, ms_inv, q))
        for k, v in (
            ("synthesis_1024_ms", ms_1024),
            ("synthesis_to_256_ms", ms_256),
            ("e4e_encode_ms", ms_enc),
            ("inversion_total_ms", ms_inv),
        ):
            results[f"{k}_{precision}"] = v
        for k, v in q.items():
            results[f"psnr_vs_fp32_{k}_{precision}"] = v

    if args.compile:
        compiled = torch.compile(generator.synthesis)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            t = time.perf_counter()
            compiled(w_plus)
            results["compile_first_call_s"] = time.perf_counter() - t
            ms, img = timed(lambda: compiled(w_plus).float(), args.repeats)
        results["synthesis_1024_ms_bf16_compile"] = ms
        results["psnr_vs_fp32_1024_bf16_compile"] = psnr(img, ref["1024"])

    print(
        f"\nalignment (dlib detect + 68 landmarks + FFHQ crop at 1024): {results['align_1024_ms']:.0f} ms\n"
    )
    print(
        f"{'precision':<10}{'synth 1024':>12}{'synth →256':>12}{'e4e':>9}{'inversion*':>12}"
        "   PSNR vs fp32 (1024/256/rec)"
    )
    for precision, a, b, c, d, q in rows:
        ok = all(v >= PSNR_FLOOR for v in q.values())
        qs = "/".join("∞" if v == float("inf") else f"{v:.1f}" for v in q.values())
        print(
            f"{precision:<10}{a:>10.0f}ms{b:>10.0f}ms{c:>7.0f}ms{d:>10.0f}ms"
            f"   {qs} dB {'ok' if ok else '< 35 dB'}"
        )
    f, h = rows[0], rows[1]
    print(
        f"\nbf16/fp32 time ratios: synthesis 1024 {h[1] / f[1]:.2f}, to 256 {h[2] / f[2]:.2f}, "
        f"e4e {h[3] / f[3]:.2f}, inversion {h[4] / f[4]:.2f}"
    )
    print(f"synthesis to 256 / full 1024 (fp32): {f[2] / f[1]:.2f}")
    if args.compile:
        print(
            f"bf16 + torch.compile synthesis 1024: {results['synthesis_1024_ms_bf16_compile']:.0f} ms "
            f"(PSNR {results['psnr_vs_fp32_1024_bf16_compile']:.1f} dB, first call "
            f"{results['compile_first_call_s']:.0f} s)"
        )
    print("* inversion = align + e4e + render at 1024, from the decoded photo")
    print("targets: synthesis 1024 ≤ 1000 ms, inversion incl. alignment ≤ 1500 ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
