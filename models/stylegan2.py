"""StyleGAN2 generator (mapping + synthesis networks) with W+ and StyleSpace (S) entry points.

Papers: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020);
StyleSpace: Wu et al., "StyleSpace Analysis: Disentangled Controls for StyleGAN Image Generation"
(CVPR 2021), as used by Patashnik et al., "StyleCLIP" (ICCV 2021).

Compatible with rosinality/stylegan2-pytorch ``model.py`` (``Generator``): the state-dict keys and
shapes are exactly those of its ``g_ema`` (e.g. ``stylegan2-ffhq-config-f.pt``) for any size and
channel multiplier, and the maths is the same (equalized-lr linear layers, modulated convolutions
with demodulation eps 1e-8, upsampling by a stride-2 transposed convolution followed by a
[1, 3, 3, 1] blur, toRGB skip images upsampled with pad (2, 1)). The S vectors are the modulation
outputs (the stored modulation bias includes the +1), in the order of orpatashnik/StyleCLIP
``models/stylegan2/model.py`` (``input_is_stylespace``).

Synthesis always goes through S: ``synthesis(w_plus)`` is exactly
``synthesis_from_styles(w_plus_to_styles(w_plus))``. Each modulated convolution folds its style
(and demodulation) into a per-sample weight, so a batch-1 image is plain convolutions; activations
are kept channels-last, which oneDNN runs without layout conversions. Results agree with the
reference to float32 rounding (the order of some sums differs), not bit for bit.

For 1024-px images on CPU, large fresh tensors dominate unless PyTorch backs them with huge pages:
set ``THP_MEM_ALLOC_ENABLE=1`` in the environment before ``import torch``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.ops import LRELU_GAIN, LRELU_SLOPE, EqualLinear, FusedLeakyReLU, PixelNorm, make_kernel, upfirdn2d

DEMOD_EPS = 1e-8
NOISE_MODES = ("const", "random")
NOISE_SEED = 0  # seed of the default (rebuilt) noise buffers
# Style-gradient passes use the non-fused modulation on layers at least this wide: measured on 2 CPU
# cores it cuts forward+backward of the 512-channel 64-px layers by a third, but it is slower on
# the 32/64-channel layers at 512-1024 px, where the input scaling touches huge feature maps.
UNFUSED_MIN_CHANNELS = 128


def channels_for(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution up to ``size`` (rosinality ``Generator.channels``)."""
    m = channel_multiplier
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m}
    table[1024] = 16 * m
    return {r: c for r, c in table.items() if r <= size}


@dataclass(frozen=True)
class StyleLayer:
    """One StyleSpace layer: a modulated convolution and the style vector that drives it."""

    index: int  # position in the list of S tensors (0..25 at 1024 px)
    module: str  # state-dict prefix of the layer, e.g. "convs.4" or "to_rgbs.2"
    dim: int  # channels of the style vector (= input channels of the convolution)
    is_torgb: bool  # a toRGB layer (1x1, no demodulation)
    w_index: int  # W+ row whose modulation gives this style
    resolution: int  # output resolution of the layer in pixels


class Blur(nn.Module):
    """FIR filter ``kernel`` (buffer, flipped = true convolution) with zero padding ``pad``."""

    def __init__(
        self,
        kernel: Sequence[int],  # 1-D binomial-like taps, e.g. (1, 3, 3, 1)
        pad: tuple[int, int],  # zero padding before / after, both axes
        gain: float = 1.0,  # kernel multiplier (factor^2 after a 2x upsampling)
    ):
        super().__init__()
        self.register_buffer("kernel", make_kernel(list(kernel)) * gain)
        self.pad = pad

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Blur x (B, C, H, W); ``bias`` (C,) is added to the result (free in the conv epilogue)."""
        assert x.ndim == 4, f"expected (B, C, H, W), got {tuple(x.shape)}"
        c = x.shape[1]
        k = self.kernel.flip([0, 1]).to(dtype=x.dtype)
        weight = k.expand(c, 1, *k.shape)  # depthwise: one copy per channel
        bias = bias.to(x.dtype) if bias is not None else None
        p0, p1 = self.pad
        if p0 == p1:
            return F.conv2d(x, weight, bias, padding=p0, groups=c)
        return F.conv2d(F.pad(x, [p0, p1, p0, p1]), weight, bias, groups=c)


class Upsample(nn.Module):
    """2x FIR upsampling of the toRGB skip image (upfirdn2d up=2 with pad (2, 1) for 4 taps)."""

    def __init__(
        self,
        kernel: Sequence[int],  # 1-D taps, e.g. (1, 3, 3, 1)
        factor: int = 2,  # upsampling factor
    ):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(list(kernel)) * factor**2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4, f"expected (B, C, H, W), got {tuple(x.shape)}"
        c = x.shape[1]
        k = self.kernel.to(dtype=x.dtype)
        if self.pad[0] == self.pad[1] + self.factor - 1:
            # upfirdn2d(up=f, pad=(p0, p1)) as a depthwise transposed convolution with the unflipped
            # kernel: ~20x faster than zero insertion + single-channel conv on CPU.
            weight = k.expand(c, 1, *k.shape)
            padding = k.shape[0] - 1 - self.pad[0]
            return F.conv_transpose2d(x, weight, stride=self.factor, padding=padding, groups=c)
        return upfirdn2d(x, k, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per input channel by a style, then (optionally)
    demodulated to unit norm per output channel; optional 2x upsampling.

    ``forward`` takes the style itself (the S vector, ``modulation(w)``), so that W+ and S
    synthesis are the same computation. State-dict keys: ``weight`` (1, out, in, k, k),
    ``modulation.{weight,bias}``, and ``blur.kernel`` when upsampling.
    """

    def __init__(
        self,
        in_channels: int,  # input feature channels (= style dim)
        out_channels: int,  # output feature channels
        kernel_size: int,  # 3 for convolutions, 1 for toRGB
        style_dim: int,  # width of w
        demodulate: bool = True,  # normalise each output channel's weight (False for toRGB)
        upsample: bool = False,  # 2x upsampling (transposed conv stride 2 + blur)
        blur_kernel: Sequence[int] = (1, 3, 3, 1),  # 1-D FIR taps of the blur after upsampling
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2

    def modulated_weight(self, style: torch.Tensor) -> torch.Tensor:
        """(B, out, in, k, k) per-sample weight for styles (B, in)."""
        weight = self.scale * self.weight * style[:, None, :, None, None]  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + DEMOD_EPS)  # (B, out)
            weight = weight * demod[:, :, None, None, None]
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in, H, W), style (B, in) -> (B, out, H', W'); ``bias`` (out,) is added to the result
        (in the convolution's epilogue, which saves a pass over the features)."""
        b, c, h, w = x.shape
        assert c == self.in_channels and style.shape == (b, c), (
            f"expected x (B, {self.in_channels}, H, W) and style (B, {self.in_channels}), "
            f"got {tuple(x.shape)} and {tuple(style.shape)}"
        )
        if (
            self.demodulate
            and self.in_channels >= UNFUSED_MIN_CHANNELS
            and torch.is_grad_enabled()
            and style.requires_grad
            and not self.weight.requires_grad
        ):
            return self._forward_unfused(x, style, bias)
        weight = self.modulated_weight(style).to(x.dtype)  # (B, out, in, k, k)
        k = self.kernel_size
        if self.upsample:
            # Transposed conv with the weight seen as (in, out, k, k), as the reference does (its
            # TF converter flips the Conv0_up kernel for exactly this formulation).
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channels, k, k)
            if b == 1:
                out = F.conv_transpose2d(x, weight, stride=2)
            else:
                out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, groups=b)
                out = out.view(b, self.out_channels, *out.shape[2:])
            return self.blur(out, bias)  # (B, out, 2H, 2W)
        bias = bias.to(x.dtype) if bias is not None else None
        weight = weight.reshape(b * self.out_channels, c, k, k)
        if b == 1:
            return F.conv2d(x, weight, bias, padding=self.padding)
        out = F.conv2d(
            x.reshape(1, b * c, h, w),
            weight,
            bias.repeat(b) if bias is not None else None,
            padding=self.padding,
            groups=b,
        )
        return out.view(b, self.out_channels, *out.shape[2:])

    def _forward_unfused(
        self, x: torch.Tensor, style: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The same maths with the style applied to the input and the demodulation to the output
        (StyleGAN2's non-fused modulation). When gradients flow to the styles but not to the
        convolution weight (latent optimisation, mapper training) this skips the per-sample
        weight-gradient convolution, the costliest part of the fused form's backward pass, and
        shares one weight across the batch."""
        ct = torch.promote_types(style.dtype, torch.float32)  # float32, or float64 when given
        weight = (self.scale * self.weight[0]).to(x.dtype)  # (out, in, k, k)
        w2 = (self.scale * self.weight[0]).to(ct).pow(2).sum(dim=(2, 3))  # (out, in)
        demod = torch.rsqrt(style.to(ct).pow(2) @ w2.T + DEMOD_EPS).to(x.dtype)  # (B, out)
        x = x * style.to(x.dtype)[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # (B, out, 2H+1, 2W+1)
            return self.blur(out * demod[:, :, None, None], bias)
        out = F.conv2d(x, weight, padding=self.padding) * demod[:, :, None, None]
        return out if bias is None else out + bias.to(out.dtype)[None, :, None, None]


class NoiseInjection(nn.Module):
    """x + weight * noise, with a learned scalar ``weight`` (1,) and noise (B or 1, 1, H, W)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        assert noise.ndim == 4 and noise.shape[1] == 1 and noise.shape[2:] == x.shape[2:], (
            f"noise {tuple(noise.shape)} does not fit features {tuple(x.shape)}"
        )
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network, ``input`` (1, C, 4, 4)."""

    def __init__(
        self,
        channels: int,  # feature channels at 4 px
        size: int = 4,  # spatial size
    ):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (gain sqrt 2). Keys: ``conv.*``, ``noise.weight``,
    ``activate.bias``."""

    def __init__(
        self,
        in_channels: int,  # input feature channels
        out_channels: int,  # output feature channels
        kernel_size: int,  # spatial kernel size (3)
        style_dim: int,  # width of w
        upsample: bool = False,  # 2x upsampling before the activation
        blur_kernel: Sequence[int] = (1, 3, 3, 1),  # 1-D FIR taps of the upsampling blur
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Same maths as the reference's lrelu(conv + w * noise + bias) * sqrt 2, with the bias added
        inside the convolution; without autograd the remaining steps run in place (1024-px
        features are 128 MB each)."""
        out = self.conv(x, style, self.activate.bias)  # (B, out, H', W')
        assert noise.ndim == 4 and noise.shape[1] == 1 and noise.shape[2:] == out.shape[2:], (
            f"noise {tuple(noise.shape)} does not fit features {tuple(out.shape)}"
        )
        strength = self.noise.weight.to(out.dtype)
        noise = noise.to(out.dtype)
        if torch.is_grad_enabled():
            out = torch.addcmul(out, noise, strength)
            return F.leaky_relu(out, LRELU_SLOPE).mul(LRELU_GAIN)
        # scale the one-channel noise first: addcmul_ into channels_last features is ~8x slower on
        # CPU than add_ of a pre-scaled broadcast tensor (63 ms vs 8 ms at 1024 px in bf16)
        out.add_(noise * strength)
        return F.leaky_relu_(out, LRELU_SLOPE).mul_(LRELU_GAIN)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias, plus the upsampled skip image.
    Keys: ``conv.*``, ``bias`` (1, 3, 1, 1), ``upsample.kernel`` when upsampling."""

    def __init__(
        self,
        in_channels: int,  # input feature channels
        style_dim: int,  # width of w
        upsample: bool = True,  # upsample the incoming skip image 2x (False at 4 px)
        blur_kernel: Sequence[int] = (1, 3, 3, 1),  # 1-D FIR taps of the skip upsampling
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style, self.bias.view(3))  # (B, 3, H, W)
        if skip is not None:
            out = out + self.upsample(skip).to(out.dtype)
        return out


class Generator(nn.Module):
    """StyleGAN2 generator, rosinality ``g_ema`` layout.

    Entry points: :meth:`mapping` (z -> w), :meth:`synthesis` (W+ -> image),
    :meth:`w_plus_to_styles` and :meth:`synthesis_from_styles` (S), :meth:`style_layers` (S layout).
    Weights are not loaded here: use :meth:`from_state_dict` or :func:`load_generator_state`.
    """

    def __init__(
        self,
        *,
        size: int,  # output resolution in pixels (power of two, 8..1024)
        style_dim: int = 512,  # width of z and w
        n_mlp: int = 8,  # mapping-network layers
        channel_multiplier: int = 2,  # channel width factor above 32 px (2 = config f)
        channels: Mapping[int, int] | None = None,  # explicit {resolution: channels}, replaces the table
        blur_kernel: Sequence[int] = (1, 3, 3, 1),  # 1-D FIR taps for all up-sampling
        lr_mlp: float = 0.01,  # learning-rate multiplier of the mapping layers
    ):
        super().__init__()
        if not isinstance(size, int) or size < 8 or size > 1024 or size & (size - 1):
            raise ValueError(f"size must be a power of two between 8 and 1024, got {size!r}")
        if not isinstance(channel_multiplier, int) or channel_multiplier < 1:
            raise ValueError(f"channel_multiplier must be a positive integer, got {channel_multiplier!r}")
        if n_mlp < 1:
            raise ValueError(f"n_mlp must be at least 1, got {n_mlp}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.blur_kernel = tuple(int(k) for k in blur_kernel)
        self.log_size = int(math.log2(size))
        self.num_layers = 2 * (self.log_size - 2) + 1  # noise inputs / StyledConvs
        self.n_latent = 2 * self.log_size - 2  # W+ rows
        if channels is None:
            self.channels = channels_for(size, channel_multiplier)
        else:  # narrow generators (the offline demo model set); same keys, smaller shapes
            self.channels = {int(r): int(c) for r, c in channels.items() if int(r) <= size}
            need = [2**i for i in range(2, self.log_size + 1)]
            if sorted(self.channels) != need or any(c < 1 for c in self.channels.values()):
                raise ValueError(
                    f"channels must give a positive width for each resolution {need}, got {channels}"
                )

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )
        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=self.blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch[4]
        for lvl in range(3, self.log_size + 1):
            out_ch = ch[2**lvl]
            self.convs.append(
                StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=self.blur_kernel)
            )
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=self.blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_kernel=self.blur_kernel))
            in_ch = out_ch
        self.noises = nn.Module()
        for i, noise in enumerate(self._default_noises()):
            self.noises.register_buffer(f"noise_{i}", noise)
        self._layers = self._build_style_layers()

    # ----------------------------------------------------------------------------------------
    # layout

    def _build_style_layers(self) -> tuple[StyleLayer, ...]:
        layers = [
            StyleLayer(0, "conv1", self.channels[4], False, 0, 4),
            StyleLayer(1, "to_rgb1", self.channels[4], True, 1, 4),
        ]
        for k in range(self.log_size - 2):
            res = 2 ** (k + 3)
            layers += [
                StyleLayer(2 + 3 * k, f"convs.{2 * k}", self.channels[res // 2], False, 2 * k + 1, res),
                StyleLayer(3 + 3 * k, f"convs.{2 * k + 1}", self.channels[res], False, 2 * k + 2, res),
                StyleLayer(4 + 3 * k, f"to_rgbs.{k}", self.channels[res], True, 2 * k + 3, res),
            ]
        return tuple(layers)

    def style_layers(self) -> tuple[StyleLayer, ...]:
        """The S layers in generation order (26 at 1024 px): dims, toRGB flags, W+ rows, resolutions."""
        return self._layers

    @property
    def n_styles(self) -> int:
        return len(self._layers)

    def _modulated(self, layer: StyleLayer) -> ModulatedConv2d:
        return self.get_submodule(layer.module).conv

    def _default_noises(self) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(NOISE_SEED)
        return [
            torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=g)
            for i in range(self.num_layers)
        ]

    def default_buffers(self) -> dict[str, torch.Tensor]:
        """Deterministic values of the rebuildable buffers (blur kernels and noise), by state-dict key."""
        out = {}
        gain = 4.0  # factor^2 of the 2x upsampling
        for k in range(0, len(self.convs), 2):
            out[f"convs.{k}.conv.blur.kernel"] = make_kernel(list(self.blur_kernel)) * gain
        for k in range(len(self.to_rgbs)):
            out[f"to_rgbs.{k}.upsample.kernel"] = make_kernel(list(self.blur_kernel)) * gain
        for i, noise in enumerate(self._default_noises()):
            out[f"noises.noise_{i}"] = noise
        return out

    # ----------------------------------------------------------------------------------------
    # mapping

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim): PixelNorm, then the MLP."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"z must be (B, {self.style_dim}), got {tuple(z.shape)}")
        return self.style(z)

    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of ``mapping`` over ``n`` standard-normal z: (1, style_dim).

        With ``generator`` (a CPU ``torch.Generator``) the draws are reproducible; they equal
        ``torch.manual_seed(s); torch.randn(n, style_dim)`` for a generator seeded with ``s``.
        """
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        ref = self.input.input
        z = torch.randn(n, self.style_dim, generator=generator, dtype=torch.float32)
        return self.mapping(z.to(device=ref.device, dtype=ref.dtype)).mean(0, keepdim=True)

    @staticmethod
    def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
        """Truncation trick ``w_avg + psi * (w - w_avg)`` for w (B, 512) or W+ (B, n, 512)."""
        return w_avg + psi * (w - w_avg)

    # ----------------------------------------------------------------------------------------
    # W+ -> S -> image

    def _as_w_plus(self, w_plus: torch.Tensor) -> torch.Tensor:
        if w_plus.ndim == 2 and w_plus.shape[1] == self.style_dim:
            return w_plus[:, None, :].expand(-1, self.n_latent, -1)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"w_plus must be (B, {self.n_latent}, {self.style_dim}) or (B, {self.style_dim}), "
                f"got {tuple(w_plus.shape)}"
            )
        return w_plus

    def w_plus_to_styles(self, w_plus: torch.Tensor) -> list[torch.Tensor]:
        """W+ (B, n_latent, 512) or w (B, 512) -> the S tensors [(B, dim_i)], generation order."""
        w_plus = self._as_w_plus(w_plus)
        return [self._modulated(layer).modulation(w_plus[:, layer.w_index]) for layer in self._layers]

    def _check_out_size(self, out_size: int | None) -> int:
        if out_size is None:
            return self.size
        if not isinstance(out_size, int) or out_size < 4 or out_size > self.size or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of two between 4 and {self.size}, got {out_size!r}")
        return out_size

    def _noise(self, i: int, noise_mode: str, like: torch.Tensor, upsample: bool = False) -> torch.Tensor:
        """Noise of layer ``i`` for features ``like`` (at twice their resolution with ``upsample``)."""
        if noise_mode == "const":
            return getattr(self.noises, f"noise_{i}")
        b, _, h, w = like.shape
        f = 2 if upsample else 1
        return torch.randn(b, 1, f * h, f * w, device=like.device, dtype=like.dtype)

    def synthesis_from_styles(
        self,
        styles: Sequence[torch.Tensor],  # n_styles tensors (B, dim_i), see style_layers()
        *,
        noise_mode: str = "const",  # "const": the noises.* buffers; "random": fresh N(0, 1)
        out_size: int | None = None,  # stop at this resolution and return its skip image
    ) -> torch.Tensor:
        """S -> image (B, 3, out_size, out_size), nominally in [-1, 1] (not clamped).

        With ``out_size`` below ``size`` the network stops after that resolution's toRGB and
        returns the skip image the full network holds there (styles of later layers are unused).
        """
        if len(styles) != self.n_styles:
            raise ValueError(f"styles must hold {self.n_styles} tensors, got {len(styles)}")
        b = styles[0].shape[0]
        for layer, s in zip(self._layers, styles, strict=True):
            if s.ndim != 2 or s.shape != (b, layer.dim):
                raise ValueError(f"styles[{layer.index}] must be ({b}, {layer.dim}), got {tuple(s.shape)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        out_size = self._check_out_size(out_size)

        x = self.input(b).contiguous(memory_format=torch.channels_last)  # (B, 512, 4, 4)
        x = self.conv1(x, styles[0], self._noise(0, noise_mode, x))
        skip = self.to_rgb1(x, styles[1])  # (B, 3, 4, 4)
        for k in range(self.log_size - 2):
            if 2 ** (k + 2) >= out_size:
                break
            s_up, s_conv, s_rgb = styles[2 + 3 * k : 5 + 3 * k]
            x = self.convs[2 * k](x, s_up, self._noise(2 * k + 1, noise_mode, x, upsample=True))
            x = self.convs[2 * k + 1](x, s_conv, self._noise(2 * k + 2, noise_mode, x))  # (B, C, 2H, 2W)
            skip = self.to_rgbs[k](x, s_rgb, skip)
        return skip.contiguous()

    def synthesis(
        self,
        w_plus: torch.Tensor,  # (B, n_latent, 512) W+, or (B, 512) broadcast to every row
        *,
        noise_mode: str = "const",  # "const": the noises.* buffers; "random": fresh N(0, 1)
        out_size: int | None = None,  # stop at this resolution and return its skip image
    ) -> torch.Tensor:
        """W+ -> image (B, 3, out_size, out_size), nominally in [-1, 1] (not clamped)."""
        return self.synthesis_from_styles(
            self.w_plus_to_styles(w_plus), noise_mode=noise_mode, out_size=out_size
        )

    def forward(
        self,
        z: torch.Tensor,  # (B, 512) standard-normal latents
        *,
        truncation: float = 1.0,  # psi of the truncation trick (1 = none)
        truncation_latent: torch.Tensor | None = None,  # (1, 512) w_avg, needed when truncation < 1
        noise_mode: str = "const",  # see synthesis()
    ) -> torch.Tensor:
        """z -> image (B, 3, size, size): mapping, optional truncation, synthesis."""
        w = self.mapping(z)  # (B, 512)
        if truncation != 1.0:
            if truncation_latent is None:
                raise ValueError("truncation_latent is required when truncation != 1")
            w = self.truncate(w, truncation_latent, truncation)
        return self.synthesis(w, noise_mode=noise_mode)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],  # a g_ema state dict
        **overrides,  # constructor arguments replacing the inferred ones (e.g. blur_kernel)
    ) -> Generator:
        """Build a generator whose config is inferred from the shapes, and load it strictly."""
        config = {**infer_generator_config(state_dict), **overrides}
        model = cls(**config)
        load_generator_state(model, state_dict)
        return model


# --------------------------------------------------------------------------------------------
# loading


def _is_rebuildable(key: str) -> bool:
    return key.endswith(".conv.blur.kernel") or key.endswith(".upsample.kernel") or key.startswith("noises.")


def infer_generator_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``size``, ``style_dim``, ``n_mlp`` and the channel widths of a g_ema state dict.

    Widths that follow rosinality's table give ``channel_multiplier`` (the multiplier only shows
    above 32 px; smaller generators get the default 2); any other widths give ``channels``.

    Raises:
        ValueError: the keys do not look like a rosinality generator.
    """
    required = ("input.input", "conv1.conv.weight", "style.1.weight")
    absent = [k for k in required if k not in state_dict]
    if absent:
        raise ValueError(f"state_dict is not a StyleGAN2 g_ema: missing {absent}")
    n_rgb = 0
    while f"to_rgbs.{n_rgb}.conv.weight" in state_dict:
        n_rgb += 1
    if n_rgb == 0:
        raise ValueError("state_dict is not a StyleGAN2 g_ema: no to_rgbs.* layers")
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state_dict:
        n_mlp += 1
    size = 2 ** (n_rgb + 2)
    style_dim = int(state_dict["style.1.weight"].shape[1])
    widths = {4: int(state_dict["input.input"].shape[1])}
    for k in range(n_rgb):  # convs.{2k+1}: the second conv at 2^(k+3) px, (1, out, in, 3, 3)
        key = f"convs.{2 * k + 1}.conv.weight"
        if key not in state_dict:
            raise ValueError(f"state_dict is not a StyleGAN2 g_ema: missing {key}")
        widths[2 ** (k + 3)] = int(state_dict[key].shape[1])
    config: dict[str, Any] = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp}
    m = widths[64] // 256 if size >= 64 else 2
    if m >= 1 and widths == channels_for(size, m):
        config["channel_multiplier"] = m
    else:
        config["channels"] = widths
    return config


def load_generator_state(model: Generator, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Strictly load a g_ema state dict into ``model``.

    Only the constant blur kernels (``convs.N.conv.blur.kernel``, ``to_rgbs.N.upsample.kernel``) and
    the ``noises.*`` buffers may be absent (some circulating files lack them); they are rebuilt
    (kernels from ``blur_kernel``, noise from a fixed seed). Everything else must match exactly.

    Returns:
        The keys that were rebuilt.
    Raises:
        ValueError: listing every missing key, unexpected key and shape mismatch.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_missing = [k for k in missing if not _is_rebuildable(k)]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if bad_missing or unexpected or shapes:
        parts = []
        if bad_missing:
            parts.append(f"missing keys: {bad_missing}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected}")
        if shapes:
            parts.append(f"shape mismatches: {shapes}")
        raise ValueError(f"StyleGAN2 generator state dict (size {model.size}): " + "; ".join(parts))
    full = dict(state_dict)
    if missing:
        defaults = model.default_buffers()
        for k in missing:
            full[k] = defaults[k]
    model.load_state_dict(full, strict=True)
    return missing
