"""Tensor <-> PIL conversions and latent files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from editing.synthesis import load_latent, pil_to_tensor, psnr, save_latent, tensor_to_pil


def test_round_trip_is_exact_on_8_bit_values():
    arr = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    img = pil_to_tensor(Image.fromarray(arr))
    assert img.shape == (1, 3, 16, 16) and img.min() >= -1 and img.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_pil(img)), arr)


def test_tensor_to_pil_clamps_and_batches():
    img = torch.stack([torch.full((3, 4, 4), -5.0), torch.full((3, 4, 4), 5.0)])
    a, b = tensor_to_pil(img)
    assert np.asarray(a).max() == 0 and np.asarray(b).min() == 255
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(1, 4, 4, 4))


def test_latent_files(tmp_path):
    w = torch.randn(1, 18, 512)
    save_latent(tmp_path / "w.npy", w)
    assert np.load(tmp_path / "w.npy").shape == (18, 512)
    torch.testing.assert_close(load_latent(tmp_path / "w.npy", 18), w)
    np.save(tmp_path / "w1.npy", np.ones(512, np.float32))
    assert load_latent(tmp_path / "w1.npy", 18).shape == (1, 18, 512)
    np.save(tmp_path / "bad.npy", np.ones((14, 512), np.float32))
    with pytest.raises(ValueError, match="needs"):
        load_latent(tmp_path / "bad.npy", 18)
    np.save(tmp_path / "nan.npy", np.full((18, 512), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        load_latent(tmp_path / "nan.npy", 18)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="readable"):
        load_latent(tmp_path / "obj.npy", 18)


def test_psnr():
    a = torch.zeros(1, 3, 8, 8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004), rel=1e-6)
