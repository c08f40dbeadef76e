"""IR-SE ResNet (ArcFace face-recognition backbone) and the identity loss built on it.

Papers: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (CVPR 2019),
for the improved-residual (IR) units with squeeze-and-excitation (SE, Hu et al., CVPR 2018);
the identity loss is the one of Richardson et al., "Encoding in Style" (pSp, CVPR 2021) as used by
Patashnik et al., "StyleCLIP" (ICCV 2021).

Compatible with TreB1eN/InsightFace_Pytorch ``model.py`` (``Backbone(50, 0.6, 'ir_se')``) and its
copies in omertov/encoder4editing ``models/encoders/model_irse.py`` / ``helpers.py`` and
orpatashnik/StyleCLIP ``models/facial_recognition/model_irse.py``: the state-dict keys of
:class:`IRSE50` are exactly those of ``model_ir_se50.pth`` (``input_layer.*``, ``body.0..23.*``,
``output_layer.{0,3,4}.*``), and :func:`make_input_layer` / :func:`make_body` give the
``input_layer.*`` / ``body.*`` keys shared with the e4e encoder (``models/e4e.py``).
:class:`IDLoss` follows StyleCLIP ``criteria/id_loss.py``.

Layout of the body: 4 stages of ``units[s]`` IR-SE units of width ``widths[s]``; the first unit of
every stage has stride 2. The official 50-layer network is ``widths=(64, 128, 256, 512)``,
``units=(3, 4, 14, 3)``; narrower / shallower settings keep the same key naming (for tiny test
models). Widths must increase from stage to stage (as in every upstream configuration), so a
checkpoint's layout can be read back from its tensor shapes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IRSE50_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)  # channels of the 4 stages
IRSE50_UNITS: tuple[int, ...] = (3, 4, 14, 3)  # IR-SE units per stage (50 layers)
N_STAGES = 4  # every stage halves the resolution: output = input / 16
SE_REDUCTION = 16  # squeeze-and-excitation bottleneck ratio (upstream: fixed)
PRELU_INIT = 0.25  # nn.PReLU's default slope

ID_IMAGE_SIZE = 256  # the ID loss pools other sizes to this first (StyleCLIP criteria/id_loss.py)
ID_CROP_ROWS = (35, 223)  # face region of an FFHQ-aligned 256 px image (rows)
ID_CROP_COLS = (32, 220)  # (columns)

# BatchNorm's batch counter: only used when training with momentum=None; whether the official
# model_ir_se50.pth stores it is unverified, so a file may carry all of them or none.
OPTIONAL_BUFFER_SUFFIX = ".num_batches_tracked"


# ---------------------------------------------------------------------------- building blocks
class SEModule(nn.Module):
    """Squeeze-and-excitation: x * sigmoid(fc2(relu(fc1(mean_hw(x))))), 1x1 convs without bias.

    State-dict keys: ``fc1.weight`` (C/16, C, 1, 1), ``fc2.weight`` (C, C/16, 1, 1).
    """

    def __init__(
        self,
        channels: int,  # C, input and output channels
        reduction: int = SE_REDUCTION,  # hidden width = C // reduction
    ):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"channels must be >= reduction ({reduction}), got {channels}")
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # (B, C, 1, 1)
        return x * s


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE (upstream ``bottleneck_IR_SE``).

    res = SE(BN(conv3x3_stride(PReLU(conv3x3(BN(x)))))); out = res + shortcut(x), where the
    shortcut is a strided subsampling (upstream ``MaxPool2d(1, stride)``, no keys) when the width
    is unchanged, else conv1x1(stride) + BN (keys ``shortcut_layer.{0,1}.*``).
    Residual keys: ``res_layer.0`` BN(in), ``.1`` conv in->out, ``.2`` PReLU(out), ``.3`` conv
    out->out, ``.4`` BN(out), ``.5`` SE(out).
    """

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels ("depth" upstream)
        stride: int,  # 1, or 2 for the first unit of a stage (halves H and W)
    ):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels, init=PRELU_INIT),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            SEModule(out_channels),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.in_channels, (
            f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
        )
        return self.res_layer(x) + self.shortcut_layer(x)  # (B, out, H / stride, W / stride)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"


def check_layout(
    widths: Sequence[int],  # channels of the 4 stages, strictly increasing
    units: Sequence[int],  # IR-SE units per stage, each >= 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate a body layout and return it as tuples.

    Raises:
        ValueError: not 4 stages, a width below the SE ratio or not increasing, a stage without units.
    """
    widths, units = tuple(int(w) for w in widths), tuple(int(u) for u in units)
    if len(widths) != N_STAGES or len(units) != N_STAGES:
        raise ValueError(f"widths and units must have {N_STAGES} entries, got {widths} and {units}")
    if widths[0] < SE_REDUCTION or any(b <= a for a, b in itertools.pairwise(widths)):
        raise ValueError(f"widths must be >= {SE_REDUCTION} and strictly increasing, got {widths}")
    if min(units) < 1:
        raise ValueError(f"units must all be >= 1, got {units}")
    return widths, units


def unit_layout(
    widths: Sequence[int],  # channels of the 4 stages
    units: Sequence[int],  # IR-SE units per stage
) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of every unit, in ``body`` order; the stem has
    ``widths[0]`` channels, so the first unit keeps its width and subsamples (upstream layout)."""
    widths, units = check_layout(widths, units)
    layout, prev = [], widths[0]
    for width, n in zip(widths, units, strict=True):
        layout.append((prev, width, 2))
        layout += [(width, width, 1)] * (n - 1)
        prev = width
    return layout


def stage_ends(units: Sequence[int]) -> tuple[int, ...]:
    """Index in ``body`` of the last unit of each stage, e.g. (2, 6, 20, 23) for IR-SE50."""
    return tuple(end - 1 for end in itertools.accumulate(units))


def make_input_layer(
    width: int = IRSE50_WIDTHS[0],  # stem channels (= widths[0])
) -> nn.Sequential:
    """The stem (keys ``input_layer.{0,1,2}``): conv3x3 3->width without bias, BN, PReLU."""
    return nn.Sequential(
        nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width, init=PRELU_INIT),
    )


def make_body(
    widths: Sequence[int] = IRSE50_WIDTHS,  # channels of the 4 stages
    units: Sequence[int] = IRSE50_UNITS,  # IR-SE units per stage
) -> nn.Sequential:
    """The residual body (keys ``body.{i}.*``), one :class:`BottleneckIRSE` per unit."""
    return nn.Sequential(*(BottleneckIRSE(i, o, s) for i, o, s in unit_layout(widths, units)))


def layout_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Read (widths, units) back from the ``body.{i}.res_layer.1.weight`` shapes.

    Raises:
        ValueError: no body keys, or a layout that :func:`check_layout` rejects.
    """
    depths = []
    while f"body.{len(depths)}.res_layer.1.weight" in state_dict:
        depths.append(int(state_dict[f"body.{len(depths)}.res_layer.1.weight"].shape[0]))
    if not depths:
        raise ValueError("state_dict has no IR-SE body (expected keys like 'body.0.res_layer.1.weight')")
    widths, units = [depths[0]], [0]
    for d in depths:
        if d != widths[-1]:
            widths.append(d)
            units.append(0)
        units[-1] += 1
    return check_layout(widths, units)


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    what: str,  # the network's name, for the error message
    assign: bool = False,  # adopt the given tensors instead of copying (for modules built on "meta")
) -> None:
    """``load_state_dict(strict=True)`` raising one ValueError that lists every missing key,
    unexpected key and shape mismatch.

    The only tolerated absence is BatchNorm's ``num_batches_tracked`` counter, and only all of them
    at once (an older file format); they are then set to 0. Nothing is ever skipped. With
    ``assign=True`` the module shares storage with ``state_dict`` (cast to the module's dtypes).
    """
    own = module.state_dict()
    counters = [k for k in own if k.endswith(OPTIONAL_BUFFER_SUFFIX)]
    no_counters = not any(k in state_dict for k in counters)
    missing = [k for k in own if k not in state_dict and not (no_counters and k in counters)]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected}")
        if shapes:
            parts.append(f"shape mismatches: {shapes}")
        raise ValueError(f"{what} state dict: " + "; ".join(parts))
    full = {k: state_dict[k].to(own[k].dtype) for k in own if k in state_dict}
    if no_counters:
        full.update({k: torch.zeros((), dtype=own[k].dtype) for k in counters})
    module.load_state_dict(full, strict=True, assign=assign)


# ---------------------------------------------------------------------------- the network
class IRSE50(nn.Module):
    """ArcFace IR-SE backbone: (B, 3, S, S) face crop in [-1, 1] -> (B, 512) unit-norm embedding.

    Upstream ``Backbone(input_size=112, num_layers=50, mode='ir_se', drop_ratio=0.6, affine=True)``.
    Weights are not loaded here: build with :meth:`from_state_dict`, or construct and train.
    """

    def __init__(
        self,
        input_size: int = 112,  # S, input resolution in pixels (a multiple of 16)
        widths: Sequence[int] = IRSE50_WIDTHS,  # channels of the 4 stages
        units: Sequence[int] = IRSE50_UNITS,  # IR-SE units per stage
        embedding_dim: int = 512,  # size of the identity embedding
        drop_ratio: float = 0.6,  # dropout before the embedding layer (training only)
    ):
        super().__init__()
        self.widths, self.units = check_layout(widths, units)
        if input_size < 16 or input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        side = input_size // 16  # 7 for 112 px
        self.input_layer = make_input_layer(self.widths[0])
        self.body = make_body(self.widths, self.units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(self.widths[-1]),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(self.widths[-1] * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],  # e.g. the contents of model_ir_se50.pth
    ) -> IRSE50:
        """Build a backbone with the layout the tensors describe and load it strictly (eval mode).

        The module adopts the given tensors (no copy), cast to float32 where needed.

        Raises:
            ValueError: missing / unexpected keys or wrong shapes (all listed), or an unreadable layout.
        """
        widths, units = layout_from_state_dict(state_dict)
        lin = state_dict.get("output_layer.3.weight")
        if lin is None or lin.ndim != 2:
            raise ValueError("state_dict has no 2-D 'output_layer.3.weight'; it is not an IR-SE backbone")
        side = math.isqrt(int(lin.shape[1]) // widths[-1])
        with torch.device("meta"):  # no random init of weights that are replaced at once
            net = cls(input_size=16 * side, widths=widths, units=units, embedding_dim=int(lin.shape[0]))
        load_state_dict_strict(net, state_dict, "IR-SE backbone", assign=True)
        return net.eval()

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        assert img.ndim == 4 and img.shape[1:] == (3, s, s), (
            f"expected (B, 3, {s}, {s}), got {tuple(img.shape)}"
        )
        x = self.input_layer(img)  # (B, 64, S, S)
        x = self.body(x)  # (B, 512, S / 16, S / 16)
        x = self.output_layer(x)  # (B, 512)
        return x / torch.norm(x, p=2, dim=1, keepdim=True)  # (B, 512), unit L2 norm

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, widths={self.widths}, units={self.units}"


# ---------------------------------------------------------------------------- identity loss
def id_input(img: torch.Tensor, input_size: int = 112) -> torch.Tensor:
    """The face crop the ID loss feeds to the backbone (StyleCLIP ``IDLoss.extract_feats``).

    Args:
        img: (B, 3, H, H) float in [-1, 1], an FFHQ-aligned face of any size.
        input_size: the backbone's input resolution.
    Returns:
        (B, 3, input_size, input_size): average-pooled to 256 px unless already 256 px, cropped to
        rows 35:223 and columns 32:220, average-pooled to ``input_size``.
    """
    if img.ndim != 4 or img.shape[1] != 3 or img.shape[2] != img.shape[3]:
        raise ValueError(f"img must be (B, 3, H, H), got {tuple(img.shape)}")
    if img.shape[2] != ID_IMAGE_SIZE:
        img = F.adaptive_avg_pool2d(img, (ID_IMAGE_SIZE, ID_IMAGE_SIZE))  # (B, 3, 256, 256)
    img = img[:, :, ID_CROP_ROWS[0] : ID_CROP_ROWS[1], ID_CROP_COLS[0] : ID_CROP_COLS[1]]  # (B, 3, 188, 188)
    return F.adaptive_avg_pool2d(img, (input_size, input_size))


class IDLoss(nn.Module):
    """Identity loss ``mean_b(1 - cos(f(img_b), f(source_b)))`` with a frozen ArcFace ``f``.

    Follows StyleCLIP ``criteria/id_loss.py``: the source's features carry no gradient; the
    embeddings are unit-norm, so their dot product is the cosine. The backbone is put in eval
    mode and its parameters frozen (it stays in eval mode whatever ``train()`` is called with);
    gradients still flow to ``img``.
    """

    def __init__(
        self,
        facenet: IRSE50,  # the ArcFace backbone (model_ir_se50.pth)
    ):
        super().__init__()
        self.facenet = facenet.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> IDLoss:
        super().train(mode)
        self.facenet.eval()
        return self

    def features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, H) face in [-1, 1] -> (B, 512) unit-norm identity embedding."""
        return self.facenet(id_input(img, self.facenet.input_size))

    def identity_similarity(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        """(B,) cosine similarity of the identities of two batches of faces, in [-1, 1]."""
        if img_a.shape[0] != img_b.shape[0]:
            raise ValueError(f"img_a and img_b batch sizes differ: {img_a.shape[0]} vs {img_b.shape[0]}")
        return (self.features(img_a) * self.features(img_b)).sum(dim=1)

    def loss_from_features(self, img: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
        """The loss against precomputed source features (B, 512), e.g. once per optimisation."""
        feats = self.features(img)  # (B, 512)
        if source_features.shape != feats.shape:
            raise ValueError(
                f"source_features must be {tuple(feats.shape)}, got {tuple(source_features.shape)}"
            )
        cos = (feats * source_features.detach()).sum(dim=1)  # (B,)
        return (1.0 - cos).mean()

    def forward(self, img: torch.Tensor, img_source: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``img`` (B, 3, H, H) against ``img_source`` (B, 3, H', H'), both in [-1, 1]."""
        if img.shape[0] != img_source.shape[0]:
            raise ValueError(
                f"img and img_source batch sizes differ: {img.shape[0]} vs {img_source.shape[0]}"
            )
        with torch.no_grad():
            source_features = self.features(img_source)
        return self.loss_from_features(img, source_features)
