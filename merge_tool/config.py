"""mergekit's YAML config format: read a user's config into a MergeSpec, and write the one a merge ran.

Why: so a user's existing mergekit configs for these methods run unchanged
(`python -m merge_tool CONFIG.yaml --output DIR`), and every output folder
holds `merge_config.yaml` with absolute paths and every parameter spelled out
(defaults included), which replays to the same tensors. Read here: `merge_method`,
`base_model`, `models` (each `model` with optional `parameters`), global
`parameters`, `dtype`/`out_dtype`, `tokenizer_source: base`. mergekit features
merge_tool does not have (slices, modules, gradient or filtered parameter
lists, tokenizer surgery, chat templates) are refused by name, not ignored.
PyYAML is imported only when a config is read or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.yamlfile import YAMLFileError, read_yaml

from .errors import MergeError
from .spec import MergeSpec, ModelEntry, Resolved

CONFIG_NAME = "merge_config.yaml"
MAX_CONFIG_BYTES = 1 << 20
KNOWN = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source"}
UNSUPPORTED = {
    "slices": "layer slices (merge_tool merges whole models; list them under `models:`)",
    "modules": "per-module definitions (list whole models under `models:`)",
    "tokenizer": "tokenizer surgery (the tokenizer files are copied from base_model, or the first model)",
    "chat_template": "chat template selection (the chat template is copied with the tokenizer files)",
}


def _dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MergeError(f"{where} must be a mapping of names to values, got {type(value).__name__}")
    return value


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise MergeError(f"{where} must be a folder path, got {value!r}")
    return value


def read_config(path: str | Path) -> MergeSpec:
    """Parse a mergekit-style YAML config; refuse, naming the file and key, anything merge_tool cannot do."""
    path = Path(path)
    try:
        raw = read_yaml(path, max_bytes=MAX_CONFIG_BYTES)
    except YAMLFileError as err:
        raise MergeError(str(err)) from None
    if not isinstance(raw, dict):
        raise MergeError(
            f"{path}: a merge config is a mapping with merge_method and models, got {type(raw).__name__}"
        )
    for key, what in UNSUPPORTED.items():
        if raw.get(key) is not None:
            raise MergeError(f"{path}: `{key}` ({what}) is not supported by merge_tool")
    unknown = sorted(str(k) for k in raw if k not in KNOWN and k not in UNSUPPORTED)
    if unknown:
        raise MergeError(f"{path}: unknown keys {unknown}; merge_tool reads {sorted(KNOWN)}")
    method = raw.get("merge_method")
    if not isinstance(method, str):
        raise MergeError(f"{path}: merge_method must be given as a name, e.g. ties, got {method!r}")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise MergeError(f"{path}: `models` must be a list of {{model: PATH, parameters: ...}} entries")
    entries = []
    for i, item in enumerate(models):
        where = f"{path}: models[{i}]"
        if isinstance(item, str):
            item = {"model": item}
        item = _dict(item, where)
        extra = sorted(set(item) - {"model", "parameters"})
        if extra:
            raise MergeError(f"{where}: unknown keys {extra}; an entry has `model` and `parameters`")
        entries.append(
            ModelEntry(
                _path(item.get("model"), f"{where}.model"),
                _dict(item.get("parameters"), f"{where}.parameters"),
            )
        )
    base = raw.get("base_model")
    base = _path(base, f"{path}: base_model") if base is not None else None
    tokenizer_source = raw.get("tokenizer_source")
    if tokenizer_source not in (None, "base"):
        raise MergeError(
            f"{path}: tokenizer_source {tokenizer_source!r} is not supported; the tokenizer files are copied "
            "from base_model (or the first model); use `tokenizer_source: base` or leave it out"
        )
    dtype = raw.get("out_dtype") if raw.get("out_dtype") is not None else raw.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise MergeError(f"{path}: dtype must be a name such as bfloat16, got {dtype!r}")
    return MergeSpec(
        method,
        tuple(entries),
        base,
        _dict(raw.get("parameters"), f"{path}: parameters"),
        dtype,
        str(path),
        from_cli=False,
    )


def config_of(resolved: Resolved, dtype_name: str | None) -> dict:
    """The mergekit config that replays `resolved`: absolute paths, every parameter explicit."""
    method, args = resolved.method, resolved.args
    models = [
        {"model": str(Path(m).resolve()), **({"parameters": dict(p)} if p else {})}
        for m, p in zip(resolved.models, args.per_model, strict=True)
    ]
    config: dict[str, Any] = {"merge_method": method.name}
    if resolved.base is not None:
        config["base_model"] = str(Path(resolved.base).resolve())
    config["models"] = models
    if args.globals:
        config["parameters"] = dict(args.globals)
    if dtype_name is not None:
        config["dtype"] = dtype_name
    return config


def dump_config(config: dict) -> str:
    """The config as YAML; as JSON (which YAML readers accept) if PyYAML is missing, so a merge never fails here."""
    header = "# written by merge_tool; replay with: python -m merge_tool merge_config.yaml --output DIR\n"
    try:
        import yaml
    except ImportError:  # pragma: no cover - both project environments have PyYAML
        return header + json.dumps(config, indent=2) + "\n"
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
