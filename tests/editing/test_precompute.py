"""S statistics and channel relevance (fs3) on a tiny seeded generator and CLIP.

Goldens (``tests/golden/precompute.json``) come from upstream StyleCLIP's own code
(``global_directions/GetCode.py`` truncation + ``GetCodeMS``, ``global_directions/SingleChannel.py``
loop and ``GetFs``, ``manipulate.py`` ``MSCode``/``EditOneC``) run on the same seeded generator and
CLIP, with TF and the ``clip`` package replaced by calls into this project's models.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from editing.clip_text import ClipEncoder
from editing.editor import FaceEditor
from editing.global_directions import StyleSpaceLayout, delta_s, layout_for, relevance_scores
from editing.precompute import (
    SStats,
    add_precompute_arguments,
    channel_relevance,
    layout_metadata,
    load_official_fs3,
    load_precomputed,
    run_precompute,
    s_statistics,
    save_precomputed,
)
from models.stylegan2 import Generator
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint
from tests.tiny_clip import make_tiny_clip_folder

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "precompute.json").read_text())
GEN = GOLDEN["generator"]  # 8 px, multiplier 1: S layers 0..4, covered [0, 2, 3] = 1536 rows
CLIP = GOLDEN["clip"]  # 28 px input, 7 px patches, 16-d embeddings
N_STATS = GOLDEN["s_stats"]["n_samples"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gen() -> tuple[Generator, torch.Tensor]:
    ck = make_stylegan2_checkpoint(
        size=GEN["size"], channel_multiplier=GEN["channel_multiplier"], n_mlp=GEN["n_mlp"], seed=GEN["seed"]
    )
    return Generator.from_state_dict(ck["g_ema"]).eval(), ck["latent_avg"].reshape(1, -1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip_folder(
        tmp_path_factory.mktemp("clip"), seed=CLIP["seed"], image_size=CLIP["image_size"], patch=CLIP["patch"]
    )


@pytest.fixture(scope="module")
def clip(clip_dir) -> ClipEncoder:
    return ClipEncoder.from_folder(clip_dir)


@pytest.fixture(scope="module")
def stats(gen) -> SStats:
    g, w_avg = gen
    return s_statistics(g, w_avg, n_samples=N_STATS, batch=256)


def _brute_styles(
    g: Generator, w_avg: torch.Tensor, n: int, psi: float, cutoff: int | None
) -> list[np.ndarray]:
    """S of upstream's z stream in one go, float64 (the obvious way, no batching)."""
    z = torch.from_numpy(np.random.RandomState(5).randn(n, 512).astype(np.float32))
    with torch.no_grad():
        w = g.mapping(z)
        w_plus = w[:, None].repeat(1, g.n_latent, 1)
        k = g.n_latent if cutoff is None else cutoff
        w_plus[:, :k] = w_avg + psi * (w_plus[:, :k] - w_avg)
        return [s.double().numpy() for s in g.w_plus_to_styles(w_plus)]


# ------------------------------------------------------------------------------------ S statistics


@pytest.mark.parametrize("cutoff", [None, 2])
def test_s_statistics_equal_a_direct_computation(gen, cutoff):
    g, w_avg = gen
    ref = _brute_styles(g, w_avg, 300, 0.7, cutoff)
    st = s_statistics(g, w_avg, n_samples=300, truncation=0.7, truncation_cutoff=cutoff, batch=64)
    assert st.dims == tuple(layout_for(8, 1).dims) and len(st.mean) == g.n_styles
    for s, m, sd in zip(ref, st.mean, st.std, strict=True):
        assert m.dtype == np.float32 and sd.dtype == np.float32
        np.testing.assert_allclose(m, s.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sd, s.std(0, ddof=0), rtol=1e-5, atol=1e-6)
    # the cutoff matters: rows >= 2 (S layers 3, 4) are not truncated, so their spread is larger
    if cutoff == 2:
        full = s_statistics(g, w_avg, n_samples=300, batch=64)
        assert np.allclose(st.std[0], full.std[0]) and (st.std[4] > full.std[4]).mean() > 0.9


def test_s_statistics_do_not_depend_on_the_batch_size(gen):
    g, w_avg = gen
    a = s_statistics(g, w_avg, n_samples=500, batch=500)
    for batch in (1, 7, 128):
        b = s_statistics(g, w_avg, n_samples=500, batch=batch)
        for x, y in zip(a.mean + a.std, b.mean + b.std, strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-7, atol=1e-7)


def test_psi_zero_collapses_every_sample_onto_w_avg(gen):
    g, w_avg = gen
    st = s_statistics(g, w_avg, n_samples=64, truncation=0.0, batch=16)
    with torch.no_grad():
        s_avg = g.w_plus_to_styles(w_avg)
    for m, sd, s in zip(st.mean, st.std, s_avg, strict=True):
        np.testing.assert_allclose(m, s[0].numpy(), rtol=1e-6, atol=1e-6)
        assert float(np.abs(sd).max()) < 1e-6


def test_s_statistics_match_upstream_getcode(stats):
    ref = GOLDEN["s_stats"]
    assert (ref["n_samples"], ref["truncation"], ref["seed"]) == (
        stats.n_samples,
        stats.truncation,
        stats.seed,
    )
    np.testing.assert_allclose([m.astype(np.float64).sum() for m in stats.mean], ref["mean_sum"], rtol=1e-5)
    np.testing.assert_allclose([s.astype(np.float64).sum() for s in stats.std], ref["std_sum"], rtol=1e-5)
    np.testing.assert_allclose([m[7] for m in stats.mean], ref["mean_sample"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([s[7] for s in stats.std], ref["std_sample"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ relevance


@pytest.mark.parametrize("variant", ["independent", "cumulative"])
def test_relevance_matches_upstream_singlechannel(gen, clip, stats, variant):
    g, w_avg = gen
    ref = GOLDEN["relevance"][variant]
    got = []
    for row in ref["rows"]:
        r = channel_relevance(
            g, clip, stats, w_avg=w_avg, n_images=GOLDEN["relevance"]["n_images"], rows=(row, row + 1),
            cumulative_means=variant == "cumulative", batch=4,
        )  # fmt: skip
        got.append(r[0])
    # measured: 5e-6 (batch-1 vs batched renders); the two variants differ by up to 0.5
    np.testing.assert_allclose(np.array(got), np.array(ref["values"]), atol=2e-5)


def test_relevance_rows_are_unit_and_swapping_the_signs_negates_them(gen, clip, stats):
    g, w_avg = gen
    # spans S layers 0 and 2; without the 8-bit rounding, float rounding differences between batch
    # layouts stay at float32 level instead of flipping an occasional 8-bit level
    kw = dict(w_avg=w_avg, n_images=2, rows=(510, 516), batch=4, quantize=False)
    r = channel_relevance(g, clip, stats, **kw)
    assert r.shape == (6, 16) and r.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-6)
    assert np.abs(r @ r.T - np.eye(6)).max() > 0.01  # distinct directions, not one vector repeated
    flipped = channel_relevance(g, clip, stats, sigma=-5.0, **kw)
    np.testing.assert_allclose(flipped, -r, atol=1e-6)
    # rows do not depend on how the work is batched or chunked, up to float32 rounding (measured
    # 2e-5: normalising a small f+ − f− difference of this random tiny CLIP amplifies it)
    again = channel_relevance(g, clip, stats, **{**kw, "batch": 2}, save_every=1)
    np.testing.assert_allclose(again, r, atol=1e-4)


def test_relevance_of_a_narrow_generator_follows_its_own_channel_widths(clip):
    # the demo generator has explicit widths ({4: 128, ..., 64: 32}), not layout_for's table
    g = Generator(size=8, n_mlp=1, channels={4: 8, 8: 4}).eval()
    w_avg = g.mean_latent(64, generator=torch.Generator().manual_seed(0)).reshape(1, -1)
    narrow_stats = s_statistics(g, w_avg, n_samples=64)
    assert narrow_stats.dims == (8, 8, 8, 4, 4)
    r = channel_relevance(g, clip, narrow_stats, w_avg=w_avg, n_images=1, batch=4)
    assert r.shape == (8 + 8 + 4, 16)  # covered layers 0, 2, 3


def test_a_channel_without_effect_gets_a_zero_row(gen, clip, stats):
    g, w_avg = gen
    dead = copy.deepcopy(g)
    with torch.no_grad():
        dead.conv1.conv.weight[:, :, 3] = 0  # S layer 0, channel 3 no longer reaches the image
    r = channel_relevance(dead, clip, stats, w_avg=w_avg, n_images=2, rows=(2, 5), batch=4)
    assert np.all(r[1] == 0)
    np.testing.assert_allclose(np.linalg.norm(r[[0, 2]], axis=1), 1.0, atol=1e-6)


def test_relevance_equals_a_direct_per_image_loop(gen, clip, stats):
    g, w_avg = gen
    layer, channel, n_images, sigma = 2, 40, 3, 5.0  # result row 512 + 40
    z = torch.from_numpy(np.random.RandomState(5).randn(n_images, 512).astype(np.float32))
    with torch.no_grad():
        w = w_avg + 0.7 * (g.mapping(z) - w_avg)
        dirs = []
        for i in range(n_images):
            feats = []
            for a in (-sigma, sigma):
                styles = [s[i : i + 1].clone() for s in g.w_plus_to_styles(w)]
                styles[layer][0, channel] = float(stats.mean[layer][channel]) + a * float(
                    stats.std[layer][channel]
                )
                img = g.synthesis_from_styles(styles)
                img = torch.floor(img * 127.5 + 128).clamp(0, 255) / 127.5 - 1
                feats.append(clip.encode_image(img)[0].double().numpy())
            d = feats[1] / np.linalg.norm(feats[1]) - feats[0] / np.linalg.norm(feats[0])
            dirs.append(d / np.linalg.norm(d))
    expected = np.mean(dirs, axis=0)
    expected /= np.linalg.norm(expected)
    got = channel_relevance(g, clip, stats, w_avg=w_avg, n_images=n_images, rows=(552, 553), batch=6)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)


def test_resuming_after_an_interruption_gives_the_uninterrupted_array(gen, clip, stats, tmp_path):
    g, w_avg = gen
    kw = dict(w_avg=w_avg, n_images=2, rows=(0, 7), batch=4, save_every=3)
    whole = channel_relevance(g, clip, stats, **kw)
    path = tmp_path / "fs3.partial.npy"

    class Interrupt(Exception):
        pass

    def stop_after_first_chunk(done, total):
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        channel_relevance(g, clip, stats, resume_path=path, on_progress=stop_after_first_chunk, **kw)
    progress = json.loads((tmp_path / "fs3.partial.npy.json").read_text())
    assert (progress["done"], progress["total"]) == (3, 7)
    assert np.all(np.load(path)[3:] == 0)
    seen = []
    resumed = channel_relevance(
        g, clip, stats, resume_path=path, on_progress=lambda d, t: seen.append(d), **kw
    )
    assert seen == [6, 7]  # only the missing chunks were computed
    np.testing.assert_array_equal(resumed, whole)
    with pytest.raises(ValueError, match="other models or settings"):
        channel_relevance(g, clip, stats, resume_path=path, **{**kw, "n_images": 3})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"render_size": 4}, "render_size"),
        ({"render_size": 16}, "render_size"),
        ({"layers": [1]}, "toRGB"),
        ({"layers": [3, 2]}, "ascending"),
        ({"sigma": 0.0}, "sigma"),
        ({"batch": 1}, "batch"),
        ({"rows": (5, 5)}, "rows"),
        ({"n_images": 0}, "n_images"),
    ],
)
def test_relevance_rejects_bad_arguments(gen, clip, stats, kwargs, match):
    g, w_avg = gen
    with pytest.raises(ValueError, match=match):
        channel_relevance(g, clip, stats, w_avg=w_avg, **{"n_images": 1, "rows": (0, 1), **kwargs})


# ------------------------------------------------------------------------------------ files


def test_save_load_round_trip(stats, tmp_path):
    layout = layout_for(8, 1)
    fs3 = np.random.default_rng(0).standard_normal((layout.n_covered_channels, 16)).astype(np.float32)
    fs3 /= np.linalg.norm(fs3, axis=1, keepdims=True)
    meta = {"generator": "tiny", "size": 8, "channel_multiplier": 1, "layout": layout_metadata(layout)}
    save_precomputed(tmp_path / "tiny", stats, fs3, meta)
    with np.load(tmp_path / "tiny" / "s_stats.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted([f"mean_{i}" for i in range(5)] + [f"std_{i}" for i in range(5)])
        assert all(npz[k].dtype == np.float32 for k in npz.files)
    pre = load_precomputed(tmp_path / "tiny")
    assert pre.layout == layout and pre.s_stats.settings() == stats.settings()
    for a, b in zip(pre.s_stats.mean + pre.s_stats.std, stats.mean + stats.std, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pre.fs3, fs3)
    assert pre.meta["generator"] == "tiny" and pre.meta["s_stats"]["std_ddof"] == 0
    assert {"torch", "numpy", "python"} <= set(pre.meta["versions"]) and pre.meta["date"]
    # statistics only: no fs3, and a stale one is removed
    save_precomputed(tmp_path / "tiny", stats, None, meta)
    assert load_precomputed(tmp_path / "tiny").fs3 is None and not (tmp_path / "tiny" / "fs3.npy").exists()


def test_produced_files_drive_delta_s(gen, clip, stats, tmp_path):
    g, w_avg = gen
    # A layout covering S layer 0 only (4 px, rendered at 4 px). Its 512 rows would take ~20 s on
    # this CPU, so the first 24 are computed and the rest left zero, which is how a channel that
    # does not change the render is stored.
    full = layout_for(8, 1)
    layout = StyleSpaceLayout(
        dims=full.dims, is_torgb=full.is_torgb, resolutions=full.resolutions, covered=(0,)
    )
    fs3 = np.zeros((512, 16), np.float32)
    fs3[:24] = channel_relevance(
        g, clip, stats, w_avg=w_avg, n_images=1, layers=[0], rows=(0, 24), render_size=4, batch=48
    )
    meta = {"generator": "tiny", "size": 8, "channel_multiplier": 1, "layout": layout_metadata(layout)}
    pre = load_precomputed(save_precomputed(tmp_path / "p", stats, fs3, meta))
    assert pre.fs3.shape == (512, 16) and pre.layout.covered == (0,)
    dt = torch.from_numpy(pre.fs3[17])  # a text direction along channel 17's row
    ds, n = delta_s(pre.fs3, dt, 0.5, pre.s_std, pre.layout)
    r = relevance_scores(pre.fs3, dt)
    assert n == int((r.abs() >= 0.5).sum()) >= 1
    assert ds[0][17] == pytest.approx(float(pre.s_stats.std[0][17]))  # the best channel moves by one std
    assert not bool(ds[0][24:].any()) and all(not bool(d.any()) for d in ds[1:])
    with torch.no_grad():  # the edit renders, and changes the image
        styles = g.w_plus_to_styles(w_avg)
        edited = [s + 2.0 * d for s, d in zip(styles, ds, strict=True)]
        a, b = g.synthesis_from_styles(styles), g.synthesis_from_styles(edited)
    assert torch.isfinite(b).all() and (a - b).abs().max() > 1e-3


def test_official_fs3_loader(tmp_path):
    layout = layout_for(1024, 2)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5376, 512))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    for dtype in (np.float32, np.float16, np.float64):
        np.save(tmp_path / "ok.npy", rows.astype(dtype))
        got = load_official_fs3(tmp_path / "ok.npy", layout)
        assert got.shape == (5376, 512) and got.dtype == np.float32
    bad = {
        "rows": rows[:5000],
        "columns": rows[:, :256] / np.linalg.norm(rows[:, :256], axis=1, keepdims=True),
        "transposed": rows[:512].T.copy(),
        "flat": rows.ravel(),
        "ints": (rows * 100).astype(np.int32),
        "not_unit": rows * 2,
        "nan": np.where(np.arange(512) == 3, np.nan, rows),
        "objects": np.array([rows, None], dtype=object),
    }
    for name, arr in bad.items():
        np.save(tmp_path / f"{name}.npy", arr, allow_pickle=True)
        with pytest.raises(ValueError):
            load_official_fs3(tmp_path / f"{name}.npy", layout)
    with pytest.raises(ValueError, match=r"\(5376, 512\)"):
        load_official_fs3(tmp_path / "rows.npy", layout)
    assert load_official_fs3(tmp_path / "columns.npy", layout, clip_dim=None).shape == (5376, 256)


# ------------------------------------------------------------------------------------ CLI


def test_cli_stats_only_writes_and_reuses_statistics(gen, clip, tmp_path, capsys):
    g, w_avg = gen
    built = []

    def factory(components):
        built.append(components)
        return FaceEditor(generator=g, w_avg=w_avg, clip=clip, device="cpu", precision="fp32", name="tiny")

    parser = argparse.ArgumentParser()
    add_precompute_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "tiny"), "--n-samples", "300", "--stats-only"])
    summary = run_precompute(args, factory)
    assert built == [("generator",)] and summary["out"] == str(tmp_path / "tiny")
    pre = load_precomputed(tmp_path / "tiny")
    ref = s_statistics(g, w_avg, n_samples=300)
    for a, b in zip(pre.s_stats.std, ref.std, strict=True):
        np.testing.assert_array_equal(a, b)
    assert pre.meta["size"] == 8 and pre.meta["layout"]["covered"] == [0, 2, 3] and pre.fs3 is None
    run_precompute(args, factory)
    assert "reusing" in capsys.readouterr().out
    # a retrained generator of the same shape (no file hash: the demo set) is not given stale statistics
    g2 = copy.deepcopy(g)
    with torch.no_grad():
        g2.to_rgb1.bias.add_(0.5)

    def factory2(components):
        return FaceEditor(generator=g2, w_avg=w_avg, clip=clip, device="cpu", precision="fp32", name="tiny")

    run_precompute(args, factory2)
    assert "reusing" not in capsys.readouterr().out
