"""StyleCLIP latent mapper: parity with the reference, level masking, strict loading, file loading.

Goldens (``tests/golden/mapper.json``) come from orpatashnik/StyleCLIP ``mapper/latent_mappers.py``
``LevelsMapper`` (commit f87a47f, scratch copy patched only to drop the hard-coded CUDA transfer in
``models/stylegan2/op/fused_act.py``), loaded strictly from the seeded files and run as its
inference script does (``w + 0.1 * mapper(w)``). To regenerate::

    python -m scripts.seeded.mapper --out /work/scratch/mapper/files
    python /work/scratch/mapper/make_golden.py   # reference on those files -> tests/golden/mapper.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from editing.errors import WeightsCorruptError
from editing.mapper import apply_mapper, edited_rows, load_mapper, mapper_from_checkpoint, mapper_levels
from editing.weights import read_mapper_checkpoint
from models.latent_mapper import LevelsMapper, level_rows
from scripts.seeded.mapper import CASES, case, mapper_checkpoint, seeded_w_plus

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "mapper.json").read_text())
TOL = 1e-5


def _strip(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k[len("mapper.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("mapper.")}


def _check(t: torch.Tensor, g: dict, stride: int) -> float:
    assert list(t.shape) == g["shape"]
    err = (t.reshape(-1)[::stride] - torch.tensor(g["sample"])).abs().max().item()
    err = max(err, (t.abs().amax(dim=2) - torch.tensor(g["row_absmax"])).abs().max().item())
    assert math.isclose(t.double().mean().item(), g["mean"], abs_tol=TOL)
    assert math.isclose(t.double().std().item(), g["std"], abs_tol=TOL)
    return err


@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_reference(name):
    torch.set_num_threads(2)
    g = GOLDEN["cases"][name]
    ckpt, w_plus = case(name)
    assert math.isclose(w_plus.double().sum().item(), g["w_plus_sum"], rel_tol=1e-9), "seeded inputs changed"
    mapper = LevelsMapper.from_state_dict(_strip(ckpt), n_latent=g["n_latent"])
    assert list(mapper.levels) == g["levels"]
    with torch.inference_mode():
        delta = mapper(w_plus)
        w_edit = apply_mapper(mapper, w_plus, strength=g["strength"])
    err_delta = _check(delta, g["delta"], GOLDEN["stride"])
    err_edit = _check(w_edit, g["w_edit"], GOLDEN["stride"])
    assert err_delta <= TOL and err_edit <= TOL, (err_delta, err_edit)


def test_disabled_levels_leave_rows_exactly_unchanged():
    w_plus = seeded_w_plus(2, 18)
    for levels in [("coarse", "medium"), ("coarse", "fine"), ("medium",), ("fine",)]:
        mapper = mapper_from_checkpoint(_strip(mapper_checkpoint(levels)), {})
        assert mapper.levels == levels
        with torch.inference_mode():
            out = apply_mapper(mapper, w_plus, strength=0.7)
        rows = level_rows(18)
        for lv, r in rows.items():
            same = torch.equal(out[:, r.start : r.stop], w_plus[:, r.start : r.stop])
            assert same == (lv not in levels), (levels, lv)
        assert edited_rows(mapper) == tuple(i for lv in levels for i in rows[lv])


def test_strength_zero_is_identity_and_strength_is_linear():
    ckpt, w_plus = case("all")
    mapper = LevelsMapper.from_state_dict(_strip(ckpt))
    with torch.inference_mode():
        assert torch.equal(apply_mapper(mapper, w_plus, strength=0.0), w_plus)
        d1 = apply_mapper(mapper, w_plus, strength=0.1) - w_plus
        d2 = apply_mapper(mapper, w_plus, strength=0.2) - w_plus
    torch.testing.assert_close(d2, 2 * d1, rtol=1e-4, atol=1e-5)
    assert d1.abs().amax(dim=2).gt(0).all()  # every row of an all-level mapper moves


def test_level_mlp_matches_plain_maths():
    """One level written out: PixelNorm over the W+ row axis (upstream quirk), then 4 x
    lrelu_0.2(x @ (W * 0.01 / sqrt(C)).T + b * 0.01) * sqrt(2)."""
    c = 8
    mapper = LevelsMapper(levels=("medium",), n_latent=10, latent_dim=c)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in mapper.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).float() * 50)
    w = torch.randn(3, 10, c, generator=g)
    x = w[:, 4:8].double()
    x = x / torch.sqrt((x * x).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, 5):
        lin = mapper.medium_mapping.mapping[i]
        x = x @ (lin.weight.double() * 0.01 / math.sqrt(c)).T + lin.bias.double() * 0.01
        x = torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2)
    out = mapper(w)
    torch.testing.assert_close(out[:, 4:8].double(), x, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[:, :4], torch.zeros(3, 4, c)) and torch.equal(out[:, 8:], torch.zeros(3, 2, c))


def test_official_key_names():
    keys = list(LevelsMapper(latent_dim=4).state_dict())
    assert keys[:8] == [f"course_mapping.mapping.{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]
    assert len(keys) == 24 and keys[8].startswith("medium_mapping.") and keys[16].startswith("fine_mapping.")
    assert list(_strip(mapper_checkpoint())) == list(LevelsMapper().state_dict())  # seeded spec agrees


def test_strict_loading_lists_missing_and_unexpected_keys():
    sd = _strip(mapper_checkpoint(("coarse", "medium")))
    del sd["medium_mapping.mapping.3.bias"]
    sd["course_mapping.mapping.5.weight"] = torch.zeros(512, 512)
    with pytest.raises(ValueError) as e:
        LevelsMapper.from_state_dict(sd)
    assert "missing keys: ['medium_mapping.mapping.3.bias']" in str(e.value)
    assert "unexpected keys: ['course_mapping.mapping.5.weight']" in str(e.value)

    sd = _strip(mapper_checkpoint(("fine",)))
    sd["fine_mapping.mapping.2.weight"] = torch.zeros(512, 256)
    with pytest.raises(ValueError, match=r"shape mismatches: \['fine_mapping.mapping.2.weight"):
        LevelsMapper.from_state_dict(sd)

    with pytest.raises(ValueError, match="no LevelsMapper level"):
        LevelsMapper.from_state_dict({"mapping.mapping.1.weight": torch.zeros(512, 512)})  # a SingleMapper
    with pytest.raises(ValueError, match=r"unexpected keys: \['mapping.mapping.1.weight'\]"):
        LevelsMapper.from_state_dict(
            {**_strip(mapper_checkpoint(("coarse",))), "mapping.mapping.1.weight": torch.zeros(512, 512)}
        )


def test_constructor_and_input_validation():
    with pytest.raises(ValueError, match="unknown level"):
        LevelsMapper(levels=("course",))
    with pytest.raises(ValueError, match="at least one level"):
        LevelsMapper(levels=())
    with pytest.raises(ValueError, match=r"\['fine'\] cover no W\+ row"):
        LevelsMapper(n_latent=8)  # a 32 px generator has no fine rows
    assert level_rows(10) == {"coarse": range(0, 4), "medium": range(4, 8), "fine": range(8, 10)}
    assert level_rows(6) == {"coarse": range(0, 4), "medium": range(4, 6), "fine": range(6, 6)}
    assert LevelsMapper(levels=("coarse", "medium"), n_latent=6, latent_dim=4).rows["medium"] == range(4, 6)
    mapper = LevelsMapper(latent_dim=4)
    with pytest.raises(ValueError, match="w_plus must be"):
        apply_mapper(mapper, torch.zeros(2, 14, 4))
    with pytest.raises(ValueError, match="strength must be finite"):
        apply_mapper(mapper, torch.zeros(2, 18, 4), strength=float("nan"))


def test_level_info_for_display():
    mapper = LevelsMapper(levels=("coarse", "medium"), latent_dim=4)
    info = mapper_levels(mapper)
    assert [(i.name, i.rows, i.enabled) for i in info] == [
        ("coarse", range(0, 4), True),
        ("medium", range(4, 8), True),
        ("fine", range(8, 18), False),
    ]
    assert edited_rows(mapper) == tuple(range(8))


def test_gradients_reach_every_enabled_level():
    mapper = LevelsMapper(levels=("coarse", "fine"), latent_dim=8)
    apply_mapper(mapper, torch.randn(2, 18, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())


def test_loads_official_format_file_ignoring_decoder(tmp_path):
    decoder = {"style.1.weight": torch.randn(8, 8), "conv1.conv.weight": torch.randn(1, 4, 4, 3, 3)}
    w_plus = seeded_w_plus(2, 18)
    ckpt = mapper_checkpoint(("coarse", "medium"), decoder=decoder)
    assert any(k.startswith("decoder.") for k in ckpt["state_dict"])
    path = tmp_path / "surprised.pt"
    torch.save(ckpt, path)

    sd, opts = read_mapper_checkpoint(path)
    assert not any(k.startswith("decoder") or k.startswith("style") for k in sd)
    built = LevelsMapper.from_state_dict(sd)
    loaded = load_mapper(path)
    assert built.levels == loaded.levels == ("coarse", "medium") and not loaded.training
    ref = LevelsMapper.from_state_dict(_strip(case("no_fine")[0]))
    with torch.inference_mode():
        expected = apply_mapper(ref, w_plus)
        assert torch.equal(apply_mapper(built, w_plus), expected)
        assert torch.equal(apply_mapper(loaded, w_plus), expected)


def test_file_checks_against_opts(tmp_path):
    ckpt = mapper_checkpoint(("coarse", "medium"))
    ckpt["opts"]["no_fine_mapper"] = False  # says fine exists, but the weights have none
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsCorruptError, match=r"disagree on the levels \['fine'\]"):
        load_mapper(tmp_path / "bad.pt")

    ckpt = mapper_checkpoint(("coarse",))
    del ckpt["state_dict"]["mapper.course_mapping.mapping.4.bias"]
    torch.save(ckpt, tmp_path / "trunc.pt")
    with pytest.raises(WeightsCorruptError, match=r"missing keys: \['course_mapping.mapping.4.bias'\]"):
        load_mapper(tmp_path / "trunc.pt")

    ckpt = mapper_checkpoint()
    ckpt["opts"]["work_in_stylespace"] = True
    torch.save(ckpt, tmp_path / "s.pt")
    with pytest.raises(WeightsCorruptError, match="StyleSpace mapper"):
        load_mapper(tmp_path / "s.pt")

    torch.save(mapper_checkpoint(), tmp_path / "ok.pt")
    with pytest.raises(ValueError, match="trained for a 1024 px generator"):
        load_mapper(tmp_path / "ok.pt", n_latent=10)
    torch.save(mapper_checkpoint(stylegan_size=64), tmp_path / "ok64.pt")
    assert load_mapper(tmp_path / "ok64.pt", n_latent=10).rows["fine"] == range(8, 10)
