"""``python -m editing`` end to end on tiny seeded models written in the official file formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from editing.cli import main
from scripts.seeded.e4e import make_e4e_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "assets" / "astronaut.png"
TINY_SIZE = 32  # generator resolution: n_latent = 8


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    gen = make_stylegan2_checkpoint(size=TINY_SIZE, n_mlp=2, seed=1)
    torch.save(gen, d / "stylegan2-ffhq-config-f.pt")
    e4e = make_e4e_checkpoint(
        seed=2, n_styles=8, widths=(16, 32, 48, 64), units=(1, 1, 1, 1), decoder=gen["g_ema"]
    )
    torch.save(e4e, d / "e4e_ffhq_encode.pt")
    return d


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_is_deterministic_per_seed(weights_dir, tmp_path, capsys):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        code, out, err = _run(
            capsys,
            "generate",
            "--seed",
            str(seed),
            "--out",
            str(tmp_path / f"{name}.png"),
            "--out-latent",
            str(tmp_path / f"{name}.npy"),
            "--weights",
            str(weights_dir),
        )
        assert code == 0, err
        assert json.loads(out)["seed"] == seed
    a, b, c = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "abc")
    assert a.shape == (TINY_SIZE, TINY_SIZE, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    w = np.load(tmp_path / "a.npy")
    assert w.shape == (8, 512) and np.allclose(w, w[0])  # a seed gives one w on every row


def test_invert_photo_writes_latent_and_reconstruction(weights_dir, tmp_path, capsys):
    code, out, err = _run(
        capsys,
        "invert",
        str(ASTRONAUT),
        "--out-latent",
        str(tmp_path / "w.npy"),
        "--out-image",
        str(tmp_path / "rec.png"),
        "--weights",
        str(weights_dir),
    )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["timings"]) == {"align", "encode", "render"}
    w = np.load(tmp_path / "w.npy")
    assert w.shape == (8, 512) and np.isfinite(w).all() and not np.allclose(w, w[0])
    assert Image.open(tmp_path / "rec.png").size == (TINY_SIZE, TINY_SIZE)
    # The same face given already aligned (--no-align) inverts to the same latent.
    code, _, err = _run(capsys, "align", str(ASTRONAUT), "--out", str(tmp_path / "al.png"), "--size", "32")
    assert code == 0, err
    code, _, err = _run(
        capsys,
        "invert",
        str(tmp_path / "al.png"),
        "--no-align",
        "--out-latent",
        str(tmp_path / "w2.npy"),
        "--out-image",
        str(tmp_path / "rec2.png"),
        "--weights",
        str(weights_dir),
    )
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "w2.npy"), w, atol=1e-4)


def test_align_writes_the_requested_size(tmp_path, capsys):
    code, out, err = _run(capsys, "align", str(ASTRONAUT), "--out", str(tmp_path / "a.png"), "--size", "256")
    assert code == 0, err
    assert json.loads(out)["faces"] >= 1
    assert Image.open(tmp_path / "a.png").size == (256, 256)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["align", "{bad}", "--out", "{tmp}/a.png"], "not an image"),
        (["align", "{flat}", "--out", "{tmp}/a.png"], "No face"),
        (["align", "{astronaut}", "--out", "{tmp}/a.txt"], "must end in"),
        (["align", "{astronaut}", "--out", "{tmp}/a.png", "--face", "7"], "out of range"),
        (
            # --models ffhq: with auto, a missing FFHQ set falls back to the shipped demo set
            ["generate", "--seed", "1", "--out", "{tmp}/g.png", "--weights", "{tmp}", "--offline"]
            + ["--models", "ffhq"],
            "Missing model files: stylegan2-ffhq-config-f.pt",
        ),
        (
            [
                "invert",
                "{astronaut}",
                "--out-latent",
                "{tmp}/w.npy",
                "--out-image",
                "{tmp}/r.png",
                "--weights",
                "{tmp}",
                "--offline",
                "--models",
                "ffhq",
            ],
            "Missing model files: stylegan2-ffhq-config-f.pt, e4e_ffhq_encode.pt. Put them",
        ),
        (
            [
                "generate",
                "--seed",
                "1",
                "--truncation",
                "3",
                "--out",
                "{tmp}/g.png",
                "--weights",
                "{weights}",
            ],
            "truncation must be in [0, 1]",
        ),
        (["generate", "--seed", "-1", "--out", "{tmp}/g.png", "--weights", "{weights}"], "seed must be"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, weights_dir, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    Image.new("RGB", (300, 300), (120, 130, 140)).save(tmp_path / "flat.png")
    subs = {
        "{tmp}": str(tmp_path),
        "{bad}": str(tmp_path / "bad.png"),
        "{flat}": str(tmp_path / "flat.png"),
        "{astronaut}": str(ASTRONAUT),
        "{weights}": str(weights_dir),
    }
    for k, v in subs.items():
        argv = [a.replace(k, v) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.lower() in err.lower(), err


def test_module_entry_point_runs_as_a_process(weights_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "editing",
            "generate",
            "--seed",
            "5",
            "--out",
            str(tmp_path / "g.png"),
            "--weights",
            str(weights_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.png").is_file()
