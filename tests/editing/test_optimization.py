"""StyleCLIP latent optimisation on tiny seeded models: objective terms, schedule, cancel, previews,
StyleSpace mode, fast (low-resolution losses) vs full path, and parity with upstream's loop.

The goldens (``UPSTREAM`` below) come from orpatashnik/StyleCLIP (commit f87a47f)
``optimization/run_optimization.py``: its ``get_lr`` and training loop run verbatim in a scratch
script on StyleCLIP's own ``models/stylegan2/model.py`` (compiled ops replaced by their native
paths), with the tiny seeded CLIP / IR-SE50 below standing in for ``CLIPLoss`` / ``IDLoss``
(whose maths ``tests/editing/test_clip_text.py`` and ``tests/models/test_irse.py`` check), all in
float64::

    python /work/scratch/opt/make_golden.py   # -> golden_optimization.json, pasted as UPSTREAM
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from editing.clip_text import ClipEncoder
from editing.optimization import (
    AUGMENT_SEED,
    JITTER_SEED,
    OptimizationSettings,
    StepInfo,
    augmented_views,
    levels_from_text,
    optimize_latent,
    scheduled_lr,
    start_latent,
    w_std_of,
)
from models.irse import IRSE50, IDLoss
from models.stylegan2 import Generator
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.stylegan2 import make_stylegan2_checkpoint
from tests.tiny_clip import make_tiny_clip_folder

TINY_IRSE = {"widths": (16, 32, 48, 64), "units": (1, 2, 2, 1), "input_size": 32, "embedding_dim": 24}
STEPS = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Optimisation loops are the heaviest tests here: keep them to one core of the shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    ckpt = make_stylegan2_checkpoint(size=32, channel_multiplier=1, n_mlp=2, seed=11)
    g = Generator.from_state_dict(ckpt["g_ema"]).eval().requires_grad_(False)
    return g, ckpt["latent_avg"].reshape(1, -1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipEncoder:
    return ClipEncoder.from_folder(make_tiny_clip_folder(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def identity() -> IDLoss:
    return IDLoss(IRSE50.from_state_dict(make_irse50_checkpoint(1, **TINY_IRSE)))


def _text(clip: ClipEncoder, seed: int = 0) -> torch.Tensor:
    t = torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(t, dim=-1)


@pytest.fixture(scope="module")
def runs(models, clip, identity):
    """Three edits of the same start: no regularisation, strong L2, strong ID."""
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=1, truncation=0.7)
    text = _text(clip)
    out = {"w0": w0, "text": text}
    for name, l2, idl in (("free", 0.0, 0.0), ("l2", 10.0, 0.0), ("id", 0.0, 5.0)):
        settings = OptimizationSettings(steps=STEPS, l2_lambda=l2, id_lambda=idl)
        out[name] = optimize_latent(g, clip, text, w0, settings=settings, identity=identity)
    return out


def _full_clip_loss(g, clip, w_plus, text) -> float:
    with torch.no_grad():
        return clip.clip_loss(g.synthesis(w_plus), text).item()


# ------------------------------------------------------------------------------ the objective
def test_optimisation_lowers_clip_loss(models, clip, runs):
    g, _ = models
    r = runs["free"]
    start = _full_clip_loss(g, clip, runs["w0"], runs["text"])
    assert r.history[0].clip == pytest.approx(start, abs=1e-5)  # step 0 sees the start image
    assert _full_clip_loss(g, clip, r.w_plus, runs["text"]) < start - 0.05
    assert r.steps == STEPS and len(r.history) == STEPS and not r.cancelled
    assert r.w_plus.dtype == torch.float32 and r.w_plus.device.type == "cpu" and not r.w_plus.requires_grad
    assert r.s_delta is None
    # the regularisers are off: l2 / id are reported as absent and the total is the CLIP loss
    assert all(h.l2 is None and h.id is None and h.total == h.clip for h in r.history)


def test_l2_term_keeps_latent_close(runs):
    w0 = runs["w0"]
    far = (runs["free"].w_plus - w0).norm().item()
    near = (runs["l2"].w_plus - w0).norm().item()
    assert far > 10.0  # without the term the latent wanders off
    assert near < 0.2 * far and near < 3.0
    for h in runs["l2"].history:  # total = clip + l2_lambda * sum((w - w0)^2)
        assert h.total == pytest.approx(h.clip + 10.0 * h.l2, rel=1e-5)
    assert runs["l2"].history[0].l2 == 0.0


def test_id_term_keeps_identity(models, identity, runs):
    g, _ = models
    w0 = runs["w0"]
    with torch.no_grad():
        src = g.synthesis(w0)
        sim_free = identity.identity_similarity(g.synthesis(runs["free"].w_plus), src).item()
        sim_id = identity.identity_similarity(g.synthesis(runs["id"].w_plus), src).item()
    assert sim_id > 0.9 and sim_id > sim_free + 0.3
    hist = runs["id"].history
    assert hist[0].id == pytest.approx(0.0, abs=1e-5)  # the reference is the start image itself
    for h in hist:
        assert h.total == pytest.approx(h.clip + 5.0 * h.id, rel=1e-5)


def test_free_generation_uses_clip_loss_only(models, clip, identity):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=2, truncation=0.7)
    settings = OptimizationSettings(steps=2, mode="free_generation", l2_lambda=1.0, id_lambda=1.0)
    r = optimize_latent(g, clip, _text(clip), w0, settings=settings, identity=identity)
    assert all(h.l2 is None and h.id is None and h.total == h.clip for h in r.history)


# ------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize(
    "t, expected",
    [
        (0.0, 0.0),  # warm-up starts at 0
        (0.025, 0.5 * 0.1),  # half-way through the 5 % warm-up
        (0.05, 0.1),
        (0.5, 0.1),  # plateau
        (0.75, 0.1),  # ramp-down starts at 1 - 0.25
        (0.875, 0.1 * (0.5 - 0.5 * math.cos(0.5 * math.pi))),  # = 0.05
        (0.95, 0.1 * (0.5 - 0.5 * math.cos(0.2 * math.pi))),
        (1.0, 0.0),
    ],
)
def test_lr_schedule_matches_formula(t, expected):
    assert scheduled_lr(t, 0.1) == pytest.approx(expected, abs=1e-12)


def test_lr_schedule_is_applied_per_step(runs):
    lrs = [h.lr for h in runs["free"].history]
    assert lrs == [scheduled_lr(i / STEPS, 0.1) for i in range(STEPS)]
    with pytest.raises(ValueError, match="t must"):
        scheduled_lr(1.5, 0.1)


# ------------------------------------------------------------------------------ callbacks
def test_cancel_and_previews(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=3, truncation=0.7)
    text = _text(clip)
    seen: list[StepInfo] = []

    def on_step(info: StepInfo) -> bool:
        seen.append(info)
        return info.step < 3  # stop after the 3rd update

    settings = OptimizationSettings(steps=8, preview_every=2)
    r = optimize_latent(g, clip, text, w0, settings=settings, on_step=on_step)
    assert r.cancelled and r.steps == 3 and len(r.history) == 3
    assert [i.step for i in seen] == [1, 2, 3] and all(i.total == 8 for i in seen)
    assert [i.preview is not None for i in seen] == [False, True, False]
    assert [i.losses for i in seen] == list(r.history)
    preview = seen[1].preview
    assert preview.shape == (1, 3, 32, 32) and preview.dtype == torch.float32
    with torch.no_grad():  # the preview is the image the step's losses were computed on
        assert clip.clip_loss(preview, text).item() == pytest.approx(seen[1].losses.clip, abs=1e-5)
    # the run returns the latent it reached: that of step 3 of the 8-step schedule, whose image
    # (rendered from the latent after 3 updates) is not the start image
    assert (r.w_plus - w0).abs().max() > 0.05
    longer = optimize_latent(g, clip, text, w0, settings=settings, on_step=lambda i: i.step < 4)
    with torch.no_grad():
        assert clip.clip_loss(g.synthesis(r.w_plus), text).item() == pytest.approx(
            longer.history[3].clip, abs=1e-5
        )
    # returning None (a plain progress callback) does not cancel
    r_all = optimize_latent(g, clip, text, w0, settings=OptimizationSettings(steps=1), on_step=lambda i: None)
    assert r_all.steps == 1 and not r_all.cancelled


def test_previews_come_at_loss_size(clip):
    ckpt = make_stylegan2_checkpoint(size=64, channel_multiplier=1, n_mlp=2, seed=5)
    g = Generator.from_state_dict(ckpt["g_ema"]).eval().requires_grad_(False)
    w0 = start_latent(g, ckpt["latent_avg"], seed=0, truncation=0.7)
    previews = []
    settings = OptimizationSettings(steps=1, preview_every=1, loss_size=32)
    r = optimize_latent(
        g, clip, _text(clip), w0, settings=settings, on_step=lambda i: previews.append(i.preview)
    )
    assert previews[0].shape == (1, 3, 32, 32)  # the 32-px skip image, not the 64-px render
    # the same render the first step made: with gradients to the latent (the style-gradient path)
    expected = g.synthesis(w0.clone().requires_grad_(True), out_size=32).detach()
    torch.testing.assert_close(previews[0], expected, rtol=0, atol=1e-6)
    # rows that only act above 32 px get no gradient and stay exactly at the start
    rows_32 = 2 * int(math.log2(32)) - 2  # W+ rows used up to the 32-px toRGB
    assert torch.equal(r.w_plus[:, rows_32:], w0[:, rows_32:])


# ------------------------------------------------------------------------------ levels
@pytest.mark.parametrize("levels", [("medium", "fine"), ("coarse",), ("fine",)])
def test_only_the_rows_of_the_chosen_levels_move(models, clip, levels):
    """Rows outside the chosen levels stay exactly w0; the others move and the CLIP loss falls, and the
    L2 term counts only what moved (the 32-px generator has 8 rows: coarse 0-3, medium 4-7, fine none
    beyond, so ("fine",) is checked on a 64-px one)."""
    g, w_avg = models
    if levels == ("fine",):
        ckpt = make_stylegan2_checkpoint(size=64, channel_multiplier=1, n_mlp=2, seed=12)
        g = Generator.from_state_dict(ckpt["g_ema"]).eval().requires_grad_(False)
        w_avg = ckpt["latent_avg"].reshape(1, -1)
    w0 = start_latent(g, w_avg, seed=5, truncation=0.7)
    w0 = w0 + 0.3 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1))  # distinct rows
    text = _text(clip)
    settings = OptimizationSettings(steps=8, lr=0.05, levels=levels)
    r = optimize_latent(g, clip, text, w0, settings=settings)
    rows = {"coarse": range(0, 4), "medium": range(4, 8), "fine": range(8, g.n_latent)}
    moving = sorted(i for lv in levels for i in rows[lv])
    still = [i for i in range(g.n_latent) if i not in moving]
    assert moving and torch.equal(r.w_plus[:, still], w0[:, still])
    assert (r.w_plus[0, moving] - w0[0, moving]).abs().amax(dim=1).min() > 0  # every chosen row moved
    assert r.history[-1].l2 == pytest.approx(((r.w_plus - w0) ** 2).sum().item(), rel=0.5)
    assert _full_clip_loss(g, clip, r.w_plus, text) < r.history[0].clip


def test_all_levels_is_the_unrestricted_optimisation(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=6, truncation=0.7)
    text = _text(clip)
    a = optimize_latent(g, clip, text, w0, settings=OptimizationSettings(steps=3))
    b = optimize_latent(
        g, clip, text, w0, settings=OptimizationSettings(steps=3, levels=("fine", "medium", "coarse"))
    )
    assert torch.equal(a.w_plus, b.w_plus)
    assert (a.w_plus - w0).abs().amax(dim=2).min() > 0  # every row moves


# ------------------------------------------------------------------------------ StyleSpace
def test_stylespace_mode_changes_only_s(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=4, truncation=0.7)
    text = _text(clip)
    r = optimize_latent(g, clip, text, w0, settings=OptimizationSettings(steps=6, space="s"))
    assert torch.equal(r.w_plus, w0)  # W+ is untouched
    assert r.s_delta is not None and len(r.s_delta) == g.n_styles
    for layer, d in zip(g.style_layers(), r.s_delta, strict=True):
        assert d.shape == (layer.dim,)
        if layer.is_torgb:
            assert torch.equal(d, torch.zeros_like(d))  # toRGB styles are not optimised (upstream)
        else:
            assert d.abs().max() > 0
    with torch.no_grad():
        styles = [s + d for s, d in zip(g.w_plus_to_styles(w0), r.s_delta, strict=True)]
        edited = clip.clip_loss(g.synthesis_from_styles(styles), text).item()
    assert edited < r.history[0].clip - 0.05
    # the reported L2 is the squared S distance of the latent the step started from
    assert r.history[0].l2 == 0.0 and r.history[-1].l2 > 0


def test_s_offset_is_kept_in_wplus_mode(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=4, truncation=0.7)
    offset = [torch.full((layer.dim,), 0.1) for layer in g.style_layers()]
    r = optimize_latent(g, clip, _text(clip), w0, settings=OptimizationSettings(steps=1), s_offset=offset)
    assert r.s_delta is not None and all(torch.equal(a, b) for a, b in zip(r.s_delta, offset, strict=True))
    with torch.no_grad():
        shifted = [s + d for s, d in zip(g.w_plus_to_styles(w0), offset, strict=True)]
        expected = clip.clip_loss(g.synthesis_from_styles(shifted), _text(clip)).item()
    assert r.history[0].clip == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------ fast vs full
def test_fast_path_transfers_to_the_full_image(clip):
    """Reduced form of the 256-vs-1024 comparison: a 128-px generator optimised with the CLIP loss
    on its 32-px skip image and on the full image, both scored on the full image.

    With the tiny random CLIP the two paths end 0.7-4.2 % apart over text/start seeds 0-3 (the full
    path ahead), so a 2 % bound would hold only for picked seeds; what holds for all of them, and
    fails when the fast path optimises the wrong image, is that the fast path gets at least 70 %
    (measured 75-92 %) of the full path's gain. The full-size claim (1024 vs 256 px, within 2 %)
    is measured by a scratch script, see the module docstring of ``editing.optimization``.
    """
    ckpt = make_stylegan2_checkpoint(size=128, channel_multiplier=1, n_mlp=2, seed=3)
    g = Generator.from_state_dict(ckpt["g_ema"]).eval().requires_grad_(False)
    w0 = start_latent(g, ckpt["latent_avg"], seed=0, truncation=0.7)
    text = _text(clip, seed=0)
    start = _full_clip_loss(g, clip, w0, text)
    gain = {}
    for loss_size in (32, None):
        settings = OptimizationSettings(steps=8, lr=0.03, loss_size=loss_size, id_lambda=0.0)
        r = optimize_latent(g, clip, text, w0, settings=settings)
        gain[loss_size] = start - _full_clip_loss(g, clip, r.w_plus, text)
    assert gain[None] > 0.1
    assert gain[32] >= 0.7 * gain[None]


# ------------------------------------------------------------------------------ inputs
def test_start_latent(models):
    g, w_avg = models
    a = start_latent(g, w_avg, seed=9, truncation=0.7)
    assert a.shape == (1, g.n_latent, 512) and torch.equal(a, start_latent(g, w_avg, seed=9, truncation=0.7))
    assert torch.equal(a[:, 0], a[:, -1])  # one w on every row
    assert not torch.equal(a, start_latent(g, w_avg, seed=10, truncation=0.7))
    upstream_free_start = start_latent(g, w_avg, seed=9, truncation=0.0)  # the mean latent on every row
    torch.testing.assert_close(upstream_free_start, w_avg[:, None].expand_as(a))
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        w = g.mapping(z)
    torch.testing.assert_close(a[:, 0], w_avg + 0.7 * (w - w_avg))
    with pytest.raises(ValueError, match="seed"):
        start_latent(g, w_avg, seed=-1, truncation=0.7)
    with pytest.raises(ValueError, match="truncation"):
        start_latent(g, w_avg, seed=1, truncation=1.5)


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 5001),
        ("steps", 2.5),
        ("steps", True),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("lr", 100.0),
        ("l2_lambda", -0.1),
        ("l2_lambda", float("inf")),
        ("id_lambda", float("nan")),
        ("id_lambda", -1.0),
        ("mode", "edit_free"),
        ("truncation", 1.5),
        ("truncation", float("nan")),
        ("space", "z"),
        ("loss_size", 100),
        ("loss_size", 16),
        ("loss_size", 2048),
        ("preview_every", -1),
        ("preview_every", 1.5),
        ("augment", -1),
        ("augment", 33),
        ("augment", 2.5),
        ("levels", ()),
        ("levels", ("coarse", "coarse")),
        ("levels", ("eyes",)),
        ("levels", "fine"),
        ("jitter", -0.1),
        ("jitter", float("nan")),
        ("jitter", 3.0),
        ("jitter_samples", 1),
        ("jitter_samples", 17),
        ("jitter_samples", 2.5),
    ],
)
def test_settings_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        OptimizationSettings(**{field: value})


def test_settings_defaults_are_the_notebook_ones():
    s = OptimizationSettings()
    assert (s.steps, s.lr, s.l2_lambda, s.id_lambda, s.mode, s.truncation) == (
        40,
        0.1,
        0.008,
        0.005,
        "edit",
        0.7,
    )
    assert (s.space, s.loss_size, s.augment, s.jitter) == ("w+", 256, 0, 0.0)
    assert s.levels == ("coarse", "medium", "fine")  # every W+ row moves, as upstream
    assert levels_from_text(" fine, medium ,") == ("fine", "medium")  # the command-line form
    # levels are kept in W+ row order whatever order they are given in
    assert OptimizationSettings(levels=["fine", "coarse"]).levels == ("coarse", "fine")


def test_bad_inputs(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=1, truncation=0.7)
    with pytest.raises(ValueError, match="w_init"):
        optimize_latent(g, clip, _text(clip), w0[:, :3])
    with pytest.raises(ValueError, match="w_init"):
        optimize_latent(g, clip, _text(clip), w0 * float("nan"))
    with pytest.raises(ValueError, match="s_offset"):
        optimize_latent(g, clip, _text(clip), w0, s_offset=[torch.zeros(3)])
    with pytest.raises(ValueError, match="text_features"):
        optimize_latent(g, clip, torch.ones(1, clip.embed_dim + 1), w0)
    with pytest.raises(ValueError, match="w_init"):
        optimize_latent(g, clip, _text(clip), w0.bfloat16())
    with pytest.raises(ValueError, match="settings"):
        optimize_latent(g, clip, _text(clip), w0, settings={"steps": 3})


# ------------------------------------------------------------------------------ upstream parity
# Per case (free generation's objective is checked above): start seed, text seed, settings;
# upstream's per-step (clip, total, lr); its final latent (W+ flattened, or all S tensors
# concatenated) as sum, absolute sum and a strided sample.
UPSTREAM = {
    "wplus_edit": {
        "seed": 1,
        "text_seed": 0,
        "settings": {"steps": 5, "l2_lambda": 0.008, "id_lambda": 0.5, "mode": "edit", "space": "w+"},
        "w0_sum": 1504.142851417,
        "history": [  # (clip, total, lr) per step
            (1.0520656109, 1.0520656109, 0.0),
            (1.0520656109, 1.0520656109, 0.1),
            (0.9624443054, 1.3884686232, 0.1),
            (0.9482384324, 1.2424480915, 0.1),
            (0.9468069673, 1.0559719801, 0.0904508497),
        ],
        "final_numel": 4096,
        "final_sum": 1502.572119524,
        "final_abs_sum": 2300.535131556,
        "final_stride": 64,
        "final_sample": (
            "-0.139618094 1.377011305 -0.004256921 -0.061937434 2.493497834 2.081577847 -0.168716909 "
            "-0.337880445 -0.135354498 1.322084744 0.025727479 0.046042058 2.524717116 2.148373296 "
            "-0.266508048 -0.350379326 -0.118287099 1.418512726 -0.029803502 -0.104368152 2.471822170 "
            "2.094291508 -0.174326835 -0.246457800 -0.117563282 1.345826298 -0.022819644 -0.009542965 "
            "2.390417349 2.094210677 -0.307154569 -0.367549925"
        ),
    },
    "s_edit": {
        "seed": 2,
        "text_seed": 1,
        "settings": {"steps": 5, "l2_lambda": 0.008, "id_lambda": 0.5, "mode": "edit", "space": "s"},
        "w0_sum": 1335.116104342,
        "history": [  # (clip, total, lr) per step
            (0.7866359949, 0.7866359949, 0.0),
            (0.7866359949, 0.7866359949, 0.1),
            (0.7242636085, 1.050449729, 0.1),
            (0.7266716957, 0.8518792391, 0.1),
            (0.7606143951, 0.8035106659, 0.0904508497),
        ],
        "n_styles_moved": 7,
        "final_numel": 5632,
        "final_sum": 5653.394119011,
        "final_abs_sum": 6098.843391609,
        "final_stride": 88,
        "final_sample": (
            "1.473487965 1.715960797 1.993894964 0.882348943 1.888805369 2.122625853 0.530432823 "
            "-0.058670502 0.276147714 1.044955294 0.523413080 2.416945149 0.865537367 1.150561621 "
            "-0.884714123 0.429025165 1.726632849 0.460263804 0.175974758 1.315450568 1.136181282 "
            "0.370015650 0.052878627 0.481776429 1.969274070 0.907310843 0.369222420 2.261568482 "
            "0.080940922 0.568452439 2.428968937 0.653703883"
        ),
    },
}


@pytest.fixture(scope="module")
def models64(tmp_path_factory):
    """The tiny models in float64: the reference and this loop then agree to ~1e-15 per gradient,
    so Adam's first updates (±lr on every coordinate, whatever the gradient's size) cannot flip on
    rounding noise (in float32 a few near-zero S gradients do, and the runs drift apart by ~1e-4)."""
    ckpt = make_stylegan2_checkpoint(size=32, channel_multiplier=1, n_mlp=2, seed=11)
    g = Generator.from_state_dict(ckpt["g_ema"]).eval().requires_grad_(False).double()
    clip = ClipEncoder.from_folder(make_tiny_clip_folder(tmp_path_factory.mktemp("clip64"))).double()
    identity = IDLoss(IRSE50.from_state_dict(make_irse50_checkpoint(1, **TINY_IRSE))).double()
    return g, ckpt["latent_avg"].reshape(1, -1).double(), clip, identity


@pytest.mark.parametrize("case", list(UPSTREAM))
def test_parity_with_upstream_loop(models64, case):
    g, w_avg, clip, identity = models64
    c = UPSTREAM[case]
    w0 = start_latent(g, w_avg, seed=c["seed"], truncation=0.7)
    assert w0.dtype == torch.float64
    assert w0.sum().item() == pytest.approx(c["w0_sum"], abs=1e-6), "seeded start changed"
    settings = OptimizationSettings(**c["settings"], loss_size=None, preview_every=0)
    r = optimize_latent(g, clip, _text(clip, c["text_seed"]), w0, settings=settings, identity=identity)
    assert r.steps == len(c["history"])
    for ours, (clip_ref, total_ref, lr_ref) in zip(r.history, c["history"], strict=True):
        assert ours.clip == pytest.approx(clip_ref, abs=1e-7)
        assert ours.total == pytest.approx(total_ref, abs=1e-7)
        assert ours.lr == pytest.approx(lr_ref, abs=1e-9)
    if settings.space == "s":
        with torch.no_grad():
            final = torch.cat([s[0] + d for s, d in zip(g.w_plus_to_styles(w0), r.s_delta, strict=True)])
        assert sum(int(d.abs().max() > 0) for d in r.s_delta) == c["n_styles_moved"]
    else:
        final = r.w_plus.reshape(-1)
    # the result is handed back in float32
    final = final.double()
    assert final.numel() == c["final_numel"]
    assert final.sum().item() == pytest.approx(c["final_sum"], abs=1e-3)
    assert final.abs().sum().item() == pytest.approx(c["final_abs_sum"], abs=1e-3)
    ref = torch.tensor([float(v) for v in c["final_sample"].split()], dtype=torch.float64)
    torch.testing.assert_close(final[:: c["final_stride"]][: len(ref)], ref, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ augmented CLIP views
def test_augmented_views_are_shifted_zoomed_noisy_copies():
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    views = augmented_views(img, 3, g)
    assert views.shape == (6, 3, 32, 32)
    # no shift and no noise: every view is its image (k * B + b order)
    same = augmented_views(img, 3, torch.Generator().manual_seed(0), shift=0.0, noise=0.0)
    assert torch.allclose(same, img.repeat(3, 1, 1, 1), atol=1e-5)
    # noise only: the views differ from the image by noise of the asked std
    noisy = augmented_views(img, 4, torch.Generator().manual_seed(1), shift=0.0, noise=0.1)
    assert abs((noisy - img.repeat(4, 1, 1, 1)).std().item() - 0.1) < 0.01
    # a shift moves the picture: a vertical bar moves by up to shift half-widths (0.15 -> 2.4 px)
    bar = -torch.ones(1, 3, 32, 32)
    bar[..., 15:17] = 1.0
    moved = augmented_views(bar, 16, torch.Generator().manual_seed(2), noise=0.0)
    centres = (moved[:, 0].mean(1).clamp(min=0) * torch.arange(32.0)).sum(1) / moved[:, 0].mean(1).clamp(
        min=0
    ).sum(1)
    assert (centres - 15.5).abs().max() <= 0.15 * 16 * 1.2 + 0.5 and (centres - 15.5).abs().max() > 0.5
    # seeded: the same generator state gives the same views; differentiable in the image
    again = augmented_views(img, 3, torch.Generator().manual_seed(0))
    assert torch.equal(views, again)
    x = img.clone().requires_grad_(True)
    augmented_views(x, 2, torch.Generator().manual_seed(3)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="views"):
        augmented_views(img, 0, g)


def test_augmented_optimisation_averages_the_clip_loss_over_the_views(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=1, truncation=0.7)
    text = _text(clip)
    plain = optimize_latent(g, clip, text, w0, settings=OptimizationSettings(steps=2, l2_lambda=0.0))
    settings = OptimizationSettings(steps=2, l2_lambda=0.0, augment=3)
    aug = optimize_latent(g, clip, text, w0, settings=settings)
    # step 0's loss is the mean CLIP loss of the first three views of the start image
    with torch.no_grad():
        img = g.synthesis_from_styles(g.w_plus_to_styles(w0), out_size=min(256, g.size))
        views = augmented_views(img, 3, torch.Generator().manual_seed(AUGMENT_SEED))
        expected = clip.clip_loss(views, text).mean().item()
    assert aug.history[0].clip == pytest.approx(expected, abs=1e-5)
    assert aug.history[0].clip != pytest.approx(plain.history[0].clip, abs=1e-4)
    # repeatable, and a different path from the plain loss
    again = optimize_latent(g, clip, text, w0, settings=settings)
    assert torch.equal(aug.w_plus, again.w_plus) and not torch.equal(aug.w_plus, plain.w_plus)


# ------------------------------------------------------------------------------ latent jitter
def test_w_std_is_the_spread_of_the_mapping_outputs(models):
    g, _ = models
    std = w_std_of(g, n=300, batch=128)  # three batches, the last one short
    z = torch.randn(300, g.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = g.mapping(z).double().std(0)
    assert std.shape == (g.style_dim,) and std.dtype == torch.float32
    torch.testing.assert_close(std.double(), direct, rtol=1e-4, atol=1e-6)
    assert torch.equal(std, w_std_of(g, n=300, batch=128))  # seeded
    assert not torch.equal(std, w_std_of(g, n=300, seed=1))


def test_jitter_averages_the_clip_loss_over_the_latent_and_its_neighbours(models, clip, identity):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=1, truncation=0.7)
    text = _text(clip)
    std = w_std_of(g, n=512)
    settings = OptimizationSettings(
        steps=2, l2_lambda=0.5, id_lambda=1.0, jitter=0.5, jitter_samples=3, preview_every=1
    )
    previews = []
    r = optimize_latent(
        g,
        clip,
        text,
        w0,
        settings=settings,
        identity=identity,
        w_std=std,
        on_step=lambda i: previews.append(i.preview),
    )
    # step 0 sees the start latent and two neighbours drawn from the seeded generator, noise std 0.5 * w_std
    noise = torch.randn(2, 1, g.style_dim, generator=torch.Generator().manual_seed(JITTER_SEED)) * (0.5 * std)
    batch = torch.cat([w0, w0 + noise])
    with torch.no_grad():
        imgs = g.synthesis_from_styles(g.w_plus_to_styles(batch), out_size=g.size)
        expected_clip = clip.clip_loss(imgs, text).mean().item()
    assert r.history[0].clip == pytest.approx(expected_clip, abs=1e-5)
    # the L2 and ID terms are the latent's own: both 0 at the start (the neighbours' ID loss is not)
    assert r.history[0].l2 == pytest.approx(0.0, abs=1e-12) and r.history[0].id == pytest.approx(
        0.0, abs=1e-6
    )
    assert r.history[0].clip != pytest.approx(clip.clip_loss(imgs[:1], text).item(), abs=1e-4)
    # the preview is the latent's own image, not a neighbour's
    torch.testing.assert_close(previews[0], imgs[:1], rtol=0, atol=1e-5)
    again = optimize_latent(g, clip, text, w0, settings=settings, identity=identity, w_std=std)
    assert torch.equal(r.w_plus, again.w_plus)  # seeded: repeatable
    # with augmented views: the mean over every view of every sample
    viewed = dataclasses.replace(settings, augment=2)
    r2 = optimize_latent(g, clip, text, w0, settings=viewed, identity=identity, w_std=std)
    with torch.no_grad():
        views = augmented_views(imgs, 2, torch.Generator().manual_seed(AUGMENT_SEED))
        assert views.shape[0] == 6
        expected_views = clip.clip_loss(views, text).mean().item()
    assert r2.history[0].clip == pytest.approx(expected_views, abs=1e-5)
    # later steps: the ID term is that of the latent's own image (step 0's lr is 0: two updates move it)
    three = dataclasses.replace(settings, steps=3)
    full = optimize_latent(g, clip, text, w0, settings=three, identity=identity, w_std=std)
    part = optimize_latent(
        g, clip, text, w0, settings=three, identity=identity, w_std=std, on_step=lambda i: i.step < 2
    )
    assert part.steps == 2 and not torch.equal(part.w_plus, w0)
    with torch.no_grad():
        source = identity.features(imgs[:1])
        own = identity.features(g.synthesis_from_styles(g.w_plus_to_styles(part.w_plus), out_size=g.size))
        expected_id = (1 - (own * source).sum(1)).item()
    assert full.history[2].id == pytest.approx(expected_id, abs=1e-5) and expected_id > 1e-5


def test_jitter_of_zero_spread_is_the_plain_optimisation(models, clip, identity):
    """With w_std = 0 every neighbour is the latent itself: the mean CLIP loss equals the plain one, so
    the run must follow the plain one (this fails if the samples' CLIP losses are summed instead of
    averaged, since the CLIP term would then outweigh the L2 and ID terms)."""
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=2, truncation=0.7)
    text = _text(clip, seed=1)
    base = OptimizationSettings(steps=4, l2_lambda=0.3, id_lambda=0.5)
    plain = optimize_latent(g, clip, text, w0, settings=base, identity=identity)
    jittered = optimize_latent(
        g,
        clip,
        text,
        w0,
        settings=OptimizationSettings(steps=4, l2_lambda=0.3, id_lambda=0.5, jitter=1.0, jitter_samples=4),
        identity=identity,
        w_std=torch.zeros(g.style_dim),
    )
    for a, b in zip(plain.history, jittered.history, strict=True):
        # (a batch of four renders sums in another order than one: ~1e-6 at step 0, growing a little)
        assert a.clip == pytest.approx(b.clip, abs=2e-4) and a.id == pytest.approx(b.id, abs=2e-4)
    # 0.15 % of the distance moved here; summing the four samples' losses (= λ_L2 / 4) gives 11 %
    moved = (plain.w_plus - w0).norm()
    assert (jittered.w_plus - plain.w_plus).norm() < 1e-2 * moved
    assert not torch.equal(plain.w_plus, w0)


def test_jitter_needs_w_std_and_the_w_plus_space(models, clip):
    g, w_avg = models
    w0 = start_latent(g, w_avg, seed=1, truncation=0.7)
    settings = OptimizationSettings(steps=1, jitter=0.3)
    with pytest.raises(ValueError, match="w_std"):
        optimize_latent(g, clip, _text(clip), w0, settings=settings)
    with pytest.raises(ValueError, match="w_std"):
        optimize_latent(g, clip, _text(clip), w0, settings=settings, w_std=torch.ones(3))
    with pytest.raises(ValueError, match="w_std"):
        optimize_latent(g, clip, _text(clip), w0, settings=settings, w_std=-torch.ones(g.style_dim))
    with pytest.raises(ValueError, match="space"):
        OptimizationSettings(jitter=0.3, space="s")
