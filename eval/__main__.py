"""`python -m eval run | score | compare | synth`: MIG-Bench evaluation, scored like the paper."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atomicio import OutputExistsError

EXIT_INCOMPLETE = 3


def _tasks_arg(values):
    if not values:
        return None
    out = []
    for v in values:
        out += [t for t in v.split(",") if t]
    return out


def _add_run(sub) -> None:
    from eval import answers, prompts, scoring
    from eval.bench import ANSWER_SCALES
    from eval.runner import MODES

    p = sub.add_parser("run", help="generate answers with a model and score them")
    p.add_argument(
        "--model", required=True, help="checkpoint folder (vllm, hf) or served model name (openai)"
    )
    p.add_argument("--bench", required=True, type=Path, help="MIG_data.json")
    p.add_argument(
        "--image-root", type=Path, help="folder holding MIG-Bench/ (default: parent of the file's folder)"
    )
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--backend", choices=("vllm", "hf", "openai"), default="vllm")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="direct",
        help="direct, or the paper's two-step chain of thought on the target image (cot) or all images (mcot)",
    )
    p.add_argument("--tasks", nargs="+", help="only these tasks (names from MIG_data.json; commas allowed)")
    p.add_argument("--limit", type=int, help="at most N instances per task")
    p.add_argument(
        "--format-suffix",
        choices=sorted(prompts.FORMAT_SUFFIXES),
        default=prompts.DEFAULT_SUFFIX,
        help="suffix appended to every question (default: the paper script's string)",
    )
    p.add_argument(
        "--format-when",
        choices=prompts.FORMAT_WHEN,
        default="always",
        help="append it to every question (script) or only where need_format is true",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument(
        "--repetition-penalty",
        type=float,
        help="default: the checkpoint's generation_config.json (what the paper's script used)",
    )
    p.add_argument("--answer-scale", choices=ANSWER_SCALES, default="auto", help="answers in 0-1 or 0-1000")
    p.add_argument(
        "--coords",
        choices=sorted(scoring.COORDS),
        default="grid1000",
        help="how to read the model's numbers; resized-pixels for Qwen2.5-VL",
    )
    p.add_argument(
        "--rescale",
        choices=scoring.RESCALES,
        default="none",
        help="migician: the paper script's y-shift for Migician (off by default)",
    )
    p.add_argument(
        "--answer-format",
        choices=sorted(answers.ANSWER_FORMATS),
        default=answers.DEFAULT_ANSWER_FORMAT,
        help="official: the paper's first box anywhere; think: only inside <answer>...</answer> (RL models)",
    )
    p.add_argument("--force", action="store_true", help="discard an earlier, different run in --output-dir")
    p.add_argument("--label", help="name of this run in the reports (default: the model folder's name)")
    p.add_argument("--chunk-size", type=int, default=256, help="prompts per backend call (and per flush)")
    g = p.add_argument_group("engine (vllm, hf)")
    g.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--tensor-parallel", type=int, default=1, help="GPUs per engine (vllm)")
    g.add_argument("--data-parallel", type=int, default=1, help="engine processes, each on its own GPUs")
    g.add_argument(
        "--kv-cache-gb", type=float, help="KV cache size; on CPU default 1 (VLLM_CPU_KVCACHE_SPACE)"
    )
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="no CUDA graphs / compilation (default: on for CPU)",
    )
    g.add_argument("--max-model-len", type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--attn-implementation", help="hf only, e.g. flash_attention_2 or sdpa")
    o = p.add_argument_group("openai")
    o.add_argument(
        "--api-base", default="http://127.0.0.1:8000/v1", help="one URL, or several separated by commas"
    )
    o.add_argument("--api-key", help="default: $OPENAI_API_KEY")
    o.add_argument("--concurrency", type=int, default=8)
    o.add_argument("--request-timeout", type=float, default=600.0)
    o.add_argument("--processor", help="local processor folder, to know the resized image sizes")
    p.add_argument("--dp-rank", type=int, help=argparse.SUPPRESS)


def _run(args, argv) -> int:
    from eval.runner import IncompleteRun, RunConfig, run

    engine = {
        "dtype": args.dtype,
        "device": args.device,
        "tensor_parallel": args.tensor_parallel,
        "kv_cache_gb": args.kv_cache_gb,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "enforce_eager": args.enforce_eager,
        "max_model_len": args.max_model_len,
        "seed": args.seed,
        "attn_implementation": args.attn_implementation,
        "api_base": args.api_base,
        "api_key": args.api_key,
        "concurrency": args.concurrency,
        "timeout": args.request_timeout,
    }
    cfg = RunConfig(
        model=args.model,
        bench=str(args.bench),
        output_dir=str(args.output_dir),
        image_root=str(args.image_root) if args.image_root else None,
        backend=args.backend,
        mode=args.mode,
        tasks=_tasks_arg(args.tasks),
        limit=args.limit,
        format_suffix=args.format_suffix,
        format_when=args.format_when,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        answer_scale=args.answer_scale,
        coords=args.coords,
        rescale=args.rescale,
        answer_format=args.answer_format,
        chunk_size=args.chunk_size,
        data_parallel=args.data_parallel,
        dp_rank=args.dp_rank,
        force=args.force,
        label=args.label,
        processor=args.processor,
        engine=engine,
    )
    worker_argv = [a for a in argv[1:]]
    try:
        metrics = run(cfg, worker_argv)
    except IncompleteRun as exc:
        print(f"[eval] {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if metrics is not None:
        _print_summary(metrics, args.output_dir)
    return 0


def _print_summary(metrics: dict, out_dir) -> None:
    from eval import tasks

    cells = [f"{tasks.BY_NAME[t].short} {m['acc@0.5']:.2f}" for t, m in metrics["tasks"].items()]
    ave = metrics["average"]["acc@0.5"]
    print(f"MIG-Bench Acc@0.5: {' | '.join(cells)} | AVE {ave:.2f} ({len(metrics['tasks'])} task(s))")
    print(f"reports in {out_dir}: metrics.json, results.md, metrics.csv, radar.png")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)

    from eval import answers, scoring

    s = sub.add_parser("score", help="score a predictions file alone")
    s.add_argument("--predictions", required=True, type=Path)
    s.add_argument("--output-dir", required=True, type=Path)
    s.add_argument("--coords", choices=sorted(scoring.COORDS), default="grid1000")
    s.add_argument("--rescale", choices=scoring.RESCALES, default="none")
    s.add_argument(
        "--answer-format",
        choices=sorted(answers.ANSWER_FORMATS),
        help="default: official, unless the run's run.json recorded another (then it must be given)",
    )
    s.add_argument("--label", help="name of the run in the reports")
    s.add_argument("--force", action="store_true", help="replace report files already in --output-dir")

    c = sub.add_parser("compare", help="put scored runs side by side")
    c.add_argument("runs", nargs="+", type=Path, help="output folders holding metrics.json")
    c.add_argument("--metric", default="acc@0.5", choices=scoring.METRIC_KEYS[1:])
    c.add_argument("--output", type=Path, help="also write the table to this file")
    c.add_argument("--force", action="store_true")

    y = sub.add_parser("synth", help="write a synthetic bench in MIG-Bench's layout")
    y.add_argument("out_root", type=Path, help="folder that will hold MIG-Bench/")
    y.add_argument("--per-task", type=int, default=2)
    y.add_argument("--mig-shaped", action="store_true", help="4,295 instances with MIG-Bench's image counts")
    y.add_argument("--thousand", action="store_true", help="answers as 0-1000 integers (revised release)")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--force", action="store_true")

    args = parser.parse_args(argv)
    from atomicio import exit_on_signals

    exit_on_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C: no temporary report files are left behind
    from eval.bench import BenchError
    from eval.predictions import RunMismatchError

    try:
        if args.command == "run":
            return _run(args, argv)
        if args.command == "score":
            from eval.runner import score_file

            metrics = score_file(
                args.predictions,
                args.output_dir,
                args.coords,
                args.rescale,
                args.force,
                args.label,
                args.answer_format,
            )
            _print_summary(metrics, args.output_dir)
            return 0
        if args.command == "compare":
            from atomicio import atomic_write_text, refuse_existing
            from eval.report import compare

            table = compare(args.runs, args.metric)
            print(table, end="")
            if args.output:
                from atomicio import ensure_distinct_paths

                runs = [r / "metrics.json" for r in args.runs]
                ensure_distinct_paths({"--output": args.output, "run": runs})
                refuse_existing(args.output, args.force)
                atomic_write_text(args.output, table)
            return 0
        if args.command == "synth":
            from eval.synthetic import make_synthetic_bench

            path = make_synthetic_bench(
                args.out_root, args.per_task, args.mig_shaped, args.seed, args.thousand, args.force
            )
            print(f"synthetic bench written to {path}")
            return 0
    except (BenchError, RunMismatchError, OutputExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
