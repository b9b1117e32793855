"""Validation and planning: decide everything, and refuse, before a byte is written.

Why: a merge of two 15 GB checkpoints should not fail at 80%. All models must
agree on architecture and on every tensor's name, shape and dtype; the first
disagreement (in the first model's tensor order) is reported by name.
Non-floating tensors (index buffers and the like) cannot be averaged, so they
must be byte-equal across models; they are compared here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dtypes import Dtype, parse_output_dtype
from .errors import MergeError
from .io import Checkpoint
from .methods import Kernel
from .spec import MergeSpec, Resolved, from_cli, resolve
from .writer import OutTensor

COMPARE_CHUNK = 1 << 24  # elements per comparison step for non-floating tensors


@dataclass
class MergePlan:
    """What will be merged, how, and what the output tensors are."""

    models: list[Checkpoint]
    base: Checkpoint | None
    resolved: Resolved
    kernel: Kernel
    out_dtype: Dtype | None
    tensors: list[OutTensor]
    files_from: Checkpoint  # where config, tokenizer and processor files are copied from
    notes: list[str] = field(default_factory=list)

    @property
    def method_name(self) -> str:
        return self.resolved.method.name

    @property
    def inputs(self) -> list[Checkpoint]:
        """Every checkpoint read per tensor: the models, then the base if any."""
        return self.models + ([self.base] if self.base is not None else [])

    @property
    def input_bytes(self) -> int:
        return sum(ckpt.tensors[t.name].nbytes for t in self.tensors for ckpt in self.inputs)

    @property
    def output_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def close(self) -> None:
        for ckpt in self.inputs:
            ckpt.close()


def _architecture(ckpt: Checkpoint) -> tuple | None:
    if ckpt.config is None:
        return None
    archs = ckpt.config.get("architectures") or ()
    return (tuple(archs) if isinstance(archs, list) else archs, ckpt.config.get("model_type"))


def check_compatible(first: Checkpoint, other: Checkpoint, out_dtype: Dtype | None) -> None:
    """Refuse, naming the first mismatching tensor, unless `other` has the same architecture and tensors."""
    mine, theirs = _architecture(first), _architecture(other)
    if mine != theirs:
        describe = {None: "no config.json"}
        raise MergeError(
            f"architecture differs: {first.label} is {describe.get(mine, mine)} but "
            f"{other.label} is {describe.get(theirs, theirs)}"
        )
    for name in first.tensors:
        if name not in other.tensors:
            raise MergeError(f"tensor {name!r} is in {first.label} but missing from {other.label}")
    for name in other.tensors:
        if name not in first.tensors:
            raise MergeError(f"tensor {name!r} is in {other.label} but missing from {first.label}")
    for name, a in first.tensors.items():
        b = other.tensors[name]
        if a.shape != b.shape:
            raise MergeError(
                f"tensor {name!r} has shape {list(a.shape)} in {first.label} but {list(b.shape)} in {other.label}"
            )
        if a.dtype != b.dtype and not (a.is_float and b.is_float and out_dtype is not None):
            hint = (
                " (pass --dtype to combine floating checkpoints saved in different dtypes)"
                if a.is_float and b.is_float
                else ""
            )
            raise MergeError(
                f"tensor {name!r} is {a.dtype.name} in {first.label} but "
                f"{b.dtype.name} in {other.label}{hint}"
            )


def check_equal_nonfloat(first: Checkpoint, other: Checkpoint) -> None:
    """Non-floating tensors are copied, so they must hold the same values in every model."""
    for name, entry in first.tensors.items():
        if entry.is_float:
            continue
        for start in range(0, entry.numel, COMPARE_CHUNK):
            stop = min(entry.numel, start + COMPARE_CHUNK)
            a, b = first.view(name, start, stop), other.view(name, start, stop)
            same = np.array_equal(a, b)
            del a, b
            first.release(name, start, stop)
            other.release(name, start, stop)
            if not same:
                raise MergeError(
                    f"non-floating tensor {name!r} ({entry.dtype.name}) differs between "
                    f"{first.label} and {other.label}; it cannot be averaged and must be equal"
                )


def build_plan(
    models: list[str | Path],
    weights: list[float] | None = None,
    method: str = "linear",
    base: str | Path | None = None,
    scale: float | None = None,
    dtype: str | Dtype | None = None,
    allow_unnormalized: bool = False,
    params: dict | None = None,
) -> MergePlan:
    """The command line's merge (see `spec.from_cli`), planned."""
    spec = from_cli([str(m) for m in models], weights, method, base, scale, params, None, allow_unnormalized)
    return plan_spec(spec, dtype=dtype)


def plan_spec(spec: MergeSpec, dtype: str | Dtype | None = None) -> MergePlan:
    """Open every checkpoint (headers only), validate them against each other, and list the output tensors."""
    resolved = resolve(spec)
    kernel = resolved.method.build(resolved.args)
    dtype = dtype if dtype is not None else spec.dtype
    out_dtype = parse_output_dtype(dtype) if isinstance(dtype, str) else dtype

    opened: list[Checkpoint] = []
    try:
        for path in resolved.models:
            opened.append(Checkpoint(path))
        base_ckpt = (
            Checkpoint(resolved.base, label=f"base {resolved.base}") if resolved.base is not None else None
        )
        if base_ckpt is not None:
            opened.append(base_ckpt)
        first = opened[0]
        for other in opened[1:]:
            check_compatible(first, other, out_dtype)
        for other in opened[1:]:
            check_equal_nonfloat(first, other)
    except BaseException:
        for ckpt in opened:
            ckpt.close()
        raise
    tensors = [
        OutTensor(name, out_dtype if (out_dtype is not None and e.is_float) else e.dtype, e.shape)
        for name, e in first.tensors.items()
    ]
    models = opened[: len(resolved.models)]
    files_from = base_ckpt if (base_ckpt is not None and not spec.from_cli) else models[0]
    return MergePlan(
        models, base_ckpt, resolved, kernel, out_dtype, tensors, files_from, list(resolved.notes)
    )
