"""The non-weight files a merged model needs: config, generation config, tokenizer, processor, chat template.

Why: a folder of averaged tensors is not a model; transformers, vLLM and
LLaMA-Factory also read config.json, the tokenizer and processor files and the
chat template. They are taken from the first model. Training leftovers
(optimizer and scheduler states, trainer logs, loss plots, the model card of
one training run) are not carried over: they would describe a model this is not.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

from .dtypes import Dtype

# Top-level files of a training output folder that are not part of the model.
SKIPPED = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "rng_state*",
    "trainer_state.json",
    "trainer_log.jsonl",
    "*results.json",
    "training_*.png",
    "training_args.yaml",
    "llamaboard_config.yaml",
    "running_log.txt",
    "swanlab_public_config.json",
    "latest",
    "zero_to_fp32.py",
    "README.md",
    "merge_tool_config.json",
    "merge_config.yaml",
    "mergekit_config.yml",
)


def model_files(folder: Path) -> list[Path]:
    """Regular top-level files of `folder` that belong to the model (not weights, not training state)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not any(fnmatch.fnmatch(p.name, pat) for pat in SKIPPED)
    )


def differing_files(first: Path, other: Path) -> list[str]:
    """Names of model files present in both folders whose contents differ (reported, not refused)."""
    names = []
    for path in model_files(first):
        twin = other / path.name
        if twin.is_file() and (
            twin.stat().st_size != path.stat().st_size or twin.read_bytes() != path.read_bytes()
        ):
            names.append(path.name)
    return names


def _set_dtype(node: object, name: str) -> None:
    if isinstance(node, dict):
        for key in ("dtype", "torch_dtype"):
            if key in node and isinstance(node[key], str):
                node[key] = name
        for value in node.values():
            _set_dtype(value, name)


def copy_model_files(src: Path, dest: Path, dtype: Dtype | None) -> list[str]:
    """Copy the model files; with a new output dtype, record it in config.json. Returns the names copied."""
    names = []
    for path in model_files(src):
        if path.name == "config.json" and dtype is not None:
            config = json.loads(path.read_text(encoding="utf-8"))
            _set_dtype(config, dtype.name)
            if "dtype" not in config and "torch_dtype" not in config:
                config["dtype"] = dtype.name
            (dest / path.name).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        else:
            shutil.copy2(path, dest / path.name)
        names.append(path.name)
    return names
