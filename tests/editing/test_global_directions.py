"""StyleCLIP global directions: parity with the reference code and the properties of Δs.

Goldens (``tests/golden/global_directions.json``) come from orpatashnik/StyleCLIP f87a47f:
``global_torch/StyleCLIP.py`` (``zeroshot_classifier``, ``GetDt``, ``GetBoundary``, ``SplitS``),
``global_directions/MapTS.py`` (checked identical) and ``global_directions/Inference.py``
(``GetDt2``, the auto-β rule), run unmodified on CPU with only their imports shimmed: the ``clip``
package is replaced by a shim whose ``tokenize`` / ``encode_text`` run the tiny transformers CLIP
that ``ClipEncoder`` wraps here (same seeded weights, context 77), so both sides share one text
tower. Inputs come from ``scripts/seeded/global_directions.py``. To regenerate: copy those three
reference files plus ``global_torch/manipulate.py`` into a scratch folder and run the scratch
script ``make_goldens.py`` that imports them (kept in /work/scratch/globaldir, not committed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from editing.clip_text import ClipEncoder
from editing.global_directions import (
    AUTO_BETAS,
    IMAGENET_TEMPLATES,
    StyleSpaceLayout,
    apply_delta_s,
    auto_beta,
    channels_moved,
    delta_s,
    delta_t,
    ffhq_1024_layout,
    layout_for,
    prompt_embedding,
    relevance_scores,
)
from scripts.seeded.global_directions import (
    DT_PROMPTS,
    clip_spec,
    seeded_clip_state_dict,
    seeded_dts,
    seeded_fs3,
    seeded_s_std,
)
from tests.tiny_clip import make_tiny_clip_folder

TOL = 1e-5
GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "global_directions.json").read_text())


@pytest.fixture(scope="module")
def fs3():
    return seeded_fs3(0)


@pytest.fixture(scope="module")
def s_std():
    return seeded_s_std(0)


@pytest.fixture(scope="module")
def dts():
    return seeded_dts(0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = make_tiny_clip_folder(tmp_path_factory.mktemp("clip"), context_length=GOLDEN["context_length"])
    enc = ClipEncoder.from_folder(folder)
    enc.model.load_state_dict(seeded_clip_state_dict(clip_spec(enc.model), seed=0), strict=True)
    return enc


def _random_styles(layout: StyleSpaceLayout, batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(batch, d, generator=g) for d in layout.dims]


# ------------------------------------------------------------------------------- inputs and layout


def test_templates_are_styleclips_79_in_order():
    assert len(IMAGENET_TEMPLATES) == 79
    assert "a photo of many {}." not in IMAGENET_TEMPLATES
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    digest = hashlib.sha256("\n".join(IMAGENET_TEMPLATES).encode()).hexdigest()
    assert digest == GOLDEN["templates_sha256"]


def test_seeded_inputs_are_the_ones_the_goldens_were_made_from(fs3, s_std, dts):
    # Separates "the RNG changed" from "the maths is wrong" when a parity test fails.
    ins = GOLDEN["inputs"]
    assert fs3.shape == (5376, 512) and fs3.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fs3, axis=1), 1.0, atol=1e-5)
    assert fs3.astype(np.float64).sum() == pytest.approx(ins["fs3_sum"], abs=1e-6)
    np.testing.assert_array_equal(fs3[::997, ::101].astype(np.float64).ravel(), ins["fs3_sample"])
    assert [s.astype(np.float64).sum() for s in s_std] == pytest.approx(ins["s_std_sums"], rel=1e-12)
    for k, v in dts.items():
        assert v.astype(np.float64).sum() == pytest.approx(ins["dt_sums"][k], rel=1e-12)


def test_ffhq_1024_layout_matches_the_official_s_space():
    layout = ffhq_1024_layout()
    assert layout.n_layers == 26
    assert layout.dims == (512,) * 15 + (256,) * 3 + (128,) * 3 + (64,) * 3 + (32,) * 2
    assert layout.n_channels == 9088
    assert layout.torgb_layers == (1, 4, 7, 10, 13, 16, 19, 22, 25)
    assert sum(layout.dims[i] for i in layout.torgb_layers) == 3040
    assert layout.covered == (0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15)
    assert layout.n_covered_channels == 5376
    # Upstream's S layer names and its hard-coded non-toRGB index list (first 11 = <= 128 px).
    assert layout.is_torgb == tuple("RGB" in n for n in GOLDEN["s_names"])
    assert layout.resolutions == tuple(int(n.rsplit("_", 1)[1]) for n in GOLDEN["s_names"])
    assert layout.covered == tuple(GOLDEN["mindexs"][:11])


def test_layout_for_other_generators():
    # Same covered layers as FFHQ for any size >= 128 with the same channel table.
    assert layout_for(256, 2).covered == ffhq_1024_layout().covered
    assert layout_for(256, 2).n_covered_channels == 5376
    assert layout_for(1024, 1).dims[11:17] == (512, 256, 256, 256, 128, 128)  # 64 px: 256·m
    # Small generators: every non-toRGB layer is covered.
    small = layout_for(64, 2)
    assert small.n_layers == 14
    assert small.covered == tuple(i for i in range(14) if not small.is_torgb[i])
    assert layout_for(4).covered == (0,) and layout_for(4).n_layers == 2
    # The generic constructor reproduces the table from per-layer metadata.
    ffhq = ffhq_1024_layout()
    assert StyleSpaceLayout.from_layers(ffhq.dims, ffhq.is_torgb, ffhq.resolutions) == ffhq
    custom = StyleSpaceLayout.from_layers([8, 8, 4], [False, True, False], [4, 4, 256])
    assert custom.covered == (0,)
    with pytest.raises(ValueError, match="size"):
        layout_for(100)
    with pytest.raises(ValueError, match="channel_multiplier"):
        layout_for(256, 0)
    with pytest.raises(ValueError, match="same length"):
        StyleSpaceLayout.from_layers([8, 8], [False], [4, 4])
    with pytest.raises(ValueError, match="toRGB"):
        StyleSpaceLayout(dims=(8, 8), is_torgb=(False, True), resolutions=(4, 4), covered=(1,))


# ------------------------------------------------------------------------------- Δt


@pytest.mark.parametrize("case", range(len(DT_PROMPTS)))
def test_delta_t_matches_reference(tiny_clip, case):
    gold = GOLDEN["delta_t"][case]
    assert (gold["target"], gold["neutral"]) == DT_PROMPTS[case]
    t_target = prompt_embedding(tiny_clip, gold["target"])
    t_neutral = prompt_embedding(tiny_clip, gold["neutral"])
    dt = delta_t(tiny_clip, gold["target"], gold["neutral"])
    for ours, ref in ((t_target, gold["t_target"]), (t_neutral, gold["t_neutral"]), (dt, gold["dt"])):
        assert ours.dtype == torch.float32 and ours.shape == (len(ref),)
        assert (ours.double() - torch.tensor(ref)).abs().max().item() <= TOL
    assert torch.linalg.vector_norm(dt).item() == pytest.approx(1.0, abs=1e-6)
    assert not dt.is_inference()


def test_delta_t_rejects_empty_and_identical_texts(tiny_clip):
    with pytest.raises(ValueError, match="target"):
        delta_t(tiny_clip, "", "face")
    with pytest.raises(ValueError, match="neutral"):
        delta_t(tiny_clip, "face with glasses", "   ")
    with pytest.raises(ValueError, match="target"):
        delta_t(tiny_clip, None, "face")
    with pytest.raises(ValueError, match="same thing"):
        delta_t(tiny_clip, "face", "face")
    # Different strings, same tokens (the tokenizer lower-cases): caught by the zero direction.
    with pytest.raises(ValueError, match="same thing"):
        delta_t(tiny_clip, "Face", "face")
    with pytest.raises(ValueError, match="text"):
        prompt_embedding(tiny_clip, "")


# ------------------------------------------------------------------------------- r and Δs


@pytest.mark.parametrize("name", ["aligned", "random"])
def test_relevance_matches_reference(fs3, dts, name):
    gold = GOLDEN["relevance"][name]
    r = relevance_scores(fs3, dts[name])
    assert r.shape == (5376,) and r.dtype == torch.float32
    ref = torch.tensor(gold["sample"])
    assert (r[:: gold["stride"]].double() - ref).abs().max().item() <= TOL
    assert r.double().mean().item() == pytest.approx(gold["mean"], abs=TOL)
    assert r.double().std(correction=0).item() == pytest.approx(gold["std"], abs=TOL)
    assert r.abs().max().item() == pytest.approx(gold["abs_max"], abs=TOL)
    # Torch or numpy inputs give the same numbers.
    torch.testing.assert_close(relevance_scores(torch.from_numpy(fs3), torch.from_numpy(dts[name])), r)


@pytest.mark.parametrize("name", ["aligned", "random"])
@pytest.mark.parametrize("beta", ["0.1", "0.15", "0.2"])
def test_delta_s_matches_reference(fs3, s_std, dts, name, beta):
    gold = GOLDEN["delta_s"][name][beta]
    layout = ffhq_1024_layout()
    ds, n = delta_s(fs3, dts[name], float(beta), s_std, layout)
    assert n == gold["n_channels"]
    assert len(ds) == 26
    max_err = 0.0
    for i, (ours, ref) in enumerate(zip(ds, gold["layers"], strict=True)):
        assert ours.shape == (ref["n"],) and ours.dtype == torch.float32
        assert torch.isfinite(ours).all()
        assert torch.nonzero(ours).flatten().tolist() == ref["nonzero"], f"layer {i}"
        if ref["nonzero"]:
            max_err = max(
                max_err, (ours[ref["nonzero"]].double() - torch.tensor(ref["values"])).abs().max().item()
            )
        assert ours.double().sum().item() == pytest.approx(ref["sum"], abs=TOL)
    assert max_err <= TOL
    if gold["reference_nan"]:  # upstream divides 0 by 0 here; we return an all-zero direction
        assert n == 0 and all(not d.any() for d in ds)


def test_delta_s_structure(fs3, s_std, dts):
    layout = ffhq_1024_layout()
    ds, n = delta_s(fs3, dts["aligned"], 0.1, s_std, layout)
    for i in range(layout.n_layers):
        if i not in layout.covered:  # toRGB and layers above 128 px never move
            assert not ds[i].any()
    # Normalised by the largest |r|: in units of each layer's std, the biggest move is exactly 1.
    scaled = torch.cat([ds[i] / torch.from_numpy(s_std[i]) for i in layout.covered])
    assert scaled.abs().max().item() == pytest.approx(1.0, abs=1e-6)
    assert int((scaled != 0).sum()) == n
    # Δs on the covered layers is r (thresholded, normalised) times the std, channel by channel.
    r = relevance_scores(fs3, dts["aligned"])
    expected = torch.where(r.abs() >= 0.1, r, 0) / r.abs().max()
    torch.testing.assert_close(scaled, expected, rtol=0, atol=1e-6)


def test_beta_monotonically_reduces_the_channel_count(fs3, s_std, dts):
    layout = ffhq_1024_layout()
    for name in ("aligned", "random"):
        r = relevance_scores(fs3, dts[name])
        assert [channels_moved(r, b) for b in AUTO_BETAS] == GOLDEN["counts"][name]
        previous_support, previous_n = None, None
        for beta in np.linspace(0.0, 0.35, 71):
            ds, n = delta_s(fs3, dts[name], float(beta), s_std, layout)
            support = torch.cat([d != 0 for d in ds])
            assert n == int(support.sum()) == channels_moved(r, float(beta))
            if previous_support is not None:
                assert n <= previous_n
                assert not (support & ~previous_support).any()  # a larger β only drops channels
            previous_support, previous_n = support, n
        assert channels_moved(r, 0.0) == 5376


def test_no_channel_reaches_beta_gives_a_zero_direction(fs3, s_std, dts):
    ds, n = delta_s(fs3, dts["aligned"], 0.99, s_std, ffhq_1024_layout())
    assert n == 0
    assert all(torch.equal(d, torch.zeros_like(d)) for d in ds)
    ds, n = delta_s(fs3, np.zeros(512, np.float32), 0.0, s_std, ffhq_1024_layout())
    assert n == 5376 and all(torch.isfinite(d).all() and not d.any() for d in ds)


# ------------------------------------------------------------------------------- α and auto-β


def test_alpha_zero_reproduces_styles_and_torgb_is_untouched(fs3, s_std, dts):
    layout = ffhq_1024_layout()
    ds, n = delta_s(fs3, dts["aligned"], 0.15, s_std, layout)
    assert n > 0
    styles = _random_styles(layout)
    same = apply_delta_s(styles, ds, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(same, styles, strict=True))
    alpha = 4.1
    edited = apply_delta_s(styles, ds, alpha)
    for i, (s, e, d) in enumerate(zip(styles, edited, ds, strict=True)):
        assert e.shape == s.shape
        if layout.is_torgb[i] or i not in layout.covered:
            assert torch.equal(e, s), f"layer {i} moved"
        else:
            torch.testing.assert_close(e - s, (alpha * d).expand_as(s), rtol=0, atol=1e-6)
    assert any(not torch.equal(e, s) for e, s in zip(edited, styles, strict=True))
    # Negative α reverses the edit; dtype follows the styles.
    back = apply_delta_s(apply_delta_s(styles, ds, alpha), ds, -alpha)
    for a, b in zip(back, styles, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    half = apply_delta_s([s.double() for s in styles], ds, alpha)
    assert all(h.dtype == torch.float64 for h in half)


@pytest.mark.parametrize("name", ["aligned", "random", "weak"])
def test_auto_beta_matches_reference(fs3, dts, name):
    gold = GOLDEN["auto_beta"][name]
    beta, n = auto_beta(fs3, dts[name])
    assert beta == pytest.approx(gold["beta"], abs=1e-9)  # upstream: np.arange values
    assert n == gold["n_channels"]


def test_auto_beta_rule():
    # Relevance values chosen so the count at each β is known: fs3 = diag, dt = the values.
    def counts_fs3(values):
        values = np.asarray(values, np.float32)
        return np.eye(len(values), dtype=np.float32), values

    # 21 channels reach β = 0.24 but exactly 20 reach 0.25: upstream needs strictly more than 20.
    fs3, dt = counts_fs3([0.245] * 1 + [0.255] * 20 + [0.05] * 30)
    assert auto_beta(fs3, dt) == (0.24, 21)
    # Everything strong: the largest candidate.
    fs3, dt = counts_fs3([0.9] * 25)
    assert auto_beta(fs3, dt) == (0.29, 25)
    # Nothing qualifies: fall back to the smallest candidate and report its count.
    fs3, dt = counts_fs3([0.5] * 5 + [0.01] * 100)
    assert auto_beta(fs3, dt) == (0.1, 5)
    fs3, dt = counts_fs3([0.15] * 150)
    assert auto_beta(fs3, dt, channel_threshold=100) == (0.15, 150)
    with pytest.raises(ValueError, match="betas"):
        auto_beta(fs3, dt, betas=[0.2, 0.1])
    with pytest.raises(ValueError, match="channel_threshold"):
        auto_beta(fs3, dt, channel_threshold=-1)


# ------------------------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_value_errors_naming_them(fs3, s_std, dts):
    layout = ffhq_1024_layout()
    dt = dts["aligned"]
    with pytest.raises(ValueError, match="beta"):
        delta_s(fs3, dt, -0.1, s_std, layout)
    with pytest.raises(ValueError, match="beta"):
        delta_s(fs3, dt, float("nan"), s_std, layout)
    with pytest.raises(ValueError, match="beta"):
        channels_moved(relevance_scores(fs3, dt), "0.1")
    with pytest.raises(ValueError, match="fs3"):
        delta_s(fs3[:-1], dt, 0.1, s_std, layout)
    with pytest.raises(ValueError, match="fs3"):
        relevance_scores(fs3[0], dt)
    with pytest.raises(ValueError, match="dt"):
        relevance_scores(fs3, dt[:-1])
    with pytest.raises(ValueError, match="s_std"):
        delta_s(fs3, dt, 0.1, s_std[:-1], layout)
    with pytest.raises(ValueError, match=r"s_std\[14\]"):
        delta_s(fs3, dt, 0.1, s_std[:14] + [s_std[14][:-1]] + s_std[15:], layout)
    with pytest.raises(ValueError, match="layout"):
        delta_s(fs3, dt, 0.1, s_std, None)
    ds, _ = delta_s(fs3, dt, 0.1, s_std, layout)
    styles = _random_styles(layout)
    with pytest.raises(ValueError, match="alpha"):
        apply_delta_s(styles, ds, float("inf"))
    with pytest.raises(ValueError, match="delta_s"):
        apply_delta_s(styles, ds[:-1], 1.0)
    with pytest.raises(ValueError, match=r"styles\[3\]"):
        apply_delta_s(styles[:3] + [styles[3][:, :-1]] + styles[4:], ds, 1.0)
