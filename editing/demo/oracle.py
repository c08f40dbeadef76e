"""Reading and comparing the attribute oracle's outputs: how the demo evaluation measures an edit.

The oracle (``models.oracle.AttributeOracle``, trained by ``scripts/demo/train_oracle.py``) maps a
face to a raw vector laid out like ``editing.demo.faces.VECTOR_DIMS``. Here it is decoded into
attribute values and two faces (before / after an edit) are compared attribute by attribute, so the
evaluation can state "the target attribute moved the right way while every other attribute moved less
than a bound" — the disentanglement criterion of StyleCLIP (Patashnik et al., ICCV 2021) and
StyleSpace (Wu et al., CVPR 2021), measured with a regressor that is independent of CLIP. Not a port
of anything upstream.

Every attribute's *change* is put on a common [0, 1] scale: a continuous attribute's absolute
difference over its range, a binary attribute's probability difference, a categorical attribute's
total-variation distance between the two class distributions, and the background hue's angular
distance over pi.

The file format (``demo_models/oracle.pt``): ``{"state_dict": {...}, "config": {"out_dim",
"input_size", "widths", "hidden", "dims"}}``, plain tensors and values (``weights_only=True``);
``dims`` lists the VECTOR_DIMS names so a file trained for another encoding is refused.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from editing.demo.faces import VECTOR_DIMS, VECTOR_SIZE, FaceParams, attribute_slice, vector_to_params
from editing.errors import WeightsCorruptError
from editing.weights import load_torch_file, stored_state_dict
from models.irse import load_state_dict_strict
from models.oracle import AttributeOracle, oracle_input

ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in fields(FaceParams))  # every decoded attribute
_KIND = {a: VECTOR_DIMS[attribute_slice(a)][0].kind for a in ATTRIBUTES}
_CLASSES = {
    a: tuple(d.name.split("=", 1)[1] for d in VECTOR_DIMS[attribute_slice(a)])
    for a in ATTRIBUTES
    if _KIND[a] == "onehot"
}

Readout = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------- files
def oracle_config(oracle: AttributeOracle, hidden: int) -> dict:
    """The plain-value config stored next to the weights."""
    return {
        "out_dim": oracle.out_dim,
        "input_size": oracle.input_size,
        "widths": list(oracle.widths),
        "hidden": hidden,
        "dims": [d.name for d in VECTOR_DIMS],
    }


def save_oracle(oracle: AttributeOracle, hidden: int, path: str | os.PathLike, half: bool = False) -> None:
    """Write ``{"state_dict", "config"}`` (loadable with ``weights_only=True``).

    ``half`` stores the floating-point tensors as float16 (:func:`editing.weights.stored_state_dict`;
    :func:`load_oracle` casts them back to float32); call :func:`editing.weights.round_to_half` first
    to measure the stored oracle.
    """
    sd = stored_state_dict(oracle.state_dict(), half=half)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "config": oracle_config(oracle, hidden)}, path)


def load_oracle(path: str | os.PathLike) -> AttributeOracle:
    """Read ``oracle.pt`` strictly into an eval-mode :class:`AttributeOracle`.

    Raises:
        WeightsCorruptError: not an oracle file, trained for another vector layout, or keys / shapes
            that do not match its config.
    """
    path = Path(path)
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise WeightsCorruptError(
            f"{path.name} is not an attribute-oracle file (needs state_dict and config)."
        )
    cfg = ckpt["config"]
    if list(cfg.get("dims", [])) != [d.name for d in VECTOR_DIMS]:
        raise WeightsCorruptError(f"{path.name} was trained for another attribute layout than VECTOR_DIMS.")
    try:
        oracle = AttributeOracle(
            out_dim=int(cfg["out_dim"]),
            input_size=int(cfg["input_size"]),
            widths=tuple(int(c) for c in cfg["widths"]),
            hidden=int(cfg["hidden"]),
        )
        load_state_dict_strict(oracle, ckpt["state_dict"], "attribute oracle")
    except (KeyError, ValueError) as exc:
        raise WeightsCorruptError(f"{path.name} is not a usable attribute oracle: {exc}") from exc
    return oracle.eval()


# ---------------------------------------------------------------------------- decoding
def read_attributes(oracle: AttributeOracle, img: torch.Tensor) -> Readout:
    """Run the oracle on a batch of faces (any size; see ``models.oracle.oracle_input``) and decode.

    Args:
        oracle: the attribute oracle (its mode is left as it is; use eval mode).
        img: (B, 3, H, W) float in [-1, 1].
    Returns:
        :func:`decode` of the raw outputs.
    """
    with torch.inference_mode():
        return decode(oracle(oracle_input(img, oracle.input_size)))


def decode(raw: torch.Tensor) -> Readout:
    """Raw oracle outputs -> attribute values.

    Args:
        raw: (B, VECTOR_SIZE) as the oracle returns it.
    Returns:
        ``{attribute: tensor}`` for every FaceParams field: continuous values (B,) clamped to their
        range, binary probabilities (B,) in [0, 1], categorical class probabilities (B, K) in the
        order of the class tuples of ``editing.demo.faces`` (e.g. HAIR_COLOURS), and the background
        hue (B,) in [0, 1).
    """
    if raw.ndim != 2 or raw.shape[1] != VECTOR_SIZE:
        raise ValueError(f"raw must be (B, {VECTOR_SIZE}), got {tuple(raw.shape)}")
    out: Readout = {}
    for a in ATTRIBUTES:
        sl = attribute_slice(a)
        kind, dim = _KIND[a], VECTOR_DIMS[sl][0]
        if kind == "onehot":
            out[a] = raw[:, sl].softmax(dim=1)
        elif kind == "binary":
            out[a] = raw[:, sl.start].sigmoid()
        elif kind == "circular":
            out[a] = torch.atan2(raw[:, sl.start + 1], raw[:, sl.start]).div(2 * math.pi).remainder(1.0)
        else:
            out[a] = raw[:, sl.start].clamp(dim.low, dim.high)
    return out


def readout_to_vector(readout: Readout) -> torch.Tensor:
    """Decoded attributes -> (B, VECTOR_SIZE) in the encoding of ``params_to_vector`` (soft values:
    probabilities for one-hot groups and booleans)."""
    parts = []
    for a in ATTRIBUTES:
        v = readout[a]
        if _KIND[a] == "onehot":
            parts.append(v)
        elif _KIND[a] == "circular":
            parts += [torch.cos(2 * math.pi * v)[:, None], torch.sin(2 * math.pi * v)[:, None]]
        else:
            parts.append(v[:, None])
    return torch.cat(parts, dim=1)


def readout_to_params(readout: Readout) -> list[FaceParams]:
    """Decoded attributes -> one :class:`FaceParams` per face (argmax classes, booleans at p > 0.5)."""
    vec = readout_to_vector(readout).double().cpu().numpy()
    return [vector_to_params(row) for row in vec]


def class_names(attribute: str) -> tuple[str, ...]:
    """The classes of a categorical attribute, in the order of its probabilities."""
    if attribute not in _CLASSES:
        raise ValueError(f"attribute must be one of {tuple(_CLASSES)}, got {attribute!r}")
    return _CLASSES[attribute]


# ---------------------------------------------------------------------------- comparing
def _check_attribute(attribute: str) -> str:
    if attribute not in _KIND:
        raise ValueError(f"attribute must be a FaceParams field, got {attribute!r}")
    return _KIND[attribute]


def attribute_change(before: Readout, after: Readout, attribute: str) -> torch.Tensor:
    """How much one attribute changed, unsigned, on the common [0, 1] scale (see the module doc).

    Returns:
        (B,) float in [0, 1].
    """
    kind = _check_attribute(attribute)
    a, b = before[attribute], after[attribute]
    if kind == "onehot":
        return 0.5 * (b - a).abs().sum(dim=1)
    if kind == "binary":
        return (b - a).abs()
    if kind == "circular":
        d = (b - a).remainder(1.0)
        return 2.0 * torch.minimum(d, 1.0 - d)  # angle / pi
    dim = VECTOR_DIMS[attribute_slice(attribute)][0]
    return (b - a).abs() / (dim.high - dim.low)


def attribute_shift(
    before: Readout, after: Readout, attribute: str, towards: str | None = None
) -> torch.Tensor:
    """Signed move of one attribute on the common scale: positive = more of it.

    Args:
        before, after: :func:`decode` outputs of the same faces before and after an edit.
        attribute: a FaceParams field (not the background hue, which has no direction).
        towards: for a categorical attribute, the class whose probability gain is measured
            (e.g. "blond"); must be None otherwise.
    Returns:
        (B,) float in [-1, 1]: the continuous value's change over its range, the binary
        probability's change, or the gain in the ``towards`` class probability.
    """
    kind = _check_attribute(attribute)
    if (kind == "onehot") != (towards is not None):
        raise ValueError(f"towards must name a class exactly for categorical attributes, got {towards!r}")
    if kind == "circular":
        raise ValueError(f"attribute {attribute!r} is circular and has no direction")
    if kind == "onehot":
        classes = class_names(attribute)
        if towards not in classes:
            raise ValueError(f"towards must be one of {classes}, got {towards!r}")
        k = classes.index(towards)
        return after[attribute][:, k] - before[attribute][:, k]
    d = after[attribute] - before[attribute]
    if kind == "binary":
        return d
    dim = VECTOR_DIMS[attribute_slice(attribute)][0]
    return d / (dim.high - dim.low)


@dataclass(frozen=True)
class EditCheck:
    """Per-face verdict of an edit of one attribute (all tensors (B,))."""

    attribute: str  # the edited attribute
    target_shift: torch.Tensor  # attribute_shift of the target, times the requested direction
    moved: torch.Tensor  # bool: target_shift > min_shift
    other_changes: dict[str, torch.Tensor]  # attribute_change of every other checked attribute
    max_other_change: torch.Tensor  # the largest of other_changes (0 when none were checked)
    preserved: torch.Tensor  # bool: max_other_change <= bound
    ok: torch.Tensor  # bool: moved and preserved


def check_edit(
    before: Readout,
    after: Readout,
    attribute: str,
    direction: int = 1,
    towards: str | None = None,
    bound: float = 0.15,
    min_shift: float = 0.0,
    others: Sequence[str] | None = None,
) -> EditCheck:
    """Did the edit move ``attribute`` the right way while the other attributes moved less than ``bound``?

    Args:
        before, after: :func:`decode` outputs of the same B faces before and after the edit.
        attribute: the attribute the text asked to change.
        direction: +1 for "more" (e.g. smiling, glasses on, towards a class), -1 for "less".
        towards: the requested class for a categorical attribute (see :func:`attribute_shift`).
        bound: largest allowed change of every other attribute, on the [0, 1] scale.
        min_shift: the target's signed shift must exceed this.
        others: attributes that must be preserved; default every other FaceParams field.
    Returns:
        An :class:`EditCheck`.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not 0.0 <= bound <= 1.0:
        raise ValueError(f"bound must be in [0, 1], got {bound!r}")
    shift = direction * attribute_shift(before, after, attribute, towards)
    names = [a for a in (ATTRIBUTES if others is None else others) if a != attribute]
    changes = {a: attribute_change(before, after, a) for a in names}
    worst = torch.stack(list(changes.values())).amax(dim=0) if changes else torch.zeros_like(shift)
    moved, preserved = shift > min_shift, worst <= bound
    return EditCheck(attribute, shift, moved, changes, worst, preserved, moved & preserved)


# ---------------------------------------------------------------------------- accuracy
def _readout_and_truth(readout: Readout, params: Sequence[FaceParams]):
    """(attribute, kind, readout values as float64 numpy, true values) for every attribute."""
    if len(params) != next(iter(readout.values())).shape[0]:
        raise ValueError("params must hold one FaceParams per face of the readout")
    for a in ATTRIBUTES:
        yield a, _KIND[a], readout[a].detach().double().cpu().numpy(), [getattr(p, a) for p in params]


def _class_accuracy(attribute: str, probs: np.ndarray, truth: Sequence[str]) -> float:
    """Share of faces whose most probable class is the true one."""
    idx = np.array([class_names(attribute).index(t) for t in truth])
    return float(np.mean(probs.argmax(axis=1) == idx))


def attribute_errors(readout: Readout, params: Sequence[FaceParams]) -> dict[str, float]:
    """Per-attribute quality of a readout against the true parameters of the same faces.

    Returns:
        ``{attribute: value}``: accuracy (share of correct argmax / p > 0.5) for categorical and binary
        attributes, mean absolute error in the attribute's own units for continuous ones, and the mean
        angular error (in hue turns, 0..0.5) for the background hue.
    """
    out: dict[str, float] = {}
    for a, kind, v, truth in _readout_and_truth(readout, params):
        if kind == "onehot":
            out[a] = _class_accuracy(a, v, truth)
        elif kind == "binary":
            out[a] = float(np.mean((v > 0.5) == np.array(truth, dtype=bool)))
        elif kind == "circular":
            d = np.remainder(v - np.array(truth), 1.0)
            out[a] = float(np.mean(np.minimum(d, 1.0 - d)))
        else:
            out[a] = float(np.mean(np.abs(v - np.array(truth))))
    return out


DRAWN_AGREEMENT = 0.8  # agreement at which an attribute counts as drawn (see attribute_agreement)


def attribute_agreement(readout: Readout, params: Sequence[FaceParams]) -> dict[str, float]:
    """How well a readout follows the true parameters of the same faces, on one scale for every kind.

    Used to tell which attributes a generator actually draws: read its faces with the oracle and
    compare with the parameters their latents stand for. ``attribute_errors`` reports the same
    readout in each attribute's own units, where "MAE 0.16" can look good and be chance (age, whose
    prior is Beta(1.4, 2): always answering the median gives 0.17).

    Returns:
        ``{attribute: value}`` in [0, 1], 1 = perfect: accuracy of the argmax for categorical
        attributes; the squared Pearson correlation (share of the truth's variance the readout
        explains, 0 when either side is constant) for binary and continuous ones; 1 − 4 × the mean
        angular error in turns, floored at 0, for the background hue (0 = a random hue).
    """
    out: dict[str, float] = {}
    for a, kind, v, truth in _readout_and_truth(readout, params):
        if kind == "onehot":
            out[a] = _class_accuracy(a, v, truth)
        elif kind == "circular":
            d = np.remainder(v - np.array(truth), 1.0)
            out[a] = max(0.0, 1.0 - 4.0 * float(np.mean(np.minimum(d, 1.0 - d))))
        else:
            t = np.array(truth, dtype=np.float64)
            if v.std() == 0 or t.std() == 0:
                out[a] = 0.0
            else:
                out[a] = float(np.corrcoef(v, t)[0, 1] ** 2)
    return out


def drawn_attributes(
    readout: Readout, params: Sequence[FaceParams], threshold: float = DRAWN_AGREEMENT
) -> tuple[str, ...]:
    """The attributes whose :func:`attribute_agreement` reaches ``threshold``, in ATTRIBUTES order."""
    agreement = attribute_agreement(readout, params)
    return tuple(a for a in ATTRIBUTES if agreement[a] >= threshold)
