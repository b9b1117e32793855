"""Run lmms-eval on the wrapper tasks and read its results back.

Why a subprocess of lmms-eval's own CLI: its evaluator, model classes and scorers run exactly as a
user of lmms-eval runs them; this only prepares the include folder, passes the model, and collects
the numbers. Responses are cached by lmms-eval's own `--use_cache` (OUT/cache), so a rerun after a
crash repeats no finished request.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from core.atomicio import atomic_write_text
from eval.lmms.wrappers import WRAPPERS, write_mig_bench, write_wrapper

log = logging.getLogger(__name__)

LMMS_MODELS = ("vllm", "openai", "from_log")
MIG = "mig-bench"


class LmmsError(RuntimeError):
    """lmms-eval failed or wrote no results."""


def model_args(lmms_model: str, model: str, opts: dict) -> str:
    """lmms-eval `--model_args` for its in-process vLLM model, its OpenAI client or its log replay."""
    if lmms_model == "vllm":
        args = {
            "model": model,
            "max_new_tokens": opts.get("max_new_tokens", 1024),  # lmms-eval's default is 4096
            "dtype": opts.get("dtype", "auto"),
            "tensor_parallel_size": opts.get("tensor_parallel", 1),
            "gpu_memory_utilization": opts.get("gpu_memory_utilization", 0.9),
        }
        if opts.get("max_model_len"):
            args["max_model_len"] = opts["max_model_len"]
        if opts.get("device") == "cpu" or opts.get("enforce_eager"):
            args["enforce_eager"] = True
    elif lmms_model == "openai":
        args = {"model_version": model, "base_url": opts.get("api_base", "http://127.0.0.1:8000/v1")}
    elif lmms_model == "from_log":  # replay responses logged earlier (model: the log folder): a rescore
        args = {"logs": model}
    else:
        raise ValueError(f"unknown lmms-eval model {lmms_model!r}; choose from {LMMS_MODELS}")
    for key, value in args.items():
        if isinstance(value, str) and ("," in value or "=" in value):
            raise ValueError(f"lmms-eval model argument {key}={value!r} may not hold ',' or '='")
    return ",".join(f"{k}={v}" for k, v in args.items())


def prepare(
    out: Path, data: dict[str, Path], answer_format: str = "official", image_root=None
) -> dict[str, str]:
    """Write OUT/lmms_tasks/ for the benchmarks in `data` (name -> local data); returns name -> task."""
    tasks_dir = out / "lmms_tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for name, path in data.items():
        if name == MIG:
            tasks[name] = write_mig_bench(tasks_dir, Path(path), answer_format, image_root)
        elif name in WRAPPERS:
            tasks[name] = write_wrapper(tasks_dir, WRAPPERS[name], Path(path))
        else:
            raise ValueError(
                f"unknown lmms-eval benchmark {name!r}; choose from {', '.join([MIG, *WRAPPERS])}"
            )
    return tasks


def _latest_results(out: Path) -> dict:
    found = sorted(out.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LmmsError(f"lmms-eval wrote no *_results.json under {out}")
    return json.loads(found[-1].read_text(encoding="utf-8"))


def _samples(out: Path, task: str) -> list[dict]:
    found = sorted(out.rglob(f"*_samples_{task}.jsonl"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LmmsError(f"lmms-eval wrote no samples file for {task} under {out}")
    return [json.loads(line) for line in found[-1].read_text(encoding="utf-8").splitlines() if line.strip()]


def mig_predictions(out: Path, task: str) -> Path:
    """lmms-eval's MIG-Bench sample log as a predictions.jsonl that `eval score` reads."""
    lines = []
    for sample in _samples(out / "lmms", task):
        item = sample.get("mig_acc_0.5")
        if not isinstance(item, dict):
            raise LmmsError(f"a {task} sample has no mig_acc_0.5 record: {str(sample)[:200]}")
        lines.append(
            {
                k: item[k]
                for k in ("index", "task", "images", "response", "answer", "target_image", "n_images")
            }
        )
    path = out / MIG / "predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(x) + "\n" for x in lines))
    return path


def run_lmms(
    model: str,
    out_dir,
    data: dict[str, Path],
    lmms_model: str = "vllm",
    opts: dict | None = None,
    limit: int | None = None,
    answer_format: str = "official",
    image_root=None,
) -> dict:
    """Run the benchmarks in `data` through lmms-eval into out_dir; returns name -> {metric, value, ...}.

    MIG-Bench's responses are also written as OUT/mig-bench/predictions.jsonl and scored by
    `eval score`, so its numbers are this project's scorer on lmms-eval's generations.
    """
    opts = dict(opts or {})
    out = Path(out_dir)
    tasks = prepare(out, data, answer_format, image_root)
    cmd = [sys.executable, "-m", "lmms_eval", "eval", "--model", lmms_model]
    cmd += ["--model_args", model_args(lmms_model, model, opts), "--tasks", ",".join(tasks.values())]
    cmd += ["--include_path", str(out / "lmms_tasks"), "--output_path", str(out / "lmms"), "--log_samples"]
    cmd += ["--use_cache", str(out / "cache" / "responses"), "--batch_size", str(opts.get("batch_size", 64))]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if lmms_model == "vllm":
        from eval.backends.vllm_backend import cpu_build_installed, one_process_on_cpu

        device = opts.get("device", "auto")
        cpu = device == "cpu" or (device == "auto" and cpu_build_installed())
        one_process_on_cpu(env, cpu, opts.get("tensor_parallel", 1))
    log.info("lmms-eval: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    atomic_write_text(
        out / "lmms_log.txt", proc.stdout[-200_000:] + "\n--- stderr ---\n" + proc.stderr[-200_000:]
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LmmsError(f"lmms-eval exited {proc.returncode} (full log: {out / 'lmms_log.txt'}):\n{tail}")
    results = _latest_results(out / "lmms")["results"]
    summary = {}
    for name, task in tasks.items():
        entry = results.get(task)
        if entry is None:
            raise LmmsError(f"lmms-eval's results have no {task}")
        if name == MIG:
            from eval.runner import score_file

            metrics = score_file(
                mig_predictions(out, task),
                out / MIG,
                force=True,
                label=Path(model).name,
                answer_format=answer_format,
            )
            summary[name] = {
                "title": "MIG-Bench (lmms-eval)",
                "metric": "acc@0.5",
                "value": metrics["average"]["acc@0.5"],
                "lmms": {k: v for k, v in entry.items() if k.startswith("mig_") and "stderr" not in k},
                "eval_score": metrics["average"],
            }
        else:
            wrapper = WRAPPERS[name]
            value = entry.get(wrapper.metric)
            summary[name] = {
                "title": wrapper.title,
                "metric": wrapper.metric,
                "value": value,
                "note": wrapper.note,
            }
    atomic_write_text(out / "lmms_results.json", json.dumps(summary, indent=2) + "\n")
    return summary
