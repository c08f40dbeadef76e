"""``python -m editing edit / precompute / train-mapper`` end to end on tiny seeded models written
in the official file formats (a ``--weights`` folder with the official names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from editing.cli import main
from editing.editor import layout_of
from models.stylegan2 import Generator
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.mapper import mapper_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint
from tests.tiny_clip import make_tiny_clip_folder

SIZE = 32  # n_latent 8: coarse rows 0-3, medium 4-7, no fine rows


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    gen = make_stylegan2_checkpoint(size=SIZE, n_mlp=2, seed=21)
    torch.save(gen, d / "stylegan2-ffhq-config-f.pt")
    torch.save(make_irse50_checkpoint(widths=(16, 32, 48, 64), units=(1, 1, 1, 1)), d / "model_ir_se50.pth")
    make_tiny_clip_folder(d / "clip-vit-base-patch32", context_length=64)
    layout = layout_of(Generator.from_state_dict(gen["g_ema"]))
    rows = torch.randn(layout.n_covered_channels, 16, generator=torch.Generator().manual_seed(0))
    np.save(d / "fs3.npy", torch.nn.functional.normalize(rows, dim=1).numpy())
    (d / "mappers").mkdir()
    ckpt = mapper_checkpoint(levels=("coarse", "medium"), stylegan_size=SIZE, seed=5)
    torch.save(ckpt, d / "mappers" / "purple_hair.pt")
    return d


@pytest.fixture(scope="module")
def s_stats(weights) -> Path:
    """S statistics from 4000 samples (the default 100k is the official recipe, too slow for CI)."""
    from editing.editor import load_generator
    from editing.precompute import layout_metadata, s_statistics, save_precomputed

    g, w_avg = load_generator(weights / "stylegan2-ffhq-config-f.pt")
    stats = s_statistics(g, w_avg, n_samples=4000)
    return save_precomputed(
        weights.parent / "s_stats", stats, None, {"layout": layout_metadata(layout_of(g))}
    )


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_global_edit_from_seed_writes_all_outputs_and_alpha_zero_is_the_plain_face(
    weights, s_stats, tmp_path, capsys
):
    code, out, err = _run(
        capsys, "generate", "--seed", 3, "--out", tmp_path / "plain.png", "--weights", weights
    )
    assert code == 0, err
    args = ["edit", "--seed", 3, "--method", "global", "--target", "face with glasses", "--weights", weights]
    args += ["--s-stats", s_stats]
    code, out, err = _run(capsys, *args, "--alpha", 0, "--out", tmp_path / "zero.png", "--no-metrics")
    assert code == 0, err
    plain, zero = (np.asarray(Image.open(tmp_path / n)) for n in ("plain.png", "zero.png"))
    assert np.array_equal(plain, zero)
    code, out, err = _run(capsys, *args, "--alpha", 6, "--beta", "auto", "--out", tmp_path / "g.png")
    assert code == 0, err
    summary = json.loads(out)
    assert summary == json.loads((tmp_path / "g.json").read_text())
    assert summary["info"]["channels_moved"] > 20 and 0.1 <= summary["info"]["beta"] < 0.3
    assert summary["parameters"]["alpha"] == 6 and summary["parameters"]["beta"] is None
    m = summary["metrics"]
    assert 0 < m["identity_similarity"] < 1 and -1 <= m["directional"] <= 1
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), plain)
    assert np.load(tmp_path / "g.npy").shape == (8, 512)
    with np.load(tmp_path / "g.npz") as z:
        assert {"w_plus", "s_delta_0"} <= set(z.files)


def test_mapper_edit_chains_on_a_latent_file(weights, s_stats, tmp_path, capsys):
    args = ["edit", "--seed", 4, "--method", "global", "--target", "smiling face", "--weights", weights]
    args += ["--s-stats", s_stats]
    assert _run(capsys, *args, "--out", tmp_path / "g.png", "--no-metrics")[0] == 0
    code, out, err = _run(
        capsys, "edit", tmp_path / "g.npz", "--method", "mapper", "--mapper", "purple_hair",
        "--out", tmp_path / "m.png", "--weights", weights,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["info"]["edited_rows"] == list(range(8)) and summary["metrics"]["rows_changed"] == 8
    with np.load(tmp_path / "g.npz") as a, np.load(tmp_path / "m.npz") as b:
        assert np.array_equal(a["s_delta_0"], b["s_delta_0"])  # the S offset survives the mapper
        assert not np.array_equal(a["w_plus"], b["w_plus"])
    # a mapper file given by path works too
    code, out, err = _run(
        capsys, "edit", tmp_path / "g.npy", "--method", "mapper", "--mapper",
        weights / "mappers" / "purple_hair.pt", "--strength", "0", "--out", tmp_path / "m0.png",
        "--weights", weights, "--no-metrics",
    )  # fmt: skip
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "m0.npy"), np.load(tmp_path / "g.npy"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "global", "--target", "", "--seed", "1"], "target is empty"),
        (["--method", "global", "--target", "x" * 10_000, "--seed", "1"], "characters long"),
        (["--method", "global", "--target", "face", "--seed", "1", "--alpha", "nan"], "alpha"),
        (["--method", "global", "--target", "face", "--seed", "1", "--alpha", "50"], "alpha"),
        (["--method", "global", "--target", "face", "--seed", "1", "--beta", "lots"], "--beta"),
        (["--method", "global", "--target", "face"], "--seed"),
        (["--method", "mapper", "--seed", "1"], "--mapper is required"),
        (["--method", "mapper", "--mapper", "no_such", "--seed", "1"], "unknown mapper"),
        (["--method", "mapper", "--mapper", "purple_hair", "--seed", "1", "--strength", "9"], "strength"),
        (["--method", "optimize", "--target", "face", "--seed", "1", "--steps", "-3"], "steps"),
        (["--method", "optimize", "--target", "face", "--seed", "1", "--l2-lambda", "nan"], "l2_lambda"),
        (["--method", "optimize", "--target", "face", "--seed", "1", "--augment", "99"], "augment"),
        (["--method", "optimize", "--target", "face", "--seed", "1", "--levels", "eyes"], "levels"),
        (["--method", "optimize", "--target", "face", "--seed", "1", "--jitter", "5"], "jitter"),
    ],
)
def test_bad_edit_arguments_exit_2_with_one_line(extra, message, weights, s_stats, tmp_path, capsys):
    code, out, err = _run(
        capsys, "edit", *extra, "--out", tmp_path / "o.png", "--weights", weights, "--s-stats", s_stats
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_edit_refuses_a_corrupt_latent_file(weights, s_stats, tmp_path, capsys):
    (tmp_path / "w.npy").write_bytes(b"\x93NUMPY garbage")
    args = ["edit", tmp_path / "w.npy", "--method", "global", "--target", "face with glasses"]
    args += ["--s-stats", s_stats]
    code, out, err = _run(capsys, *args, "--out", tmp_path / "o.png", "--weights", weights)
    assert code == 2 and "w.npy" in err and err.count("\n") == 1


def test_precompute_stats_only_and_train_mapper_commands(weights, tmp_path, capsys):
    code, out, err = _run(
        capsys,
        "precompute",
        "--out",
        tmp_path / "pre",
        "--n-samples",
        2000,
        "--stats-only",
        "--weights",
        weights,
    )
    assert code == 0, err
    assert (tmp_path / "pre" / "s_stats.npz").is_file() and (tmp_path / "pre" / "meta.json").is_file()
    code, out, err = _run(
        capsys, "train-mapper", "--prompt", "purple hair", "--out", tmp_path / "mine.pt", "--steps", 2,
        "--n-latents", 8, "--id-lambda", 0, "--no-fine", "--optimizer", "adam", "--weights", weights,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = _run(
        capsys, "edit", "--seed", 2, "--method", "mapper", "--mapper", tmp_path / "mine.pt",
        "--out", tmp_path / "e.png", "--weights", weights, "--no-metrics",
    )  # fmt: skip
    assert code == 0, err


def test_optimize_edit_from_seed(weights, tmp_path, capsys):
    code, out, err = _run(
        capsys, "edit", "--seed", 5, "--method", "optimize", "--target", "a smiling face", "--steps", 3,
        "--out", tmp_path / "o.png", "--weights", weights,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["info"]["steps"] == 3 and len(summary["info"]["clip_loss_history"]) == 3
    assert summary["parameters"]["steps"] == 3 and summary["parameters"]["l2_lambda"] == 0.008
    assert summary["parameters"]["augment"] == 0  # upstream's loss unless --augment is given
    assert summary["parameters"]["jitter"] == 0  # and unless --jitter is given
    assert summary["parameters"]["levels"] == ["coarse", "medium", "fine"]  # every row moves, as upstream
    start = np.load(tmp_path / "o.npy")
    code, out, err = _run(
        capsys, "edit", "--seed", 5, "--method", "optimize", "--target", "a smiling face", "--steps", 3,
        "--levels", "fine,medium", "--out", tmp_path / "f.png", "--weights", weights, "--no-metrics",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["parameters"]["levels"] == ["medium", "fine"]
    # a seeded start has every W+ row equal: the coarse rows (0-3) must still be, the others moved
    fine = np.load(tmp_path / "f.npy")
    assert (fine[..., :4, :] == fine[..., :1, :]).all()
    assert (np.abs(fine[..., 4:, :] - fine[..., :1, :]).max(axis=-1) > 0).all()
    assert (np.abs(start[..., 1:4, :] - start[..., :1, :]).max(axis=-1) > 0).all()  # the full run moves them
    assert summary["metrics"]["identity_similarity"] is not None and (tmp_path / "o.npy").is_file()
    code, out, err = _run(
        capsys, "edit", "--seed", 5, "--method", "optimize", "--target", "a smiling face", "--steps", 3,
        "--jitter", 0.5, "--out", tmp_path / "j.png", "--weights", weights, "--no-metrics",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["parameters"]["jitter"] == 0.5
    assert not np.array_equal(np.load(tmp_path / "j.npy"), start)  # the jittered loss takes another path
