"""Seeded IR-SE50 (ArcFace) checkpoints in the official format, and seeded face-like inputs.

Format (TreB1eN/InsightFace_Pytorch ``model.py`` ``Backbone(50, 0.6, 'ir_se')``, as loaded by
orpatashnik/StyleCLIP ``criteria/id_loss.py``): ``model_ir_se50.pth`` is a plain state dict,
``input_layer.*``, ``body.0..23.*``, ``output_layer.{0,3,4}.*`` (397 entries with the BatchNorm
counters). The key list is written out here from the format, independently of ``models.irse``;
``scripts.seeded.e4e`` reuses :func:`backbone_spec` for the encoder's identical backbone keys.

Init (chosen so that 24 residual units in eval mode stay finite and non-degenerate): convs
N(0, gain / fan_in) with gain 1 on the residual path (so each unit adds a fraction of the
stream's variance) and gain 2 before a ReLU / LeakyReLU; BatchNorm weight U(0.8, 1.2), bias and
running mean N(0, 0.1^2), running var U(0.5, 1.5); PReLU slopes U(0.1, 0.4); linear layers
N(0, 1 / fan_in), biases N(0, 0.1^2); integer counters 0. Inputs are smooth random images in
[-1, 1] (low-resolution noise upsampled, plus fine noise), not faces.

``python -m scripts.seeded.irse --out DIR`` writes ``model_ir_se50.pth`` and the inputs
(``faces_112.pt``, ``id_img.pt``, ``id_source.pt``, ``id_img_512.pt``, ``id_source_512.pt``) for the
scratch script that runs the reference implementation.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from scripts.seeded import Init, generator_for, randn, seeded_state_dict, uniform

SEED = 5
IRSE50_WIDTHS = (64, 128, 256, 512)
IRSE50_UNITS = (3, 4, 14, 3)
SE_REDUCTION = 16

Spec = list[tuple[str, tuple[int, ...], torch.dtype]]


def batchnorm_spec(prefix: str, channels: int) -> Spec:
    """(key, shape, dtype) of a BatchNorm layer, in state-dict order."""
    f = torch.float32
    return [
        (f"{prefix}.weight", (channels,), f),
        (f"{prefix}.bias", (channels,), f),
        (f"{prefix}.running_mean", (channels,), f),
        (f"{prefix}.running_var", (channels,), f),
        (f"{prefix}.num_batches_tracked", (), torch.int64),
    ]


def backbone_spec(
    widths: Sequence[int] = IRSE50_WIDTHS, units: Sequence[int] = IRSE50_UNITS, prefix: str = ""
) -> Spec:
    """``input_layer.*`` and ``body.*`` keys of an IR-SE backbone with the given stage layout."""
    f = torch.float32
    spec: Spec = [(f"{prefix}input_layer.0.weight", (widths[0], 3, 3, 3), f)]
    spec += batchnorm_spec(f"{prefix}input_layer.1", widths[0])
    spec.append((f"{prefix}input_layer.2.weight", (widths[0],), f))
    i, c_in = 0, widths[0]
    for width, n in zip(widths, units, strict=True):
        for j in range(n):
            cin = c_in if j == 0 else width
            p = f"{prefix}body.{i}"
            if cin != width:
                spec.append((f"{p}.shortcut_layer.0.weight", (width, cin, 1, 1), f))
                spec += batchnorm_spec(f"{p}.shortcut_layer.1", width)
            spec += batchnorm_spec(f"{p}.res_layer.0", cin)
            spec.append((f"{p}.res_layer.1.weight", (width, cin, 3, 3), f))
            spec.append((f"{p}.res_layer.2.weight", (width,), f))
            spec.append((f"{p}.res_layer.3.weight", (width, width, 3, 3), f))
            spec += batchnorm_spec(f"{p}.res_layer.4", width)
            spec.append((f"{p}.res_layer.5.fc1.weight", (width // SE_REDUCTION, width, 1, 1), f))
            spec.append((f"{p}.res_layer.5.fc2.weight", (width, width // SE_REDUCTION, 1, 1), f))
            i += 1
        c_in = width
    return spec


def irse_spec(
    widths: Sequence[int] = IRSE50_WIDTHS,
    units: Sequence[int] = IRSE50_UNITS,
    input_size: int = 112,
    embedding_dim: int = 512,
) -> Spec:
    """All keys of ``model_ir_se50.pth`` (or of a smaller backbone with the same naming)."""
    side = input_size // 16
    spec = backbone_spec(widths, units)
    spec += batchnorm_spec("output_layer.0", widths[-1])
    spec.append(("output_layer.3.weight", (embedding_dim, widths[-1] * side * side), torch.float32))
    spec.append(("output_layer.3.bias", (embedding_dim,), torch.float32))
    spec += batchnorm_spec("output_layer.4", embedding_dim)
    return spec


def he(gain: float, fan_in: int) -> Init:
    return randn(math.sqrt(gain / fan_in))


def backbone_rule(key: str, shape: tuple[int, ...]) -> Init | None:
    """Initialisers for the ``input_layer`` / ``body`` / ``output_layer`` keys (see module doc)."""
    if key.endswith(".num_batches_tracked"):
        return None
    if key.endswith(".running_var"):
        return uniform(0.5, 1.5)
    if key.endswith(".running_mean") or key.endswith(".bias"):
        return randn(0.1)
    if key.endswith(".weight") and len(shape) == 1:
        is_prelu = key.endswith("input_layer.2.weight") or key.endswith("res_layer.2.weight")
        return uniform(0.1, 0.4) if is_prelu else uniform(0.8, 1.2)  # PReLU slope / BatchNorm scale
    if key.endswith(".weight") and len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return he(2.0 if key.endswith(".fc1.weight") else 1.0, fan_in)
    if key.endswith(".weight") and len(shape) == 2:
        return he(1.0, shape[1])
    raise KeyError(f"no init rule for {key} {shape}")


def make_irse50_checkpoint(
    seed: int = SEED,
    widths: Sequence[int] = IRSE50_WIDTHS,
    units: Sequence[int] = IRSE50_UNITS,
    input_size: int = 112,
    embedding_dim: int = 512,
) -> dict[str, torch.Tensor]:
    """A seeded ``model_ir_se50.pth`` (a plain state dict); smaller layouts for tiny tests."""
    return seeded_state_dict(irse_spec(widths, units, input_size, embedding_dim), seed, backbone_rule)


def seeded_faces(batch: int, size: int, tag: str = "faces", seed: int = SEED) -> torch.Tensor:
    """(batch, 3, size, size) float32 smooth random images in [-1, 1]."""
    g = generator_for(f"{tag}/{batch}x{size}", seed)
    low = torch.randn(batch, 3, 8, 8, generator=g) * 0.6
    img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (img + 0.15 * torch.randn(batch, 3, size, size, generator=g)).clamp(-1.0, 1.0)


def id_pair(batch: int = 2, size: int = 256, seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(img, img_source), each (batch, 3, size, size) in [-1, 1]; img is the source partly
    blended with another image, so the identities are similar but not equal."""
    source = seeded_faces(batch, size, "id_source", seed)
    other = seeded_faces(batch, size, "id_other", seed)
    mix = torch.linspace(0.2, 0.8, batch).view(batch, 1, 1, 1)
    return (1 - mix) * source + mix * other, source


def write_files(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(make_irse50_checkpoint(), out / "model_ir_se50.pth")
    torch.save(seeded_faces(2, 112), out / "faces_112.pt")
    img, source = id_pair(2, 256)
    torch.save(img, out / "id_img.pt")
    torch.save(source, out / "id_source.pt")
    img, source = id_pair(1, 512)
    torch.save(img, out / "id_img_512.pt")
    torch.save(source, out / "id_source_512.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the seeded files into")
    write_files(parser.parse_args().out)
