"""Sparsifying task vectors tensor by tensor while streaming: TIES's exact top-k, DARE's seeded drop.

Why streaming: TIES keeps each task vector's `density` fraction of largest
magnitudes per tensor, and sorting a 131M-element embedding in memory would
cost more than a shard. Instead the k-th largest magnitude T is found exactly
by a radix select on the 31 bits of |delta|'s float32 pattern (non-negative
floats order like their bits): one pass builds a histogram of the top 11 bits
and finds the bin holding the k-th largest, a second one of the next 10 bits
inside that bin, a third of the last 10, which gives T. (Three small
histograms that stay in the CPU cache cost less than two of 65,536 bins.)
Everything above T is kept; of the
elements equal to T the first ones in flat order are kept until exactly k are
(a third pass, only when needed, counts them per block), so the density is
exact and the choice deterministic (mergekit's argsort breaks ties arbitrarily).

DARE's keep mask is Bernoulli(density) drawn per tile: tile j (65,536
elements) of (seed, tensor name, model) has its own seeded PCG64 stream, whose
raw 32-bit words below density * 2**32 mark the kept elements, so
the mask depends on neither chunk sizes nor threads and a recorded config
replays bit for bit (`fused.random_keep` draws the same words, compiled).
(The stream differs from torch's, so masks differ from mergekit's for the
same seed; mergekit's masks depend on its device and scheduling anyway.)
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import fused
from .base import Block, TensorPass

log = logging.getLogger(__name__)

DIGITS = ((20, 11), (10, 10), (0, 10))  # (shift, width) of each radix digit of a 31-bit magnitude key
TILE = fused.PCG_TILE  # elements per seeded stream of DARE's mask (one definition, the compiled one's)
SAMPLE_SPANS, SAMPLE_RUN = 64, 4096  # the sample that brackets a large tensor's k-th largest magnitude
SAMPLE_SIGMAS = 6.0  # the bracket's half-width, in standard deviations of the sample's rank
CANDIDATES_MIN, CANDIDATES_SHARE = 1 << 20, 16  # keys held inside a bracket: at most max(MIN, numel / SHARE)
Delta = Callable[[Block, int], np.ndarray]  # (block, model index) -> that model's task vector block
_LOCAL = threading.local()


def magnitude_keys(delta: np.ndarray) -> np.ndarray:
    """uint32 keys that order like |delta| (NaN above infinity, as torch's sort puts it)."""
    if delta.dtype == np.float32:
        return delta.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return np.abs(delta).astype(np.float32).view(np.uint32)


@dataclass(frozen=True)
class TopK:
    """Which elements of one task vector the top-k keeps: keys above `threshold`, and `ties` of those equal."""

    threshold: int
    ties: int
    starts: np.ndarray | None = None  # block starts, when only some elements equal to the threshold are kept
    before: np.ndarray | None = None  # elements equal to the threshold in the blocks before each block
    end: int | None = None  # or: the kept ties are those before this position (the ties' positions are known)

    def keep(self, keys: np.ndarray, start: int) -> np.ndarray:
        if self.end is not None:
            keep = keys > self.threshold
            m = min(len(keys), self.end - start)
            if m > 0:
                keep[:m] |= keys[:m] == self.threshold
            return keep
        if self.starts is None:
            return keys >= self.threshold
        keep = keys > self.threshold
        i = int(np.searchsorted(self.starts, start))
        if i >= len(self.starts) or self.starts[i] != start:
            raise RuntimeError(f"block at {start} was not seen when counting ties")  # a bug, not bad input
        quota = self.ties - int(self.before[i])
        if quota > 0:
            keep[np.flatnonzero(keys == self.threshold)[:quota]] = True
        return keep


def _from_top(hist: np.ndarray, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest key (k >= 1), and how many keys lie in higher bins."""
    cum = np.cumsum(hist[::-1])
    r = int(np.searchsorted(cum, k))
    b = len(hist) - 1 - r
    return b, int(cum[r] - hist[b])


def select_top_k(
    tensor: TensorPass, delta: Delta, wanted: dict[int, int], model_of: Callable[[int], int] = int
) -> dict[int, TopK]:
    """For each model i in `wanted` (0 < k < numel), which elements are its k largest magnitudes
    (ties: the earlier elements).

    Why a sample first: a histogram of every key (`radix_top_k`) costs three passes of bincount, ten
    times the arithmetic of the merge itself. Instead 64 spans of 4,096 elements spread over the tensor
    bracket each model's k-th largest key, and one pass counts the keys above the bracket and gathers
    the few inside it (with their positions), where an in-memory partition finds the exact k-th and its
    ties. A tensor no larger than the sample is gathered whole. When a bracket misses (a sample unlike
    the tensor) or holds too many keys (mass ties), that model falls back to the radix select. Both
    give the same elements, the unique k largest with ties to the earlier ones, so outputs are the
    same bytes either way. `model_of(i)` is the model whose task vector wanted key i selects in
    (the counting pass of bf16 tensors reads the raw bits, in `fused`).
    """
    models = list(wanted)
    spans = sample_spans(tensor.numel)
    keys = tensor.reduce_spans(
        lambda block: [[magnitude_keys(delta(block, i))] for i in models],
        lambda a, b: [x + y for x, y in zip(a, b, strict=True)],
        spans,
    )
    keys = [np.concatenate(k) for k in keys]
    if spans == [(0, tensor.numel)]:  # the whole tensor: exact from the keys in memory
        everything = np.arange(tensor.numel, dtype=np.int64)
        return {i: _exact(keys[j], everything, 0, wanted[i]) for j, i in enumerate(models)}
    brackets = {i: _bracket(keys[j], wanted[i], tensor.numel) for j, i in enumerate(models)}
    limit = max(CANDIDATES_MIN, tensor.numel // CANDIDATES_SHARE)
    by_model: dict[int, list[int]] = {}  # the wanted keys of each model, counted in one pass over it
    for i in models:
        by_model.setdefault(model_of(i), []).append(i)

    def gather_raw(views: list[np.ndarray], start: int) -> list:
        """gather's work on a chunk of raw bf16 bits, in one compiled loop per model (the same result)."""
        found = {}
        for model, wanted_keys in by_model.items():
            positions, keys = _gather_buffers(len(wanted_keys), len(views[0]))
            ranges = np.array([brackets[i] for i in wanted_keys], np.int64)
            above, count = fused.gather(views[model], views[-1], start, ranges, positions, keys)
            for r, i in enumerate(wanted_keys):
                n = int(count[r])
                found[i] = (int(above[r]), [positions[r, :n].copy()], [keys[r, :n].astype(np.uint32)], n)
        return [found[i] for i in models]

    def gather(block: Block) -> list:
        row = []
        for i in models:
            k = magnitude_keys(delta(block, i))
            lo, hi = brackets[i]
            inside = np.flatnonzero(np.subtract(k, lo, dtype=np.uint32) <= np.uint32(hi - lo))
            row.append((int(np.count_nonzero(k > hi)), [inside + block.start], [k[inside]], len(inside)))
        return row

    def add(a: list, b: list) -> list:
        out = []
        for (above_a, pos_a, key_a, n_a), (above_b, pos_b, key_b, n_b) in zip(a, b, strict=True):
            if n_a + n_b > limit:  # too many to hold: only the count goes on (this model falls back)
                out.append((above_a + above_b, [], [], n_a + n_b))
            else:
                out.append((above_a + above_b, pos_a + pos_b, key_a + key_b, n_a + n_b))
        return out

    counted = tensor.reduce_raw(gather_raw, add) if tensor.raw_bf16 else tensor.reduce(gather, add)
    result: dict[int, TopK] = {}
    missed: dict[int, int] = {}
    for (above, pos, key, n), i in zip(counted, models, strict=True):
        k = wanted[i]
        if n > limit or not above < k <= above + n:
            missed[i] = k
        else:
            result[i] = _exact(np.concatenate(key), np.concatenate(pos), above, k)
    if missed:
        log.debug("%s: top-k bracket missed for models %s; radix select", tensor.name, sorted(missed))
        result.update(radix_top_k(tensor, delta, missed))
    return result


def _gather_buffers(brackets: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and keys for `fused.gather` (brackets x n, C-contiguous: one compiled signature), kept per
    worker thread: only the pages it writes (about as many as keys inside the brackets) become
    resident, instead of fresh chunk-sized arrays each time."""
    held = getattr(_LOCAL, "gather", None)
    if held is None or len(held[0]) < brackets * n:
        held = _LOCAL.gather = (
            np.empty(max(2, brackets) * n, np.int64),
            np.empty(max(2, brackets) * n, np.int64),
        )
    return held[0][: brackets * n].reshape(brackets, n), held[1][: brackets * n].reshape(brackets, n)


def sample_spans(numel: int) -> list[tuple[int, int]]:
    """SAMPLE_SPANS runs of SAMPLE_RUN elements spread evenly over the tensor, or all of a small one."""
    if numel <= 2 * SAMPLE_SPANS * SAMPLE_RUN:
        return [(0, numel)]
    step = numel // SAMPLE_SPANS
    return [(j * step, j * step + SAMPLE_RUN) for j in range(SAMPLE_SPANS)]


def _bracket(sample: np.ndarray, k: int, numel: int) -> tuple[int, int]:
    """Keys [lo, hi] that hold the k-th largest of the tensor if the sample is like it (a wide margin)."""
    s = len(sample)
    q = k / numel
    rank = q * s  # the k-th largest's rank from the top, in the sample
    margin = int(SAMPLE_SIGMAS * math.sqrt(s * q * (1 - q))) + 16
    # the keys at ranks rank -+ margin from the top: two order statistics (a partition, not a sort)
    top, bottom = s - 1 - max(0, int(rank) - margin), s - 1 - min(s - 1, int(rank) + margin)
    placed = np.partition(sample, [bottom, top])
    return int(placed[bottom]), int(placed[top])


def _exact(keys: np.ndarray, positions: np.ndarray, above: int, k: int) -> TopK:
    """The TopK of the k largest, given `above` keys larger than all of `keys` (whose positions are in order)."""
    r = k - above  # 1 <= r <= len(keys): the r-th largest of `keys` is the threshold
    threshold = int(np.partition(keys, len(keys) - r)[len(keys) - r])
    need = k - above - int(np.count_nonzero(keys > threshold))
    ties = positions[keys == threshold]
    if need == len(ties):
        return TopK(threshold, need)
    return TopK(threshold, need, end=int(ties[need - 1]) + 1)


def radix_top_k(tensor: TensorPass, delta: Delta, wanted: dict[int, int]) -> dict[int, TopK]:
    """select_top_k's fallback: an exact radix select over histograms of the streamed keys (3-4 passes)."""
    models = list(wanted)
    prefix = [0] * len(models)  # the digits of T found so far
    need = [wanted[i] for i in models]  # how many of the k are still to be found below the prefix
    hist = None
    for level, (shift, width) in enumerate(DIGITS):

        def digit_hist(block: Block, level=level, shift=shift, width=width) -> np.ndarray:
            out = np.zeros((len(models), 1 << width), np.int64)
            for j, i in enumerate(models):
                keys = magnitude_keys(delta(block, i))
                if level:
                    keys = keys[(keys >> (shift + width)) == prefix[j]]
                out[j] += np.bincount((keys >> shift) & ((1 << width) - 1), minlength=1 << width)
            return out

        hist = tensor.reduce(digit_hist, np.add)
        for j in range(len(models)):
            b, higher = _from_top(hist[j], need[j])
            need[j] -= higher
            prefix[j] = (prefix[j] << width) | b
    result: dict[int, TopK] = {}
    partial: list[int] = []
    for j, i in enumerate(models):
        result[i] = TopK(prefix[j], need[j])
        if need[j] < hist[j][prefix[j] & ((1 << DIGITS[-1][1]) - 1)]:
            partial.append(i)
    if partial:

        def count(block: Block) -> list[tuple[int, list[int]]]:
            counts = [
                int(np.count_nonzero(magnitude_keys(delta(block, i)) == result[i].threshold)) for i in partial
            ]
            return [(block.start, counts)]

        rows = tensor.reduce(count, lambda a, b: a + b)
        starts = np.array([s for s, _ in rows], dtype=np.int64)
        counts = np.array([c for _, c in rows], dtype=np.int64).reshape(len(rows), len(partial))
        before = np.cumsum(counts, axis=0) - counts
        for j, i in enumerate(partial):
            result[i] = TopK(result[i].threshold, result[i].ties, starts, before[:, j].copy())
    return result


def name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def keep_limit(density: float) -> int:
    """DARE keeps an element when its 32-bit word is below this."""
    return min((1 << 32) - 1, int(density * (1 << 32)))


def random_states(seed: int, name: int, model: int, tiles: range) -> np.ndarray:
    """The seeded PCG64 state of each tile's stream (rows for `fused.random_keep`), the same as
    `random_keep`'s: numpy seeds the words, the compiled `fused.pcg_seed` does numpy's arithmetic."""
    seeds = np.empty((len(tiles), 4), np.uint64)
    for row, tile in enumerate(tiles):
        seeds[row] = np.random.SeedSequence([seed, name, model, tile]).generate_state(4, np.uint64)
    return fused.pcg_seed(seeds)


def random_keep(seed: int, name: int, model: int, start: int, n: int, density: float) -> np.ndarray:
    """Bernoulli(density) keep mask for elements [start, start + n) of (tensor `name`, model)."""
    limit = np.uint32(keep_limit(density))
    keep = np.empty(n, dtype=bool)
    pos, stop = start, start + n
    while pos < stop:
        tile = pos // TILE
        lo, hi = pos - tile * TILE, min(TILE, stop - tile * TILE)
        words = np.random.PCG64(np.random.SeedSequence([seed, name, model, tile])).random_raw((hi + 1) // 2)
        keep[pos - start : pos - start + hi - lo] = words.view(np.uint32)[lo:hi] < limit
        pos += hi - lo
    return keep
