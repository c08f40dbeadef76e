"""StyleCLIP latent-mapper training on tiny seeded models: the objective, the latent-L2 bound,
disabled levels, the official file format, exact resumption, settings validation, the Ranger
optimiser against upstream, and the ``train-mapper`` command end to end.

The Ranger goldens (``RANGER_GOLDEN``) come from orpatashnik/StyleCLIP (commit f87a47f)
``mapper/training/ranger.py`` run verbatim on the seeded parameters and gradients of
:func:`_ranger_run`::

    python /work/scratch/mapper/ranger_golden.py   # prints the numbers below
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from editing.clip_text import ClipEncoder
from editing.editor import FaceEditor
from editing.mapper import apply_mapper, load_mapper
from editing.mapper_training import (
    MapperTrainingSettings,
    Ranger,
    add_train_mapper_arguments,
    batch_indices,
    evaluate_mapper,
    init_mapper,
    load_latents,
    load_training_state,
    mapper_checkpoint,
    mapper_opts,
    run_train_mapper,
    sample_latents,
    save_mapper_checkpoint,
    train_mapper,
)
from editing.weights import read_mapper_checkpoint
from models.irse import IRSE50, IDLoss
from models.stylegan2 import Generator
from scripts.seeded import seeded_state_dict
from scripts.seeded.irse import make_irse50_checkpoint
from scripts.seeded.stylegan2 import _rule as stylegan2_rule
from tests.tiny_clip import make_tiny_clip_folder

TINY_IRSE = {"widths": (16, 32, 48, 64), "units": (1, 2, 2, 1), "input_size": 32, "embedding_dim": 24}
# 64 px: 10 W+ rows, so all three levels exist (coarse [0:4], medium [4:8], fine [8:10])
NARROW = {4: 64, 8: 64, 16: 32, 32: 32, 64: 16}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    proto = Generator(size=64, n_mlp=2, channels=NARROW)
    spec = [(k, tuple(v.shape), v.dtype) for k, v in proto.state_dict().items()]
    g = Generator.from_state_dict(seeded_state_dict(spec, 11, stylegan2_rule)).eval().requires_grad_(False)
    w_avg = torch.randn(1, 512, generator=torch.Generator().manual_seed(1)) * 0.5
    clip = ClipEncoder.from_folder(make_tiny_clip_folder(tmp_path_factory.mktemp("clip")))
    identity = IDLoss(IRSE50.from_state_dict(make_irse50_checkpoint(1, **TINY_IRSE)))
    text = torch.nn.functional.normalize(
        torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    return {
        "g": g,
        "w_avg": w_avg,
        "clip": clip,
        "identity": identity,
        "text": text,
        "train": sample_latents(g, w_avg, 16, seed=0),
        "held": sample_latents(g, w_avg, 8, seed=1),
    }


def _parts(models: dict) -> tuple:
    return models["g"], models["clip"], models["identity"], models["text"]


def _settings(**kw) -> MapperTrainingSettings:
    base = {"loss_size": None, "log_every": 0, "preview_every": 0}
    return MapperTrainingSettings(**{**base, **kw})


def _edit_rms(mapper, w, strength=0.1) -> float:
    with torch.no_grad():
        return ((apply_mapper(mapper, w, strength) - w) ** 2).mean().sqrt().item()


# ------------------------------------------------------------------------------ the objective
def test_training_lowers_clip_loss_on_held_out_latents(models):
    g, clip, ident, text = _parts(models)
    s = _settings(steps=30, optimizer="adam", lr=0.5)
    before = evaluate_mapper(
        g, clip, text, init_mapper(s, g.n_latent), models["held"], settings=s, identity=ident
    )
    result = train_mapper(g, clip, text, models["train"], settings=s, identity=ident)
    after = evaluate_mapper(g, clip, text, result.mapper, models["held"], settings=s, identity=ident)
    assert after["clip"] < before["clip"] - 0.05
    assert result.steps == 30 and len(result.history) == 30 and not result.cancelled
    for h in result.history:  # total = clip_lambda * clip + l2_lambda * l2 + id_lambda * id
        assert h.total == pytest.approx(h.clip + 0.8 * h.l2 + 0.1 * h.id, rel=1e-5)
    assert not any(p.requires_grad for p in g.parameters())  # the generator stayed frozen


def test_step_losses_are_upstreams(models):
    """Step 1's losses, recomputed independently on its batch: CLIP mean, nn.MSELoss, ID mean."""
    g, clip, ident, text = _parts(models)
    s = _settings(steps=1, seed=3)
    result = train_mapper(g, clip, text, models["train"], settings=s, identity=ident)
    h = result.history[0]
    w = models["train"][batch_indices(16, 2, 3, 0)]
    m0 = init_mapper(s, g.n_latent)
    with torch.no_grad():
        w_hat = w + 0.1 * m0(w)
        x, x_hat = g.synthesis(w), g.synthesis(w_hat)
        clip_ref = (1 - clip.encode_image(x_hat) @ text[0]).mean().item()
        l2_ref = torch.nn.functional.mse_loss(w_hat, w).item()
        id_ref = (1 - ident.identity_similarity(x_hat, x)).mean().item()
    assert h.clip == pytest.approx(clip_ref, abs=1e-5)
    assert h.l2 == pytest.approx(l2_ref, rel=1e-5) and h.l2 > 0
    assert h.id == pytest.approx(id_ref, abs=1e-5) and h.id > 0
    ev = evaluate_mapper(g, clip, text, m0, w, settings=s, identity=ident)
    assert ev["clip"] == pytest.approx(clip_ref, abs=1e-5) and ev["l2"] == pytest.approx(l2_ref, rel=1e-5)
    assert ev["id"] == pytest.approx(id_ref, abs=1e-5)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(10, 3, 5, i) for i in range(3)])  # one epoch: 3 batches of 3
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9
    assert torch.equal(batch_indices(10, 3, 5, 4), batch_indices(10, 3, 5, 4))
    assert not torch.equal(batch_indices(10, 3, 5, 0), batch_indices(10, 3, 5, 3))  # new epoch, new order


def test_latent_l2_weight_bounds_the_edit(models):
    g, clip, text, held = models["g"], models["clip"], models["text"], models["held"]
    runs = {}
    for l2 in (0.0, 100.0):
        s = _settings(steps=20, optimizer="adam", lr=0.5, latent_l2_lambda=l2, id_lambda=0.0)
        runs[l2] = train_mapper(g, clip, text, models["train"], settings=s)
        if l2 == 0.0:
            assert all(h.l2 is None and h.id is None and h.total == h.clip for h in runs[l2].history)
    init = _edit_rms(init_mapper(_settings(), g.n_latent), held)
    free, bounded = _edit_rms(runs[0.0].mapper, held), _edit_rms(runs[100.0].mapper, held)
    assert free > 1.5 * init  # without the term the edit grows
    assert bounded < 0.5 * init and bounded < 0.25 * free


def test_sample_latents(models):
    g, w_avg = models["g"], models["w_avg"]
    w = sample_latents(g, w_avg, 5, seed=2, truncation=0.7)
    assert w.shape == (5, 10, 512) and w.dtype == torch.float32
    assert torch.equal(w, w[:, :1].expand_as(w))  # the same w on every row
    chunked = sample_latents(g, w_avg, 5, seed=2, truncation=0.7, chunk=2)  # BLAS sums vary with batch
    torch.testing.assert_close(chunked, w, rtol=0, atol=1e-5)
    z = torch.randn(5, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = w_avg + 0.7 * (g.mapping(z) - w_avg)
    torch.testing.assert_close(w[:, 0], ref, rtol=0, atol=1e-5)
    assert torch.allclose(sample_latents(g, w_avg, 2, truncation=0.0), w_avg.expand(2, 10, 512))


def test_load_latents(tmp_path):
    w = torch.randn(3, 10, 512, generator=torch.Generator().manual_seed(4))
    np.save(tmp_path / "w.npy", w.numpy())
    torch.save(w, tmp_path / "w.pt")  # upstream's train_faces.pt layout: one tensor
    np.save(tmp_path / "one.npy", w[0].numpy())
    assert torch.equal(load_latents(tmp_path / "w.npy", 10), w)
    assert torch.equal(load_latents(tmp_path / "w.pt", 10), w)
    assert torch.equal(load_latents(tmp_path / "one.npy", 10), w[:1])
    bad = w.clone()
    bad[0, 0, 0] = float("nan")
    np.save(tmp_path / "nan.npy", bad.numpy())
    np.save(tmp_path / "int.npy", np.zeros((1, 10, 512), dtype=np.int64))
    for name, match in (("w.npy", "18"), ("nan.npy", "NaN"), ("int.npy", "floating")):
        with pytest.raises(ValueError, match=match):
            load_latents(tmp_path / name, 18 if name == "w.npy" else 10)
    with pytest.raises(ValueError, match=".npy or .pt"):
        load_latents(tmp_path / "w.txt", 10)


# ------------------------------------------------------------------------------ levels and file
@pytest.mark.parametrize("off", [("fine",), ("coarse", "medium")])
def test_disabled_levels_leave_rows_unchanged_and_are_saved(models, tmp_path, off):
    g, clip, ident, text = _parts(models)
    held = models["held"]
    s = _settings(steps=3, optimizer="adam", lr=0.5, **{f"no_{lv}": True for lv in off})
    result = train_mapper(g, clip, text, models["train"], settings=s, identity=ident)
    rows = {"coarse": range(0, 4), "medium": range(4, 8), "fine": range(8, 10)}
    with torch.no_grad():
        edited = apply_mapper(result.mapper, held)
    for lv, r in rows.items():
        same = torch.equal(edited[:, r.start : r.stop], held[:, r.start : r.stop])
        assert same == (lv in off), lv

    path = tmp_path / "m.pt"
    opts = mapper_opts(s, description="purple hair", stylegan_size=64, steps_done=3)
    save_mapper_checkpoint(path, mapper_checkpoint(result.mapper, opts))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "opts"}
    assert all(k.startswith("mapper.") and v.dtype == torch.float32 for k, v in raw["state_dict"].items())
    names = {"coarse": "course_mapping", "medium": "medium_mapping", "fine": "fine_mapping"}
    for lv, name in names.items():
        assert any(k.startswith(f"mapper.{name}.") for k in raw["state_dict"]) == (lv not in off)
        assert raw["opts"][f"no_{lv}_mapper"] == (lv in off)
    assert raw["opts"]["description"] == "purple hair" and raw["opts"]["mapper_type"] == "LevelsMapper"
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in raw["opts"].values())

    sd, file_opts = read_mapper_checkpoint(path)
    assert set(sd) == set(result.mapper.state_dict())
    loaded = load_mapper(path, n_latent=10)
    assert loaded.levels == result.mapper.levels == s.levels
    with torch.no_grad():
        assert torch.equal(apply_mapper(loaded, held), edited)


def test_checkpoint_of_a_1024_mapper_has_the_official_size(tmp_path):
    s = MapperTrainingSettings()
    mapper = init_mapper(s, n_latent=18)
    path = save_mapper_checkpoint(
        tmp_path / "m.pt",
        mapper_checkpoint(mapper, mapper_opts(s, description="x", stylegan_size=1024, steps_done=0)),
    )
    tensor_bytes = 3 * 4 * (512 * 512 + 512) * 4  # 3 levels x 4 layers, fp32 = 12,607,488
    assert tensor_bytes <= path.stat().st_size < tensor_bytes + 64 * 1024
    loaded = load_mapper(path)  # n_latent 18, strict
    assert loaded.levels == ("coarse", "medium", "fine")
    for k, v in mapper.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_half_checkpoint_is_half_the_size_and_loads_as_fp32(tmp_path):
    s = MapperTrainingSettings(no_medium=True, no_fine=True)
    mapper = init_mapper(s, n_latent=10)
    opts = mapper_opts(s, description="x", stylegan_size=64, steps_done=0)
    full = save_mapper_checkpoint(tmp_path / "full.pt", mapper_checkpoint(mapper, opts))
    half = save_mapper_checkpoint(tmp_path / "half.pt", mapper_checkpoint(mapper, opts, torch.float16))
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_mapper(half, n_latent=10)
    w = torch.randn(4, 10, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(v.dtype == torch.float32 for v in loaded.state_dict().values())
        ref, out = mapper(w), loaded(w)
    assert (out - ref).abs().max() < 2e-3 * ref.abs().max()
    with pytest.raises(ValueError, match="dtype"):
        mapper_checkpoint(mapper, opts, torch.bfloat16)


def test_init_is_upstreams_and_seeded():
    a = init_mapper(MapperTrainingSettings(seed=1), 10)
    b = init_mapper(MapperTrainingSettings(seed=1), 10)
    c = init_mapper(MapperTrainingSettings(seed=2), 10)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
        if k.endswith("bias"):
            assert torch.equal(v, torch.zeros_like(v))
        else:  # randn / lr_mul
            assert 90 < v.std().item() < 110 and not torch.equal(v, c.state_dict()[k])


# ------------------------------------------------------------------------------ resumption
@pytest.mark.parametrize("optimizer", ["ranger", "adam"])
def test_resume_continues_exactly(models, tmp_path, optimizer):
    """8 steps straight == 3 steps, cancel, resume from the state file for 5 more (Ranger's
    Lookahead sync at step 6 happens after the resumption)."""
    g, clip, ident, text = _parts(models)
    train = models["train"]
    s = _settings(steps=8, optimizer=optimizer, loss_size=32, save_every=2)
    straight = train_mapper(g, clip, text, train, settings=s, identity=ident)

    state_path = tmp_path / "state.pt"
    steps_seen = []

    def stop_at_3(info):
        steps_seen.append(info.step)
        return info.step < 3

    first = train_mapper(
        g, clip, text, train, settings=s, identity=ident, state_path=state_path, on_step=stop_at_3
    )
    assert first.cancelled and first.steps == 3 and steps_seen == [1, 2, 3]
    state = torch.load(state_path, weights_only=True)  # plain tensors and containers only
    assert state["step"] == 3 and state["settings"]["optimizer"] == optimizer
    second = train_mapper(g, clip, text, train, settings=s, identity=ident, resume=state_path)
    assert second.steps == 8 and not second.cancelled
    assert [h.step for h in second.history] == [4, 5, 6, 7, 8]
    for a, b in zip(straight.history[3:], second.history, strict=True):
        assert a == b  # bitwise equal losses
    for k, v in straight.mapper.state_dict().items():
        assert torch.equal(second.mapper.state_dict()[k], v), k

    # the state written every save_every steps resumes too; settings that change the run may not
    mid = load_training_state(state_path)
    with pytest.raises(ValueError, match="lr"):
        changed = _settings(steps=8, optimizer=optimizer, loss_size=32, lr=0.1)
        train_mapper(g, clip, text, train, settings=changed, identity=ident, resume=mid)
    with pytest.raises(ValueError, match="latents differ"):
        train_mapper(g, clip, text, models["held"], settings=s, identity=ident, resume=mid)
    with pytest.raises(ValueError, match="text differs"):
        train_mapper(g, clip, -text, train, settings=s, identity=ident, resume=mid)


def test_on_step_previews_and_logs(models):
    g, clip, text = models["g"], models["clip"], models["text"]
    s = MapperTrainingSettings(steps=4, id_lambda=0.0, loss_size=32, preview_every=2, log_every=3)
    infos = []
    train_mapper(g, clip, text, models["train"], settings=s, on_step=infos.append)
    assert [i.step for i in infos] == [1, 2, 3, 4] and all(i.total == 4 and i.seconds > 0 for i in infos)
    assert [i.preview is not None for i in infos] == [False, True, False, True]
    assert infos[1].preview.shape == (4, 3, 32, 32)  # originals then edited, at loss_size
    assert [i.log for i in infos] == [False, False, True, True]  # every 3rd and the last


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 1.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("optimizer", "sgd"),
        ("clip_lambda", 0.0),
        ("latent_l2_lambda", -1.0),
        ("id_lambda", float("inf")),
        ("no_fine", "yes"),
        ("strength", 0.0),
        ("loss_size", 100),
        ("loss_size", True),
        ("seed", -1),
        ("save_every", -1),
        ("preview_every", None),
    ],
)
def test_bad_settings_raise(field, value):
    with pytest.raises(ValueError, match=field):
        MapperTrainingSettings(**{field: value})


def test_all_levels_disabled_raises():
    with pytest.raises(ValueError, match="no_coarse"):
        MapperTrainingSettings(no_coarse=True, no_medium=True, no_fine=True)


def test_bad_inputs_raise(models):
    g, clip, text, train = models["g"], models["clip"], models["text"], models["train"]
    s = _settings(steps=1, id_lambda=0.0)
    with pytest.raises(ValueError, match="latents"):
        train_mapper(g, clip, text, train[:, :9], settings=s)
    with pytest.raises(ValueError, match="batch_size"):
        train_mapper(g, clip, text, train[:1], settings=s)
    with pytest.raises(ValueError, match="identity"):
        train_mapper(g, clip, text, train, settings=_settings(steps=1))
    with pytest.raises(ValueError, match="levels"):
        train_mapper(g, clip, text, train, settings=s, mapper=init_mapper(_settings(no_fine=True), 10))


# ------------------------------------------------------------------------------ Ranger vs upstream
def _ranger_run(lr: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=g) * 100)
    b = torch.nn.Parameter(torch.randn(4, generator=g))
    opt = Ranger([w, b], lr=lr)
    for _ in range(14):  # RAdam's momentum-only phase (t <= 5), rectified phase, 2 Lookahead syncs
        w.grad = torch.randn(4, 3, generator=g) * scale
        b.grad = torch.randn(4, generator=g) * scale
        opt.step()
    return w.detach(), b.detach()


RANGER_GOLDEN = {
    (0.5, 1e-3): (
        [
            [154.07447814941406, -29.41567611694336, -217.78656005859375],
            [56.88763427734375, -108.43733978271484, -139.9130096435547],
            [40.24678421020508, 83.84580993652344, -71.85423278808594],
            [-40.40106201171875, -59.634944915771484, 18.23858070373535],
        ],
        [-0.8501218557357788, 1.0744925737380981, -1.052994728088379, 0.1274544596672058],
    ),
    (0.5, 1e-8): (
        [
            [154.099609375, -29.3428955078125, -217.87893676757812],
            [56.84312438964844, -108.45223999023438, -139.8595428466797],
            [40.334678649902344, 83.8026351928711, -71.9257583618164],
            [-40.334354400634766, -59.663536071777344, 18.20365333557129],
        ],
        [-0.8566734790802002, 1.100601315498352, -1.0711849927902222, 0.12270189821720123],
    ),
}


@pytest.mark.parametrize("lr, scale", list(RANGER_GOLDEN))
def test_ranger_matches_upstream(lr, scale):
    w, b = _ranger_run(lr, scale)
    w_ref, b_ref = RANGER_GOLDEN[(lr, scale)]
    torch.testing.assert_close(w, torch.tensor(w_ref), rtol=0, atol=1e-5)
    torch.testing.assert_close(b, torch.tensor(b_ref), rtol=0, atol=1e-6)


def test_ranger_state_survives_weights_only_round_trip(tmp_path):
    p = torch.nn.Parameter(torch.ones(3, 2))
    opt = Ranger([p], lr=0.1)
    p.grad = torch.arange(6.0).reshape(3, 2)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    opt2 = Ranger([torch.nn.Parameter(p.detach().clone())], lr=0.1)
    opt2.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# ------------------------------------------------------------------------------ command line
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_mapper_arguments(parser)
    return parser.parse_args(argv)


def test_cli_trains_writes_and_resumes(models, tmp_path):
    calls = []

    def factory(components):
        calls.append(components)
        return FaceEditor(
            generator=models["g"],
            w_avg=models["w_avg"],
            clip=models["clip"],
            identity=models["identity"],
            device="cpu",
            precision="fp32",
        )

    out = tmp_path / "purple.pt"
    common = ["--out", str(out), "--log-every", "1", "--loss-size", "32"]
    lines: list[str] = []
    args = _parse(["--prompt", "purple hair", *common, "--n-latents", "6", "--steps", "3", "--no-fine"])
    summary = run_train_mapper(args, factory, log=lines.append)
    assert calls == [("generator", "clip", "identity")]
    assert summary["steps"] == 3 and summary["levels"] == ["coarse", "medium"] and summary["n_latents"] == 6
    assert len(lines) == 3 and lines[0].startswith("step 1/3") and "s/step" in lines[0] and "id " in lines[0]
    mapper = load_mapper(out, n_latent=10)
    assert mapper.levels == ("coarse", "medium")
    _, opts = read_mapper_checkpoint(out)
    assert opts["description"] == "purple hair" and opts["no_fine_mapper"] and opts["steps_done"] == 3
    state_path = Path(summary["state"])
    assert state_path == tmp_path / "purple.state.pt" and state_path.is_file()

    # resume: prompt, levels and latents come from the state; only --steps changes
    args = _parse(["--resume", str(state_path), *common, "--steps", "5"])
    summary = run_train_mapper(args, factory, log=lines.append)
    assert summary["steps"] == 5 and summary["resumed_from"] == 3 and summary["steps_this_run"] == 2
    assert read_mapper_checkpoint(out)[1]["steps_done"] == 5 and load_mapper(out, 10).levels == mapper.levels

    # a W+ .npy file as training set, without the identity network
    w = sample_latents(models["g"], models["w_avg"], 4, seed=9).numpy()
    np.save(tmp_path / "w.npy", w)
    out2 = tmp_path / "two.pt"
    args = _parse(
        [
            "--prompt",
            "a smile",
            "--out",
            str(out2),
            "--latents",
            str(tmp_path / "w.npy"),
            "--steps",
            "2",
            "--id-lambda",
            "0",
            "--log-every",
            "0",
            "--loss-size",
            "32",
        ]
    )
    summary = run_train_mapper(args, factory, log=lines.append)
    assert calls[-1] == ("generator", "clip") and summary["n_latents"] == 4
    assert read_mapper_checkpoint(out2)[1]["loss_size"] == 32
    args = _parse(
        ["--prompt", "a smile", "--out", str(out2), "--n-latents", "2", "--steps", "1"]
        + ["--id-lambda", "0", "--loss-size", "full"]
    )
    run_train_mapper(args, factory, log=lines.append)
    assert read_mapper_checkpoint(out2)[1]["loss_size"] is None  # full resolution, as upstream
    assert load_mapper(out2, 10).levels == ("coarse", "medium", "fine")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--prompt", "x", "--out", "{tmp}/m.png"], "must end in .pt"),
        (["--prompt", "x", "--out", "{tmp}/missing/m.pt"], "does not exist"),
        (["--out", "{tmp}/m.pt"], "--prompt is required"),
        (["--prompt", "x", "--out", "{tmp}/m.pt", "--lr", "-1"], "lr"),
        (["--prompt", "x", "--out", "{tmp}/m.pt", "--latents", "{tmp}/none.npy"], "does not exist"),
        (["--prompt", "x", "--out", "{tmp}/m.pt", "--n-latents", "0"], "--n-latents"),
        (["--prompt", "x", "--out", "{tmp}/m.pt", "--no-coarse", "--no-medium", "--no-fine"], "no_coarse"),
    ],
)
def test_cli_rejects_bad_arguments_before_loading_models(tmp_path, argv, match):
    def factory(components):
        raise AssertionError("models must not be loaded for bad arguments")

    args = _parse([a.replace("{tmp}", str(tmp_path)) for a in argv])
    with pytest.raises(ValueError, match=match):
        run_train_mapper(args, factory)


def test_cli_resume_rejects_conflicting_flags(models, tmp_path):
    s = _settings(steps=1, id_lambda=0.0, loss_size=32)
    state_path = tmp_path / "s.pt"
    train_mapper(
        models["g"], models["clip"], "purple hair", models["train"], settings=s, state_path=state_path
    )
    conflicts = ((["--lr", "0.1"], "--lr"), (["--no-fine"], "--no-fine"), (["--prompt", "b"], "prompt"))
    for extra, match in conflicts:
        args = _parse(["--resume", str(state_path), "--out", str(tmp_path / "m.pt"), *extra])
        with pytest.raises(ValueError, match=match):
            run_train_mapper(args, lambda c: pytest.fail("no models for a bad resume"))
    assert math.isfinite(load_training_state(state_path)["step"])
