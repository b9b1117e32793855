"""The contract every merge method meets: its declared parameters, its table entry, its kernel.

Why: the CLI, the mergekit YAML reader, the planner and the recorded config all
read a method's declarations (name, whether it needs a base model, how many
models, its parameters with defaults and ranges) from one `Method` entry, so
adding a method is one module plus one line in the table (`methods/__init__.py`).

A kernel does the arithmetic. It sees one block (at most 65,536 elements) of a
tensor at a time: `load(i, dst)` writes model i's block widened exactly to
float32 (float64 for float64 tensors) into dst, `base` is the base model's
widened block (or None), and it writes the merged block into `out` (`tmp` is
scratch of the same size); the caller rounds once to the stored dtype.
Element-wise kernels need nothing else. Whole-tensor kernels (SLERP's norms,
TIES's per-tensor top-k) first run `prepare` over the whole tensor, which may
stream it several times through `TensorPass.reduce` (block by block, in worker
threads, pages handed back after each chunk) and returns a small per-tensor
state; memory stays at a few blocks per model however large the tensor is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import MergeError

Loader = Callable[[int, np.ndarray], None]
REQUIRED = object()  # a parameter default meaning "must be given"


@dataclass
class Block:
    """One block of one tensor: inputs on demand, the output buffer, and the tensor's prepared state."""

    name: str
    start: int  # index of out[0] in the flattened tensor
    load: Loader
    base: np.ndarray | None
    out: np.ndarray
    tmp: np.ndarray
    state: Any = None


class TensorPass(Protocol):
    """What `prepare` may do with one tensor: stream all of it, block by block, and reduce the results."""

    name: str
    numel: int

    def reduce(self, fn: Callable[[Block], Any], add: Callable[[Any, Any], Any]) -> Any:
        """add(...add(fn(block_0), fn(block_1))..., fn(block_last)) over the tensor's blocks, in order."""
        ...

    def reduce_spans(
        self, fn: Callable[[Block], Any], add: Callable[[Any, Any], Any], spans: list[tuple[int, int]]
    ) -> Any:
        """The same over the blocks of some element ranges [start, stop) only, in order (a sample)."""
        ...

    raw_bf16: bool  # every input stores this tensor as bf16: `reduce_raw` may be used
    block: int  # elements per block of `reduce` (a chunk's blocks start at the chunk's start)

    def reduce_raw(self, fn: Callable[[list[np.ndarray], int], Any], add: Callable[[Any, Any], Any]) -> Any:
        """Like `reduce`, over chunks of the inputs' raw bf16 bits: fn(views (models, then base), start)."""
        ...


class Kernel:
    """A method with its parameter values fixed; element-wise unless `whole_tensor`."""

    whole_tensor = False

    def prepare(self, tensor: TensorPass) -> Any:
        """Whole-tensor statistics for `tensor` (called once per floating tensor before its blocks)."""
        return None

    def combine(self, block: Block) -> None:
        raise NotImplementedError

    def combine_bf16(self, raw: list[np.ndarray], start: int, out: np.ndarray, state: Any) -> bool:
        """Merge one chunk whose inputs (models, then base) and output are all bf16, straight from and to
        the raw bits (a compiled kernel, see `fused`); False when this kernel has no such path for this
        tensor, and the blocks go through `combine`. Both give the same bytes."""
        return False


@dataclass(frozen=True)
class Param:
    """A parameter as mergekit names it; `per_model` ones may also be given globally (as in mergekit)."""

    name: str
    help: str
    default: Any = REQUIRED
    per_model: bool = False
    kind: type = float  # float, bool or int
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes `low`

    def check(self, value: Any, where: str) -> Any:
        """The value converted to `kind`, or a MergeError naming `where` and the parameter."""
        what = f"{where}: parameter {self.name!r}"
        if isinstance(value, list | tuple | dict):
            raise MergeError(
                f"{what} is a {type(value).__name__} (a mergekit gradient or filter list?); merge_tool takes "
                "one value per parameter"
            )
        if self.kind is bool:
            if not isinstance(value, bool):
                raise MergeError(f"{what} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MergeError(f"{what} must be a number, got {value!r}")
        if self.kind is int:
            if not float(value).is_integer():
                raise MergeError(f"{what} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise MergeError(f"{what} must be a finite number, got {value!r}")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if below or above:
            lo = "(" if self.low_open else "["
            rng = f"{lo}{'-inf' if self.low is None else self.low:g}, {'inf' if self.high is None else self.high:g}]"
            raise MergeError(f"{what} is {value:g}, outside {rng}")
        return value


@dataclass(frozen=True)
class Args:
    """Checked parameter values: one dict per model (base excluded, in order) and the global ones."""

    per_model: tuple[dict[str, Any], ...]
    globals: dict[str, Any]

    def column(self, name: str) -> tuple:
        return tuple(p[name] for p in self.per_model)


@dataclass(frozen=True)
class Method:
    """One entry of the method table."""

    name: str  # mergekit's merge_method name
    summary: str
    params: tuple[Param, ...]
    build: Callable[[Args], Kernel]
    needs_base: bool
    min_models: int  # models besides the base
    max_models: int | None = None
    negative_weights: str | None = None  # None: refused; otherwise why they are allowed (shown as a note)
    aliases: tuple[str, ...] = ()
    ignored: dict[str, str] = field(default_factory=dict)  # mergekit parameters accepted but not used: why

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)
