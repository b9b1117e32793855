"""The streaming loop: chunks of every input -> method -> output bytes, computed in parallel, written in order.

Why this shape: the work is memory-bound. Worker threads each take one chunk
(a million elements, 2 MB of bf16 per model; numpy ufuncs release the GIL,
so threads use every core) and run the method over cache-sized blocks of it, so the few
passes a method makes over float32 data stay in the CPU cache. A bounded
queue of in-flight chunks keeps memory at `2 x threads` chunk buffers while
the main thread appends finished chunks to the shard files in order. After a
chunk is computed its input pages are handed back to the kernel.

Whole-tensor methods get their per-tensor state first: before a tensor's first
chunk is queued, the method's `prepare` streams that tensor through the same
workers (`_Pass.reduce`, a bounded number of chunks in flight, pages handed
back), so memory stays at a few chunks per model for those methods too.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.signals import DeferredSignals, deferred_signals

from .dtypes import BF16, narrow, widen
from .methods import Block
from .plan import MergePlan
from .writer import OutTensor, Shard, ShardWriter

BLOCK = 1 << 16  # elements per compute block: its float32 operands (256 KB each) stay in L2


class _Slot:
    """Scratch for one in-flight chunk: the output bytes and block-sized wide operands."""

    def __init__(self, chunk: int):
        self.out = np.empty(chunk * 8, dtype=np.uint8)
        self._wide: dict[np.dtype, list[np.ndarray]] = {}

    def wide(self, dtype: np.dtype) -> list[np.ndarray]:
        """acc, tmp, base, scratch: four block-sized buffers of the accumulation type."""
        if dtype not in self._wide:
            self._wide[dtype] = [np.empty(BLOCK, dtype=dtype) for _ in range(4)]
        return self._wide[dtype]


def _work(shards: list[Shard], chunk: int) -> Iterator[tuple[int, OutTensor, int, int]]:
    """(shard index, output tensor, start, stop) for every chunk, in output order."""
    for i, shard in enumerate(shards):
        for tensor in shard.tensors:
            for start in range(0, tensor.numel, chunk):
                yield i, tensor, start, min(tensor.numel, start + chunk)


def _compute(
    plan: MergePlan, target: OutTensor, start: int, stop: int, slot: _Slot, state: object
) -> tuple[np.ndarray, int]:
    """Merge elements [start, stop) of one tensor; return the output bytes and the input bytes read."""
    inputs = plan.inputs
    views = [ckpt.view(target.name, start, stop) for ckpt in inputs]
    dest = slot.out[: (stop - start) * target.dtype.itemsize].view(target.dtype.storage)
    if (
        target.dtype is BF16
        and _raw_bf16(plan, target.name)
        and plan.kernel.combine_bf16(views, start, dest, state)
    ):
        pass  # merged from the raw bits in one compiled loop
    elif target.dtype.is_float:
        with np.errstate(all="ignore"):  # inf and NaN in checkpoints are data, not errors
            for block, lo, hi in _blocks(
                plan, target.name, start, views, slot.wide(_wide(plan, target.name)), state
            ):
                plan.kernel.combine(block)
                narrow(
                    block.out, target.dtype, dest[lo:hi], block.tmp
                )  # the one rounding to the stored dtype
    else:
        np.copyto(dest, views[0])
    read = sum(v.nbytes for v in views)
    for ckpt in inputs:
        ckpt.release(target.name, start, stop)
    return dest, read


def _raw_bf16(plan: MergePlan, name: str) -> bool:
    """Every input stores this tensor as bf16 (a compiled kernel may then read the raw bits)."""
    return all(ckpt.tensors[name].dtype is BF16 for ckpt in plan.inputs)


def _wide(plan: MergePlan, name: str) -> np.dtype:
    """The accumulation type of a tensor: float64 if any input stores it as float64, else float32."""
    wide = any(ckpt.tensors[name].dtype.wide == np.float64 for ckpt in plan.inputs)
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


def _blocks(plan: MergePlan, name: str, start: int, views: list[np.ndarray], buffers, state):
    """(Block, lo, hi) for each compute block of a chunk; views are the inputs' raw elements (models, then base).

    The block's `out` is overwritten by the method; after it, `tmp` is free for the caller."""
    dtypes = [ckpt.tensors[name].dtype for ckpt in plan.inputs]
    acc_buf, tmp_buf, base_buf, _ = buffers
    total = len(views[0])
    for lo in range(0, total, BLOCK):
        hi = min(total, lo + BLOCK)
        n = hi - lo

        def load(i: int, dst: np.ndarray, lo: int = lo, hi: int = hi) -> None:
            widen(views[i][lo:hi], dtypes[i], dst)

        base = None
        if plan.base is not None:
            base = base_buf[:n]
            load(len(plan.models), base)
        yield Block(name, start + lo, load, base, acc_buf[:n], tmp_buf[:n], state), lo, hi


class _Pass:
    """One tensor streamed for a whole-tensor method's `prepare` (the `TensorPass` of methods.base)."""

    def __init__(
        self,
        plan: MergePlan,
        target: OutTensor,
        pool: ThreadPoolExecutor,
        chunk: int,
        depth: int,
        signals: DeferredSignals,
    ):
        self.plan, self.name, self.numel = plan, target.name, target.numel
        self.pool, self.chunk, self.depth, self.signals = pool, chunk, depth, signals
        self.raw_bf16 = _raw_bf16(plan, target.name)
        self.block = BLOCK

    def _spans(self, fn, add, spans: list[tuple[int, int]]):
        """fn over the blocks of some element ranges, reduced in order (one worker task)."""
        wide = _wide(self.plan, self.name)
        size = min(BLOCK, max(stop - start for start, stop in spans))
        buffers = [np.empty(size, dtype=wide) for _ in range(4)]
        result = None
        with np.errstate(all="ignore"):
            for start, views in self._views(spans):
                for block, _, _ in _blocks(self.plan, self.name, start, views, buffers, None):
                    value = fn(block)
                    result = value if result is None else add(result, value)
        return result

    def _raw(self, fn, add, spans: list[tuple[int, int]]):
        """fn over the raw views of some element ranges, reduced in order (one worker task)."""
        result = None
        for start, views in self._views(spans):
            value = fn(views, start)
            result = value if result is None else add(result, value)
        return result

    def _views(self, spans: list[tuple[int, int]]) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(start, the inputs' views of [start, stop)) per span; its pages go back once the caller is done."""
        for start, stop in spans:
            yield start, [ckpt.view(self.name, start, stop) for ckpt in self.plan.inputs]
            for ckpt in self.plan.inputs:
                ckpt.release(self.name, start, stop)

    def _chunks(self) -> list[tuple[int, int]]:
        return [(start, min(self.numel, start + self.chunk)) for start in range(0, self.numel, self.chunk)]

    def reduce(self, fn, add):
        return self.reduce_spans(fn, add, self._chunks())

    def reduce_raw(self, fn, add):
        if not self.raw_bf16:
            raise RuntimeError(
                f"{self.name}: reduce_raw on a tensor not stored as bf16 by every input"
            )  # a bug
        return self._schedule(self._raw, fn, add, self._chunks())

    def reduce_spans(self, fn, add, spans):
        return self._schedule(self._spans, fn, add, spans)

    def _schedule(self, task, fn, add, spans):
        """Spans are handed to the workers in groups of at most one chunk's elements: a sample of many
        short spans is then a few tasks, not one task (buffers, views, a future) per span."""
        pending: collections.deque[Future] = collections.deque()
        total = None

        def take() -> None:
            nonlocal total
            value = pending.popleft().result()
            total = value if total is None else add(total, value)

        for group in _grouped(spans, self.chunk):
            self.signals.check()
            if len(pending) >= self.depth:
                take()
            pending.append(self.pool.submit(task, fn, add, group))
        while pending:
            take()
        return total


def _grouped(spans: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """Consecutive spans in groups of at most `limit` elements (a longer span alone), order kept."""
    groups: list[list[tuple[int, int]]] = []
    size = limit
    for start, stop in spans:
        if size + stop - start > limit:
            groups.append([])
            size = 0
        groups[-1].append((start, stop))
        size += stop - start
    return groups


def stream(
    plan: MergePlan, shards: list[Shard], folder: Path, chunk: int, threads: int, progress: bool
) -> None:
    """Write every shard of the merged model into `folder`."""
    metadata = {**plan.models[0].metadata, "format": "pt"}
    depth = 2 * threads
    slots = collections.deque(_Slot(chunk) for _ in range(depth))
    pending: collections.deque[tuple[int, OutTensor, Future, _Slot]] = collections.deque()
    writer: ShardWriter | None = None
    current = -1
    bar = tqdm(
        total=plan.input_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="merging",
        disable=not progress,
    )

    def open_shard(index: int) -> None:
        """Finish the current shard (and any holding only empty tensors) and start shard `index`."""
        nonlocal writer, current
        if writer is not None:
            writer.close()
            writer = None
        for skipped in range(current + 1, index):
            ShardWriter(folder / shards[skipped].filename, shards[skipped], metadata).close()
        current = index
        if index < len(shards):
            writer = ShardWriter(folder / shards[index].filename, shards[index], metadata)

    def drain_one() -> None:
        shard_index, target, future, slot = pending.popleft()
        data, read = future.result()
        if shard_index != current:
            open_shard(shard_index)
        writer.write(target.name, data)
        slots.append(slot)
        bar.update(read)

    with deferred_signals() as signals:  # no signal may raise while the pool's locks are in play
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="merge")
        state = None
        try:
            for shard_index, target, start, stop in _work(shards, chunk):
                signals.check()
                if start == 0:
                    state = None
                    if plan.kernel.whole_tensor and target.dtype.is_float:
                        state = plan.kernel.prepare(_Pass(plan, target, pool, chunk, depth, signals))
                if len(pending) >= depth:
                    drain_one()
                slot = slots.popleft()
                for ckpt in plan.inputs:  # its turn comes after the chunks ahead of it: read meanwhile
                    ckpt.prefetch(target.name, start, stop)
                future = pool.submit(_compute, plan, target, start, stop, slot, state)
                pending.append((shard_index, target, future, slot))
            while pending:
                signals.check()
                drain_one()
            open_shard(len(shards))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            if writer is not None:
                writer.discard()
