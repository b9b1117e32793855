"""Lazy, memory-mapped reading of the checkpoints LLaMA-Factory (transformers) writes.

Why: a 7B model is 15 GB per checkpoint; loading state dicts costs RAM times
the number of models. Here a checkpoint is only its headers until a tensor
range is asked for; that range is a zero-copy view into a read-only memory map,
and `release` hands the pages back (MADV_DONTNEED) so the resident set stays
at about one chunk per model however large the files are.

Accepted layouts: `model.safetensors`, or `model.safetensors.index.json` plus
its shards, at the folder given (a training output folder or a `checkpoint-N/`).
Other layouts (DeepSpeed ZeRO shards, LoRA adapters, .bin weights, a parent of
checkpoint folders) are refused with what to do instead.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import re
import sys
import threading
from pathlib import Path

import numpy as np

from .errors import MergeError
from .st_format import TensorEntry, read_header

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PAGE = mmap.PAGESIZE

if sys.byteorder != "little":  # safetensors stores little-endian; views would need byte swaps
    raise ImportError("merge_tool needs a little-endian machine")


def _deepspeed_tags(folder: Path) -> list[str]:
    """Names of global_step*/ folders holding ZeRO model states."""
    return sorted(
        d.name for d in folder.glob("global_step*") if d.is_dir() and any(d.glob("*model_states.pt"))
    )


def explain_missing_weights(folder: Path) -> str:
    """Why `folder` has no safetensors model, and what the user can do about it."""
    tags = _deepspeed_tags(folder)
    if tags or (folder / "latest").is_file():
        script = folder / "zero_to_fp32.py"
        run = f"python {script}" if script.is_file() else "python -m deepspeed.utils.zero_to_fp32"
        where = f" ({tags[-1]}/)" if tags else ""
        return (
            f"{folder} holds only DeepSpeed ZeRO shards{where}, not model weights. Consolidate them "
            f"first: `{run} {folder} {folder}-consolidated --safe_serialization` (needs deepspeed), "
            f"then merge {folder}-consolidated (those weights are float32; add --dtype bfloat16 to "
            "write bf16). To get full weights at save time instead, set "
            '"stage3_gather_16bit_weights_on_model_save": true in the ZeRO-3 DeepSpeed config '
            "(LLaMA-Factory's examples/deepspeed/ds_z3_config.json does)."
        )
    if (folder / "adapter_model.safetensors").is_file() or (folder / "adapter_config.json").is_file():
        return (
            f"{folder} holds a LoRA adapter, not full weights; merge it into its base model first "
            "(`llamafactory-cli export` with adapter_name_or_path) and pass the exported folder"
        )
    if any(folder.glob("pytorch_model*.bin")):
        return (
            f"{folder} holds PyTorch .bin weights; merge_tool reads safetensors only. Re-save them with "
            "save_pretrained(..., safe_serialization=True) (LLaMA-Factory writes safetensors by default)"
        )
    steps = sorted(
        (int(m.group(1)), d.name)
        for d in folder.glob("checkpoint-*")
        if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name))
    )
    if steps:
        names = ", ".join(name for _, name in steps)
        return (
            f"{folder} has no {SINGLE_FILE} or {INDEX_FILE} of its own but holds {names}; "
            f"pass one of them, e.g. {folder / steps[-1][1]}"
        )
    return f"{folder} has no {SINGLE_FILE} or {INDEX_FILE}"


def _shard_name_ok(shard: object) -> bool:
    """A relative path inside the model folder (what save_pretrained writes: a plain file name)."""
    if not isinstance(shard, str) or not shard or "\0" in shard:
        return False
    parts = Path(shard).parts
    return not Path(shard).is_absolute() and ".." not in parts


def weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a model folder, and the index's weight map when sharded."""
    if not folder.exists():
        raise MergeError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise MergeError(f"{folder} is not a folder; pass the folder holding the model")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MergeError(f"{index}: not a safetensors index ({err!r})") from err
        except RecursionError:
            raise MergeError(f"{index}: not a safetensors index (nested too deeply)") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise MergeError(f"{index}: weight_map is empty or not an object")
        for name, shard in weight_map.items():
            if not _shard_name_ok(shard):
                raise MergeError(
                    f"{index}: weight_map puts tensor {name!r} in {shard!r:.80}, which is not a shard file "
                    "name in this folder"
                )
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (folder / name).is_file():
                first = next(t for t, f in weight_map.items() if f == name)
                raise MergeError(
                    f"{index} names shard {name} (tensor {first!r}) but {folder / name} is missing"
                )
        return [folder / name for name in files], weight_map
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE], None
    raise MergeError(explain_missing_weights(folder))


class Checkpoint:
    """One model folder: its tensors' headers now, their bytes on demand."""

    def __init__(self, folder: str | Path, label: str | None = None):
        self.folder = Path(folder)
        self.label = label or str(folder)
        self.files, weight_map = weight_files(self.folder)
        self.tensors: dict[str, TensorEntry] = {}
        self.metadata: dict[str, str] = {}
        for path in self.files:
            entries, metadata = read_header(path)
            if not self.metadata:
                self.metadata = metadata
            for name, entry in entries.items():
                if weight_map is not None and weight_map.get(name) != path.name:
                    raise MergeError(
                        f"{path} holds tensor {name!r} but {self.folder / INDEX_FILE} "
                        f"{'puts it in ' + weight_map[name] if name in weight_map else 'does not list it'}"
                    )
                if name in self.tensors:
                    raise MergeError(f"tensor {name!r} is stored twice in {self.folder}")
                self.tensors[name] = entry
        if weight_map is not None:
            for name, shard in weight_map.items():
                if name not in self.tensors:
                    raise MergeError(
                        f"{self.folder / INDEX_FILE} puts tensor {name!r} in {shard}, which lacks it"
                    )
        self.config = self._read_config()
        self._maps: dict[Path, mmap.mmap] = {}
        self._lock = threading.Lock()  # worker threads map files lazily; one mapping per file

    def _read_config(self) -> dict | None:
        path = self.folder / "config.json"
        if not path.is_file():
            return None
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise MergeError(f"{path}: not valid JSON ({err})") from err
        except RecursionError:
            raise MergeError(f"{path}: not valid JSON (nested too deeply)") from None
        if not isinstance(config, dict):
            raise MergeError(f"{path}: a model config is a JSON object, got {type(config).__name__}")
        return config

    def _map(self, path: Path) -> mmap.mmap:
        mapped = self._maps.get(path)
        if mapped is None:
            with self._lock:
                mapped = self._maps.get(path)
                if mapped is None:
                    with open(path, "rb") as handle:
                        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                    self._maps[path] = mapped
        return mapped

    def view(self, name: str, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) of the flattened tensor, as a read-only zero-copy view of the file."""
        entry = self.tensors[name]
        storage = entry.dtype.storage
        if stop <= start:
            return np.empty(0, dtype=storage)
        offset = entry.start + start * storage.itemsize
        return np.frombuffer(self._map(entry.path), dtype=storage, count=stop - start, offset=offset)

    def _pages(self, name: str, start: int, stop: int) -> tuple[mmap.mmap, int, int]:
        """The mapping and the page-aligned byte range holding elements [start, stop) of `name`."""
        entry = self.tensors[name]
        mapped = self._map(entry.path)
        size = entry.dtype.itemsize
        lo = (entry.start + start * size) // PAGE * PAGE
        hi = min(len(mapped), -(-(entry.start + stop * size) // PAGE) * PAGE)
        return mapped, lo, hi - lo

    def prefetch(self, name: str, start: int, stop: int) -> None:
        """Ask the kernel to start reading a range now (MADV_WILLNEED), so the disk works while we compute."""
        if stop > start:
            mapped, offset, length = self._pages(name, start, stop)
            mapped.madvise(mmap.MADV_WILLNEED, offset, length)

    def release(self, name: str, start: int, stop: int) -> None:
        """Drop a range's pages from our resident set (MADV_DONTNEED); they stay in the page cache."""
        if stop > start:
            mapped, offset, length = self._pages(name, start, stop)
            mapped.madvise(mmap.MADV_DONTNEED, offset, length)

    def close(self) -> None:
        for mapped in self._maps.values():
            with contextlib.suppress(BufferError):  # a view still alive: the GC closes it later
                mapped.close()
        self._maps.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
