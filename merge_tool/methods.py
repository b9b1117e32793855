"""Merge methods: how one block of each model's tensor becomes the merged block.

Why apart from I/O: the arithmetic is the part users reason about (and tests
check against an fp32 torch reference). A method sees `load(i, dst)`, which
writes model i's block widened exactly to float32 (float64 for float64
tensors) into dst, plus preallocated buffers; it accumulates in that wide
type, and the caller rounds the result once to the stored dtype.

Operation order is fixed (one multiply, then one add per model; no fused
multiply-add), so `sum(w_i * x_i.float())` written plainly in torch gives
bit-identical results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Loader = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class Linear:
    """sum_i w_i * model_i (Ilharco et al.'s weight averaging with uniform w)."""

    weights: tuple[float, ...]
    name = "linear"
    uses_base = False

    def combine(self, load: Loader, base: np.ndarray | None, out: np.ndarray, tmp: np.ndarray) -> None:
        """Write the merged block into `out`; `tmp` is scratch of the same size and type."""
        load(0, out)
        np.multiply(out, out.dtype.type(self.weights[0]), out=out)
        for i in range(1, len(self.weights)):
            load(i, tmp)
            np.multiply(tmp, tmp.dtype.type(self.weights[i]), out=tmp)
            np.add(out, tmp, out=out)


@dataclass(frozen=True)
class TaskArithmetic:
    """base + scale * sum_i w_i * (model_i - base) (Ilharco et al.'s task vectors)."""

    weights: tuple[float, ...]
    scale: float
    name = "task-arithmetic"
    uses_base = True

    def combine(self, load: Loader, base: np.ndarray | None, out: np.ndarray, tmp: np.ndarray) -> None:
        """`base` is the base model's widened block; `out` and `tmp` are buffers like it."""
        assert base is not None
        kind = out.dtype.type
        for i in range(len(self.weights)):
            dest = out if i == 0 else tmp
            load(i, dest)
            np.subtract(dest, base, out=dest)
            np.multiply(dest, kind(self.weights[i]), out=dest)
            if i:
                np.add(out, tmp, out=out)
        np.multiply(out, kind(self.scale), out=out)
        np.add(out, base, out=out)


METHODS = ("linear", "task-arithmetic")
