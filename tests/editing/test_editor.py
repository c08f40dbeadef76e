"""FaceEditor: device/precision resolution and the pipeline steps on tiny seeded models."""

from __future__ import annotations

import pytest
import torch

from editing.editor import FaceEditor, pick_precision
from models.stylegan2 import Generator
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint


@pytest.fixture(scope="module")
def tiny_generator() -> tuple[Generator, torch.Tensor]:
    ckpt = make_stylegan2_checkpoint(size=32, channel_multiplier=1, n_mlp=2, seed=11)
    return Generator.from_state_dict(ckpt["g_ema"]).eval(), ckpt["latent_avg"]


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    assert pick_precision("auto", cpu) in ("fp32", "bf16")
    assert pick_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        pick_precision("fp8", cpu)


def test_bf16_render_stays_close_to_fp32(tiny_generator):
    g, w_avg = tiny_generator
    ed32 = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="fp32")
    ed16 = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="bf16")
    assert ed16.precision == "bf16"
    w = ed32.latent_from_seed(5)
    a, b = ed32.render(w), ed16.render(w)
    assert a.dtype == b.dtype == torch.float32 and a.shape == (1, 3, 32, 32)
    err = (a - b).abs().max().item()
    assert 0 < err < 0.1  # bf16 really ran, and stayed close


def test_seed_latents_are_deterministic_and_validated(tiny_generator):
    g, w_avg = tiny_generator
    ed = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="fp32")
    a, b, c = ed.latent_from_seed(1), ed.latent_from_seed(1), ed.latent_from_seed(2)
    assert a.shape == (1, g.n_latent, 512) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(ed.latent_from_seed(1, truncation=0.0)[0, 0], ed.w_avg[0], atol=1e-6)
    for bad in ({"seed": -1}, {"seed": 1, "truncation": 1.5}, {"seed": 1, "truncation": float("nan")}):
        with pytest.raises(ValueError):
            ed.latent_from_seed(**bad)
    assert ed.render(a, size=8).shape == (1, 3, 8, 8)


# ----------------------------------------------------------------------------- editing methods
import math  # noqa: E402

import numpy as np  # noqa: E402

from editing.clip_text import ClipEncoder  # noqa: E402
from editing.editor import GlobalDirectionData  # noqa: E402
from editing.edits import (  # noqa: E402
    EditableLatent,
    GlobalSettings,
    MapperSettings,
    load_latent_file,
    save_latent_file,
)
from editing.global_directions import StyleSpaceLayout  # noqa: E402
from models.irse import IRSE50, IDLoss  # noqa: E402
from scripts.seeded.irse import make_irse50_checkpoint  # noqa: E402
from scripts.seeded.mapper import mapper_checkpoint  # noqa: E402
from tests.tiny_clip import make_tiny_clip_folder  # noqa: E402


def layout_of(g: Generator) -> StyleSpaceLayout:
    layers = g.style_layers()
    return StyleSpaceLayout.from_layers(
        [la.dim for la in layers], [la.is_torgb for la in layers], [la.resolution for la in layers]
    )


@pytest.fixture(scope="module")
def editor(tmp_path_factory) -> FaceEditor:
    tmp = tmp_path_factory.mktemp("editor")
    ckpt = make_stylegan2_checkpoint(size=64, channel_multiplier=1, n_mlp=2, seed=12)
    g = Generator.from_state_dict(ckpt["g_ema"]).eval()
    clip = ClipEncoder.from_folder(make_tiny_clip_folder(tmp / "clip", context_length=64))
    layout = layout_of(g)
    gen = torch.Generator().manual_seed(0)
    fs3 = torch.nn.functional.normalize(
        torch.randn(layout.n_covered_channels, clip.embed_dim, generator=gen), dim=1
    )
    s_std = tuple(0.1 + torch.rand(d, generator=gen) for d in layout.dims)
    torch.save(mapper_checkpoint(levels=("coarse", "fine"), stylegan_size=64, seed=3), tmp / "two_levels.pt")
    widths, units = (16, 32, 48, 64), (1, 1, 1, 1)
    identity = IDLoss(IRSE50.from_state_dict(make_irse50_checkpoint(widths=widths, units=units)))
    return FaceEditor(
        generator=g,
        w_avg=ckpt["latent_avg"],
        clip=clip,
        identity=identity,
        global_data=GlobalDirectionData(fs3, s_std, layout, "seeded"),
        mappers={"two_levels": tmp / "two_levels.pt"},
        device="cpu",
        precision="fp32",
    )


def test_global_alpha_zero_is_exact_and_edits_move_only_covered_layers(editor):
    src = editor.latent(editor.latent_from_seed(3))
    base = editor.render_latent(src)
    same = editor.edit_global(src, GlobalSettings("face with glasses", alpha=0.0), metrics=False)
    assert torch.equal(same.image, base) and same.latent is src
    res = editor.edit_global(src, GlobalSettings("face with glasses", alpha=5.0, beta=0.1))
    assert res.info["channels_moved"] == editor.channels_moved("face with glasses", "face", 0.1) > 0
    assert (res.image - base).abs().max() > 1e-3
    layout = editor.global_data.layout
    moved_layers = [i for i, d in enumerate(res.latent.s_delta) if d.abs().sum() > 0]
    assert moved_layers and set(moved_layers) <= set(layout.covered)
    # the offset is α·Δs with |Δs_c| ≤ std_c, reaching α·std at the most relevant channel
    ratio = max(
        (res.latent.s_delta[i].abs() / editor.global_data.s_std[i]).max().item() for i in moved_layers
    )
    assert math.isclose(ratio, 5.0, rel_tol=1e-5)
    # the preview is the same edit, stopped at a lower resolution
    preview = editor.edit_global(
        src, GlobalSettings("face with glasses", alpha=5.0, beta=0.1), size=16, metrics=False
    )
    assert preview.image.shape == (1, 3, 16, 16)
    assert torch.allclose(preview.latent.s_delta[0], res.latent.s_delta[0])


def test_beta_monotonic_auto_beta_and_negative_alpha(editor):
    counts = [
        editor.channels_moved("smiling face", "face", b) for b in (0.0, 0.05, 0.1, 0.2, 0.3, 0.6, 1.0001)
    ]
    assert (
        counts == sorted(counts, reverse=True) and counts[0] == editor.global_data.layout.n_covered_channels
    )
    assert counts[-1] == 0
    beta, n = editor.auto_beta("smiling face", "face")
    assert 0.1 <= beta < 0.3 and n == editor.channels_moved("smiling face", "face", beta)
    src = editor.latent(editor.latent_from_seed(4))
    auto = editor.edit_global(src, GlobalSettings("smiling face", alpha=2.0, beta=None), metrics=False)
    assert auto.info["beta"] == beta
    up = editor.edit_global(src, GlobalSettings("smiling face", alpha=2.0), metrics=False).latent.s_delta
    down = editor.edit_global(src, GlobalSettings("smiling face", alpha=-2.0), metrics=False).latent.s_delta
    assert all(torch.allclose(a, -b) for a, b in zip(up, down, strict=True))


def test_mapper_disabled_level_rows_unchanged_and_chaining(editor):
    src = editor.latent(editor.latent_from_seed(5))
    info = editor.mapper_info("two_levels")
    assert info["levels"]["medium"]["enabled"] is False and info["edited_rows"] == [0, 1, 2, 3, 8, 9]
    res = editor.edit_mapper(src, MapperSettings("two_levels"))
    diff = (res.latent.w_plus - src.w_plus).abs().amax(dim=2)[0]
    assert (diff[4:8] == 0).all() and (diff[[0, 1, 2, 3, 8, 9]] > 0).all()
    assert res.metrics.changed == {"rows_changed": 6}
    zero = editor.edit_mapper(src, MapperSettings("two_levels", strength=0.0), metrics=False)
    assert torch.equal(zero.latent.w_plus, src.w_plus)
    # chain: global, then mapper keeps the S offset; two global edits add up
    g1 = editor.edit_global(src, GlobalSettings("face with glasses", alpha=3.0), metrics=False).latent
    chained = editor.edit_mapper(g1, MapperSettings("two_levels"), metrics=False).latent
    assert chained.s_delta is g1.s_delta and torch.equal(chained.w_plus, res.latent.w_plus)
    g2 = editor.edit_global(g1, GlobalSettings("face with glasses", alpha=3.0), metrics=False).latent
    assert all(torch.allclose(b, 2 * a) for a, b in zip(g1.s_delta, g2.s_delta, strict=True))
    with pytest.raises(ValueError, match="unknown mapper"):
        editor.edit_mapper(src, MapperSettings("no_such_mapper"))


def test_metrics_are_meaningful(editor):
    src = editor.latent(editor.latent_from_seed(6))
    img = editor.render_latent(src)
    m = editor.measure(src, img, "smiling face", "face")
    assert math.isclose(m.identity_similarity, 1.0, abs_tol=1e-5)
    assert m.clip_similarity == pytest.approx(m.clip_similarity_source, abs=1e-6)
    assert -1 <= m.clip_similarity <= 1 and m.directional is None  # no change, no direction
    res = editor.edit_global(src, GlobalSettings("smiling face", alpha=8.0, beta=0.05))
    assert res.metrics.identity_similarity < 1 - 1e-4 and -1 <= res.metrics.directional <= 1
    assert res.metrics.changed == {"channels_moved": res.info["channels_moved"]}
    # the directional score is the cosine between the CLIP image change and Δt
    feats = editor.clip.encode_image(torch.cat([editor.render_latent(src), res.image])).float()
    d = torch.nn.functional.normalize(feats[1] - feats[0], dim=0)
    assert res.metrics.directional == pytest.approx(
        float(d @ editor.text_direction("smiling face", "face")), abs=1e-5
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"target": ""},
        {"target": "   "},
        {"target": "x" * 10_000},
        {"target": 5},
        {"target": "ok", "alpha": float("nan")},
        {"target": "ok", "alpha": 11},
        {"target": "ok", "beta": -0.1},
        {"target": "ok", "beta": float("inf")},
        {"target": "ok", "neutral": ""},
    ],
)
def test_bad_global_settings_are_refused(bad):
    with pytest.raises(ValueError):
        GlobalSettings(**bad)


def test_emoji_prompt_and_mapper_settings():
    assert GlobalSettings("face with 😀 sunglasses 🕶️").target.startswith("face")
    for bad in ({"mapper": ""}, {"mapper": "a", "strength": 2.0}, {"mapper": "a", "strength": float("nan")}):
        with pytest.raises(ValueError):
            MapperSettings(**bad)


def test_latent_files_round_trip(editor, tmp_path):
    src = editor.latent(editor.latent_from_seed(7))
    edited = editor.edit_global(src, GlobalSettings("face with glasses", alpha=2.0), metrics=False).latent
    dims = editor.global_data.layout.dims
    save_latent_file(tmp_path / "a.npz", edited)
    back = load_latent_file(tmp_path / "a.npz", editor.n_latent, dims)
    assert torch.equal(back.w_plus, edited.w_plus)
    assert all(torch.equal(a, b) for a, b in zip(back.s_delta, edited.s_delta, strict=True))
    assert torch.equal(editor.render_latent(back), editor.render_latent(edited))
    save_latent_file(tmp_path / "w.npy", edited)
    assert np.load(tmp_path / "w.npy").shape == (editor.n_latent, 512)
    assert load_latent_file(tmp_path / "w.npy", editor.n_latent, dims).s_delta is None
    np.savez(tmp_path / "bad.npz", w_plus=np.zeros((3, 512), np.float32))
    with pytest.raises(ValueError, match="w_plus"):
        load_latent_file(tmp_path / "bad.npz", editor.n_latent, dims)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="readable"):
        load_latent_file(tmp_path / "junk.npz", editor.n_latent, dims)
    with pytest.raises(ValueError, match="NaN"):
        EditableLatent(torch.full((1, editor.n_latent, 512), float("nan")))


def test_optimize_wiring_progress_cancel_and_chaining(editor):
    from editing.optimization import OptimizationSettings

    src = editor.latent(editor.latent_from_seed(8))
    g1 = editor.edit_global(src, GlobalSettings("face with glasses", alpha=3.0), metrics=False).latent
    seen = []

    def on_step(info):
        seen.append((info.step, info.preview is not None))
        return info.step < 3  # stop after the third update

    res = editor.edit_optimize(
        g1, "a smiling face", OptimizationSettings(steps=10, preview_every=2, loss_size=32), on_step=on_step
    )
    assert res.info["steps"] == 3 and res.info["cancelled"] is True
    assert [s for s, _ in seen] == [1, 2, 3] and [p for _, p in seen] == [False, True, False]
    assert res.latent.s_delta is not None  # the global edit's offset is carried through
    assert all(torch.equal(a, b) for a, b in zip(res.latent.s_delta, g1.s_delta, strict=True))
    assert not torch.equal(res.latent.w_plus, g1.w_plus)
    assert res.image.shape == (1, 3, 64, 64) and res.metrics.changed["rows_changed"] > 0
    free = editor.edit_optimize(None, "a face", OptimizationSettings(steps=2, mode="free_generation"), seed=3)
    assert free.info["mode"] == "free_generation" and free.info["steps"] == 2
    with pytest.raises(ValueError, match="edit mode"):
        editor.edit_optimize(None, "a face", OptimizationSettings(steps=2))


def test_optimize_jitter_uses_the_editors_w_spread(editor):
    from editing.optimization import OptimizationSettings, w_std_of

    std = editor.w_std
    assert torch.equal(std, w_std_of(editor.generator)) and editor.w_std is std  # computed once
    src = editor.latent(editor.latent_from_seed(8))
    plain = editor.edit_optimize(
        src, "a smiling face", OptimizationSettings(steps=2, loss_size=32), metrics=False
    )
    settings = OptimizationSettings(steps=2, loss_size=32, jitter=0.5)
    jittered = editor.edit_optimize(src, "a smiling face", settings, metrics=False)
    again = editor.edit_optimize(src, "a smiling face", settings, metrics=False)
    assert torch.equal(jittered.latent.w_plus, again.latent.w_plus)
    assert not torch.equal(jittered.latent.w_plus, plain.latent.w_plus)


def test_metrics_with_a_given_source_image_skip_the_render_and_agree(editor):
    src = editor.latent(editor.latent_from_seed(9))
    settings = GlobalSettings("smiling face", alpha=4.0, beta=0.05)
    a = editor.edit_global(src, settings)
    b = editor.edit_global(src, settings, source_image=editor.render_latent(src))
    assert a.metrics == b.metrics
    preview = editor.edit_global(src, settings, size=32, source_image=editor.render_latent(src))
    assert preview.metrics.identity_similarity is not None  # the 64-px source is pooled to 32 px
