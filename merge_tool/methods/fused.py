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

Covered: every task-vector kernel (ties, dare_ties, dare_linear, breadcrumbs,
breadcrumbs_ties, task_arithmetic) when every input and the output are bf16,
the dtype models are published in. Everything else (float16/32/64, a top-k that
fell back to the radix select with per-block tie quotas) stays on the numpy
path, which is the reference.

DARE's mask is numpy's PCG64 stream (see `sparsify`), drawn here by the same
arithmetic: a 128-bit multiply-add per word, done on LLVM's i128. One stream is
a serial chain, so a tile's words are drawn in four lanes that each jump ahead
to their quarter (x -> a^k x + c (a^(k-1) + ... + 1), by squaring), which lets
the CPU overlap four chains: about twice numpy's rate. DARE's L1 sums are numpy's
own (float64 sums of the float32 magnitudes the compiled loop writes), so
their bits are the numpy path's whatever order numpy adds in.

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
MASKED = (-2, 0, 0, 0)  # a rule that keeps where the model's row of `keeps` says so (DARE)
END_ALL = 1 << 62  # a cut's end past every position: every key equal to it is kept
TILE = 2048  # elements merged a model at a time: their float32 deltas stay in L1
PCG_TILE = 1 << 16  # elements per seeded stream of DARE's mask (sparsify.TILE is this)
_MULT_HI, _MULT_LO = np.uint64(0x2360ED051FC65DA4), np.uint64(0x4385DF649FCCF645)  # PCG64's multiplier
_I128 = ir.IntType(128)


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


def _join128(builder, hi, lo):
    return builder.or_(builder.shl(builder.zext(hi, _I128), ir.Constant(_I128, 64)), builder.zext(lo, _I128))


@intrinsic
def _muladd128(typingctx, a_hi, a_lo, b_hi, b_lo, c_hi, c_lo):
    """(a * b + c) mod 2**128 on (high, low) uint64 halves, as LLVM i128 arithmetic."""
    u64 = types.uint64

    def codegen(context, builder, signature, args):
        a, b, c = (_join128(builder, args[k], args[k + 1]) for k in (0, 2, 4))
        r = builder.add(builder.mul(a, b), c)
        hi = builder.trunc(builder.lshr(r, ir.Constant(_I128, 64)), ir.IntType(64))
        return context.make_tuple(builder, signature.return_type, [hi, builder.trunc(r, ir.IntType(64))])

    return types.UniTuple(u64, 2)(u64, u64, u64, u64, u64, u64), codegen


@nb.njit(inline="always")
def _pcg_output(hi, lo):
    """PCG64's XSL-RR output of a 128-bit state."""
    x = hi ^ lo
    r = hi >> np.uint64(58)
    return (x >> r) | (x << ((np.uint64(64) - r) & np.uint64(63)))


@nb.njit(cache=True, nogil=True)
def _pcg_advance(s_hi, s_lo, i_hi, i_lo, k):
    """The PCG64 state k steps after (s_hi, s_lo) with increment (i_hi, i_lo)."""
    zero, one = np.uint64(0), np.uint64(1)
    a_hi, a_lo, g_hi, g_lo = zero, one, zero, zero  # k steps so far: x -> a x + g
    m_hi, m_lo, c_hi, c_lo = _MULT_HI, _MULT_LO, i_hi, i_lo  # 2^j steps: x -> m x + c
    while k > 0:
        if k & 1:
            a_hi, a_lo = _muladd128(a_hi, a_lo, m_hi, m_lo, zero, zero)
            g_hi, g_lo = _muladd128(g_hi, g_lo, m_hi, m_lo, c_hi, c_lo)
        p_hi, p_lo = _muladd128(m_hi, m_lo, zero, one, zero, one)  # m + 1
        c_hi, c_lo = _muladd128(p_hi, p_lo, c_hi, c_lo, zero, zero)
        m_hi, m_lo = _muladd128(m_hi, m_lo, m_hi, m_lo, zero, zero)
        k >>= 1
    return _muladd128(a_hi, a_lo, s_hi, s_lo, g_hi, g_lo)


@nb.njit(cache=True, nogil=True)
def pcg_seed(seeds):
    """PCG64's state (hi, lo, inc hi, inc lo) per row of SeedSequence.generate_state(4, np.uint64)
    (numpy's pcg64_set_seed: inc = seq << 1 | 1; state = 0, step, add the seed, step)."""
    states = np.empty_like(seeds)
    zero, one = np.uint64(0), np.uint64(1)
    for r in range(len(seeds)):
        i_hi = (seeds[r, 2] << one) | (seeds[r, 3] >> np.uint64(63))
        i_lo = (seeds[r, 3] << one) | one
        s_hi, s_lo = _muladd128(zero, zero, zero, zero, i_hi, i_lo)
        s_hi, s_lo = _muladd128(s_hi, s_lo, zero, one, seeds[r, 0], seeds[r, 1])
        states[r, 0], states[r, 1] = _muladd128(s_hi, s_lo, _MULT_HI, _MULT_LO, i_hi, i_lo)
        states[r, 2], states[r, 3] = i_hi, i_lo
    return states


@nb.njit(cache=True, nogil=True)
def _pcg_words(state, first, out):
    """Words first, first + 1, ... of the stream seeded at `state` (numpy's random_raw: step, then output),
    in four lanes, each from its own quarter (independent chains the CPU overlaps)."""
    i_hi, i_lo = state[2], state[3]
    q = len(out) // 4
    h0, l0 = _pcg_advance(state[0], state[1], i_hi, i_lo, first)
    h1, l1 = _pcg_advance(h0, l0, i_hi, i_lo, q)
    h2, l2 = _pcg_advance(h1, l1, i_hi, i_lo, q)
    h3, l3 = _pcg_advance(h2, l2, i_hi, i_lo, q)
    o0, o1, o2, o3 = out[:q], out[q : 2 * q], out[2 * q : 3 * q], out[3 * q :]
    for k in range(q):
        h0, l0 = _muladd128(h0, l0, _MULT_HI, _MULT_LO, i_hi, i_lo)
        o0[k] = _pcg_output(h0, l0)
        h1, l1 = _muladd128(h1, l1, _MULT_HI, _MULT_LO, i_hi, i_lo)
        o1[k] = _pcg_output(h1, l1)
        h2, l2 = _muladd128(h2, l2, _MULT_HI, _MULT_LO, i_hi, i_lo)
        o2[k] = _pcg_output(h2, l2)
        h3, l3 = _muladd128(h3, l3, _MULT_HI, _MULT_LO, i_hi, i_lo)
        o3[k] = _pcg_output(h3, l3)
    for k in range(q, len(o3)):  # the last lane's remainder
        h3, l3 = _muladd128(h3, l3, _MULT_HI, _MULT_LO, i_hi, i_lo)
        o3[k] = _pcg_output(h3, l3)


@nb.njit(cache=True, nogil=True)
def random_keep(states, limit, start, keep):
    """keep[j] = 1 where element start + j is kept by DARE's mask (sparsify.random_keep, the same bits):
    the 32-bit halves, low first, of its tile's words, below `limit`. states[t] seeds tile t."""
    words = np.empty(PCG_TILE // 2 + 1, np.uint64)
    low = np.uint64(0xFFFFFFFF)
    bound = np.uint64(limit)
    stop = start + len(keep)
    pos = start
    while pos < stop:
        tile = pos // PCG_TILE
        a, b = pos - tile * PCG_TILE, min(PCG_TILE, stop - tile * PCG_TILE)
        w0 = a // 2
        w_t = words[: (b + 1) // 2 - w0]
        _pcg_words(states[tile], w0, w_t)
        k_t = keep[pos - start : pos - start + b - a]
        j = 0
        if a & 1:  # the tile starts in the middle of a word: its high half
            k_t[0] = np.uint8((w_t[0] >> np.uint64(32)) < bound)
            j = 1
        pairs = (b - a - j) // 2
        w_p, k_p = w_t[j:], k_t[j:]
        for k in range(pairs):
            k_p[2 * k] = np.uint8((w_p[k] & low) < bound)
            k_p[2 * k + 1] = np.uint8((w_p[k] >> np.uint64(32)) < bound)
        if j + 2 * pairs < b - a:  # and ends in the middle of one: its low half
            k_t[b - a - 1] = np.uint8((w_t[len(w_t) - 1] & low) < bound)
        pos += b - a
    return keep


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _magnitudes(x, base, keep, magnitudes, kept):
    """|d| of a block of one model's task vector into `magnitudes`, and the kept ones, in order, into the
    front of `kept`; returns how many were kept."""
    n = 0
    for j in range(len(x)):
        magnitudes[j] = abs(_widen(x[j]) - _widen(base[j]))
    for j in range(len(x)):  # each written, the next place taken if kept
        kept[n] = magnitudes[j]
        n += np.int64(keep[j])
    return n


def l1_sums(x, base, keep, block) -> np.ndarray:
    """(|d|_1, |kept d|_1) of one model's task vector d over a chunk, as TaskVectorKernel's numpy pass sums
    them: per compute block of `block` elements (from the chunk's start) numpy's own float64 sums of |d|
    and of |d[keep]| (its summation order is numpy's business: buffers, pairwise), the rows added in
    order. Only |d| and the compaction are compiled."""
    size = min(block, len(x))
    magnitudes, kept = np.empty(size, np.float32), np.empty(size, np.float32)
    totals = None
    for s in range(0, len(x), block):
        t = min(block, len(x) - s)
        n = _magnitudes(x[s : s + t], base[s : s + t], keep[s : s + t], magnitudes, kept)
        row = np.array([magnitudes[:t].sum(dtype=np.float64), kept[:n].sum(dtype=np.float64)])
        totals = row if totals is None else totals + row
    return totals


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
def combine(xs, base, out, start, rules, keeps, scales, consensus, normalize, total, lambda_):
    """out[j] = the task-vector merge of element start + j, as bf16 bits.

    rules[i] = (up_cut, up_end, lo_cut, lo_end) on the magnitude keys (KEEP_ALL keeps everything), or
    MASKED: keeps[i, j] (0/1, DARE's mask) says whether element start + j is kept;
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
            if up_cut == MASKED[0]:
                k_t = keeps[i, s : s + t]
                for j in range(t):  # a multiply, not a select: NaN, inf as numpy's
                    d = (_widen(x_t[j]) - _widen(b_t[j])) * (one if k_t[j] else zero)
                    d_t[j] = (d * factor) * weight
            else:
                for j in range(t):
                    d = _widen(x_t[j]) - _widen(b_t[j])
                    key = np.int64(_bits_from_f32(d) & 0x7FFFFFFF)
                    upper = (key > up_cut) | ((key == up_cut) & (p + j < up_end))
                    lower = (key > lo_cut) | ((key == lo_cut) & (p + j < lo_end))
                    d = d * (one if upper > lower else zero)  # upper and not lower
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


def merge_chunk(raw, out, start, rules, keeps, scales, consensus, normalize, total, lambda_) -> None:
    """`combine` over one chunk: raw = the inputs' bf16 views, models then base. They are passed as
    read-only views, so every call has one array type (one compiled signature per model count)."""
    if len(out):
        xs = tuple(_readonly(x) for x in raw[:-1])
        combine(
            xs, _readonly(raw[-1]), out, start, rules, keeps, scales, consensus, normalize, total, lambda_
        )


def _readonly(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view
