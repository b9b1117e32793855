"""What a merge is, whichever way it was asked for: method, models with parameters, base, global parameters.

Why one form: the command line (`--models ... --weights ... --method ...`) and
a mergekit YAML config both become a `MergeSpec`, which is checked against the
method table in one place (`resolve`) and is what the output folder records
(`merge_config.yaml`, replayable). Errors name where the value came from (the
config file or the command line), the model and the parameter.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MergeError
from .methods import REQUIRED, Args, Method, lookup

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ModelEntry:
    path: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeSpec:
    method: str
    models: tuple[ModelEntry, ...]
    base: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # global parameters
    dtype: str | None = None  # output dtype of floating tensors; None: as stored
    source: str = ""  # the config file, or "" for the command line
    from_cli: bool = True  # CLI rules: --base only where used, weights sum to 1 unless allowed
    allow_unnormalized: bool = False


@dataclass(frozen=True)
class Resolved:
    """A spec checked against its method: the models to read (base mentions removed) and the values."""

    spec: MergeSpec
    method: Method
    models: tuple[str, ...]
    base: str | None
    args: Args
    notes: tuple[str, ...]


def _identity(path: str) -> tuple:
    """The same folder however it is spelled: (device, inode) when it exists, else the resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return (str(Path(path).resolve()),)


def _at(spec: MergeSpec) -> str:
    return f"{spec.source}: " if spec.source else ""


def _base_word(spec: MergeSpec) -> str:
    return "--base" if spec.from_cli else "base_model"


def _models_and_base(
    spec: MergeSpec, method: Method, notes: list[str]
) -> tuple[list[ModelEntry], str | None]:
    base = spec.base
    if method.needs_base and base is None:
        raise MergeError(
            f"{_at(spec)}{method.name} needs {_base_word(spec)} (the model the others were fine-tuned from)"
        )
    if not method.needs_base and base is not None:
        if spec.from_cli:
            raise MergeError(f"--method {method.name} does not use --base")
        notes.append(f"{method.name} does not use base_model; {base} is not merged")
        base = None
    entries = list(spec.models)
    if base is not None and not spec.from_cli:  # mergekit configs usually list the base among the models too
        mentions = [e for e in entries if _identity(e.path) == _identity(base)]
        for e in mentions:
            if e.params:
                notes.append(f"parameters {sorted(e.params)} of {e.path} are not used: it is base_model")
        entries = [e for e in entries if e not in mentions]
    seen: dict[tuple, str] = {} if base is None else {_identity(base): f"{_base_word(spec)} {base}"}
    for e in entries:
        key = _identity(e.path)
        if key in seen:
            raise MergeError(
                f"{_at(spec)}model {e.path} is the same folder as {seen[key]}; each model may appear once"
            )
        seen[key] = f"model {e.path}"
    count = len(entries)
    wanted = (
        f"exactly {method.min_models}"
        if method.max_models == method.min_models
        else f"at least {method.min_models}"
        if method.max_models is None
        else f"{method.min_models} to {method.max_models}"
    )
    if count < method.min_models or (method.max_models is not None and count > method.max_models):
        besides = " besides the base model" if method.needs_base else ""
        raise MergeError(f"{_at(spec)}{method.name} merging needs {wanted} models{besides}, got {count}")
    return entries, base


def _check_names(
    spec: MergeSpec, method: Method, given: dict, where: str, per_model: bool, notes: list
) -> None:
    for name in given:
        if name in method.ignored:
            notes.append(f"{where}: parameter {name!r} is ignored: {method.ignored[name]}")
            continue
        param = method.param(name)
        if param is None:
            known = ", ".join(p.name for p in method.params) or "none"
            raise MergeError(f"{where}: {method.name} has no parameter {name!r} (its parameters: {known})")
        if per_model and not param.per_model:
            raise MergeError(
                f"{where}: {name!r} is a global parameter of {method.name}; give it under the top-level parameters"
            )


def resolve(spec: MergeSpec) -> Resolved:
    """Check a spec against the method table; refuse (MergeError) with what is wrong and where."""
    method = lookup(spec.method)
    notes: list[str] = []
    entries, base = _models_and_base(spec, method, notes)
    _check_names(spec, method, spec.params, spec.source or "--param", False, notes)
    for e in entries:
        _check_names(spec, method, e.params, f"{_at(spec)}model {e.path}", True, notes)
    globals_: dict[str, Any] = {}
    for p in method.params:
        if p.per_model:
            continue
        value = spec.params.get(p.name, p.default)
        if value is REQUIRED:
            raise MergeError(f"{_at(spec)}{method.name} needs the parameter {p.name!r} ({p.help})")
        globals_[p.name] = p.check(value, spec.source or "--param")
    per_model = []
    for e in entries:
        where = f"{_at(spec)}model {e.path}"
        values = {}
        for p in method.params:
            if not p.per_model:
                continue
            value = e.params.get(p.name, spec.params.get(p.name, p.default))
            if value is REQUIRED:
                raise MergeError(f"{where} has no {p.name!r} ({p.help}); give it under its parameters")
            values[p.name] = p.check(value, where)
        per_model.append(values)
    args = Args(tuple(per_model), globals_)
    if method.param("weight") is not None:
        _check_weights(spec, method, entries, args.column("weight"), notes)
    return Resolved(spec, method, tuple(e.path for e in entries), base, args, tuple(notes))


def _check_weights(spec: MergeSpec, method: Method, entries, weights: tuple[float, ...], notes: list) -> None:
    negative = [(e.path, w) for e, w in zip(entries, weights, strict=True) if w < 0]
    if negative:
        listed = ", ".join(f"{w:g} for {p}" for p, w in negative)
        if method.negative_weights is None:
            raise MergeError(
                f"{_at(spec)}negative weight {listed}: {method.name} averages models, and a negative "
                "weight extrapolates away from one; use task_arithmetic with a base model if that is meant"
            )
        notes.append(f"negative weight {listed}: {method.negative_weights}")
    if spec.from_cli and not spec.allow_unnormalized:
        total = math.fsum(weights)
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise MergeError(
                f"weights {list(weights)} sum to {total:g}, not 1; pass --allow-unnormalized if that is intended"
            )


def from_cli(
    models: list[str],
    weights: list[float] | None = None,
    method: str = "linear",
    base: str | None = None,
    scale: float | None = None,
    params: dict[str, Any] | None = None,
    dtype: str | None = None,
    allow_unnormalized: bool = False,
) -> MergeSpec:
    """The spec the command-line flags describe (uniform weights by default; --scale is lambda)."""
    entry = lookup(method)
    if weights is not None and len(weights) != len(models):
        raise MergeError(f"got {len(weights)} weights for {len(models)} models; give one weight per model")
    if weights is not None and not all(isinstance(w, int | float) and math.isfinite(w) for w in weights):
        raise MergeError(f"weights must be finite numbers, got {weights}")
    given = dict(params or {})
    if scale is not None:
        if entry.param("lambda") is None:
            raise MergeError(f"--scale is task arithmetic's lambda; {entry.name} has no lambda")
        if "lambda" in given:
            raise MergeError("give either --scale or --param lambda=..., not both")
        given["lambda"] = scale
    if entry.name == "linear":
        given.setdefault("normalize", False)  # the CLI checks that the weights sum to 1 instead
    per_weight = weights if weights is not None else [1.0 / len(models)] * len(models) if models else []
    has_weight = entry.param("weight") is not None
    entries = tuple(
        ModelEntry(str(m), {"weight": float(w)} if has_weight else {})
        for m, w in zip(models, per_weight, strict=True)
    )
    if weights is not None and not has_weight:
        raise MergeError(f"--method {entry.name} takes no --weights")
    return MergeSpec(
        entry.name,
        entries,
        str(base) if base is not None else None,
        given,
        dtype,
        allow_unnormalized=allow_unnormalized,
    )


def parse_param(text: str) -> tuple[str, Any]:
    """'density=0.5' -> ('density', 0.5); true/false become booleans, whole numbers ints."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise MergeError(f"--param {text!r}: write NAME=VALUE, e.g. density=0.5")
    value = value.strip()
    if value.lower() in ("true", "false"):
        return name.strip(), value.lower() == "true"
    try:
        return name.strip(), int(value)
    except ValueError:
        pass
    try:
        return name.strip(), float(value)
    except ValueError:
        raise MergeError(f"--param {text!r}: {value!r} is not a number or true/false") from None
