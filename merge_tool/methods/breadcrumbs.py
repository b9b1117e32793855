"""Model Breadcrumbs (breadcrumbs, breadcrumbs_ties): task vectors without their smallest and largest changes.

Why a method of its own: mergekit's `magnitude_outliers` sparsification drops,
per tensor and per task vector, the `gamma` fraction of LARGEST magnitudes (the
outliers) and then the smallest ones, keeping a `density` fraction; the rest
is task arithmetic (breadcrumbs) or TIES's sign consensus (breadcrumbs_ties),
as in `task_vectors`. Counts are mergekit's: kept = int(density x numel),
removed from the top = int(gamma x numel) (both truncated). So, by magnitude
rank from the largest, ranks (top, top + kept] survive: those in the top
(top + kept) minus those in the top `top`, two exact radix selects of
`sparsify` over the streamed tensor (nested, as both break ties by position).

Deliberate differences from mergekit (README, "Deliberate differences"):
density + gamma > 1 is refused (mergekit silently removes fewer outliers
than asked); when int(gamma x numel) is 0 nothing is removed from the top and
`kept` elements survive (mergekit's slice `[n_bot:-0]` is empty and zeroes
the tensor's task vector); ties go to the earlier element. As in mergekit,
density 1 keeps the task vector whole (gamma unused) and int(density x numel)
= 0 keeps nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MergeError
from .base import Args, Block, Method, Param, TensorPass
from .sparsify import TopK, select_top_k
from .task_vectors import DENSITY, INT8, LAMBDA, NEGATIVE, WEIGHT, TaskVectorKernel
from .task_vectors import _normalize as normalize_param
from .task_vectors import _rescale as rescale_param

GAMMA = Param(
    "gamma",
    "fraction of the task vector's largest magnitudes removed (the outliers)",
    default=0.01,  # mergekit's default
    per_model=True,
    low=0.0,
    high=1.0,
)
SUM_SLACK = 1e-9  # density + gamma may exceed 1 by float rounding (0.7 + 0.3)


@dataclass(frozen=True)
class Band:
    """The elements one task vector keeps: in the top `upper` (None: all), not in the top `lower` (None: none)."""

    upper: TopK | None
    lower: TopK | None
    empty: bool = False  # int(density x numel) == 0: nothing is kept

    def keep(self, keys: np.ndarray, start: int) -> np.ndarray:
        if self.empty:
            return np.zeros(len(keys), bool)
        keep = self.upper.keep(keys, start) if self.upper is not None else np.ones(len(keys), bool)
        if self.lower is not None:
            keep &= ~self.lower.keep(keys, start)
        return keep


def counts(density: float, gamma: float, numel: int) -> tuple[int, int]:
    """(kept, removed from the top) of a tensor of `numel` elements, rounded as mergekit does."""
    kept = int(density * numel)
    top = min(int(gamma * numel), numel - kept)  # mergekit's cut, reached only by float rounding here
    return kept, top


class BreadcrumbsKernel(TaskVectorKernel):
    """TaskVectorKernel whose sparsification keeps each task vector's magnitude band (see the module)."""

    def __init__(self, args: Args, consensus: bool):
        g = args.globals
        super().__init__(
            args.column("weight"),
            args.column("density"),
            g["lambda"],
            g["normalize"],
            consensus,
            "magnitude_outliers",
            g["rescale"],
        )
        self.gammas = args.column("gamma")
        self.whole_tensor = bool(self.sparse)

    def prepare(self, tensor: TensorPass) -> tuple[dict[int, Band], dict[int, float]]:
        wanted: dict[int, int] = {}  # radix-select key 2i: model i's top (top + kept); 2i + 1: its top `top`
        plans: dict[int, tuple[int, int]] = {}
        for i in self.sparse:
            kept, top = counts(self.densities[i], self.gammas[i], tensor.numel)
            plans[i] = kept, top
            if kept and 0 < kept + top < tensor.numel:
                wanted[2 * i] = kept + top
            if kept and top:
                wanted[2 * i + 1] = top
        selected = select_top_k(tensor, self._band_delta, wanted, lambda key: key // 2) if wanted else {}
        bands = {
            i: Band(selected.get(2 * i), selected.get(2 * i + 1), empty=kept == 0)
            for i, (kept, top) in plans.items()
            if kept == 0 or top or kept < tensor.numel
        }
        return bands, self._l1_factors(tensor, list(bands), bands) if self.rescale else {}

    def _band_delta(self, block: Block, key: int) -> np.ndarray:
        """Model key // 2's task vector block; computed once for its two consecutive keys (2i, 2i + 1)."""
        i, last = key // 2, getattr(self._local, "last", None)
        if last is not None and last[0] is block and last[1] == i:
            return block.tmp  # select_top_k only reads it between the two calls
        self._local.last = (block, i)
        return self._delta(block, i)


def _build(consensus: bool):
    def build(args: Args) -> BreadcrumbsKernel:
        for j, p in enumerate(args.per_model, 1):
            if p["density"] < 1 and p["density"] + p["gamma"] > 1 + SUM_SLACK:
                raise MergeError(
                    f"{'breadcrumbs_ties' if consensus else 'breadcrumbs'}: model {j} of {len(args.per_model)} "
                    f"(in order, base_model excluded): parameter 'gamma' is {p['gamma']:g} with 'density' "
                    f"{p['density']:g}; density + gamma must be at most 1 (it keeps density and removes gamma "
                    "of the largest magnitudes; mergekit would silently remove fewer)"
                )
        return BreadcrumbsKernel(args, consensus)

    return build


_PARAMS = (WEIGHT, DENSITY, GAMMA, normalize_param(False), rescale_param(False), LAMBDA)
BREADCRUMBS = Method(
    name="breadcrumbs",
    summary="task vectors without their smallest and gamma largest magnitudes (density kept), summed",
    params=_PARAMS,
    build=_build(False),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    ignored={"int8_mask": INT8},
)
BREADCRUMBS_TIES = Method(
    name="breadcrumbs_ties",
    summary="breadcrumbs' task vectors (density kept, gamma outliers removed), then TIES's sign consensus",
    params=_PARAMS,
    build=_build(True),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    ignored={"int8_mask": INT8},
)
