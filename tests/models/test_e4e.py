"""e4e encoder: parity with the reference, W+ assembly, strict loading, the official file format.

Goldens (``tests/golden/e4e.json``) come from omertov/encoder4editing (commit 99ea505)
``models/encoders/psp_encoders.py`` ``Encoder4Editing(50, 'ir_se')`` in its inference stage, its
``encoder.*`` keys loaded strictly from the seeded ``e4e_ffhq_encode.pt`` as ``models/psp.py``
does (scratch copy patched only to stub the compiled CUDA ops, which the encoder never calls);
``w_plus = codes + latent_avg.repeat(B, 1, 1)`` as ``pSp.forward``. To regenerate::

    python -m scripts.seeded.e4e --out /work/scratch/e4e/files
    python /work/scratch/e4e/make_golden.py   # reference on those files -> tests/golden/e4e.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from editing.editor import load_encoder
from models.e4e import Encoder4Editing, GradualStyleBlock, e4e_from_checkpoint, n_styles_for
from scripts.seeded.e4e import encoder_spec, make_e4e_checkpoint, seeded_input

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "e4e.json").read_text())
TOL = 1e-4
TINY = {"n_styles": 10, "latent_dim": 32, "input_size": 64, "widths": (16, 32, 48, 64), "units": (1, 2, 2, 1)}


def _tiny(seed: int = 1, **overrides) -> dict:
    return make_e4e_checkpoint(seed, **{**TINY, **overrides})


def _encoder_sd(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k[len("encoder.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}


def _check(t: torch.Tensor, g: dict) -> float:
    assert list(t.shape) == g["shape"]
    errs = [
        (t.reshape(-1)[:: GOLDEN["stride"]] - torch.tensor(g["sample"])).abs().max().item(),
        (t.abs().amax(dim=2) - torch.tensor(g["row_absmax"])).abs().max().item(),
        (t.double().mean(dim=2) - torch.tensor(g["row_mean"], dtype=torch.float64)).abs().max().item(),
        abs(t.double().mean().item() - g["mean"]),
        abs(t.double().std().item() - g["std"]),
    ]
    return max(errs)


def test_parity_with_reference():
    torch.set_num_threads(2)
    ckpt = make_e4e_checkpoint()
    x = seeded_input(1, 256)
    assert math.isclose(x.double().sum().item(), GOLDEN["input_sum"], rel_tol=1e-9), "seeded inputs changed"
    assert math.isclose(ckpt["latent_avg"].double().sum().item(), GOLDEN["latent_avg_sum"], rel_tol=1e-9)
    encoder, latent_avg = e4e_from_checkpoint(ckpt)
    assert (encoder.n_styles, encoder.input_size, encoder.taps) == (18, 256, (6, 20, 23))
    with torch.inference_mode():
        codes = encoder(x)
    err_codes = _check(codes, GOLDEN["codes"])
    err_w = _check(codes + latent_avg, GOLDEN["w_plus"])
    assert err_codes <= TOL and err_w <= TOL, (err_codes, err_w)
    assert GOLDEN["codes"]["std"] > 0.5  # the goldens themselves are non-degenerate


def test_official_key_names_and_count():
    with torch.device("meta"):
        keys = list(Encoder4Editing().state_dict())
    spec = encoder_spec()  # written from the format, not from the model
    assert ["encoder." + k for k in keys] == [k for k, _, _ in spec]
    assert len(keys) == 621 and sum(k.endswith(".num_batches_tracked") for k in keys) == 52
    assert sum(k.startswith(("input_layer.", "body.")) for k in keys) == 385  # = IR-SE50's backbone
    assert [k for k in keys if k.startswith("styles.0.")] == [
        f"styles.0.convs.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")
    ] + ["styles.0.linear.weight", "styles.0.linear.bias"]
    assert sum(k.startswith("styles.17.convs.") for k in keys) == 12  # 64 px features: 6 convs
    shapes = {k: s for k, s, _ in spec}
    assert shapes["encoder.latlayer1.weight"] == (512, 256, 1, 1)
    assert shapes["encoder.latlayer2.weight"] == (512, 128, 1, 1)


def test_w_plus_assembly_routes_each_row_to_its_head_and_features():
    """Row 0 is w0; row i is w0 + head_i(features): rows 1-2 read c3, rows 3-6 p2 (latlayer1),
    rows 7+ p1 (latlayer1 and latlayer2). Perturbing one part must move exactly those rows."""
    encoder = Encoder4Editing.from_state_dict(_encoder_sd(_tiny()))
    x = seeded_input(2, 64)
    with torch.inference_mode():
        base = encoder(x)

        def moved_rows(param: torch.nn.Parameter) -> list[int]:
            saved = param.clone()
            param.add_(0.5)
            out = encoder(x)
            param.copy_(saved)
            return [i for i in range(TINY["n_styles"]) if not torch.equal(out[:, i], base[:, i])]

        assert moved_rows(encoder.styles[0].linear.bias) == list(range(10))
        assert moved_rows(encoder.styles[5].linear.bias) == [5]
        assert moved_rows(encoder.styles[8].convs[0].bias) == [8]
        assert moved_rows(encoder.latlayer1.bias) == list(range(3, 10))
        assert moved_rows(encoder.latlayer2.bias) == list(range(7, 10))
        for head in encoder.styles[1:]:
            head.linear.weight.zero_()
            head.linear.bias.zero_()
        flat = encoder(x)
    assert torch.equal(flat, base[:, :1].expand(-1, 10, -1))  # no deltas: every row is w0


def test_head_is_strided_convs_then_equal_linear():
    head = GradualStyleBlock(8, 6, spatial=4)
    assert [type(m).__name__ for m in head.convs] == ["Conv2d", "LeakyReLU", "Conv2d", "LeakyReLU"]
    x = torch.randn(3, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    h = x
    for conv in head.convs[::2]:
        h = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(h, conv.weight, conv.bias, 2, 1), 0.01)
    expected = h.flatten(1) @ (head.linear.weight / math.sqrt(6)).T + head.linear.bias
    torch.testing.assert_close(head(x), expected)
    with pytest.raises(ValueError, match="power of two"):
        GradualStyleBlock(8, 6, spatial=6)


def test_narrow_heads_keep_the_keys_and_load_back_with_their_width():
    torch.manual_seed(0)
    enc = Encoder4Editing(**TINY, head_width=8)
    upstream = Encoder4Editing(**TINY)
    assert list(enc.state_dict()) == list(upstream.state_dict())  # same key names, other shapes
    assert enc.styles[0].convs[0].weight.shape == (8, 64, 3, 3)
    assert enc.styles[0].linear.weight.shape == (32, 8)  # latent_dim x head width
    assert upstream.styles[0].linear.weight.shape == (32, 32) and upstream.head_width == 32
    loaded = Encoder4Editing.from_state_dict(dict(enc.state_dict()))
    assert loaded.head_width == 8 and loaded.input_size == 64
    x = seeded_input(2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), enc.eval()(x))
    with pytest.raises(ValueError, match="width must be positive"):
        GradualStyleBlock(8, 6, spatial=4, width=0)


@pytest.mark.parametrize("n_styles", [2, 5, 8, 14])
def test_fewer_styles_for_small_generators(n_styles):
    encoder = Encoder4Editing.from_state_dict(_encoder_sd(_tiny(n_styles=n_styles)))
    assert encoder.n_styles == n_styles and not encoder.training
    with torch.inference_mode():
        codes = encoder(seeded_input(1, 64))
    assert codes.shape == (1, n_styles, 32) and torch.isfinite(codes).all()
    assert [n_styles_for(s) for s in (4, 64, 256, 1024)] == [2, 10, 14, 18]


def test_strict_loading_lists_missing_unexpected_and_shapes():
    sd = _encoder_sd(_tiny())
    del sd["styles.4.linear.bias"]
    del sd["latlayer2.weight"]
    sd["styles.12.linear.weight"] = torch.zeros(32, 32)  # not a consecutive head: unexpected
    sd["body.3.res_layer.1.weight"] = torch.zeros(48, 32, 1, 1)
    with pytest.raises(ValueError) as e:
        Encoder4Editing.from_state_dict(sd)
    msg = str(e.value)
    assert "missing keys: ['styles.4.linear.bias', 'latlayer2.weight']" in msg
    assert "unexpected keys: ['styles.12.linear.weight']" in msg
    assert (
        "shape mismatches: ['body.3.res_layer.1.weight: file (48, 32, 1, 1) vs model (48, 32, 3, 3)']" in msg
    )


def test_checkpoint_level_checks():
    ckpt = _tiny()
    ckpt["state_dict"]["face_pool.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"outside 'encoder.\*' / 'decoder.\*': prefixes \['face_pool'\]"):
        e4e_from_checkpoint(ckpt)
    ckpt = _tiny()
    ckpt["opts"]["stylegan_size"] = 1024
    with pytest.raises(ValueError, match="needs 18 W\\+ rows but the encoder has 10 heads"):
        e4e_from_checkpoint(ckpt)
    ckpt = _tiny()
    del ckpt["latent_avg"]
    with pytest.raises(ValueError, match="no 'latent_avg'"):
        e4e_from_checkpoint(ckpt)
    ckpt = _tiny()
    ckpt["latent_avg"] = torch.zeros(18, 32)
    with pytest.raises(ValueError, match=r"latent_avg must be \(10, 32\) or \(32,\)"):
        e4e_from_checkpoint(ckpt)
    ckpt = _tiny()
    ckpt["latent_avg"] = torch.arange(32.0)
    _, latent_avg = e4e_from_checkpoint(ckpt)  # one row: repeated, as upstream's latent_avg.repeat
    assert torch.equal(latent_avg, torch.arange(32.0).expand(10, 32))
    with pytest.raises(ValueError, match="'state_dict' entry"):
        e4e_from_checkpoint({"g_ema": {}})


def test_batchnorm_counters_may_be_absent():
    sd = _encoder_sd(_tiny())
    x = seeded_input(1, 64)
    with torch.inference_mode():
        ref = Encoder4Editing.from_state_dict(dict(sd))(x)
        without = {k: v for k, v in sd.items() if not k.endswith(".num_batches_tracked")}
        assert torch.equal(Encoder4Editing.from_state_dict(without)(x), ref)


def test_official_file_format_loads_with_weights_only(tmp_path):
    """The real file's opts is a plain dict (str, int, float, bool, None, lists) and the state dict
    bundles the generator under decoder.*: torch.load(weights_only=True) must read it."""
    decoder = {"style.1.weight": torch.randn(8, 8), "conv1.conv.weight": torch.randn(1, 4, 4, 3, 3)}
    ckpt = _tiny(decoder=decoder)
    assert {type(v) for v in ckpt["opts"].values()} == {str, int, float, bool, type(None), list}
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save(ckpt, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert loaded["opts"] == ckpt["opts"]
    encoder, latent_avg = e4e_from_checkpoint(loaded)
    x = seeded_input(1, 64)
    ref, ref_avg = e4e_from_checkpoint(_tiny())
    with torch.inference_mode():
        expected = ref(x)
        assert torch.equal(encoder(x), expected) and torch.equal(latent_avg, ref_avg)
        app_encoder, avg = load_encoder(path)  # the app's loader (mmap, weights_only, encoder keys only)
        assert torch.equal(app_encoder(x), expected)
        assert torch.equal(avg, ref_avg)


def test_input_and_constructor_validation():
    encoder = Encoder4Editing(**TINY)
    with pytest.raises(AssertionError, match=r"expected \(B, 3, 64, 64\)"):
        encoder(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="power of two >= 32"):
        Encoder4Editing(**{**TINY, "input_size": 96})
    with pytest.raises(ValueError, match="n_styles must be positive"):
        Encoder4Editing(**{**TINY, "n_styles": 0})
    with pytest.raises(ValueError, match="strictly increasing"):
        Encoder4Editing(**{**TINY, "widths": (16, 32, 32, 64)})
    with pytest.raises(ValueError, match="power of two >= 4"):
        n_styles_for(1000)


def test_gradients_reach_the_input():
    encoder = Encoder4Editing.from_state_dict(_encoder_sd(_tiny()))
    x = seeded_input(1, 64).requires_grad_(True)
    encoder(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
