"""StyleCLIP's CLIP preprocessing and loss on a tiny seeded CLIP."""

from __future__ import annotations

import pytest
import torch

from editing.clip_text import CLIP_MEAN, CLIP_STD, ClipEncoder, clip_preprocess
from tests.tiny_clip import make_tiny_clip_folder


def _area_resample(img: torch.Tensor, out: int) -> torch.Tensor:
    """Exact area resampling in float64: each output pixel averages its footprint, with fractional
    weights for source pixels that straddle the footprint's edge."""
    size = img.shape[-1]
    step = size / out
    w = torch.zeros(out, size, dtype=torch.float64)
    for i in range(out):
        lo, hi = i * step, (i + 1) * step
        for j in range(int(lo), min(size, int(hi) + 1)):
            w[i, j] = max(0.0, min(hi, j + 1) - max(lo, j)) / step
    return torch.einsum("ih,bchw,jw->bcij", w, img.double(), w)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_clip_preprocess_is_area_resampling(size):
    img = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    ours = clip_preprocess(img)
    assert ours.shape == (2, 3, 224, 224)
    torch.testing.assert_close(ours.double(), _area_resample(img, 224), rtol=0, atol=1e-5)


def test_clip_preprocess_normalisation_and_bad_sizes():
    img = torch.zeros(1, 3, 32, 32)  # mid-grey in [-1, 1]
    x = clip_preprocess(img, normalize=True)
    for c in range(3):
        assert x[0, c].mean().item() == pytest.approx((0.5 - CLIP_MEAN[c]) / CLIP_STD[c], abs=1e-5)
    with pytest.raises(ValueError):
        clip_preprocess(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ValueError):
        clip_preprocess(torch.zeros(3, 32, 32))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return ClipEncoder.from_folder(make_tiny_clip_folder(tmp_path_factory.mktemp("clip")))


def test_clip_loss_is_one_minus_cosine_and_differentiable(tiny_clip):
    img = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    text = tiny_clip.encode_text(["a smiling face"])
    loss = tiny_clip.clip_loss(img, text)
    # The same quantity through transformers' own logits (logit_scale set to 100 as in trained CLIP).
    m = tiny_clip.model
    m.logit_scale.data.fill_(torch.log(torch.tensor(100.0)))
    tok = tiny_clip.tokenizer(["a smiling face"], padding="max_length", max_length=16, return_tensors="pt")
    logits = m(
        input_ids=tok["input_ids"],
        attention_mask=tok["attention_mask"],
        pixel_values=clip_preprocess(img, image_size=32),
    ).logits_per_image[:, 0]
    torch.testing.assert_close(loss, 1 - logits / 100, rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_text_embeddings_are_unit_and_distinct(tiny_clip):
    t = tiny_clip.encode_text(["grey hair", "a smiling face", "x" * 10_000])
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    assert (t[0] - t[1]).abs().max() > 1e-3


@pytest.mark.parametrize("size", [32, 64, 128, 256, 1024])
def test_matrix_resampling_equals_upstream_nearest_then_avgpool(size):
    from editing.clip_text import _reference_preprocess

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size), requires_grad=True)
    y = clip_preprocess(x)
    ref = _reference_preprocess(x, 224)
    assert y.shape == (2, 3, 224, 224)
    assert (y - ref).abs().max() < 1e-5
    w = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    (g1,) = torch.autograd.grad((y * w).sum(), x)
    (g2,) = torch.autograd.grad((ref * w).sum(), x)
    assert (g1 - g2).abs().max() < 1e-5


def test_cached_resampling_built_in_inference_mode_still_supports_autograd():
    with torch.inference_mode():
        clip_preprocess(torch.zeros(1, 3, 48 * 2, 48 * 2))  # first use, under inference mode
    x = torch.ones(1, 3, 96, 96, requires_grad=True)
    clip_preprocess(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_padding_to_the_longest_prompt_equals_padding_to_the_context(tmp_path):
    enc = ClipEncoder.from_folder(make_tiny_clip_folder(tmp_path / "clip", context_length=64))
    texts = ["a face", "a photo of a smiling face with glasses", "x"]
    with torch.no_grad():
        short = enc.encode_text(texts)
        tok = enc.tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
        out = enc.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        full = torch.nn.functional.normalize(enc.model.text_projection(out.pooler_output), dim=-1)
    assert torch.allclose(short, full, atol=1e-6)
