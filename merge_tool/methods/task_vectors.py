"""Task-vector methods, as mergekit's generalized task arithmetic: task_arithmetic, ties, dare_ties, dare_linear.

Why one module: the four differ only in how each task vector d_i = model_i - base
is sparsified (none; TIES's top-k by magnitude; DARE's random drop) and whether
TIES's sign consensus mixes them. Per tensor, following mergekit:

  d_i  <- sparsify(d_i, density_i), then with `rescale` times |d_i|_1 / |kept d_i|_1
          (mergekit's L1 rescale; skipped when either sum is below 1e-7)
  w_i d_i; consensus: keep w_i d_i only where its sign is the sign of sum_j w_j d_j
          (>= 0 counts as +), divisor = sum of the kept w_i (0 -> 1);
          otherwise divisor = sum_i w_i (|.| < 1e-8 -> 1)
  base + lambda * (sum of the kept w_i d_i) [/ divisor when normalize]

Deviations, all on purpose: arithmetic is float32 (float64 for float64
tensors) with one rounding at the end, where mergekit works in the config's
dtype; top-k ties are broken by position; when density x numel < 1, one
element (the largest) is kept where mergekit stops with an assertion. TIES is
whole-tensor (see `sparsify`); so is DARE with rescale (its L1 sums), and
without it `prepare` only seeds its streams. With density 1 everything is
element-wise.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from . import fused
from .base import Args, Block, Kernel, Method, Param, TensorPass
from .sparsify import (
    TILE,
    TopK,
    keep_limit,
    magnitude_keys,
    name_key,
    random_keep,
    random_states,
    select_top_k,
)

RESCALE_EPS = 1e-7
log = logging.getLogger(__name__)


class TaskVectorKernel(Kernel):
    def __init__(
        self,
        weights: tuple[float, ...],
        densities: tuple[float, ...],
        lambda_: float,
        normalize: bool,
        consensus: bool,
        sparsify: str | None,
        rescale: bool,
        seed: int = 0,
    ):
        self.weights, self.densities = weights, densities
        self.lambda_, self.normalize, self.consensus = lambda_, normalize, consensus
        total = math.fsum(weights)
        self.total = total if abs(total) >= 1e-8 else 1.0  # normalize's divisor without consensus
        self.sparsify, self.rescale, self.seed = sparsify, rescale, seed
        self.sparse = [i for i, d in enumerate(densities) if d < 1] if sparsify else []
        # DARE without rescale is element-wise, but `prepare` seeds its streams once per tensor
        self.whole_tensor = bool(self.sparse)
        self._local = threading.local()

    # ------------------------------------------------------------ per-tensor statistics

    @staticmethod
    def _delta(block: Block, i: int) -> np.ndarray:
        block.load(i, block.tmp)
        block.tmp -= block.base
        return block.tmp

    def _keep(self, i: int, delta: np.ndarray, block: Block, top: dict[int, TopK]) -> np.ndarray | None:
        """Model i's keep mask for this block, or None when it keeps everything."""
        if self.sparsify == "random":
            return random_keep(self.seed, name_key(block.name), i, block.start, len(delta), self.densities[i])
        if i in top:
            return top[i].keep(magnitude_keys(delta), block.start)
        return None

    def prepare(self, tensor: TensorPass) -> tuple[dict, dict[int, float]]:
        """(selection, L1 factors): selection is a TopK per model for TIES, and for DARE on bf16 the seeded
        stream states of each sparse model's tiles (for `combine_bf16`; seeded once, used by both passes)."""
        if self.sparsify == "random":
            streams = {}
            if tensor.raw_bf16:
                tiles = range(-(-tensor.numel // TILE))
                streams = {i: random_states(self.seed, name_key(tensor.name), i, tiles) for i in self.sparse}
            return streams, self._l1_factors(tensor, self.sparse, streams) if self.rescale else {}
        top: dict[int, TopK] = {}
        if self.sparsify == "magnitude":
            wanted = {}
            for i in self.sparse:
                k = max(1, int(self.densities[i] * tensor.numel))  # mergekit: int(density * numel)
                if k < tensor.numel:
                    wanted[i] = k
            if wanted:
                top = select_top_k(tensor, self._delta, wanted)
        if not self.rescale:
            return top, {}
        return top, self._l1_factors(tensor, [i for i in self.sparse if i in top], top)

    def _l1_factors(self, tensor: TensorPass, targets: list[int], selection: dict) -> dict[int, float]:
        """mergekit's L1 rescale factor |d_i|_1 / |kept d_i|_1 per target model (both above RESCALE_EPS);
        `selection` is what `_keep` reads (TopK per model, or anything with the same `keep`), or for DARE
        on bf16 the streams of `combine_bf16`, with which the sums are compiled (the same float64 bits)."""
        if not targets:
            return {}

        def sums(block: Block) -> np.ndarray:
            row = np.zeros((len(targets), 2), np.float64)
            for j, i in enumerate(targets):
                delta = self._delta(block, i)
                keep = self._keep(i, delta, block, selection)
                row[j, 0] = np.abs(delta).sum(dtype=np.float64)
                row[j, 1] = np.abs(delta[keep]).sum(dtype=np.float64)
            return row

        def raw_sums(views: list[np.ndarray], start: int) -> np.ndarray:
            keep = self._keeps(1, len(views[0]))[0]
            row = np.zeros((len(targets), 2), np.float64)
            for j, i in enumerate(targets):
                fused.random_keep(selection[i], keep_limit(self.densities[i]), start, keep)
                row[j] = fused.l1_sums(views[i], views[-1], keep, tensor.block)
            return row

        if self.sparsify == "random" and tensor.raw_bf16:
            totals = tensor.reduce_raw(raw_sums, np.add)
        else:
            totals = tensor.reduce(sums, np.add)
        factors = {}
        for j, i in enumerate(targets):
            before, after = totals[j]
            if before >= RESCALE_EPS and after >= RESCALE_EPS:
                factors[i] = float(before) / float(after)  # IEEE as numpy: inf / inf is NaN, not an error
                if not math.isfinite(factors[i]):
                    log.warning(
                        "%s: model %d's task vector has an infinite or NaN L1 norm; its rescale factor is %s, "
                        "so this tensor's merge is NaN where that model is kept (as in mergekit)",
                        tensor.name,
                        i + 1,
                        factors[i],
                    )
        return factors

    # ------------------------------------------------------------ the blocks

    def _bank(self, n: int, dtype: np.dtype, name: str = "bank") -> list[np.ndarray]:
        """One block-sized buffer per model, kept per worker thread (`name` tells sets apart)."""
        bank = getattr(self._local, name, None)
        if bank is None or bank[0].dtype != dtype or len(bank[0]) < n:
            bank = [np.empty(n, dtype) for _ in self.weights]
            setattr(self._local, name, bank)
        return [b[:n] for b in bank]

    def combine(self, block: Block) -> None:
        out, tmp, base = block.out, block.tmp, block.base
        kind = out.dtype.type
        top, factors = block.state if block.state is not None else ({}, {})
        bank = self._bank(len(out), out.dtype) if self.consensus else None
        for i, weight in enumerate(self.weights):
            delta = bank[i] if bank is not None else (out if i == 0 else tmp)
            block.load(i, delta)
            delta -= base
            if i in self.sparse:
                keep = self._keep(i, delta, block, top)
                if keep is not None:
                    delta *= keep  # multiply, not select: NaN * 0 stays NaN, as in mergekit
                if i in factors:
                    delta *= kind(factors[i])
            delta *= kind(weight)
            if bank is None and i:
                out += tmp
        if bank is not None:
            np.copyto(out, bank[0])
            for delta in bank[1:]:
                out += delta
            # The elected sign as +1 / -1 (sum >= 0 counts as +): delta agrees where delta * sign > 0, the
            # same as where(sum >= 0, delta > 0, delta < 0) in fewer passes (times +-1 is exact; NaN agrees
            # with neither). Masks are float 0/1, not bool: float x float runs about twice as fast as a
            # mixed float x bool ufunc here, and ufuncs with where= some thirty times slower.
            sign = tmp
            np.greater_equal(out, 0, out=sign)
            sign *= kind(2)
            sign -= kind(1)
            agreements = self._bank(len(out), out.dtype, "agree")
            for delta, agree in zip(bank, agreements, strict=True):
                np.multiply(delta, sign, out=out)
                np.greater(out, 0, out=agree)
            out[:] = 0
            divisor = tmp
            divisor[:] = 0
            for weight, delta, agree in zip(self.weights, bank, agreements, strict=True):
                delta *= agree  # multiply, not select: a NaN delta stays NaN
                out += delta
                agree *= kind(weight)
                divisor += agree
            if self.normalize:
                divisor += divisor == 0  # no model agrees: divide by 1
                out /= divisor
        elif self.normalize:
            out /= kind(self.total)
        if self.lambda_ != 1:
            out *= kind(self.lambda_)
        out += base

    # ------------------------------------------------------------ bf16 straight from the raw bits

    def _keeps(self, models: int, n: int) -> np.ndarray:
        """A (models, n) byte array for DARE's masks, kept per worker thread."""
        held = getattr(self._local, "keeps", None)
        if held is None or len(held) < models * n:
            held = self._local.keeps = np.empty(models * n, np.uint8)
        return held[: models * n].reshape(models, n)

    def combine_bf16(self, raw: list[np.ndarray], start: int, out: np.ndarray, state) -> bool:
        selection, factors = state if state is not None else ({}, {})
        m = len(self.weights)
        rules = np.empty((m, 4), np.int64)
        if self.sparsify == "random":
            keeps = self._keeps(m, len(out))
            for i in range(m):
                if i not in self.sparse:
                    rules[i] = fused.KEEP_ALL
                    continue
                if i not in selection:
                    return False  # not seeded by `prepare`: the numpy path draws its own
                rules[i] = fused.MASKED
                fused.random_keep(selection[i], keep_limit(self.densities[i]), start, keeps[i])
        else:
            keeps = np.empty((m, 0), np.uint8)  # one compiled signature: always a 2-D byte array
            for i in range(m):
                rule = fused_rule(selection.get(i))
                if rule is None:
                    return False
                rules[i] = rule
        kind = np.float32
        scales = np.array([(factors.get(i, 1.0), w) for i, w in enumerate(self.weights)], kind)
        fused.merge_chunk(
            raw,
            out,
            start,
            rules,
            keeps,
            scales,
            self.consensus,
            self.normalize,
            kind(self.total),
            kind(self.lambda_),
        )
        return True


def fused_rule(selection) -> tuple[int, int, int, int] | None:
    """`fused.combine`'s keep rule for one model's selection (None: keeps all; a TopK; a breadcrumbs
    Band, anything with `upper`, `lower` and `empty`), or None when it has none (per-block tie quotas)."""
    if selection is None:
        return fused.KEEP_ALL
    if isinstance(selection, TopK):
        upper, lower = selection, None
    elif selection.empty:
        return fused.KEEP_NONE
    else:
        upper, lower = selection.upper, selection.lower
    cuts = []
    for cut, absent in ((upper, fused.BELOW_ALL), (lower, fused.ABOVE_ALL)):
        if cut is None:
            cuts += [absent, 0]
        elif cut.starts is not None:
            return None
        else:
            cuts += [cut.threshold, fused.END_ALL if cut.end is None else cut.end]
    return tuple(cuts)


def _kernel(consensus: bool, sparsify: str | None):
    def build(args: Args) -> TaskVectorKernel:
        g = args.globals
        densities = args.column("density") if sparsify else tuple(1.0 for _ in args.per_model)
        return TaskVectorKernel(
            args.column("weight"),
            densities,
            g["lambda"],
            g["normalize"],
            consensus,
            sparsify,
            g.get("rescale", False),
            g.get("random_seed", 0),
        )

    return build


WEIGHT = Param("weight", "this model's weight", per_model=True)
DENSITY = Param(
    "density",
    "fraction of the task vector kept",
    default=1.0,
    per_model=True,
    low=0.0,
    low_open=True,
    high=1.0,
)
LAMBDA = Param("lambda", "scale of the summed task vectors", default=1.0)
SEED = Param("random_seed", "seed of DARE's random drop (merge_tool's addition)", default=0, kind=int, low=0)
NEGATIVE = "a negative weight subtracts that model's task vector (task-vector negation; mergekit allows it)"
INT8 = "int8_mask only saves GPU memory in mergekit; the result is the same"


def _normalize(default: bool) -> Param:
    return Param("normalize", "divide by the sum of the (agreeing) weights", default=default, kind=bool)


def _rescale(default: bool) -> Param:
    return Param("rescale", "rescale each sparsified task vector to its L1 norm", default=default, kind=bool)


TASK_ARITHMETIC = Method(
    name="task_arithmetic",
    summary="base + lambda * sum_i w_i (model_i - base) (Ilharco et al.'s task vectors)",
    params=(WEIGHT, _normalize(False), LAMBDA),
    build=_kernel(False, None),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    aliases=("task-arithmetic",),
    ignored={
        "int8_mask": INT8,
        "density": "task_arithmetic does not sparsify",
        "rescale": "nothing to rescale",
    },
)
TIES = Method(
    name="ties",
    summary="task vectors trimmed to their top-density magnitudes, signs elected, agreeing ones averaged",
    params=(WEIGHT, DENSITY, _normalize(True), _rescale(False), LAMBDA),
    build=_kernel(True, "magnitude"),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    ignored={"int8_mask": INT8},
)
DARE_TIES = Method(
    name="dare_ties",
    summary="task vectors randomly dropped to density (seeded) and rescaled, then TIES's sign consensus",
    params=(WEIGHT, DENSITY, _normalize(False), _rescale(True), LAMBDA, SEED),
    build=_kernel(True, "random"),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    ignored={"int8_mask": INT8},
)
DARE_LINEAR = Method(
    name="dare_linear",
    summary="task vectors randomly dropped to density (seeded) and rescaled, then summed",
    params=(WEIGHT, DENSITY, _normalize(False), _rescale(True), LAMBDA, SEED),
    build=_kernel(False, "random"),
    needs_base=True,
    min_models=1,
    negative_weights=NEGATIVE,
    ignored={"int8_mask": INT8},
)
