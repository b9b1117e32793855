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
MAX_RANK = 64


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


def _ints(value: object, count: int | None) -> tuple[int, ...] | None:
    """A list of non-negative JSON integers (not floats, not booleans), or None."""
    if not isinstance(value, list) or (count is not None and len(value) != count):
        return None
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
        return None
    return tuple(value)


def _entry(path: Path, name: str, info: object, data_start: int, size: int) -> TensorEntry:
    """One header entry checked: dtype a known name, shape and offsets non-negative integers that agree."""
    if not isinstance(info, dict):
        raise MergeError(
            f"{path}: tensor {name!r} has a malformed header entry (not an object: {info!r:.80})"
        )
    st_name = info.get("dtype")
    if not isinstance(st_name, str):
        raise MergeError(f"{path}: tensor {name!r} has dtype {st_name!r:.80}, not a dtype name such as BF16")
    dtype = _dtype(path, name, st_name)
    shape = _ints(info.get("shape"), None)
    if shape is None or len(shape) > MAX_RANK:
        raise MergeError(
            f"{path}: tensor {name!r} has shape {info.get('shape')!r:.80}; a shape is a list of at most "
            f"{MAX_RANK} non-negative integers"
        )
    offsets = _ints(info.get("data_offsets"), 2)
    if offsets is None:
        raise MergeError(
            f"{path}: tensor {name!r} has data_offsets {info.get('data_offsets')!r:.80}; they are two "
            "non-negative integers [begin, end]"
        )
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if end < begin or end - begin != nbytes:
        raise MergeError(
            f"{path}: tensor {name!r} header says shape {list(shape)} {st_name} but offsets [{begin}, {end}]"
        )
    if data_start + end > size:
        raise MergeError(
            f"{path}: tensor {name!r} ends at byte {data_start + end} but the file has {size} "
            "bytes (truncated download or copy?)"
        )
    return TensorEntry(name, dtype, shape, path, data_start + begin, nbytes)


def _metadata(path: Path, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MergeError(
            f'{path}: __metadata__ must be an object of strings (e.g. {{"format": "pt"}}), got {value!r:.80}'
        )
    return dict(value)


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and validate one .safetensors header; return its tensors (in file order) and metadata.

    As strictly as the safetensors library: the tensors' bytes must tile the data
    section exactly (no overlaps, gaps or trailing bytes), so what merge_tool
    accepts every loader accepts.
    """
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
    except (UnicodeDecodeError, ValueError) as err:  # ValueError: bad JSON, or an integer past Python's limit
        raise MergeError(f"{path}: safetensors header is not valid JSON ({err})") from err
    except RecursionError:
        raise MergeError(f"{path}: safetensors header is nested too deeply to be one") from None
    if not isinstance(header, dict):
        raise MergeError(f"{path}: safetensors header is not a JSON object")
    metadata = _metadata(path, header.pop("__metadata__", None))
    data_start = 8 + n
    entries = sorted(
        (_entry(path, name, info, data_start, size) for name, info in header.items()),
        key=lambda e: (e.start, e.nbytes),
    )
    position = data_start
    for prev, cur in zip([None, *entries], entries, strict=False):
        if cur.start < position:
            raise MergeError(f"{path}: tensors {prev.name!r} and {cur.name!r} overlap in the file")
        if cur.start > position:
            after = f"after tensor {prev.name!r}" if prev is not None else "before the first tensor"
            raise MergeError(
                f"{path}: {cur.start - position} unused bytes {after} (before {cur.name!r}); the file is "
                "not a valid safetensors file"
            )
        position = cur.start + cur.nbytes
    if position != size:
        raise MergeError(
            f"{path}: {size - position} bytes after the last tensor; the file is not a valid safetensors file"
        )
    return {e.name: e for e in entries}, metadata


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
