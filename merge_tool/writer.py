"""Sharded safetensors output written incrementally, tensor chunk by tensor chunk.

Why: the merged model must never be held in memory. Every output tensor's
name, dtype and shape is known before any data is computed, so each shard's
header is written first and the bytes are appended as they are produced;
the index (`model.safetensors.index.json`) is written last. Shard and index
names follow transformers' `save_pretrained`, so every loader finds them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .dtypes import Dtype
from .errors import MergeError
from .io import INDEX_FILE, SINGLE_FILE
from .st_format import encode_header


@dataclass(frozen=True)
class OutTensor:
    """One tensor of the merged model."""

    name: str
    dtype: Dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class Shard:
    filename: str
    tensors: list[OutTensor] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_size(text: str | int) -> int:
    """'500MB' -> 500_000_000, '2GiB' -> 2**31, '1234' -> 1234 (transformers' conventions)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", text.upper())
    if not match or match.group(2) not in _UNITS:
        raise MergeError(f"cannot read size {text!r}; use e.g. 500MB, 5GB or 4GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise MergeError(f"size {text!r} must be positive")
    return size


def plan_shards(tensors: list[OutTensor], max_shard_size: int) -> list[Shard]:
    """Cut tensors (in order) into shards of at most max_shard_size bytes, as save_pretrained does.

    A tensor larger than the limit gets a shard of its own. Inside a shard the
    tensors are ordered by decreasing element size, like the safetensors
    library, so every tensor starts aligned to its dtype.
    """
    groups: list[list[OutTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if groups[-1] and size + tensor.nbytes > max_shard_size:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.nbytes
    if len(groups) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i:05d}-of-{len(groups):05d}.safetensors" for i in range(1, len(groups) + 1)]
    return [
        Shard(name, sorted(group, key=lambda t: -t.dtype.itemsize))
        for name, group in zip(names, groups, strict=True)
    ]


class ShardWriter:
    """Appends one shard's tensor bytes after its pre-written header, checking every byte count."""

    def __init__(self, path: Path, shard: Shard, metadata: dict[str, str]):
        self.path = path
        self.shard = shard
        header, self._sizes = encode_header([(t.name, t.dtype, t.shape) for t in shard.tensors], metadata)
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._handle.write(header)
        self._index = 0
        self._written = 0
        self._skip_empty()

    def _skip_empty(self) -> None:
        while self._index < len(self._sizes) and self._sizes[self._index] == 0:
            self._index += 1  # empty tensors have no bytes to wait for

    def write(self, name: str, data) -> None:
        """Append bytes (any contiguous buffer) of tensor `name`; tensors must come in the shard's order."""
        data = memoryview(data).cast("B")
        if self._index >= len(self._sizes):
            raise RuntimeError(f"{self.path}: got bytes for {name!r} after the last tensor")
        expected = self.shard.tensors[self._index]
        if name != expected.name:
            raise RuntimeError(f"{self.path}: got bytes for {name!r} while {expected.name!r} is unfinished")
        self._handle.write(data)
        self._written += len(data)
        if self._written > self._sizes[self._index]:
            raise RuntimeError(f"{self.path}: too many bytes for {name!r}")
        if self._written == self._sizes[self._index]:
            self._index += 1
            self._written = 0
            self._skip_empty()

    def discard(self) -> None:
        """Close without checks (on errors; the caller's temporary folder is removed anyway)."""
        self._handle.close()

    def close(self) -> None:
        self._handle.close()
        if self._index != len(self._sizes):
            raise RuntimeError(f"{self.path}: tensor {self.shard.tensors[self._index].name!r} is incomplete")


def write_index(folder: Path, shards: list[Shard]) -> None:
    """The index transformers, vLLM and LLaMA-Factory read to find each tensor's shard."""
    if len(shards) == 1:
        return
    weight_map = {t.name: s.filename for s in shards for t in s.tensors}
    total = sum(s.nbytes for s in shards)
    params = sum(t.numel for s in shards for t in s.tensors)
    index = {
        "metadata": {"total_size": total, "total_parameters": params},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
