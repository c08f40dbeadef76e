"""Seeded random checkpoints in exactly the official file formats, for parity tests.

Every tensor is drawn from its own ``torch.Generator`` seeded by (seed, crc32(key)), so a
checkpoint is reproducible bit for bit from its key list alone, independently of module
construction order. ``python -m scripts.seeded --out DIR`` writes the files under their official
names; the scratch scripts that run the reference implementations load those same files and
produce the golden numbers in ``tests/golden/``; the tests rebuild the checkpoints in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import torch

Init = Callable[[torch.Generator, tuple[int, ...]], torch.Tensor]


def generator_for(key: str, seed: int) -> torch.Generator:
    """A CPU generator seeded from the global seed and the tensor's key name."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    return g


def randn(scale: float = 1.0, shift: float = 0.0) -> Init:
    return lambda g, shape: torch.randn(shape, generator=g) * scale + shift


def uniform(low: float, high: float) -> Init:
    return lambda g, shape: torch.rand(shape, generator=g) * (high - low) + low


def seeded_state_dict(
    spec: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
    seed: int,
    rule: Callable[[str, tuple[int, ...]], Init | None],
) -> dict[str, torch.Tensor]:
    """Build a state dict from (key, shape, dtype) triples.

    Args:
        spec: key names, shapes and dtypes (e.g. from a module's ``state_dict()``).
        seed: global seed.
        rule: maps a key and shape to an initialiser; ``None`` means zeros (e.g. integer
            ``num_batches_tracked``).
    Returns:
        An ordered dict of CPU tensors.
    """
    out: dict[str, torch.Tensor] = {}
    for key, shape, dtype in spec:
        init = rule(key, tuple(shape))
        if init is None or not dtype.is_floating_point:
            out[key] = torch.zeros(shape, dtype=dtype)
        else:
            out[key] = init(generator_for(key, seed), tuple(shape)).to(dtype)
    return out
