"""IR-SE50 (ArcFace) and the ID loss: parity with the references, strict loading, crop and loss maths.

Goldens (``tests/golden/irse50.json``) come from orpatashnik/StyleCLIP (commit f87a47f)
``models/facial_recognition/model_irse.py`` ``Backbone(112, 50, 'ir_se', drop_ratio=0.6)`` and
``criteria/id_loss.py`` ``IDLoss`` (scratch copy patched only to drop its hard-coded CUDA
transfer), loaded strictly
from the seeded ``model_ir_se50.pth``; TreB1eN/InsightFace_Pytorch ``model.py`` ``Backbone(50, 0.6,
'ir_se')`` gives bit-identical embeddings. To regenerate::

    python -m scripts.seeded.irse --out /work/scratch/irse/files
    python /work/scratch/irse/make_golden.py   # references on those files -> tests/golden/irse50.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from models.irse import IRSE50, IDLoss, id_input, layout_from_state_dict, unit_layout
from scripts.seeded.irse import id_pair, irse_spec, make_irse50_checkpoint, seeded_faces

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "irse50.json").read_text())
TOL = 1e-4
TINY = {"widths": (16, 32, 48, 64), "units": (1, 2, 2, 1), "input_size": 32, "embedding_dim": 24}


@pytest.fixture(scope="module")
def facenet() -> IRSE50:
    torch.set_num_threads(2)
    return IRSE50.from_state_dict(make_irse50_checkpoint())


def _tiny_ckpt(seed: int = 1) -> dict[str, torch.Tensor]:
    return make_irse50_checkpoint(seed, **TINY)


def test_embedding_parity_with_reference(facenet):
    g = GOLDEN["embedding"]
    x = seeded_faces(2, 112)
    assert math.isclose(x.double().sum().item(), GOLDEN["input_sum"], rel_tol=1e-9), "seeded inputs changed"
    with torch.inference_mode():
        emb = facenet(x)
    assert list(emb.shape) == g["shape"]
    err = (emb.reshape(-1)[:: g["stride"]] - torch.tensor(g["sample"])).abs().max().item()
    err = max(err, abs(emb.double().mean().item() - g["mean"]), abs(emb.double().std().item() - g["std"]))
    assert err <= TOL, err
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("batch", "size"), [(2, 256), (1, 512)])
def test_id_loss_parity_with_reference(facenet, batch, size):
    g = GOLDEN["id_loss"][f"size{size}"]
    img, source = id_pair(batch, size)
    assert math.isclose(img.double().sum().item(), g["img_sum"], rel_tol=1e-9), "seeded inputs changed"
    assert math.isclose(source.double().sum().item(), g["source_sum"], rel_tol=1e-9)
    loss_fn = IDLoss(facenet)
    with torch.inference_mode():
        loss = loss_fn(img, source)
        cos = loss_fn.identity_similarity(img, source)
    assert loss.shape == () and abs(loss.item() - g["loss"]) <= TOL, (loss.item(), g["loss"])
    assert (cos - torch.tensor(g["cos"])).abs().max().item() <= TOL
    assert 0.02 < g["loss"] < 0.5  # the goldens themselves are non-degenerate


def test_official_key_names_and_count():
    keys = list(IRSE50().state_dict())
    assert keys == [k for k, _, _ in irse_spec()]  # the seeded spec is written from the format, not the model
    assert len(keys) == 397
    assert sum(k.startswith(("input_layer.", "body.")) for k in keys) == 385
    assert keys[-12:-7] == [
        f"output_layer.0.{n}"
        for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    assert [k for k in keys if ".shortcut_layer.0." in k] == [
        f"body.{i}.shortcut_layer.0.weight" for i in (3, 7, 21)
    ]
    assert IRSE50().state_dict()["output_layer.3.weight"].shape == (512, 25088)


def test_layout_and_tiny_config():
    assert unit_layout((64, 128, 256, 512), (3, 4, 14, 3))[:4] == [
        (64, 64, 2),
        (64, 64, 1),
        (64, 64, 1),
        (64, 128, 2),
    ]
    sd = _tiny_ckpt()
    assert layout_from_state_dict(sd) == (TINY["widths"], TINY["units"])
    net = IRSE50.from_state_dict(sd)
    assert (net.input_size, net.embedding_dim, net.widths, net.units) == (
        32,
        24,
        TINY["widths"],
        TINY["units"],
    )
    assert not net.training
    with torch.inference_mode():
        emb = net(seeded_faces(3, 32))
    assert emb.shape == (3, 24) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), rtol=0, atol=1e-6)
    with pytest.raises(AssertionError, match=r"expected \(B, 3, 32, 32\)"):
        net(torch.zeros(1, 3, 64, 64))


def test_strict_loading_lists_missing_unexpected_and_shapes():
    sd = _tiny_ckpt()
    del sd["body.2.res_layer.5.fc1.weight"]
    sd["body.2.res_layer.6.weight"] = torch.zeros(3)
    sd["output_layer.3.bias"] = torch.zeros(25)
    with pytest.raises(ValueError) as e:
        IRSE50.from_state_dict(sd)
    msg = str(e.value)
    assert "missing keys: ['body.2.res_layer.5.fc1.weight']" in msg
    assert "unexpected keys: ['body.2.res_layer.6.weight']" in msg
    assert "shape mismatches: ['output_layer.3.bias: file (25,) vs model (24,)']" in msg
    with pytest.raises(ValueError, match="no IR-SE body"):
        IRSE50.from_state_dict({"output_layer.3.weight": torch.zeros(4, 4)})


def test_batchnorm_counters_may_be_absent_all_at_once_only():
    sd = _tiny_ckpt()
    x = seeded_faces(2, 32)
    with torch.inference_mode():
        ref = IRSE50.from_state_dict(dict(sd))(x)
        without = {k: v for k, v in sd.items() if not k.endswith(".num_batches_tracked")}
        assert len(without) < len(sd)
        net = IRSE50.from_state_dict(without)
        assert torch.equal(net(x), ref)
    assert all(v.item() == 0 for k, v in net.state_dict().items() if k.endswith(".num_batches_tracked"))
    partial = dict(sd)
    del partial["body.1.res_layer.4.num_batches_tracked"]
    with pytest.raises(ValueError, match=r"missing keys: \['body.1.res_layer.4.num_batches_tracked'\]"):
        IRSE50.from_state_dict(partial)
    without["body.1.res_layer.4.running_var"] = sd["body.1.res_layer.4.running_var"]
    del without["body.0.res_layer.2.weight"]  # only the counters are optional
    with pytest.raises(ValueError, match=r"missing keys: \['body.0.res_layer.2.weight'\]"):
        IRSE50.from_state_dict(without)


def test_file_loads_with_weights_only(tmp_path):
    torch.save(_tiny_ckpt(), tmp_path / "model_ir_se50.pth")
    sd = torch.load(tmp_path / "model_ir_se50.pth", map_location="cpu", weights_only=True, mmap=True)
    net = IRSE50.from_state_dict(sd)
    with torch.inference_mode():
        assert torch.equal(
            net(seeded_faces(1, 32)), IRSE50.from_state_dict(_tiny_ckpt())(seeded_faces(1, 32))
        )


def test_id_input_crop_and_pooling():
    img = torch.zeros(1, 3, 256, 256)
    img[:, :, 35:223, 32:220] = 1.0  # exactly the face crop
    out = id_input(img, 112)
    assert out.shape == (1, 3, 112, 112) and torch.equal(out, torch.ones(1, 3, 112, 112))
    # other sizes are average-pooled to 256 first: a 512 px image of 2x2 blocks gives the 256 px one
    g = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, 256, 256, generator=g) * 2 - 1
    big = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(id_input(big, 112), id_input(small, 112), rtol=0, atol=1e-6)
    # 188 -> 112 adaptive average pooling, written out for one output pixel (bins [0, 2) and [1, 4))
    crop = small[:, :, 35:223, 32:220]
    torch.testing.assert_close(id_input(small, 112)[:, :, 0, 1], crop[:, :, 0:2, 1:4].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match=r"img must be \(B, 3, H, H\)"):
        id_input(torch.zeros(1, 3, 256, 200))


def test_id_loss_maths_gradients_and_frozen_backbone():
    net = IRSE50.from_state_dict(_tiny_ckpt())
    loss_fn = IDLoss(net)
    img, source = id_pair(2, 64)
    img.requires_grad_(True)
    source.requires_grad_(True)
    loss = loss_fn(img, source)
    fa, fb = loss_fn.features(img), loss_fn.features(source)
    torch.testing.assert_close(loss, (1 - (fa * fb).sum(dim=1)).mean())
    loss.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert source.grad is None  # the source is a fixed target
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    with torch.inference_mode():
        assert abs(loss_fn(source, source).item()) < 1e-6
        torch.testing.assert_close(loss_fn.loss_from_features(img, fb), loss.detach())
    loss_fn.train()
    assert loss_fn.training and not net.training  # BatchNorm stays on its running statistics
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss_fn(img[:1], source)


def test_constructor_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        IRSE50(widths=(16, 16, 32, 64), units=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="strictly increasing"):
        IRSE50(widths=(8, 16, 32, 64), units=(1, 1, 1, 1))  # the SE bottleneck needs >= 16 channels
    with pytest.raises(ValueError, match="4 entries"):
        IRSE50(widths=(16, 32, 64), units=(1, 1, 1))
    with pytest.raises(ValueError, match="units must all be >= 1"):
        IRSE50(widths=(16, 32, 48, 64), units=(1, 0, 1, 1))
    with pytest.raises(ValueError, match="multiple of 16"):
        IRSE50(input_size=100)
