"""Validation of user-facing numbers and texts, shared by every method's settings.

Each check returns the cleaned value or raises a ``ValueError`` that names the argument, in a
sentence a user of the CLI or the app can act on.
"""

from __future__ import annotations

import math


def check_int(x: object, name: str, lo: int, hi: int) -> int:
    """An integer (not a bool) in [lo, hi]."""
    if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
        raise ValueError(f"{name} must be an integer between {lo} and {hi}, got {x!r}")
    return x


def check_float(x: object, name: str, lo: float, hi: float, *, open_low: bool = False) -> float:
    """A finite number in [lo, hi] (or (lo, hi] with ``open_low``), as a float."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{name} must be a number, got {x!r}")
    x = float(x)
    if not math.isfinite(x) or not lo <= x <= hi or (open_low and x == lo):
        bound = f"({lo:g}, {hi:g}]" if open_low else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be finite and in {bound}, got {x!r}")
    return x
