"""e4e encoder: an aligned 256 px face -> W+ offsets from the generator's average latent.

Paper: Tov et al., "Designing an Encoder for StyleGAN Image Manipulation" (SIGGRAPH 2021), on the
pSp architecture of Richardson et al., "Encoding in Style" (CVPR 2021): an IR-SE50 backbone, a
feature pyramid over three of its stages, and one "map2style" head per W+ row. e4e predicts a
single base code w0 from the coarsest features and, for every other row i, a delta added to it:
``codes[:, i] = w0 + delta_i``.

Compatible with omertov/encoder4editing ``models/encoders/psp_encoders.py`` (``Encoder4Editing
(50, 'ir_se')`` in its inference stage) and ``models/psp.py``: the state-dict keys of
:class:`Encoder4Editing` are exactly those following the ``encoder.`` prefix of
``e4e_ffhq_encode.pt`` (``input_layer.*``, ``body.0..23.*``, ``styles.0..17.*``,
``latlayer1.*``, ``latlayer2.*``). The checkpoint's top-level ``latent_avg`` (18, 512) is not part of
the module: :meth:`Encoder4Editing.forward` returns the codes without it, and
:func:`e4e_from_checkpoint` returns it next to the encoder; W+ = codes + latent_avg
(``editing.inversion.encode``). The backbone is ``models/irse.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.irse import (
    IRSE50_UNITS,
    IRSE50_WIDTHS,
    check_layout,
    layout_from_state_dict,
    load_state_dict_strict,
    make_body,
    make_input_layer,
    stage_ends,
)
from models.ops import EqualLinear

COARSE_END = 3  # rows [0, 3) read the coarsest features c3 (upstream ``coarse_ind``)
MIDDLE_END = 7  # rows [3, 7) read p2, rows [7, n_styles) read p1 (upstream ``middle_ind``)
HEAD_SLOPE = 0.01  # LeakyReLU slope inside the map2style heads (nn.LeakyReLU's default)


def n_styles_for(stylegan_size: int) -> int:
    """W+ rows of a generator of ``stylegan_size`` px: 2 * log2(size) - 2 (18 at 1024 px)."""
    log_size = int(math.log2(stylegan_size))
    if stylegan_size < 4 or 2**log_size != stylegan_size:
        raise ValueError(f"stylegan_size must be a power of two >= 4, got {stylegan_size}")
    return 2 * log_size - 2


class GradualStyleBlock(nn.Module):
    """map2style head: log2(spatial) x (conv3x3 stride 2 with bias + LeakyReLU 0.01) down to 1x1,
    then an equalized-lr linear layer. (B, C_in, spatial, spatial) -> (B, C_out).

    State-dict keys: ``convs.{0,2,4,...}.{weight,bias}`` and ``linear.{weight,bias}``.
    """

    def __init__(
        self,
        in_channels: int,  # channels of the feature map read
        out_channels: int,  # code width (the generator's latent size, 512)
        spatial: int,  # side of the feature map read, a power of two >= 2
        width: int | None = None,  # channels of the head's convs; None = out_channels (upstream)
    ):
        super().__init__()
        width = out_channels if width is None else width
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        n_convs = int(math.log2(spatial))
        if spatial < 2 or 2**n_convs != spatial:
            raise ValueError(f"spatial must be a power of two >= 2, got {spatial}")
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(
                nn.Conv2d(in_channels if i == 0 else width, width, 3, stride=2, padding=1)
            )
            layers.append(nn.LeakyReLU(HEAD_SLOPE))
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(width, out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spatial
        assert x.ndim == 4 and x.shape[1:] == (self.in_channels, s, s), (
            f"expected (B, {self.in_channels}, {s}, {s}), got {tuple(x.shape)}"
        )
        x = self.convs(x)  # (B, width, 1, 1)
        return self.linear(x.flatten(1))  # (B, C_out)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, spatial={self.spatial}, width={self.width}"


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FPN top-down step: bilinear (align_corners=True) resize of x to y's size, plus y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """e4e: (B, 3, S, S) aligned face in [-1, 1] -> (B, n_styles, latent_dim) codes.

    The codes exclude ``latent_avg``; W+ = codes + latent_avg. Features are tapped at the end of
    stages 2, 3 and 4 of the IR-SE body (``body[6]``, ``body[20]``, ``body[23]`` for IR-SE50:
    c1 at S/4, c2 at S/8, c3 at S/16). Rows [0, 3) read c3, rows [3, 7) the FPN level
    p2 = up(c3) + latlayer1(c2), rows [7, n_styles) p1 = up(p2) + latlayer2(c1).
    Weights are not loaded here: use :meth:`from_state_dict` or :func:`e4e_from_checkpoint`.
    """

    def __init__(
        self,
        n_styles: int = 18,  # W+ rows of the generator (18 at 1024 px, see n_styles_for)
        latent_dim: int = 512,  # width of a W+ row
        input_size: int = 256,  # S, input resolution in pixels: 16 * 2^k, k >= 1
        widths: Sequence[int] = IRSE50_WIDTHS,  # channels of the 4 backbone stages
        units: Sequence[int] = IRSE50_UNITS,  # IR-SE units per backbone stage
        head_width: int | None = None,  # channels of the map2style convs; None = latent_dim (upstream)
    ):
        super().__init__()
        if n_styles < 1:
            raise ValueError(f"n_styles must be positive, got {n_styles}")
        if input_size < 32 or 2 ** int(math.log2(input_size)) != input_size:
            raise ValueError(f"input_size must be a power of two >= 32, got {input_size}")
        self.widths, self.units = check_layout(widths, units)
        self.input_layer = make_input_layer(self.widths[0])
        self.body = make_body(self.widths, self.units)
        self.n_styles = n_styles
        self.latent_dim = latent_dim
        self.input_size = input_size
        top = self.widths[-1]
        # heads read c3 (S/16), p2 (S/8) or p1 (S/4): 16, 32, 64 px for a 256 px input
        sides = [
            input_size // (16 if i < COARSE_END else 8 if i < MIDDLE_END else 4) for i in range(n_styles)
        ]
        self.styles = nn.ModuleList(GradualStyleBlock(top, latent_dim, side, head_width) for side in sides)
        self.head_width = latent_dim if head_width is None else head_width
        self.latlayer1 = nn.Conv2d(self.widths[2], top, kernel_size=1)
        self.latlayer2 = nn.Conv2d(self.widths[1], top, kernel_size=1)
        ends = stage_ends(self.units)
        self.taps = (ends[1], ends[2], ends[3])  # body indices of c1, c2, c3

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],  # the ``encoder.*`` entries with the prefix removed
    ) -> Encoder4Editing:
        """Build an encoder with the configuration the tensors describe and load it strictly (eval).

        n_styles, latent_dim, the head width and the backbone layout come from the shapes; the input
        size from the number of convs of the first head (4 -> 256 px). The module adopts the given tensors
        (no copy), cast to float32 where needed.

        Raises:
            ValueError: missing / unexpected keys or wrong shapes (all listed), or an unreadable layout.
        """
        widths, units = layout_from_state_dict(state_dict)
        n_styles = 0
        while f"styles.{n_styles}.linear.weight" in state_dict:
            n_styles += 1
        if n_styles == 0:
            raise ValueError(
                "state_dict has no map2style heads (expected keys like 'styles.0.linear.weight')"
            )
        n_convs = sum(1 for k in state_dict if k.startswith("styles.0.convs.") and k.endswith(".weight"))
        latent_dim, head_width = (int(n) for n in state_dict["styles.0.linear.weight"].shape)
        with torch.device("meta"):  # no random init of weights that are replaced at once
            enc = cls(
                n_styles=n_styles,
                latent_dim=latent_dim,
                input_size=16 * 2 ** max(n_convs, 1),
                widths=widths,
                units=units,
                head_width=head_width,
            )
        load_state_dict_strict(enc, state_dict, "e4e encoder", assign=True)
        return enc.eval()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        assert img.ndim == 4 and img.shape[1:] == (3, s, s), (
            f"expected (B, 3, {s}, {s}), got {tuple(img.shape)}"
        )
        x = self.input_layer(img)  # (B, 64, S, S)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                feats[i] = x
        # c1 (B, 128, S/4, S/4), c2 (B, 256, S/8, S/8), c3 (B, 512, S/16, S/16)
        c1, c2, c3 = (feats[i] for i in self.taps)

        w0 = self.styles[0](c3)  # (B, 512)
        rows = [w0]
        features = c3
        for i in range(1, self.n_styles):
            if i == COARSE_END:
                features = p2 = upsample_add(c3, self.latlayer1(c2))  # (B, 512, S/8, S/8)
            elif i == MIDDLE_END:
                features = upsample_add(p2, self.latlayer2(c1))  # (B, 512, S/4, S/4)
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)  # (B, n_styles, 512)

    def extra_repr(self) -> str:
        size = f"n_styles={self.n_styles}, input_size={self.input_size}"
        return f"{size}, widths={self.widths}, units={self.units}"


def e4e_from_checkpoint(
    ckpt: Mapping[str, Any],  # the contents of an e4e file: {"state_dict", "opts", "latent_avg"}
) -> tuple[Encoder4Editing, torch.Tensor]:
    """Build the encoder strictly from the ``encoder.*`` keys of an e4e (pSp-format) checkpoint.

    The ``decoder.*`` keys (the bundled generator) are left to ``models/stylegan2.py``.

    Returns:
        ``(encoder in eval mode, latent_avg (n_styles, latent_dim) float32)``; a (latent_dim,)
        ``latent_avg`` is repeated to every row, as upstream's ``latent_avg.repeat`` does.
    Raises:
        ValueError: not a pSp-format dict, keys other than ``encoder.*`` / ``decoder.*``, encoder keys
            missing / unexpected / mis-shaped (all listed), ``opts["stylegan_size"]`` disagreeing with
            the number of heads, or ``latent_avg`` absent or of the wrong shape.
    """
    sd = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping):
        raise ValueError("ckpt must be a dict with a 'state_dict' entry (pSp format)")
    others = sorted({k.split(".", 1)[0] for k in sd if not k.startswith(("encoder.", "decoder."))})
    if others:
        raise ValueError(f"ckpt['state_dict'] has keys outside 'encoder.*' / 'decoder.*': prefixes {others}")
    enc_sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    encoder = Encoder4Editing.from_state_dict(enc_sd)
    opts = ckpt.get("opts") or {}
    size = opts.get("stylegan_size") if isinstance(opts, Mapping) else None
    if size is not None and n_styles_for(int(size)) != encoder.n_styles:
        raise ValueError(
            f"opts['stylegan_size']={size} needs {n_styles_for(int(size))} W+ rows but the encoder has "
            f"{encoder.n_styles} heads"
        )
    latent_avg = ckpt.get("latent_avg")
    if not isinstance(latent_avg, torch.Tensor):
        raise ValueError("ckpt has no 'latent_avg' tensor (e4e codes are offsets from it)")
    rows, dim = encoder.n_styles, encoder.latent_dim
    if tuple(latent_avg.shape) == (dim,):
        latent_avg = latent_avg.expand(rows, dim)
    elif tuple(latent_avg.shape) != (rows, dim):
        raise ValueError(f"latent_avg must be ({rows}, {dim}) or ({dim},), got {tuple(latent_avg.shape)}")
    return encoder, latent_avg.float().clone(memory_format=torch.contiguous_format)
