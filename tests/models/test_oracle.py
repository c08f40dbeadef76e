"""The attribute oracle: network shapes and preprocessing (``models/oracle.py``), decoding and edit
comparisons (``editing/demo/oracle.py``), the training script (``scripts/demo/train_oracle.py``) and the
shipped ``demo_models/oracle.pt``, which must read fresh renders (clean and blurred) accurately."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from editing.demo.faces import (
    HAIR_COLOURS,
    VECTOR_DIMS,
    VECTOR_INDEX,
    VECTOR_SIZE,
    FaceParams,
    attribute_slice,
    params_to_vector,
    render_batch,
    render_face,
    sample_params,
)
from editing.demo.oracle import (
    ATTRIBUTES,
    attribute_agreement,
    attribute_change,
    attribute_errors,
    attribute_shift,
    check_edit,
    decode,
    drawn_attributes,
    load_oracle,
    read_attributes,
    readout_to_params,
    readout_to_vector,
    save_oracle,
)
from editing.errors import WeightsCorruptError
from editing.weights import round_to_half
from models.oracle import AttributeOracle, oracle_input
from scripts.demo.train_oracle import (
    BLENDED,
    OracleTrainConfig,
    blend_rows,
    degrade,
    gaussian_blur,
    make_oracle,
    oracle_loss,
    render_params,
    to_tensor,
    train,
    training_batch,
)

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "demo_models" / "oracle.pt"
TEST_SEED = 31_337  # neither the training data (1000 + seed) nor the script's evaluation set
# A little below what the shipped file measures on 512 held-out faces (demo_models/README.md), so a
# regression fails: accuracy for categorical / binary attributes, MAE (attribute units) otherwise.
MIN_ACCURACY = {
    "hair_colour": 0.97,  # measured 0.994 / 0.984
    "hair_style": 0.98,  # 1.0
    "glasses": 0.98,  # 1.0
    "lipstick": 0.98,  # 1.0
    "eye_colour": 0.97,  # 1.0
}
MAX_MAE = {  # measured (clean / blurred, 512 held-out faces)
    "smile": 0.10,  # 0.079 / 0.082, range [-1, 1]
    "beard": 0.035,  # 0.024 / 0.021
    "age": 0.065,  # 0.048 / 0.050
    "skin_tone": 0.045,  # 0.032 / 0.026
    "face_width": 0.085,  # 0.063 / 0.063, range [-1, 1]
    "eye_size": 0.12,  # 0.092 / 0.100, range [-1, 1]
    "nose_size": 0.15,  # 0.100 / 0.119, range [-1, 1]
    "background_hue": 0.015,  # 0.010 / 0.010 (turns)
}
TINY = OracleTrainConfig(widths=(8, 16), hidden=16, batch=6, steps=3, size=64)


def confident_raw(params: list[FaceParams]) -> torch.Tensor:
    """A raw oracle output that encodes ``params`` exactly (big logits for classes and booleans)."""
    v = torch.tensor(np.stack([params_to_vector(p) for p in params]), dtype=torch.float32)
    for i, d in enumerate(VECTOR_DIMS):
        if d.kind in ("onehot", "binary"):
            v[:, i] = 20.0 * (2.0 * v[:, i] - 1.0)
    return v


FACES = [
    FaceParams(),
    FaceParams(
        smile=0.8,
        hair_colour="purple",
        hair_style="mohawk",
        glasses=True,
        beard=0.5,
        lipstick=True,
        age=0.9,
        eye_colour="green",
        skin_tone=0.7,
        face_width=-0.4,
        eye_size=0.6,
        nose_size=-0.9,
        background_hue=0.95,
    ),
]


# ---------------------------------------------------------------------------- network
def test_oracle_shapes_and_arguments():
    torch.manual_seed(0)
    net = AttributeOracle(VECTOR_SIZE, widths=(8, 16, 16), hidden=12).eval()
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, VECTOR_SIZE)
    with pytest.raises(ValueError, match="input_size"):
        AttributeOracle(VECTOR_SIZE, input_size=60, widths=(8, 16, 16))
    with pytest.raises(ValueError, match="out_dim"):
        AttributeOracle(0)
    with pytest.raises(AssertionError):
        net(torch.zeros(1, 3, 32, 32))  # other sizes go through oracle_input


def test_oracle_input_resamples_by_area_and_keeps_64px():
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    assert oracle_input(x[:, :, :64, :64]) is not None
    assert torch.equal(oracle_input(x[:, :, :64, :64]), x[:, :, :64, :64])
    torch.testing.assert_close(oracle_input(x), F.avg_pool2d(x, 2))  # exact box filter for 2x
    up = oracle_input(torch.full((1, 3, 32, 32), 0.25))
    assert up.shape == (1, 3, 64, 64) and torch.allclose(up, torch.full_like(up, 0.25))
    with pytest.raises(ValueError, match="img"):
        oracle_input(torch.zeros(3, 64, 64))


# ---------------------------------------------------------------------------- decoding
def test_decode_round_trips_parameters():
    readout = decode(confident_raw(FACES))
    for got, want in zip(readout_to_params(readout), FACES, strict=True):
        for attribute in ("hair_colour", "hair_style", "glasses", "lipstick", "eye_colour"):
            assert getattr(got, attribute) == getattr(want, attribute)
        np.testing.assert_allclose(params_to_vector(got), params_to_vector(want), rtol=0, atol=1e-6)
    back = readout_to_vector(readout)
    torch.testing.assert_close(
        back,
        torch.tensor(np.stack([params_to_vector(p) for p in FACES]), dtype=torch.float32),
        atol=1e-5,
        rtol=0,
    )
    assert readout["hair_colour"].shape == (2, len(HAIR_COLOURS))
    torch.testing.assert_close(readout["hair_colour"].sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="raw"):
        decode(torch.zeros(2, VECTOR_SIZE + 1))


def test_decode_clamps_continuous_and_soft_values():
    raw = torch.zeros(1, VECTOR_SIZE)
    raw[0, attribute_slice("smile").start] = 3.0  # out of range -> clamped to 1
    raw[0, attribute_slice("glasses").start] = math.log(3.0)  # sigmoid -> 0.75
    r = decode(raw)
    assert float(r["smile"]) == 1.0
    assert float(r["glasses"]) == pytest.approx(0.75)
    torch.testing.assert_close(r["hair_colour"], torch.full((1, 6), 1 / 6))


# ---------------------------------------------------------------------------- comparing edits
def _readout(**changes) -> dict[str, torch.Tensor]:
    return decode(confident_raw([replace(FACES[0], **changes)]))


def test_attribute_change_and_shift_scales():
    a = _readout(smile=-0.5, glasses=False, hair_colour="brown", background_hue=0.95)
    b = _readout(smile=0.5, glasses=True, hair_colour="blond", background_hue=0.05)
    assert float(attribute_change(a, b, "smile")) == pytest.approx(0.5)  # 1.0 over a range of 2
    assert float(attribute_shift(b, a, "smile")) == pytest.approx(-0.5)
    assert float(attribute_change(a, b, "glasses")) == pytest.approx(1.0, abs=1e-6)
    assert float(attribute_shift(a, b, "glasses")) == pytest.approx(1.0, abs=1e-6)
    assert float(attribute_change(a, b, "hair_colour")) == pytest.approx(1.0, abs=1e-6)  # total variation
    assert float(attribute_shift(a, b, "hair_colour", towards="blond")) == pytest.approx(1.0, abs=1e-6)
    assert float(attribute_shift(a, b, "hair_colour", towards="red")) == pytest.approx(0.0, abs=1e-6)
    # hue 0.95 -> 0.05 is a tenth of a turn across 0: 0.2 of the maximal (half-turn) change
    assert float(attribute_change(a, b, "background_hue")) == pytest.approx(0.2, abs=1e-5)
    assert float(attribute_change(a, a, "age")) == 0.0
    with pytest.raises(ValueError, match="towards"):
        attribute_shift(a, b, "hair_colour")
    with pytest.raises(ValueError, match="towards"):
        attribute_shift(a, b, "hair_colour", towards="green")
    with pytest.raises(ValueError, match="circular"):
        attribute_shift(a, b, "background_hue")
    with pytest.raises(ValueError, match="attribute"):
        attribute_change(a, b, "hat")


def test_check_edit_verdicts():
    before = _readout(smile=-0.2, age=0.3)
    clean = _readout(smile=0.6, age=0.32)  # smile up, age barely moves
    leaky = _readout(smile=0.6, age=0.8)  # smile up, but the face also aged by half its range
    wrong = _readout(smile=-0.6, age=0.3)
    ok = check_edit(before, clean, "smile", bound=0.1)
    assert bool(ok.ok) and bool(ok.moved) and bool(ok.preserved)
    assert float(ok.target_shift) == pytest.approx(0.4)
    assert set(ok.other_changes) == set(ATTRIBUTES) - {"smile"}
    assert float(ok.max_other_change) == pytest.approx(0.02, abs=1e-6)
    bad = check_edit(before, leaky, "smile", bound=0.1)
    assert bool(bad.moved) and not bool(bad.preserved) and not bool(bad.ok)
    assert float(bad.max_other_change) == pytest.approx(0.5, abs=1e-6)
    assert bool(check_edit(before, leaky, "smile", bound=0.1, others=["glasses"]).ok)
    assert not bool(check_edit(before, wrong, "smile").moved)
    assert bool(check_edit(before, wrong, "smile", direction=-1).ok)
    assert not bool(check_edit(before, clean, "smile", min_shift=0.5).moved)
    towards = check_edit(
        before, _readout(smile=-0.2, age=0.3, hair_colour="red"), "hair_colour", towards="red"
    )
    assert bool(towards.ok) and float(towards.target_shift) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="direction"):
        check_edit(before, clean, "smile", direction=2)


def test_attribute_errors_of_a_perfect_readout():
    err = attribute_errors(decode(confident_raw(FACES)), FACES)
    assert all(err[a] == pytest.approx(1.0 if a in MIN_ACCURACY else 0.0, abs=1e-6) for a in ATTRIBUTES)


def test_attribute_agreement_is_one_when_right_and_near_zero_when_unrelated():
    rng = np.random.default_rng(11)
    params = [sample_params(rng) for _ in range(400)]
    perfect = attribute_agreement(decode(confident_raw(params)), params)
    assert all(perfect[a] == pytest.approx(1.0, abs=1e-4) for a in ATTRIBUTES), perfect
    assert drawn_attributes(decode(confident_raw(params)), params) == ATTRIBUTES
    # the readout of other faces: categorical attributes at about their majority share, the rest ~0
    shuffled = params[1:] + params[:1]
    unrelated = attribute_agreement(decode(confident_raw(shuffled)), params)
    assert all(unrelated[a] < 0.6 for a in ATTRIBUTES), unrelated
    assert drawn_attributes(decode(confident_raw(shuffled)), params) == ()
    # a constant readout explains nothing (no division by zero)
    same = attribute_agreement(decode(confident_raw([params[0]] * len(params))), params)
    assert same["smile"] == 0.0 and same["glasses"] == 0.0
    # a noisy but faithful readout of a continuous attribute: the share of variance it explains
    raw = confident_raw(params)
    i = VECTOR_INDEX["face_width"]
    noise = torch.randn(len(params), generator=torch.Generator().manual_seed(0))
    raw[:, i] = raw[:, i] + noise * raw[:, i].std()  # signal variance = noise variance: r^2 ~ 0.5
    assert 0.35 < attribute_agreement(decode(raw), params)["face_width"] < 0.65
    with pytest.raises(ValueError, match="one FaceParams per face"):
        attribute_agreement(decode(confident_raw(params[:3])), params)


# ---------------------------------------------------------------------------- training script
def test_loss_prefers_the_truth():
    target = torch.tensor(np.stack([params_to_vector(p) for p in FACES]), dtype=torch.float32)
    good = oracle_loss(confident_raw(FACES), target, 8.0)
    bad = oracle_loss(confident_raw(FACES[::-1]), target, 8.0)
    assert float(good) < 1e-3 < 1.0 < float(bad)


def test_blended_faces_and_their_soft_labels():
    _, params = render_batch(3, 12)
    img = render_params(params, 32)
    out, labels = blend_rows(img, params, np.random.default_rng(0), 32)
    assert out.shape == img.shape and labels.shape == (12, len(VECTOR_DIMS))
    for a, x, lab, v in zip(params, img, out, labels, strict=True):
        va = params_to_vector(a)
        moved = {d.attribute for d, delta in zip(VECTOR_DIMS, v - va, strict=True) if abs(delta) > 1e-9}
        assert len(moved) == 1 and moved <= set(BLENDED)  # one attribute, part of the way
        (att,) = moved
        sl = attribute_slice(att)
        t = (
            float(np.abs(v - va)[sl].max())
            if VECTOR_DIMS[sl][0].kind == "binary"
            else float(np.abs(v - va)[sl].sum() / 2)
        )
        if VECTOR_DIMS[sl][0].kind == "onehot":
            assert v[sl].sum() == pytest.approx(1.0)  # still a distribution over the classes
        # the image is the same blend of the face and its variant (read the variant off the label)
        if VECTOR_DIMS[sl][0].kind == "binary":
            b = replace(a, **{att: not getattr(a, att)})
        else:
            b = replace(a, **{att: VECTOR_DIMS[sl][int(np.argmax(v[sl] - va[sl]))].name.split("=", 1)[1]})
        torch.testing.assert_close(lab, (1 - t) * x + t * render_params([b], 32)[0], atol=1e-4, rtol=0)
    # the loss takes soft labels; whole faces keep the usual one-hot loss
    plain, _ = training_batch(1, replace(TINY, blend_share=0.0))
    mixed, target = training_batch(1, replace(TINY, blend_share=0.5))
    assert torch.equal(plain[3:], mixed[3:]) and not torch.equal(plain[:3], mixed[:3])
    assert float(oracle_loss(torch.zeros_like(target), target, 8.0)) > 0


def test_gaussian_blur_and_degrade():
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.5, 1.2])), flat)
    dot = torch.zeros(1, 1, 15, 15)
    dot[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(dot, 1.0)[0, 0]
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(blurred[7, 8] / blurred[7, 7]) == pytest.approx(math.exp(-0.5), rel=1e-4)
    images, _ = render_batch(5, 8)
    img = to_tensor(images)
    a, b = degrade(img, np.random.default_rng(1)), degrade(img, np.random.default_rng(1))
    assert torch.equal(a, b) and a.shape == img.shape
    assert float(a.abs().max()) <= 1.0
    assert 0.0 < float((a - img).abs().mean()) < 0.1  # degraded, but the same faces


def test_tiny_training_is_deterministic_and_saves(tmp_path):
    torch.set_num_threads(1)
    log: list[str] = []
    net_a, stats = train(TINY, log=log.append, log_every=1)
    net_b, _ = train(TINY, log=lambda _: None)
    assert stats["steps"] == 3 and math.isfinite(stats["final_loss"]) and len(log) == 3
    for (k, v), w in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert any(
        not torch.equal(v, w)
        for v, w in zip(net_a.state_dict().values(), make_oracle(TINY).state_dict().values(), strict=True)
    )
    path = tmp_path / "oracle.pt"
    save_oracle(net_a, TINY.hidden, path)
    loaded = load_oracle(path)
    x = to_tensor(render_batch(3, 2)[0])
    torch.testing.assert_close(loaded(x), net_a.eval()(x))
    # float16 storage (--half): half the file, loads as float32, equal to the rounded oracle
    save_oracle(net_a, TINY.hidden, tmp_path / "half.pt", half=True)
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * path.stat().st_size
    half = load_oracle(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    rounded = round_to_half(load_oracle(path))
    torch.testing.assert_close(half(x), rounded(x), rtol=0, atol=0)
    assert 0 < float((half(x) - net_a(x)).abs().max()) < 0.05
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["dims"] = ckpt["config"]["dims"][::-1]
    torch.save(ckpt, path)
    with pytest.raises(WeightsCorruptError, match="layout"):
        load_oracle(path)


# ---------------------------------------------------------------------------- the shipped oracle
@pytest.fixture(scope="module")
def oracle() -> AttributeOracle:
    torch.set_num_threads(1)
    return load_oracle(ORACLE)


@pytest.fixture(scope="module")
def fresh() -> tuple[torch.Tensor, list[FaceParams]]:
    images, params = render_batch(TEST_SEED, 256)
    return to_tensor(images), params


def test_shipped_oracle_file(oracle):
    assert ORACLE.stat().st_size <= 2 * 2**20
    ckpt = torch.load(ORACLE, weights_only=True)
    assert set(ckpt) == {"state_dict", "config"}
    assert ckpt["config"]["dims"] == [d.name for d in VECTOR_DIMS]
    assert not oracle.training


@pytest.mark.parametrize("blur", [0.0, 1.0])
def test_shipped_oracle_reads_fresh_renders(oracle, fresh, blur):
    img, params = fresh
    if blur:
        img = gaussian_blur(img, blur)
    err = attribute_errors(read_attributes(oracle, img), params)
    low = {a: round(err[a], 3) for a, bound in MIN_ACCURACY.items() if err[a] < bound}
    high = {a: round(err[a], 3) for a, bound in MAX_MAE.items() if err[a] > bound}
    assert not low and not high, (low, high)


def test_shipped_oracle_reads_the_hair_style_of_faces_half_way_to_another_hair_colour(oracle, fresh):
    # an edit moves a latent part of the way: the oracle must not see another hair style in
    # in-between hair colours (the first oracle did on 17-22 % of faces blended 25-50 % to purple / blond)
    img, params = fresh
    img, params = img[:64], params[:64]
    before = read_attributes(oracle, img)
    for colour in ("purple", "blond"):
        other = render_params([replace(p, hair_colour=colour) for p in params], 64)
        for t in (0.25, 0.5):
            after = read_attributes(oracle, (1 - t) * img + t * other)
            misread = (attribute_change(before, after, "hair_style") > 0.2).float().mean()
            assert misread <= 0.1, (colour, t, float(misread))  # measured 0-8 %


def test_shipped_oracle_reads_other_sizes(oracle, fresh):
    params = fresh[1][:32]
    big = to_tensor(np.stack([np.asarray(render_face(p, 128)) for p in params]))  # area-pooled to 64
    err = attribute_errors(read_attributes(oracle, big), params)
    assert (
        err["hair_colour"] >= MIN_ACCURACY["hair_colour"] - 0.05 and err["smile"] <= MAX_MAE["smile"] + 0.05
    )


def test_shipped_oracle_sees_a_single_attribute_edit(oracle):
    base = FaceParams(smile=-0.5, glasses=False, hair_colour="brown", age=0.2, background_hue=0.3)
    edits = {
        "smile": (replace(base, smile=0.7), {}),
        "glasses": (replace(base, glasses=True), {}),
        "hair_colour": (replace(base, hair_colour="blond"), {"towards": "blond"}),
        "age": (replace(base, age=0.9), {}),
    }
    imgs = to_tensor(
        np.stack([np.asarray(render_face(p, 64)) for p in [base] + [e for e, _ in edits.values()]])
    )
    r = read_attributes(oracle, imgs)
    before = {k: v[:1] for k, v in r.items()}
    for i, (attribute, (_, kwargs)) in enumerate(edits.items(), start=1):
        after = {k: v[i : i + 1] for k, v in r.items()}
        check = check_edit(before, after, attribute, bound=0.15, min_shift=0.2, **kwargs)
        assert bool(check.ok), (
            attribute,
            float(check.target_shift),
            {k: round(float(v), 3) for k, v in check.other_changes.items()},
        )
