"""Run a validated plan: stream every tensor through the method into sharded output.

Why this shape: memory stays at a few chunks per model (the readers hand
pages back after each chunk, the writer appends each chunk to its shard), so
merging 15 GB checkpoints needs well under 100 MB of RAM. Output goes to a
temporary folder beside OUT that is renamed only at the end (atomicio), so a
refusal, a crash or Ctrl-C leaves neither OUT nor temporary files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from core.atomicio import atomic_dir, refuse_existing

from .config import CONFIG_NAME, config_of, dump_config
from .errors import MergeError
from .extras import copy_model_files, differing_files, model_files
from .pipeline import stream
from .plan import MergePlan
from .writer import parse_size, plan_shards, write_index

DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_CHUNK_ELEMENTS = 1 << 20  # elements per work item: 2 MB of bf16 per model
CONFIG_RECORD = "merge_tool_config.json"


def default_threads() -> int:
    """Worker threads: the CPUs we may use, at most 4 (the loop is memory-bound beyond that)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


def check_output_path(plan: MergePlan, output: Path, force: bool) -> None:
    """Refuse an OUT that is, contains or lies inside an input model or that holds the config file;
    refuse a non-empty OUT without force."""
    out = output.resolve()
    for ckpt in plan.inputs:
        folder = ckpt.folder.resolve()
        if out == folder or out in folder.parents:
            raise MergeError(f"--output {output} would replace input model {ckpt.label}")
        if folder in out.parents:
            raise MergeError(
                f"--output {output} is inside input model {ckpt.label}; its files would be mixed with the "
                "model's (and copied into the next merge of it); write it elsewhere"
            )
    config = plan.resolved.spec.source
    if config and (out == Path(config).resolve() or out in Path(config).resolve().parents):
        raise MergeError(
            f"--output {output} holds the config {config}; --force would delete it; write elsewhere"
        )
    refuse_existing(output, force)


def check_free_space(plan: MergePlan, output: Path) -> None:
    """Refuse before writing when the output cannot fit on its disk."""
    parent = output.resolve().parent
    while not parent.exists():
        parent = parent.parent
    extras = sum(p.stat().st_size for p in model_files(plan.files_from.folder))
    need = plan.output_bytes + extras + (1 << 20)
    free = shutil.disk_usage(parent).free
    if free < need:
        raise MergeError(
            f"the merged model needs {need / 1e9:.2f} GB but {parent} has {free / 1e9:.2f} GB free"
        )


def run_merge(
    plan: MergePlan,
    output: str | Path,
    force: bool = False,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    progress: bool = True,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    threads: int | None = None,
) -> dict:
    """Write the merged model to `output` atomically; return a summary of what was written."""
    output = Path(output)
    if threads is not None and threads < 1:
        raise MergeError(f"--threads must be at least 1, got {threads}")
    check_output_path(plan, output, force)
    shards = plan_shards(plan.tensors, parse_size(max_shard_size))
    check_free_space(plan, output)
    began = time.perf_counter()
    first = plan.files_from
    notes = list(plan.notes) + [
        f"{name} differs between {first.label} and {other.label}; taken from {first.label}"
        for other in plan.models
        if other is not first
        for name in differing_files(first.folder, other.folder)
    ]
    config = config_of(plan.resolved, plan.out_dtype.name if plan.out_dtype else None)
    with atomic_dir(output, force=force) as tmp:
        stream(plan, shards, tmp, chunk_elements, threads or default_threads(), progress)
        write_index(tmp, shards)
        copied = copy_model_files(first.folder, tmp, plan.out_dtype)
        args = plan.resolved.args
        record = {
            "tool": "merge_tool",
            "method": plan.method_name,
            "models": [str(c.folder.resolve()) for c in plan.models],
            "base": str(plan.base.folder.resolve()) if plan.base is not None else None,
            "model_parameters": [dict(p) for p in args.per_model],
            "parameters": dict(args.globals),
            "dtype": plan.out_dtype.name if plan.out_dtype else None,
            "shards": [s.filename for s in shards],
            "copied_files": copied,
            "config": CONFIG_NAME,
        }
        if any("weight" in p for p in args.per_model):
            record["weights"] = list(args.column("weight"))
        (tmp / CONFIG_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(dump_config(config), encoding="utf-8")
    return {
        "output": str(output),
        "shards": len(shards),
        "tensors": len(plan.tensors),
        "bytes_written": plan.output_bytes,
        "bytes_read": plan.input_bytes,
        "seconds": time.perf_counter() - began,
        "copied_files": copied,
        "notes": notes,
    }
