"""Task-vector merges of bf16 checkpoints in one compiled loop per pass: the raw bits in, the rounded bits out.

Why compiled: the numpy kernels of `task_vectors` make some fifteen passes over
each block (widen, subtract, keys, keep masks, sign election, agreement,
divisor, narrow), and TIES's top-k adds a counting pass of five more, so TIES
cost about 2.8x a linear merge, which makes two passes. Here each element is
read once per pass and every operation of the numpy kernel is done on it in
registers, in the same order and in float32 (no fast-math, no fused
multiply-add), so the output is the same bytes: `tests/test_merge_fused.py`
compares the two paths on hostile values (NaN, infinities, signed zeros,
denormals, mass ties at the cut-off).

Covered: every task-vector kernel whose sparsification is by magnitude (ties,
breadcrumbs, breadcrumbs_ties) or none (task_arithmetic), when every input and
the output are bf16, the dtype models are published in. Everything else (DARE's
seeded drop, float16/32/64, a top-k that fell back to the radix select with
per-block tie quotas) stays on the numpy path, which is the reference.

A keep rule per model is four integers on the magnitude keys (the bits of
|delta| as float32, which order like the magnitudes): keep when above the upper
cut (or equal to it before position `up_end`) and not above the lower cut (or
equal to it before `lo_end`). A cut of -1 is below every key, 2**32 above.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

BELOW_ALL = -1  # a cut under every key (keys are 31-bit)
ABOVE_ALL = 1 << 32  # a cut over every key
KEEP_ALL = (BELOW_ALL, 0, ABOVE_ALL, 0)  # a rule that keeps everything
KEEP_NONE = (ABOVE_ALL, 0, ABOVE_ALL, 0)
END_ALL = 1 << 62  # a cut's end past every position: every key equal to it is kept
TILE = 2048  # elements merged a model at a time: their float32 deltas stay in L1


@intrinsic
def _f32_from_bits(typingctx, bits):
    """float32 with the bit pattern of a uint32 (an LLVM bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_from_f32(typingctx, value):
    """The uint32 bit pattern of a float32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@nb.njit(inline="always")
def _widen(raw):
    return _f32_from_bits(np.uint32(np.uint32(raw) << 16))


@nb.njit(inline="always")
def _narrow(value):
    """Round to nearest even into bf16 bits; NaN becomes the quiet NaN with its sign (dtypes.narrow).
    Both are computed and one selected: a branch would keep the loop from being vectorized."""
    bits = _bits_from_f32(value)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # no carry out of 32 bits unless NaN
    nan = 0x7FC0 | ((bits >> 16) & 0x8000)
    return np.uint16(nan if value != value else rounded)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def gather(x, base, start, brackets, positions, keys):
    """Top-k counting pass over one model's task vector, for each bracket r = (lo, hi): how many keys
    exceed hi (above[r]), and the keys in [lo, hi] with their positions (written to the front of
    positions[r] and keys[r]; their count is count[r]). Returns (above, count).

    Per tile, one loop the compiler vectorizes computes the keys; per bracket, another counts those
    above and marks those inside with a byte. The marks are then read eight at a time as one word, and
    only the few nonzero words (a bracket holds about 1% of the keys) are looked into to pick those
    keys out. Breadcrumbs' two brackets per model share the keys."""
    above = np.zeros(len(brackets), np.int64)
    count = np.zeros(len(brackets), np.int64)
    tile = np.empty(TILE, np.int64)
    marks = np.zeros(TILE, np.uint8)
    words = marks.view(np.uint64)
    for s in range(0, len(x), TILE):
        t = min(TILE, len(x) - s)
        x_t, b_t, k_t, m_t = x[s : s + t], base[s : s + t], tile[:t], marks[:t]
        for j in range(t):
            k_t[j] = np.int64(_bits_from_f32(_widen(x_t[j]) - _widen(b_t[j])) & 0x7FFFFFFF)
        for r in range(len(brackets)):
            lo, hi = brackets[r, 0], brackets[r, 1]
            pos_r, keys_r = positions[r], keys[r]
            n, higher = count[r], 0
            for j in range(t):
                higher += np.int64(k_t[j] > hi)
                m_t[j] = np.uint8((k_t[j] >= lo) & (k_t[j] <= hi))
            for w in range((t + 7) // 8):
                if words[w]:
                    for j in range(8 * w, min(t, 8 * w + 8)):  # each written, the next place taken if marked
                        pos_r[n] = start + s + j
                        keys_r[n] = k_t[j]
                        n += np.int64(m_t[j])
                    words[w] = 0  # the tail of a short last tile stays 0 for the next reading
            above[r] += higher
            count[r] = n
    return above, count


@nb.njit(cache=True, nogil=True, error_model="numpy")
def combine(xs, base, out, start, rules, scales, consensus, normalize, total, lambda_):
    """out[j] = the task-vector merge of element start + j, as bf16 bits.

    rules[i] = (up_cut, up_end, lo_cut, lo_end) on the magnitude keys (KEEP_ALL keeps everything);
    scales[i] = (L1 factor, weight), 1.0 for no factor; total and lambda_ are float32. The operations
    are TaskVectorKernel.combine's, in its order; the ones it skips are multiplications by 1.0 here,
    which change no bits (NaN's payload aside, and narrowing writes every NaN the same). Done TILE
    elements at a time, a model at a time, through slices indexed from 0 (an index such as s + j
    might be negative to the compiler, and its wrap-around check stops vectorization)."""
    m = len(xs)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    deltas = np.empty((m, TILE), np.float32)
    acc = np.empty(TILE, np.float32)
    divisor = np.empty(TILE, np.float32)
    sign = np.empty(TILE, np.float32)
    for s in range(0, len(out), TILE):
        t = min(TILE, len(out) - s)
        b_t, out_t, acc_t, div_t, sign_t = base[s : s + t], out[s : s + t], acc[:t], divisor[:t], sign[:t]
        p = start + s
        for i in range(m):
            x_t, d_t = xs[i][s : s + t], deltas[i, :t]
            up_cut, up_end, lo_cut, lo_end = rules[i, 0], rules[i, 1], rules[i, 2], rules[i, 3]
            factor, weight = scales[i, 0], scales[i, 1]
            for j in range(t):
                d = _widen(x_t[j]) - _widen(b_t[j])
                key = np.int64(_bits_from_f32(d) & 0x7FFFFFFF)
                upper = (key > up_cut) | ((key == up_cut) & (p + j < up_end))
                lower = (key > lo_cut) | ((key == lo_cut) & (p + j < lo_end))
                d = d * (
                    one if upper > lower else zero
                )  # upper and not lower; a multiply: NaN, inf as numpy's
                d_t[j] = (d * factor) * weight
            if i == 0:
                acc_t[:] = d_t
            else:
                for j in range(t):
                    acc_t[j] = acc_t[j] + d_t[j]
        if consensus:
            for i in range(m):
                d_t = deltas[i, :t]
                weight = scales[i, 1]
                if i == 0:  # the elected sign, and the sums started from 0 as numpy's are
                    for j in range(t):
                        elected = one if acc_t[j] >= zero else -one
                        agree = one if d_t[j] * elected > zero else zero
                        sign_t[j] = elected
                        acc_t[j] = zero + d_t[j] * agree
                        div_t[j] = zero + agree * weight
                else:
                    for j in range(t):
                        agree = one if d_t[j] * sign_t[j] > zero else zero
                        acc_t[j] = acc_t[j] + d_t[j] * agree
                        div_t[j] = div_t[j] + agree * weight
            if normalize:
                for j in range(t):
                    value = acc_t[j] / (div_t[j] + (one if div_t[j] == zero else zero))
                    out_t[j] = _narrow(value * lambda_ + _widen(b_t[j]))
                continue
        elif normalize:
            for j in range(t):
                out_t[j] = _narrow((acc_t[j] / total) * lambda_ + _widen(b_t[j]))
            continue
        for j in range(t):
            out_t[j] = _narrow(acc_t[j] * lambda_ + _widen(b_t[j]))


def merge_chunk(raw, out, start, rules, scales, consensus, normalize, total, lambda_) -> None:
    """`combine` over one chunk: raw = the inputs' bf16 views, models then base. They are passed as
    read-only views, so every call has one array type (one compiled signature per model count)."""
    if len(out):
        xs = tuple(_readonly(x) for x in raw[:-1])
        combine(xs, _readonly(raw[-1]), out, start, rules, scales, consensus, normalize, total, lambda_)


def _readonly(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view
