"""The weights registry: local folder, package files, Hub download (against a loopback fake Hub),
verification, the one error naming every missing file, and safe checkpoint reading."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from editing.clip_text import ClipEncoder
from editing.errors import WeightsCorruptError, WeightsUnavailableError
from editing.weights import (
    FFHQ_MODEL_SET,
    MAPPER_NAMES,
    REGISTRY,
    WeightStore,
    load_torch_file,
    read_generator_checkpoint,
    read_mapper_checkpoint,
)
from tests.fake_hub import FakeHub
from tests.tiny_clip import make_tiny_clip_folder


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_registry_covers_every_file_the_app_uses():
    assert set(FFHQ_MODEL_SET) <= set(REGISTRY)
    assert len(MAPPER_NAMES) == 14 and all(f"mapper-{m}" in REGISTRY for m in MAPPER_NAMES)
    assert REGISTRY["stylegan2-ffhq"].local_name == "stylegan2-ffhq-config-f.pt"
    assert REGISTRY["e4e-ffhq"].local_name == "e4e_ffhq_encode.pt"
    assert REGISTRY["ir-se50"].local_name == "model_ir_se50.pth"
    assert REGISTRY["fs3"].local_name == "fs3.npy"
    assert all(e.sources or e.package for e in REGISTRY.values())


def test_local_folder_override_and_flat_mappers(tmp_path):
    (tmp_path / "stylegan2-ffhq-config-f.pt").write_bytes(_bytes({"g_ema": {}}))
    (tmp_path / "purple_hair.pt").write_bytes(b"x")  # mappers may sit flat in the folder
    make_tiny_clip_folder(tmp_path / "clip-vit-base-patch32")
    store = WeightStore(local_dir=tmp_path, offline=True, cache_dir=tmp_path / "cache")
    assert store.fetch("stylegan2-ffhq") == tmp_path / "stylegan2-ffhq-config-f.pt"
    assert store.fetch("mapper-purple_hair") == tmp_path / "purple_hair.pt"
    clip_dir = store.fetch("clip-vit-b32")
    assert clip_dir == tmp_path / "clip-vit-base-patch32"
    assert ClipEncoder.from_folder(clip_dir).embed_dim == 16


def test_missing_files_are_all_named_with_how_to_provide_them(tmp_path):
    store = WeightStore(local_dir=tmp_path, offline=True, cache_dir=tmp_path / "cache")
    with pytest.raises(WeightsUnavailableError) as err:
        store.fetch_all(FFHQ_MODEL_SET)
    msg = str(err.value)
    for name in FFHQ_MODEL_SET:
        assert REGISTRY[name].local_name in msg
    assert "--weights" in msg and str(tmp_path) in msg
    assert [e.name for e in err.value.missing] == list(FFHQ_MODEL_SET)


def test_unknown_entry_and_missing_folder_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        WeightStore(local_dir=tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown weights entry"):
        WeightStore(offline=True, cache_dir=tmp_path).fetch("stylegan3")


def test_hub_download_tries_mirrors_caches_and_works_offline_afterwards(tmp_path):
    payload = _bytes({"g_ema": {"w": torch.arange(4.0)}, "latent_avg": torch.zeros(512)})
    # The first mirror (AIRI-Institute/StyleFeatureEditor) is absent: the second must be used.
    with FakeHub({"Awesimo/jojogan": {"stylegan2-ffhq-config-f.pt": payload}}) as hub:
        store = WeightStore(cache_dir=tmp_path, endpoint=hub.endpoint, offline=False, progress=False)
        assert store.locate("stylegan2-ffhq") is None
        path = store.fetch("stylegan2-ffhq")
        assert path.read_bytes() == payload
        store.fetch("stylegan2-ffhq")
        assert sum(hub.gets.values()) == 1, "a cached file was downloaded again"
    offline = WeightStore(cache_dir=tmp_path, offline=True)
    assert offline.fetch("stylegan2-ffhq") == path
    sd, latent_avg = read_generator_checkpoint(path)
    assert torch.equal(sd["w"], torch.arange(4.0)) and latent_avg.shape == (512,)


def test_clip_folder_download_from_hub(tmp_path):
    src = make_tiny_clip_folder(tmp_path / "src")
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    files["pytorch_model.bin"] = b"an alternative that must not be downloaded when safetensors exist"
    with FakeHub({"openai/clip-vit-base-patch32": files}) as hub:
        store = WeightStore(
            cache_dir=tmp_path / "cache", endpoint=hub.endpoint, offline=False, progress=False
        )
        folder = store.fetch("clip-vit-b32")
        assert "pytorch_model.bin" not in str(hub.gets), "the alternative weight file was fetched needlessly"
    enc = ClipEncoder.from_folder(folder)
    ref = ClipEncoder.from_folder(src)
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(enc.encode_image(img), ref.encode_image(img), rtol=0, atol=0)


def test_size_and_hash_verification(tmp_path):
    good = b"0123456789"
    entry = dataclasses.replace(REGISTRY["ir-se50"], size=len(good), sha256="0" * 64)
    (tmp_path / "model_ir_se50.pth").write_bytes(good[:5])
    store = WeightStore(
        local_dir=tmp_path, offline=True, cache_dir=tmp_path / "c", registry={"ir-se50": entry}
    )
    with pytest.raises(WeightsCorruptError, match="bytes"):
        store.fetch("ir-se50")
    (tmp_path / "model_ir_se50.pth").write_bytes(good)
    with pytest.raises(WeightsCorruptError, match="sha256"):
        store.fetch("ir-se50")


def test_dlib_landmark_model_comes_from_the_pip_package_and_verifies(tmp_path):
    store = WeightStore(offline=True, cache_dir=tmp_path)
    path = store.fetch("dlib-landmarks68")
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size == 99_693_937


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoints_that_need_code_execution_or_are_corrupt_are_refused(tmp_path):
    (tmp_path / "evil.pt").write_bytes(_bytes({"state_dict": _Evil()}))
    with pytest.raises(WeightsCorruptError, match="code execution"):
        load_torch_file(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsCorruptError):
        load_torch_file(tmp_path / "junk.pt")
    good = _bytes({"a": 1})
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(WeightsCorruptError):
        load_torch_file(tmp_path / "trunc.pt")


def test_mapper_reader_takes_only_mapper_keys(tmp_path):
    mapper = {
        "state_dict": {
            "mapper.course_mapping.mapping.1.weight": torch.ones(2, 2),
            "decoder.x": torch.ones(1),
        },
        "opts": {"no_fine_mapper": True},
    }
    (tmp_path / "m.pt").write_bytes(_bytes(mapper))
    sd, o = read_mapper_checkpoint(tmp_path / "m.pt")
    assert list(sd) == ["course_mapping.mapping.1.weight"] and o["no_fine_mapper"] is True
    (tmp_path / "gen.pt").write_bytes(_bytes({"g": {}}))
    with pytest.raises(WeightsCorruptError, match="g_ema"):
        read_generator_checkpoint(tmp_path / "gen.pt")


def test_unreachable_hub_fails_at_once_with_the_reason(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = WeightStore(local_dir=tmp_path, endpoint=endpoint, offline=False, progress=False)
    with pytest.raises(WeightsUnavailableError) as e:
        store.fetch_all(["stylegan2-ffhq", "e4e-ffhq"])
    assert "cannot be reached" in str(e.value) and "stylegan2-ffhq-config-f.pt" in str(e.value)
    assert store._reachable is False  # probed once, not per file and mirror
