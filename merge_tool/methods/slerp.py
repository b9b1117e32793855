"""slerp: spherical interpolation between the base model (t=0) and one other model (t=1), per tensor.

Why whole-tensor: the angle between the two tensors needs their norms and dot
product over all elements, so `prepare` streams the tensor once to sum them (in
float64), then every block is `c0 * base + c1 * other`. As in mergekit: the
angle comes from the vectors normalized (each only when its norm exceeds 1e-8),
the sines weigh the unnormalized tensors, and when |cos| > 0.9995 (nearly
colinear) the result is plain lerp, (1 - t) * base + t * other. Unlike mergekit,
a cosine that is NaN (NaN or infinity in a tensor) also gives lerp, so NaN stays
where it was instead of filling the whole tensor.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Args, Block, Kernel, Method, Param, TensorPass

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def coefficients(t: float, aa: float, bb: float, ab: float) -> tuple[float, float]:
    """(c0, c1) with slerp(t, a, b) = c0 * a + c1 * b, from |a|^2, |b|^2 and a.b."""
    na, nb = math.sqrt(aa), math.sqrt(bb)
    dot = ab / ((na if na > EPS else 1.0) * (nb if nb > EPS else 1.0))
    if not abs(dot) <= DOT_THRESHOLD:  # nearly colinear, or NaN
        return 1.0 - t, t
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return math.sin(theta - theta * t) / sin_theta, math.sin(theta * t) / sin_theta


class SlerpKernel(Kernel):
    whole_tensor = True

    def __init__(self, t: float):
        self.t = t

    def prepare(self, tensor: TensorPass) -> tuple[float, float]:
        def sums(block: Block) -> np.ndarray:
            block.load(0, block.tmp)
            a, b = block.base, block.tmp
            return np.array([np.dot(a, a), np.dot(b, b), np.dot(a, b)], dtype=np.float64)

        aa, bb, ab = tensor.reduce(sums, np.add)
        return coefficients(self.t, float(aa), float(bb), float(ab))

    def combine(self, block: Block) -> None:
        c0, c1 = block.state
        kind = block.out.dtype.type
        block.load(0, block.tmp)
        np.multiply(block.base, kind(c0), out=block.out)
        block.tmp *= kind(c1)
        block.out += block.tmp


def build(args: Args) -> SlerpKernel:
    return SlerpKernel(args.globals["t"])


SLERP = Method(
    name="slerp",
    summary="spherical interpolation from base_model (t=0) to the one other model (t=1)",
    params=(Param("t", "interpolation factor, 0 = base_model, 1 = the other model", low=0.0, high=1.0),),
    build=build,
    needs_base=True,
    min_models=1,
    max_models=1,
)
