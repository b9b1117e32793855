"""The tensor dtypes safetensors files hold, as numpy sees them, and the two conversions a merge needs.

Why numpy rather than torch: importing this environment's (CUDA) torch costs
about 0.9 GB of resident memory and seconds of start-up, more than a whole
shard; numpy costs 30 MB and a tenth of a second, and its ufuncs release the
GIL so worker threads use every core. numpy has no bfloat16, so bf16 is kept
as its raw uint16 bits: widening is a 16-bit shift, narrowing is
round-to-nearest-even on the float32 bits (what torch's `.to(torch.bfloat16)`
does), with NaN kept NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import MergeError


@dataclass(frozen=True)
class Dtype:
    """A stored tensor dtype: its safetensors name, readable name, and numpy storage type."""

    st_name: str  # as written in safetensors headers: "BF16", "F32", ...
    name: str  # as in torch / config.json: "bfloat16", "float32", ...
    storage: np.dtype  # numpy type of the raw elements (uint16 for bf16)
    is_float: bool

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    @property
    def wide(self) -> np.dtype:
        """The accumulation type: float64 for float64 tensors, float32 for every other float."""
        return np.dtype(np.float64) if self.storage == np.float64 else np.dtype(np.float32)

    def __str__(self) -> str:
        return self.name


def _dt(st_name: str, name: str, storage, is_float: bool) -> Dtype:
    return Dtype(st_name, name, np.dtype(storage), is_float)


BF16 = _dt("BF16", "bfloat16", np.uint16, True)
F16 = _dt("F16", "float16", np.float16, True)
F32 = _dt("F32", "float32", np.float32, True)
F64 = _dt("F64", "float64", np.float64, True)
DTYPES: dict[str, Dtype] = {
    d.st_name: d
    for d in (
        BF16,
        F16,
        F32,
        F64,
        _dt("BOOL", "bool", np.bool_, False),
        _dt("U8", "uint8", np.uint8, False),
        _dt("I8", "int8", np.int8, False),
        _dt("I16", "int16", np.int16, False),
        _dt("U16", "uint16", np.uint16, False),
        _dt("I32", "int32", np.int32, False),
        _dt("U32", "uint32", np.uint32, False),
        _dt("I64", "int64", np.int64, False),
        _dt("U64", "uint64", np.uint64, False),
    )
}
UNSUPPORTED = {
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4",
}

OUTPUT_DTYPES = {
    "bf16": BF16,
    "bfloat16": BF16,
    "fp16": F16,
    "float16": F16,
    "half": F16,
    "fp32": F32,
    "float32": F32,
    "float": F32,
}


def parse_output_dtype(text: str) -> Dtype:
    try:
        return OUTPUT_DTYPES[text.lower()]
    except KeyError:
        raise MergeError(f"unknown --dtype {text!r}; use one of bfloat16, float16, float32") from None


def widen(src: np.ndarray, dtype: Dtype, out: np.ndarray) -> None:
    """out[:] = src as float32 (or float64), exactly."""
    if dtype is BF16:
        np.left_shift(src, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(out, src, casting="same_kind")


def narrow(acc: np.ndarray, dtype: Dtype, out: np.ndarray, scratch: np.ndarray) -> None:
    """out[:] = acc rounded once, to nearest even, into `dtype`'s storage; scratch is like acc."""
    if dtype is BF16:
        if acc.dtype != np.float32:  # float64 inputs written as bf16 (rare): via float32, as torch does
            acc, scratch = acc.astype(np.float32), np.empty(acc.shape, np.float32)
        bits = acc.view(np.uint32)
        t = scratch.view(np.uint32)
        np.right_shift(bits, 16, out=t)
        np.bitwise_and(t, 1, out=t)
        np.add(t, 0x7FFF, out=t)
        np.add(t, bits, out=t)
        np.right_shift(t, 16, out=t)
        np.copyto(out, t, casting="unsafe")
        if acc.size and np.isnan(acc.max()):  # max propagates NaN: a cheap guard for the rare fix-up
            nan = np.isnan(acc)
            out[nan] = 0x7FC0 | (bits[nan] >> 16 & 0x8000).astype(np.uint16)
    else:
        np.copyto(out, acc, casting="unsafe")
