"""Box checks shared by the families: four finite numbers, ordered, inside a bound; a canvas size.

Why here: every family converts boxes both ways, and a malformed box must fail the same way (one
ValueError naming it) whichever family reads it.
"""

from __future__ import annotations

import math


def check_box(box, what: str, upper: float | None) -> tuple:
    """Four finite numbers with x1 < x2, y1 < y2 within 0..upper; ValueError naming the box otherwise."""
    try:
        values = tuple(box)
    except TypeError:
        raise ValueError(f"{what} box must be four numbers, got {box!r}") from None
    if len(values) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{what} box must be four numbers, got {box!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} box {box!r} is not finite")
    x1, y1, x2, y2 = values
    if min(values) < 0 or (upper is not None and max(values) > upper) or not (x1 < x2 and y1 < y2):
        bound = f"0..{upper:g}" if upper is not None else ">= 0"
        raise ValueError(f"{what} box {box!r} is not x1 < x2, y1 < y2 within {bound}")
    return values


def check_numbers(values) -> tuple:
    """Four finite numbers (any order); ValueError otherwise."""
    try:
        vals = tuple(values)
    except TypeError:
        raise ValueError(f"box values must be four numbers, got {values!r}") from None
    if len(vals) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in vals):
        raise ValueError(f"box values must be four numbers, got {values!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box values {values!r} are not finite")
    return vals


def half_up(value: float) -> int:
    return math.floor(value + 0.5)


def resized_size_of(resized_size, display: str) -> tuple[int, int]:
    """(width, height) of the canvas a pixel box is on; ValueError when missing or malformed."""
    if resized_size is None:
        raise ValueError(f"{display} boxes are pixels of the resized image: its (width, height) is required")
    try:
        w, h = resized_size
    except (TypeError, ValueError):
        raise ValueError(f"resized size must be (width, height), got {resized_size!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (w, h)):
        raise ValueError(f"resized size must be two positive integers, got {resized_size!r}")
    return w, h
