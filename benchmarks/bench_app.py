"""Cold start of the app: from ``python app.py`` to the page being served and the first API answer.

Each launch is a fresh process (Python, torch and gradio imported, every model loaded); the weight
files are already on disk ("cached"), and one untimed launch first warms the OS file cache and
fills the S-statistics cache, so the timed launches are the restart a user or a Space sees.
Reported per launch: seconds until ``/config`` answers (the UI can be shown) and until the first
``gradio_client`` call to ``/random_face`` returns an image (the UI is usable), and the server's
resident memory then. Medians over ``--repeats`` launches.

    python benchmarks/bench_app.py --models demo                 # the shipped demo model set
    python benchmarks/bench_app.py --seeded /tmp/seeded-full     # full-size seeded weights (written once)
    python benchmarks/bench_app.py --tiny                        # tiny seeded weights
    python benchmarks/bench_app.py --weights DIR [--s-stats DIR] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.screenshots import app_process, tiny_app_args, wait_until_up  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def launch_once(app_args: list[str], timeout_s: float, log: Path) -> dict[str, float]:
    """One cold start; the timings in seconds from process start (the app's output goes to ``log``)."""
    from gradio_client import Client

    t0 = time.perf_counter()
    with app_process(app_args, log=log) as (url, process):
        try:
            wait_until_up(url, process, timeout_s=timeout_s)
        except (RuntimeError, TimeoutError):
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
        page = time.perf_counter() - t0
        client = Client(url, verbose=False)
        client.predict(0, 0.7, api_name="/random_face")
        answer = time.perf_counter() - t0
        return {
            "page_s": round(page, 2),
            "first_answer_s": round(answer, 2),
            "rss_mb": round(rss_mb(process.pid)),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, choices=("auto", "ffhq", "demo"), help="passed to app.py")
    ap.add_argument("--weights", type=Path, default=None, help="passed to app.py")
    ap.add_argument("--s-stats", type=Path, default=None, help="passed to app.py")
    ap.add_argument(
        "--seeded", type=Path, default=None, help="full-size seeded weights folder (written if absent)"
    )
    ap.add_argument("--tiny", action="store_true", help="tiny seeded weights in a temporary folder")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the app (OMP_NUM_THREADS)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900, help="seconds one launch may take")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            app_args, label = tiny_app_args(Path(tmp)), "tiny seeded"
        elif args.seeded is not None:
            if not (args.seeded / "stylegan2-ffhq-config-f.pt").is_file():
                print(f"writing full-size seeded weights to {args.seeded} ...", file=sys.stderr)
                subprocess.run(
                    [sys.executable, "-m", "scripts.seeded", "--out", str(args.seeded)], cwd=ROOT, check=True
                )
            app_args, label = (
                ["--weights", str(args.seeded), "--models", "ffhq", "--offline"],
                "full-size seeded",
            )
        else:
            app_args = [f"--models={args.models}"] if args.models else []
            app_args += ["--weights", str(args.weights)] if args.weights else []
            label = args.models or (str(args.weights) if args.weights else "auto")
        app_args += ["--s-stats", str(args.s_stats)] if args.s_stats else []
        app_args += ["--precision", args.precision]

        print(
            f"warm-up launch ({label}; fills the OS file cache and the S-statistics cache) ...",
            file=sys.stderr,
        )
        log = Path(tmp) / "app.log"
        warm = launch_once(app_args, args.timeout, log)
        print(json.dumps({"launch": "warm-up", **warm}))
        runs = []
        for i in range(args.repeats):
            runs.append(launch_once(app_args, args.timeout, log))
            print(json.dumps({"launch": i + 1, **runs[-1]}))

    page = statistics.median(r["page_s"] for r in runs)
    answer = statistics.median(r["first_answer_s"] for r in runs)
    rss = statistics.median(r["rss_mb"] for r in runs)
    print(
        f"cold start ({label} models, weights cached, {args.threads} threads, precision {args.precision}): "
        f"page served after {page:.1f} s, first API answer (/random_face) after {answer:.1f} s, "
        f"server RSS {rss:.0f} MB (median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
