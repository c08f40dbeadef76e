"""The shared ops against direct definitions written with loops and plain tensor maths."""

import math

import torch

from models.ops import EqualLinear, PixelNorm, fused_leaky_relu, make_kernel, upfirdn2d


def _upfirdn2d_loops(x, k, up, down, pad0, pad1):
    """Textbook definition: zero-stuff, pad, true convolution, decimate (one channel)."""
    h, w = x.shape
    big = torch.zeros(h * up, w * up, dtype=torch.float64)
    big[::up, ::up] = x
    big = torch.nn.functional.pad(big[None, None], [pad0, pad1, pad0, pad1])[0, 0]
    kh, kw = k.shape
    oh, ow = big.shape[0] - kh + 1, big.shape[1] - kw + 1
    out = torch.zeros(oh, ow, dtype=torch.float64)
    for i in range(oh):
        for j in range(ow):
            acc = 0.0
            for a in range(kh):
                for b in range(kw):
                    acc += big[i + a, j + b] * k[kh - 1 - a, kw - 1 - b]
            out[i, j] = acc
    return out[::down, ::down]


def test_upfirdn2d_matches_loop_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 5, 6, generator=g, dtype=torch.float64)
    k = torch.rand(4, 4, generator=g, dtype=torch.float64)  # asymmetric: catches a missing flip
    for up, down, pad in [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (1, 2))]:
        ours = upfirdn2d(x, k, up=up, down=down, pad=pad)[0, 0]
        ref = _upfirdn2d_loops(x[0, 0], k, up, down, *pad)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_make_kernel_normalised_outer_product():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4)
    assert math.isclose(k.sum().item(), 1.0, rel_tol=1e-6)
    assert math.isclose(k[1, 1].item(), 9 / 64, rel_tol=1e-6)


def test_fused_leaky_relu_and_equal_linear():
    x = torch.tensor([[-1.0, 2.0]])
    out = fused_leaky_relu(x, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out, torch.tensor([[-0.5 * 0.2, 1.0]]) * math.sqrt(2))
    lin = EqualLinear(4, 3, bias_init=1.0, lr_mul=0.01)
    inp = torch.randn(2, 4)
    ref = inp @ (lin.weight * 0.01 / 2).T + lin.bias * 0.01
    torch.testing.assert_close(lin(inp), ref)


def test_pixel_norm_unit_rms():
    x = torch.randn(3, 512) * 7
    y = PixelNorm()(x)
    torch.testing.assert_close(y.pow(2).mean(1), torch.ones(3), rtol=1e-4, atol=1e-4)
