"""The shipped demo generator and e4e encoder (``demo_models/``) and their training scripts
(``scripts/demo/train_generator.py``, ``scripts/demo/train_encoder.py``)."""

from __future__ import annotations

import inspect
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from editing.demo.faces import (
    BEARD_PRIOR,
    GLASSES_PRIOR,
    HAIR_COLOUR_PRIOR,
    HAIR_COLOURS,
    VECTOR_DIMS,
    VECTOR_SIZE,
    attribute_slice,
    params_to_vector,
    render_batch,
    render_face,
)
from editing.demo.oracle import ATTRIBUTES, attribute_agreement, drawn_attributes, read_attributes
from editing.editor import FaceEditor, load_encoder, load_generator
from editing.evaluate import UNREADABLE_DEMO
from editing.model_sets import demo_oracle
from editing.weights import round_to_half as round_to_half_module
from models.e4e import Encoder4Editing
from scripts.demo.train_encoder import EncoderTrainConfig, encoder_loss, make_encoder, save_encoder
from scripts.demo.train_generator import (
    SOFT_ATTRIBUTES,
    GeneratorTrainConfig,
    attribute_code,
    attribute_groups,
    code_of,
    construct_mapping,
    fast_synthesis,
    group_style_inputs,
    image_loss,
    make_generator,
    make_optimizer,
    mouth_weight,
    psnr,
    render_targets,
    round_to_half,
    save_generator,
    soft_batch,
    style_group_assignment,
    train,
    train_step,
    z_to_params,
    zero_unused_style_inputs,
)

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "demo_models" / "stylegan2-demo.pt"
ENCODER = ROOT / "demo_models" / "e4e_demo_encode.pt"
# a little below what the shipped files measure (see demo_models/README.md), so a regression fails
GENERATOR_PSNR_BOUND = 24.5  # measured: 26.8 dB on 64 held-out z (p10 25.3); seeds 0-5 in the test
INVERSION_PSNR_BOUND = 24.0  # measured: 27.0 dB on 64 renderer-prior faces (the issue asks for 22)
# attributes the shipped generator draws well enough for the oracle to read them: all but the
# evaluation's unreadable ones (mouths, lipstick, age lines, eye colour / size and nose size are not
# drawn yet); test_the_unreadable_attributes_are_those_the_shipped_generator_does_not_draw measures it
DRAWN_ATTRIBUTES = tuple(a for a in ATTRIBUTES if a not in UNREADABLE_DEMO)

# The demo encoder needs narrow map2style heads: with 512-channel head convs even a 32 px e4e holds
# ~32 M parameters. Until models/e4e.py takes head_width (proposed, see demo_models/README.md) and
# the encoder has been trained, the encoder tests are skipped with this reason.
NARROW_HEADS = "head_width" in inspect.signature(Encoder4Editing).parameters
needs_encoder = pytest.mark.skipif(
    not (NARROW_HEADS and ENCODER.exists()),
    reason="needs Encoder4Editing(head_width=...) and demo_models/e4e_demo_encode.pt "
    "(python -m scripts.demo.train_encoder)",
)
needs_narrow_heads = pytest.mark.skipif(not NARROW_HEADS, reason="needs Encoder4Editing(head_width=...)")

TINY = GeneratorTrainConfig(size=32, channels={4: 16, 8: 16, 16: 8, 32: 8}, n_mlp=2, batch=4, lr=1e-2)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def generator():
    torch.set_num_threads(1)
    return load_generator(GENERATOR)


@pytest.fixture(scope="module")
def encoder():
    if not (NARROW_HEADS and ENCODER.exists()):
        pytest.skip("the demo encoder is not available")
    return load_encoder(ENCODER)


# ------------------------------------------------------------------------------ shipped files


def test_shipped_generator_loads_strictly(generator):
    g, w_avg = generator
    assert g.size == 64 and g.style_dim == 512 and g.n_latent == 10 and g.n_mlp == 2
    assert g.channels == GeneratorTrainConfig().channels
    assert w_avg.shape == (1, 512) and torch.isfinite(w_avg).all()
    assert all(v.dtype == torch.float32 for v in g.state_dict().values())
    assert GENERATOR.stat().st_size < 12 * 2**20


def _unused_style_weights(g) -> list[torch.Tensor]:
    return [
        g.get_submodule(layer.module).conv.modulation.weight[:, VECTOR_SIZE:] for layer in g.style_layers()
    ]


def test_shipped_generator_ignores_the_w_dimensions_the_mapping_never_outputs(generator):
    g, _ = generator
    assert all(bool((w == 0).all()) for w in _unused_style_weights(g))
    # so the gradient of any image loss with respect to W+ lies in the attribute-code dimensions
    w = g.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(5)))
    w_plus = w.detach()[:, None].repeat(1, g.n_latent, 1).requires_grad_(True)
    g.synthesis(w_plus).square().mean().backward()
    assert w_plus.grad[..., VECTOR_SIZE:].abs().max() == 0
    assert w_plus.grad[..., :VECTOR_SIZE].abs().max() > 0


def test_shipped_generator_has_one_code_dimension_per_s_channel(generator):
    """Stage 6 (--grouped-styles dimension): a disentangled StyleSpace, recorded in the json."""
    import json

    g, _ = generator
    report = json.loads(GENERATOR.with_suffix(".json").read_text())["style_groups"]
    assert report["grouping"] == "dimension" and report["groups"] == [d.name for d in VECTOR_DIMS]
    for layer in g.style_layers():
        weight = g.get_submodule(layer.module).conv.modulation.weight
        reads = (weight != 0).sum(1)  # code dimensions each channel's style depends on
        if layer.is_torgb:
            assert (reads == 0).all()
        else:
            assert (reads == 1).all()
            assert (weight != 0).int().argmax(1).tolist() == report["channels"][layer.module]
            assert len(set(report["channels"][layer.module])) == VECTOR_SIZE  # every dimension reaches it


@needs_encoder
def test_shipped_files_load_strictly_into_a_face_editor(generator, encoder):
    g, w_avg = generator
    enc, latent_avg = encoder
    assert latent_avg.shape == (10, 512)
    assert enc.n_styles == g.n_latent and enc.input_size == g.size
    editor = FaceEditor(
        generator=g, w_avg=w_avg, encoder=enc, encoder_latent_avg=latent_avg, device="cpu", precision="fp32"
    )
    assert editor.n_latent == 10
    assert GENERATOR.stat().st_size + ENCODER.stat().st_size < 16 * 2**20


def test_generated_faces_are_varied_images_matching_their_targets(generator):
    g, w_avg = generator
    editor = FaceEditor(generator=g, w_avg=w_avg, device="cpu", precision="fp32")
    imgs = torch.cat([editor.render(editor.latent_from_seed(s, truncation=1.0)) for s in range(6)])
    assert imgs.shape == (6, 3, 64, 64)
    assert imgs.abs().max() < 1.5  # bounded, near [-1, 1]
    assert imgs.mean() > -0.5 and imgs.mean() < 0.8
    assert (imgs.flatten(1).std(1) > 0.25).all()  # structured, not flat
    distance = (imgs[:, None] - imgs[None]).abs().mean((2, 3, 4))  # (6, 6)
    assert (distance + torch.eye(6) > 0.08).all()  # every pair of seeds differs
    # G(z) draws the face its z decodes to
    z = torch.cat([torch.randn(1, 512, generator=torch.Generator().manual_seed(s)) for s in range(6)])
    assert psnr(imgs, render_targets(z, 64)).mean() > GENERATOR_PSNR_BOUND


def test_the_unreadable_attributes_are_those_the_shipped_generator_does_not_draw(generator):
    """The evaluation skips the attributes in UNREADABLE_DEMO: exactly those whose oracle readout on
    generated faces does not follow the parameters their z stand for. Fails when a retrained generator
    starts (or stops) drawing one, so the list is re-measured rather than kept by hand."""
    g, _ = generator
    oracle = demo_oracle()
    z = torch.randn(256, 512, generator=torch.Generator().manual_seed(2024))
    with torch.no_grad():
        img = torch.cat([g.synthesis(g.mapping(z[i : i + 64])) for i in range(0, 256, 64)])
    params = [z_to_params(row) for row in z.double().numpy()]
    readout = read_attributes(oracle, img)
    agreement = attribute_agreement(readout, params)
    assert drawn_attributes(readout, params) == DRAWN_ATTRIBUTES, agreement
    # a clear gap, not a threshold that happens to split them (measured: <= 0.48 vs >= 0.95)
    assert max(agreement[a] for a in UNREADABLE_DEMO) < 0.6, agreement
    assert min(agreement[a] for a in DRAWN_ATTRIBUTES) > 0.9, agreement
    # the oracle reads every attribute on the renderer's own faces: the gap is the generator's
    rendered = read_attributes(oracle, render_targets(z, 64))
    assert min(attribute_agreement(rendered, params).values()) > 0.9


@needs_encoder
def test_rendered_faces_invert_through_the_editor(generator, encoder):
    g, w_avg = generator
    enc, latent_avg = encoder
    editor = FaceEditor(
        generator=g, w_avg=w_avg, encoder=enc, encoder_latent_avg=latent_avg, device="cpu", precision="fp32"
    )
    images, params = render_batch(2024, 8, 64)
    w_plus = torch.cat([editor.encode(render_face(p, 64)) for p in params])  # (8, 10, 512)
    recon = editor.render(w_plus)
    values = psnr(recon, to_tensor(images))
    assert values.mean() > INVERSION_PSNR_BOUND
    # a face is reconstructed better from its own code than from another face's
    other = psnr(recon.roll(1, 0), to_tensor(images))
    assert (values > other + 3.0).all()
    # the attributes the generator draws survive the inversion, as the oracle reads them
    from editing.demo.oracle import attribute_change

    oracle = demo_oracle()
    images, params = render_batch(7, 32, 64)  # measured mean change <= 0.06 on 64 faces of this seed
    recon = editor.render(torch.cat([editor.encode(render_face(p, 64)) for p in params]))
    before, after = read_attributes(oracle, to_tensor(images)), read_attributes(oracle, recon)
    for attribute in DRAWN_ATTRIBUTES:
        assert attribute_change(before, after, attribute).mean() < 0.1, attribute


# ------------------------------------------------------------------------------ training code


def test_z_to_params_follows_the_renderer_priors():
    z = torch.randn(3000, 512, generator=torch.Generator().manual_seed(0)).double().numpy()
    params = [z_to_params(row) for row in z]
    counts = Counter(p.hair_colour for p in params)
    for colour, prior in zip(HAIR_COLOURS, HAIR_COLOUR_PRIOR, strict=True):
        assert abs(counts[colour] / 3000 - prior) < 0.03, colour
    assert abs(np.mean([p.glasses for p in params]) - GLASSES_PRIOR) < 0.03
    assert abs(np.mean([p.beard > 0 for p in params]) - BEARD_PRIOR) < 0.03
    assert abs(np.mean([p.smile for p in params])) < 0.05
    # a smooth map: scaling z changes nothing (pixel norm), moving one coordinate moves one attribute
    row = z[0].copy()
    np.testing.assert_allclose(
        params_to_vector(z_to_params(row)), params_to_vector(z_to_params(3.0 * row)), atol=1e-6
    )
    smiles = []
    for value in (-2.0, 0.0, 2.0):
        row[0] = value
        smiles.append(z_to_params(row).smile)
    assert smiles[0] < smiles[1] < smiles[2]


@pytest.mark.parametrize("n_mlp", [2, 4])
def test_constructed_mapping_outputs_the_attribute_code(n_mlp):
    g = make_generator(replace(TINY, n_mlp=n_mlp))
    assert not any(p.requires_grad for p in g.style.parameters())  # constructed, never trained
    z = torch.randn(2000, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = g.mapping(z)
    err = (w[:, :VECTOR_SIZE] - attribute_code(z)).abs()  # code on a 0..2 scale
    assert err.mean() < 0.01
    assert (err > 0.1).float().mean() < 0.01  # only z right at a category threshold is in between
    assert w[:, VECTOR_SIZE:].abs().max() < 1e-5  # the other dimensions carry nothing
    # the code is read off the face: equal parameters give equal w
    assert torch.allclose(g.mapping(3.0 * z[:5]), w[:5], atol=1e-4)
    stats = construct_mapping(g, replace(TINY, n_mlp=n_mlp))
    assert stats["mean_abs_error"] < 0.002
    with pytest.raises(ValueError, match="n_mlp >= 2"):
        make_generator(replace(TINY, n_mlp=1))


def test_unused_style_inputs_are_zero_from_the_start_and_after_loading_an_older_file():
    g = make_generator(TINY)
    assert all(bool((w == 0).all()) for w in _unused_style_weights(g))
    assert all(
        bool((w[:, :VECTOR_SIZE] != 0).any())
        for w in (g.get_submodule(layer.module).conv.modulation.weight for layer in g.style_layers())
    )
    # a state dict written before the columns were zeroed (random there) is zeroed by train(init=...)
    old = {k: v.clone() for k, v in g.state_dict().items()}
    for k in old:
        if k.endswith("modulation.weight"):
            old[k][:, VECTOR_SIZE:] = torch.randn_like(old[k][:, VECTOR_SIZE:])
    trained, stats = train(replace(TINY, steps=2, soft_share=0.5), init=old, log=lambda _: None)
    assert stats["steps"] == 2 and math.isfinite(stats["final_loss"])  # half of each batch in between
    assert all(bool((w == 0).all()) for w in _unused_style_weights(trained))
    assert zero_unused_style_inputs(trained) == 512 - VECTOR_SIZE


def _style_jacobians(g) -> dict[str, torch.Tensor]:
    """d style / d w over the attribute code for every style layer: {module: (channels, VECTOR_SIZE)}."""
    out = {}
    w = torch.rand(VECTOR_SIZE) * 2
    for layer in g.style_layers():
        mod = g.get_submodule(layer.module).conv.modulation

        def style(code, mod=mod):
            return mod(torch.cat([code, torch.zeros(g.style_dim - VECTOR_SIZE)])[None])[0]

        out[layer.module] = torch.autograd.functional.jacobian(style, w)
    return out


@pytest.mark.parametrize("grouping", ["attribute", "dimension"])
def test_grouped_styles_give_every_conv_channel_one_group_and_constant_torgb_styles(grouping):
    groups = attribute_groups(grouping)
    assert len(groups) == (13 if grouping == "attribute" else VECTOR_SIZE)
    assert sorted(i for idx in groups.values() for i in idx) == list(range(VECTOR_SIZE))
    hair = list(range(*attribute_slice("hair_colour").indices(VECTOR_SIZE)))
    if grouping == "attribute":
        assert groups["hair_colour"] == hair
    else:
        assert [groups[f"hair_colour={c}"] for c in HAIR_COLOURS] == [[i] for i in hair]
    g = make_generator(replace(TINY, channels={4: 64, 8: 64, 16: 32, 32: 32}))
    dense = _style_jacobians(g)
    assignment = style_group_assignment(g, grouping, n_samples=256)
    assert set(assignment) == {layer.module for layer in g.style_layers() if not layer.is_torgb}
    for layer in g.style_layers():
        if not layer.is_torgb:
            got = Counter(assignment[layer.module])
            assert len(assignment[layer.module]) == layer.dim and set(got) == set(
                range(len(groups))
            )  # all reach
    group_style_inputs(g, assignment, grouping)
    index = list(groups.values())
    for layer in g.style_layers():
        jac = _style_jacobians(g)[layer.module]
        if layer.is_torgb:
            assert (jac == 0).all()  # constant: nothing is drawn through toRGB
            continue
        for c, k in enumerate(assignment[layer.module]):
            own = torch.zeros(VECTOR_SIZE, dtype=torch.bool)
            own[index[k]] = True
            assert (jac[c, ~own] == 0).all()  # reads nothing but its own group
            torch.testing.assert_close(jac[c, own], dense[layer.module][c, own])  # kept as it was
    with pytest.raises(ValueError, match="grouping"):
        attribute_groups("channel")


def test_grouped_training_keeps_the_masked_style_weights_at_zero():
    config = replace(TINY, channels={4: 32, 8: 32, 16: 16, 32: 16}, steps=3, grouped_styles="dimension")
    g, stats = train(replace(config, soft_share=0.5), log=lambda _: None)
    assignment = stats["style_groups"]
    before = {k: v.clone() for k, v in g.state_dict().items() if k.endswith("modulation.weight")}
    group_style_inputs(g, assignment, "dimension")  # nothing left to zero after training
    for k, v in g.state_dict().items():
        if k.endswith("modulation.weight"):
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert sum(int((v != 0).sum()) for v in before.values()) > 0


def test_soft_batch_is_a_face_part_way_through_one_attribute_edit():
    z = torch.randn(24, 512, generator=torch.Generator().manual_seed(7))
    w, target = soft_batch(z, np.random.default_rng(0), 32)
    assert w.shape == (24, 512) and target.shape == (24, 3, 32, 32)
    assert (w[:, VECTOR_SIZE:] == 0).all() and target.abs().max() <= 1.0
    seen = set()
    for row, w_i, img in zip(z, w, target, strict=True):
        a = z_to_params(row.double().numpy())
        moved = [
            att for att in SOFT_ATTRIBUTES if (w_i - code_of(a))[attribute_slice(att)].abs().max() > 1e-6
        ]
        assert len(moved) == 1  # exactly one attribute's code moved, nothing else
        (att,) = moved
        seen.add(att)
        d = (w_i - code_of(a))[attribute_slice(att)]
        if att in ("beard", "smile", "age"):  # continuous: rendered at the in-between value
            lo, hi = VECTOR_DIMS[attribute_slice(att)][0].low, VECTOR_DIMS[attribute_slice(att)][0].high
            mid = lo + (hi - lo) * float(w_i[attribute_slice(att)][0]) / 2.0
            ref = to_tensor(np.asarray(render_face(replace(a, **{att: mid}), 32))[None])[0]
        else:  # categorical / binary: the blend of both renders, t read off the code
            t = float(d.abs().max()) / 2.0
            if att in ("glasses", "lipstick"):
                b = replace(a, **{att: not getattr(a, att)})
            else:
                names = [dim.name.split("=", 1)[1] for dim in VECTOR_DIMS[attribute_slice(att)]]
                b = replace(a, **{att: names[int(d.argmax())]})
            img_a = to_tensor(np.asarray(render_face(a, 32))[None])[0]
            img_b = to_tensor(np.asarray(render_face(b, 32))[None])[0]
            ref = (1 - t) * img_a + t * img_b
        torch.testing.assert_close(img, ref, atol=2e-3, rtol=0)
    assert len(seen) >= 4  # the edits are spread over the attributes


def test_fast_synthesis_is_the_generator_synthesis():
    torch.manual_seed(0)
    g = make_generator(TINY)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias") and "noise" not in name:
                p.normal_(0.0, 0.2)
        w = g.mapping(torch.randn(3, 512))
        w_plus = w[:, None].repeat(1, g.n_latent, 1) + 0.3 * torch.randn(3, g.n_latent, 512)
        for latent in (w, w_plus):
            ref = g.synthesis(latent)
            torch.testing.assert_close(fast_synthesis(g, latent), ref, rtol=1e-4, atol=1e-5)


def test_generator_training_steps_lower_the_loss_and_save_loadable(tmp_path):
    torch.manual_seed(0)
    g = make_generator(TINY)
    opt = make_optimizer(g, TINY)
    z = torch.randn(TINY.batch, 512, generator=torch.Generator().manual_seed(1))
    target = render_targets(z, TINY.size)
    losses = [train_step(g, opt, z, target, TINY.grad_lambda) for _ in range(4)]
    assert losses[-1] < losses[0]
    assert all(float(m.noise.weight) == 0.0 for m in [g.conv1, *g.convs])  # noise stays off
    save_generator(g, tmp_path / "g.pt", n_avg=64)
    loaded, w_avg = load_generator(tmp_path / "g.pt")
    assert loaded.channels == TINY.channels and loaded.n_mlp == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), g.eval()(z))


def test_a_half_stored_generator_is_the_rounded_one_with_a_float32_mapping(tmp_path):
    torch.manual_seed(0)
    g = make_generator(TINY).eval()  # with the constructed mapping
    full = {k: v.clone() for k, v in g.state_dict().items()}
    save_generator(g, tmp_path / "g16.pt", n_avg=64, half=True)  # rounds g in place first
    sd = torch.load(tmp_path / "g16.pt", weights_only=True)["g_ema"]
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        # the mapping (lr-multiplied weights up to 2.8e5, beyond float16) stays float32 and unchanged
        assert v.dtype == (torch.float32 if k.startswith("style.") else torch.float16), k
        if k.startswith("style."):
            assert torch.equal(v, full[k]), k
    assert max(float(sd[k].abs().max()) for k in sd if k.startswith("style.")) > 65504  # why it must
    assert any(not torch.equal(g.state_dict()[k], full[k]) for k in full if not k.startswith("style."))
    loaded, w_avg = load_generator(tmp_path / "g16.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    z = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), g(z))  # exactly the rounded generator the metrics saw
        reference = make_generator(TINY).eval()
        reference.load_state_dict(full)
        err = (loaded(z) - reference(z)).abs().max()
    assert 0 < float(err) < 2e-2  # float16 rounding, not another generator
    assert torch.equal(
        round_to_half(reference).state_dict()["conv1.conv.weight"], g.state_dict()["conv1.conv.weight"]
    )


def test_the_shipped_demo_set_stays_within_30_mb():
    files = [
        p for folder in ("demo_models", "precomputed/demo") for p in (ROOT / folder).rglob("*") if p.is_file()
    ]
    assert sum(p.stat().st_size for p in files) <= 30_000_000  # the budget (30 MB) for every part


@needs_narrow_heads
def test_encoder_training_steps_lower_the_loss_and_save_loadable(tmp_path):
    torch.manual_seed(0)
    g = make_generator(TINY).eval().requires_grad_(False)
    config = EncoderTrainConfig(input_size=32, widths=(16, 17, 18, 19), units=(1, 1, 1, 1), head_width=8)
    enc = make_encoder(config, g.n_latent).train()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    z = torch.randn(4, 512, generator=torch.Generator().manual_seed(1))
    face = render_targets(z, 32)
    latent_avg = g.mean_latent(64).expand(g.n_latent, 512)
    with torch.no_grad():
        w = g.mapping(z)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss, recon = encoder_loss(enc, g, latent_avg, face, w, config)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert recon.shape == face.shape and losses[-1] < losses[0]
    save_encoder(enc.eval(), latent_avg, config, tmp_path / "e.pt")
    loaded, avg = load_encoder(tmp_path / "e.pt")
    assert loaded.head_width == 8 and loaded.input_size == 32 and avg.shape == (g.n_latent, 512)
    with torch.no_grad():
        torch.testing.assert_close(loaded(face), enc(face))
    assert math.isfinite(losses[-1])
    # float16 storage: every encoder weight stored half, loaded as float32, equal to the rounded encoder
    save_encoder(enc, latent_avg, config, tmp_path / "e16.pt", half=True)
    sd = torch.load(tmp_path / "e16.pt", weights_only=True)["state_dict"]
    assert all(k.startswith("encoder.") for k in sd)
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    half, _ = load_encoder(tmp_path / "e16.pt")
    with torch.no_grad():
        torch.testing.assert_close(half(face), round_to_half_module(enc)(face), rtol=0, atol=0)


def test_encoder_training_runs_the_code_phase_then_the_full_loss():
    from scripts.demo.train_encoder import train as train_encoder

    g = make_generator(TINY).eval()
    config = EncoderTrainConfig(
        input_size=32,
        widths=(16, 17, 18, 19),
        units=(1, 1, 1, 1),
        head_width=8,
        batch=4,
        code_steps=4,
        steps=2,
    )
    lines: list[str] = []
    enc, stats = train_encoder(g, g.mean_latent(64), config, log=lines.append, log_every=1)
    assert [line.split()[0] for line in lines] == ["code"] * 4 + ["step"] * 2
    mse = [float(line.split("MSE ")[1].split()[0]) for line in lines[:4]]
    assert mse[-1] < mse[0] and stats["steps"] == 2 and not enc.training


def test_the_mouth_weight_covers_the_rendered_mouths_and_only_weights_errors_there():
    """mouth_lambda adds error weight in a box at the renderer's mouth: full weight on every closed
    mouth (frown to a slight smile, with or without lipstick), some weight on >= 90 % of an open grin
    (whose lower lip reaches 4 px lower), none at the eyes; an error there costs more, elsewhere the same."""
    from editing.demo.faces import FaceParams, render_face

    m = mouth_weight(64)[0, 0]
    assert m.max() == 1.0 and m.min() == 0.0

    def changed(smiles: tuple[float, ...]) -> torch.Tensor:
        out = torch.zeros(64, 64, dtype=torch.bool)
        for smile in smiles:
            for lipstick in (False, True):
                a = render_face(FaceParams(smile=smile, lipstick=lipstick), 64)
                b = render_face(FaceParams(smile=0.0 if smile else 0.3, lipstick=not lipstick), 64)
                diff = np.abs(np.asarray(a).astype(float) - np.asarray(b).astype(float)).sum(-1)
                out |= torch.from_numpy(diff > 30)
        return out

    closed, grin = changed((-1.0, -0.5, 0.0, 0.3)), changed((0.5, 1.0))
    assert closed.sum() > 40 and (m[closed] == 1.0).all()
    assert grin.sum() > 60 and (m[grin] > 0).float().mean() >= 0.9
    assert m[:36].sum() == 0  # nothing at the eyes (row 30 at 64 px) or above
    target = torch.zeros(1, 3, 64, 64)
    for y, x in ((45, 32), (20, 20)):  # the same error at the mouth and on the forehead
        img = target.clone()
        img[..., y, x] = 0.5
        plain = image_loss(img, target, 1.0, 2.0, 4.0)
        assert image_loss(img, target, 1.0, 2.0, 4.0, mouth_lambda=0.0) == plain
        weighted = image_loss(img, target, 1.0, 2.0, 4.0, mouth_lambda=16.0)
        assert (weighted > plain) if (y, x) == (45, 32) else (weighted == plain)
