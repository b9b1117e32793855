"""linear: sum_i w_i * model_i, with mergekit's `normalize` (divide by sum_i w_i, the default).

Why this order of operations: one multiply, then one add per model (no fused
multiply-add), so `sum(w_i * x_i.float())` written plainly in torch gives
bit-identical results; `normalize` divides the weights (in float64) up front
instead of the sum afterwards, which keeps that property.
"""

from __future__ import annotations

import math

from ..errors import MergeError
from .base import Args, Block, Kernel, Method, Param


class LinearKernel(Kernel):
    def __init__(self, weights: tuple[float, ...]):
        self.weights = weights

    def combine(self, block: Block) -> None:
        out, tmp, kind = block.out, block.tmp, block.out.dtype.type
        block.load(0, out)
        out *= kind(self.weights[0])
        for i in range(1, len(self.weights)):
            block.load(i, tmp)
            tmp *= kind(self.weights[i])
            out += tmp


def build(args: Args) -> LinearKernel:
    weights = args.column("weight")
    if args.globals["normalize"]:
        total = math.fsum(weights)
        if abs(total) < 1e-8:
            raise MergeError(f"linear: the weights {list(weights)} sum to 0, so they cannot be normalized")
        weights = tuple(w / total for w in weights)
    return LinearKernel(weights)


LINEAR = Method(
    name="linear",
    summary="weighted average of the models (Wortsman et al.'s model soups)",
    params=(
        Param("weight", "this model's weight", per_model=True),
        Param("normalize", "divide by the sum of the weights", default=True, kind=bool),
    ),
    build=build,
    needs_base=False,
    min_models=2,
    negative_weights=None,
)
