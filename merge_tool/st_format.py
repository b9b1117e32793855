"""The safetensors file layout: header parsing, validation and encoding.

Why our own ~100 lines instead of `safe_open`: streaming needs each tensor's
byte range in the file (to read it in bounded chunks through a memory map and
drop the pages afterwards) and needs to write a shard's header before its
tensors exist. The format is simple and fixed: 8-byte little-endian header
length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__"},
then the tensors' bytes, contiguous and in offset order. Outputs are checked
against the safetensors library itself in the tests.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .dtypes import DTYPES, UNSUPPORTED, Dtype
from .errors import MergeError

MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library enforces too


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of one file: where its bytes are and how to read them."""

    name: str
    dtype: Dtype
    shape: tuple[int, ...]
    path: Path
    start: int  # absolute byte offset in the file
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.is_float


def _dtype(path: Path, name: str, st_name: str) -> Dtype:
    if st_name in UNSUPPORTED:
        raise MergeError(
            f"{path}: tensor {name!r} is {UNSUPPORTED[st_name]}, which merge_tool does not merge"
        )
    try:
        return DTYPES[st_name]
    except KeyError:
        raise MergeError(f"{path}: tensor {name!r} has unknown dtype {st_name!r}") from None


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and validate one .safetensors header; return its tensors (in file order) and metadata."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise MergeError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise MergeError(f"{path}: not a safetensors file (header length {n} is impossible)")
            raw = handle.read(n)
    except OSError as err:
        raise MergeError(f"cannot read {path}: {err}") from err
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MergeError(f"{path}: safetensors header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise MergeError(f"{path}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    entries: list[TensorEntry] = []
    for name, info in header.items():
        try:
            st_name = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise MergeError(f"{path}: tensor {name!r} has a malformed header entry ({err!r})") from err
        dtype = _dtype(path, name, st_name)
        nbytes = math.prod(shape) * dtype.itemsize
        if any(d < 0 for d in shape) or end - begin != nbytes or begin < 0:
            raise MergeError(
                f"{path}: tensor {name!r} header says shape {list(shape)} {st_name} "
                f"but offsets [{begin}, {end}]"
            )
        if data_start + end > size:
            raise MergeError(
                f"{path}: tensor {name!r} ends at byte {data_start + end} but the file has {size} "
                "bytes (truncated download or copy?)"
            )
        entries.append(TensorEntry(name, dtype, shape, path, data_start + begin, nbytes))
    entries.sort(key=lambda e: e.start)
    for prev, cur in zip(entries, entries[1:], strict=False):
        if cur.start < prev.start + prev.nbytes:
            raise MergeError(f"{path}: tensors {prev.name!r} and {cur.name!r} overlap in the file")
    return {e.name: e for e in entries}, {str(k): str(v) for k, v in metadata.items()}


def encode_header(
    tensors: list[tuple[str, Dtype, tuple[int, ...]]], metadata: dict[str, str]
) -> tuple[bytes, list[int]]:
    """Header bytes (length prefix included, padded to 8) for tensors laid out contiguously in order.

    Returns the bytes and each tensor's byte count, in order.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    sizes = []
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": dtype.st_name,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
        sizes.append(nbytes)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, sizes
