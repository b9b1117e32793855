"""`python -m eval run | score | compare | view | diff | synth | benchmarks`: MIG-Bench (and RefCOCO) evaluation, scored like the papers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import families
from core.atomicio import OutputExistsError
from core.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, fail, prog_name
from families.chat import PROMPT_LAYOUTS, TRAINING_LAYOUT

PROG = prog_name("eval", "migician-eval")  # the name the user typed, in every error line


def _tasks_arg(values):
    if not values:
        return None
    out = []
    for v in values:
        out += [t for t in v.split(",") if t]
    return out


def _add_run(sub) -> None:
    from eval.bench import ANSWER_SCALES
    from eval.benchmarks import BENCHMARKS, DEFAULT_BENCHMARK
    from eval.runner import MODES

    p = sub.add_parser("run", help="generate answers with a model and score them")
    p.add_argument(
        "--benchmark", choices=list(BENCHMARKS), default=DEFAULT_BENCHMARK, help="default: %(default)s"
    )
    p.add_argument("--bench", type=Path, help="MIG_data.json (mig-bench)")
    p.add_argument(
        "--data-root",
        type=Path,
        help="refcoco, refcoco+, refcocog: ROOT/<name>/refs(unc|umd).p, instances.json, ROOT/coco/train2014/; "
        "mibench: the release's JSON files and unpacked images; mmiu: all.json and the task folders",
    )
    p.add_argument("--split", nargs="+", help="RefCOCO splits (default: all standard ones); same as --tasks")
    p.add_argument(
        "--image-root",
        type=Path,
        help="MIG-Bench: folder holding MIG-Bench/ (default: parent of the file's folder); "
        "RefCOCO: the COCO train2014 folder (default: DATA_ROOT/coco/train2014)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="direct",
        help="direct, or the paper's two-step chain of thought on the target image (cot) or all images (mcot)",
    )
    p.add_argument("--tasks", nargs="+", help="only these tasks (names from MIG_data.json; commas allowed)")
    p.add_argument("--answer-scale", choices=ANSWER_SCALES, default="auto", help="answers in 0-1 or 0-1000")
    _add_generation(p)


def _add_suite(sub) -> None:
    from eval.suite import SUITES

    s = sub.add_parser(
        "suite", help="run the paper's tables (MIG-Bench, RefCOCO/+/g, multi-image) and write suite.md"
    )
    s.add_argument("--suite", help=f"parts, comma-separated (default: all of {', '.join(SUITES)})")
    s.add_argument("--mig-bench", type=Path, help="MIG_data.json (parts without data are skipped)")
    s.add_argument(
        "--refcoco-root", type=Path, help="the refer layout root of `eval run --benchmark refcoco`"
    )
    s.add_argument(
        "--coco-images", type=Path, help="COCO train2014 folder (default: REFCOCO_ROOT/coco/train2014)"
    )
    s.add_argument("--mibench", type=Path, help="MIBench root (`eval run --benchmark mibench --data-root`)")
    s.add_argument("--mmiu", type=Path, help="MMIU root (`eval run --benchmark mmiu --data-root`)")
    for name, title in (("muirbench", "MuirBench"), ("blink", "BLINK"), ("mantis", "Mantis-Eval")):
        s.add_argument(
            f"--{name}", type=Path, help=f"{title}: a local snapshot folder or parquet file (lmms-eval)"
        )
    _add_generation(s)


def _add_generation(p) -> None:
    """Options shared by `run` and `suite`: model, output, backend, prompt and decoding, scoring, engine."""
    from eval import answers, prompts, scoring
    from eval.backends import BACKENDS

    p.add_argument(
        "--model", required=True, help="checkpoint folder (vllm, hf) or served model name (openai)"
    )
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--backend", choices=BACKENDS, default="vllm")
    p.add_argument("--limit", type=int, help="at most N instances per task")
    p.add_argument(
        "--format-suffix",
        choices=sorted(prompts.FORMAT_SUFFIXES),
        help="suffix appended to every question (default: the benchmark's; MIG-Bench: the paper script's "
        "string, RefCOCO: none)",
    )
    p.add_argument(
        "--format-when",
        choices=prompts.FORMAT_WHEN,
        default="always",
        help="append it to every question (script) or only where need_format is true",
    )
    p.add_argument(
        "--max-new-tokens", type=int, help="default: 128 (the paper script's); 2048 for a Thinking checkpoint"
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        help="default: the checkpoint's generation_config.json (what the paper's script used)",
    )
    p.add_argument(
        "--family",
        choices=("auto", *families.FAMILY_CHOICES),
        default="auto",
        help="model family: its grounding prompt, answer format and box convention (default: auto, from the "
        "checkpoint's config.json; a served model without a local folder is qwen2-vl)",
    )
    p.add_argument(
        "--pixel-budget",
        help="the per-image pixel budget images are pre-shrunk to before the processor, as in training: a "
        "number, or 'paper' for the paper's protocol (the processor's default, no pre-shrink); default: the "
        "budget the checkpoint records (image_budget.json), else its family's training default",
    )
    p.add_argument(
        "--prompt-layout",
        choices=PROMPT_LAYOUTS,
        default=TRAINING_LAYOUT,
        help="how a request is laid out in the chat template: training (default: as LLaMA-Factory rendered "
        "the training records, with its template's system message and a newline after each image) or paper "
        "(the paper script's: the images, then the text)",
    )
    p.add_argument(
        "--coords",
        choices=sorted(scoring.COORDS),
        help="how to read the model's numbers (default: the family's: resized-pixels for Qwen2.5-VL, "
        "else grid1000)",
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
        help="official: the paper's first box anywhere; think: only inside <answer>...</answer> (RL models); "
        "json / think-json: bbox_2d JSON (default: the family's, official or json)",
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


def _data_source(args) -> Path:
    """--bench for a benchmark read from one file, --data-root for one read from a folder."""
    from eval.benchmarks import get_benchmark

    bench = get_benchmark(args.benchmark)
    want, other = ("--bench", "--data-root") if bench.data_kind == "file" else ("--data-root", "--bench")
    given = {"--bench": args.bench, "--data-root": args.data_root}
    if given[other] is not None:
        raise _Usage(f"{other} is not an option of --benchmark {bench.name}; give {want}")
    if given[want] is None:
        raise _Usage(f"--benchmark {bench.name} needs {want}")
    if args.split and bench.data_kind == "file":
        raise _Usage(f"--split is for the RefCOCO benchmarks; {bench.title} selects with --tasks")
    return given[want]


class _Usage(ValueError):
    """The command line is wrong (exit code 2)."""


def _config(args, **fields):
    """The RunConfig of the generation options; `fields` gives the benchmark-specific ones."""
    from eval.runner import RunConfig

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
    return RunConfig(
        model=args.model,
        output_dir=str(args.output_dir),
        backend=args.backend,
        limit=args.limit,
        format_suffix=args.format_suffix,
        format_when=args.format_when,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        coords=args.coords,
        rescale=args.rescale,
        answer_format=args.answer_format,
        family=args.family,
        pixel_budget=args.pixel_budget,
        prompt_layout=args.prompt_layout,
        chunk_size=args.chunk_size,
        data_parallel=args.data_parallel,
        dp_rank=args.dp_rank,
        force=args.force,
        label=args.label,
        processor=args.processor,
        engine=engine,
        **fields,
    )


def _check_backend_flags(backend: str, argv: list[str]) -> None:
    from eval.backends import check_flags

    try:
        check_flags(backend, argv)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _run(args, argv) -> int:
    from eval.runner import IncompleteRun, run

    _check_backend_flags(args.backend, argv)

    cfg = _config(
        args,
        benchmark=args.benchmark,
        bench=str(_data_source(args)),
        image_root=str(args.image_root) if args.image_root else None,
        mode=args.mode,
        tasks=_tasks_arg((args.tasks or []) + (args.split or [])),
        answer_scale=args.answer_scale,
    )
    worker_argv = [a for a in argv[1:]]
    try:
        metrics = run(cfg, worker_argv)
    except IncompleteRun as exc:
        return fail(PROG, exc, EXIT_PARTIAL)
    if metrics is not None:
        _print_summary(metrics, args.output_dir)
    return EXIT_OK


def _suite(args, argv) -> int:
    from eval.suite import parse_suite, run_suite

    _check_backend_flags(args.backend, argv)
    if args.data_parallel > 1:
        raise _Usage("--data-parallel is an option of `eval run`; run each benchmark with it instead")
    if args.coco_images and not args.refcoco_root:
        raise _Usage("--coco-images needs --refcoco-root")
    parts = parse_suite(args.suite)
    cfg = _config(args, bench="", image_root=str(args.coco_images) if args.coco_images else None)
    sources = {
        "mig-bench": args.mig_bench,
        "refcoco": args.refcoco_root,
        "mibench": args.mibench,
        "mmiu": args.mmiu,
    }
    sources |= {"muirbench": args.muirbench, "blink": args.blink, "mantis": args.mantis}
    summary = run_suite(cfg, parts, {k: str(v) if v else None for k, v in sources.items()})
    for name, metrics in summary["results"].items():
        if "lmms" in metrics:
            print(
                f"{metrics['lmms']['title']} (lmms-eval): {metrics['lmms']['metric']} {metrics['lmms']['value']}"
            )
        else:
            _print_summary(metrics | {"benchmark": name}, Path(args.output_dir) / name)
    print(f"suite report: {Path(args.output_dir) / 'suite.md'}")
    if summary["incomplete"]:
        return fail(PROG, f"incomplete: {', '.join(summary['incomplete'])}; rerun to finish", EXIT_PARTIAL)
    if not summary["results"]:
        return fail(
            PROG,
            "no benchmark of the suite has data: "
            + "; ".join(f"{k}: {v}" for k, v in summary["skipped"].items()),
        )
    return EXIT_OK


def _task_data(values) -> dict[str, Path]:
    data = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise _Usage(f"--task takes NAME=PATH, got {v!r}")
        if name in data:
            raise _Usage(f"--task {name} given twice")
        data[name] = Path(path)
    return data


def _lmms(args) -> int:
    from eval.lmms.runner import run_lmms

    device = args.device
    if device == "auto":
        import shutil

        device = "cuda" if shutil.which("nvidia-smi") else "cpu"
    opts = {
        "dtype": args.dtype,
        "device": device,
        "tensor_parallel": args.tensor_parallel,
        "max_model_len": args.max_model_len,
        "max_new_tokens": args.max_new_tokens,
        "api_base": args.api_base,
    }
    summary = run_lmms(
        args.model,
        args.output_dir,
        _task_data(args.task),
        args.lmms_model,
        opts,
        args.limit,
        args.answer_format,
        args.image_root,
    )
    for entry in summary.values():
        print(f"{entry['title']}: {entry['metric']} {entry['value']}")
    print(f"lmms-eval results: {Path(args.output_dir) / 'lmms_results.json'}")
    return EXIT_OK


def _view(args) -> int:
    import time

    from eval.view import write_view

    start = time.perf_counter()
    done = write_view(
        args.run,
        _tasks_arg(args.task),
        args.outcome,
        args.limit,
        args.page_size,
        workers=max(1, args.workers),
    )
    took = time.perf_counter() - start
    print(
        f"viewer: {done.index} ({done.cards} instance(s) on {done.pages} page(s); {done.thumbs_new} new and "
        f"{done.thumbs_reused} reused thumbnail(s); {done.bytes / 1e6:.1f} MB; {took:.1f} s)"
    )
    if done.image_errors:
        print(f"{done.image_errors} image(s) could not be read; their pages say why")
    return EXIT_OK


def _diff(args) -> int:
    from core.atomicio import atomic_write_text, refuse_existing
    from eval.diff import diff_runs

    if args.output:
        refuse_existing(args.output, args.force)
    report, _ = diff_runs(args.run_a, args.run_b, None if args.all else 20)
    print(report, end="")
    if args.output:
        atomic_write_text(args.output, report)
    return EXIT_OK


def _print_summary(metrics: dict, out_dir) -> None:
    from eval.benchmarks import get_benchmark

    bench = get_benchmark(metrics.get("benchmark"))
    a = metrics["average"]
    if bench.is_choice:
        shown = (
            ""
            if bench.open_tasks
            else " | ".join(
                f"{bench.by_name[t].short} {m['accuracy']:.2f}" for t, m in metrics["tasks"].items()
            )
        )
        print(
            f"{bench.title} accuracy: {shown + ' | ' if shown else ''}AVE {a['accuracy']:.2f} "
            f"(mean over {len(metrics['tasks'])} task(s); all questions {a['micro']:.2f}, n={a['n']})"
        )
        print(f"reports in {out_dir}: metrics.json, results.md, metrics.csv")
        return
    cells = [f"{bench.by_name[t].short} {m['acc@0.5']:.2f}" for t, m in metrics["tasks"].items()]
    print(
        f"{bench.title} Acc@0.5: {' | '.join(cells)} | AVE {a['acc@0.5']:.2f} ({len(metrics['tasks'])} task(s))"
    )
    print(f"reports in {out_dir}: metrics.json, results.md, metrics.csv, radar.png, outcomes.png")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_suite(sub)

    from eval import answers, scoring
    from eval.benchmarks import BENCHMARKS

    s = sub.add_parser("score", help="score a predictions file alone")
    s.add_argument(
        "--benchmark", choices=list(BENCHMARKS), help="default: the one the run's run.json records"
    )
    s.add_argument("--predictions", required=True, type=Path)
    s.add_argument("--output-dir", required=True, type=Path)
    s.add_argument(
        "--coords",
        choices=sorted(scoring.COORDS),
        help="default: what the run's run.json records (a Qwen2.5-VL run: resized-pixels), else grid1000",
    )
    s.add_argument("--rescale", choices=scoring.RESCALES, default="none")
    s.add_argument(
        "--answer-format",
        choices=sorted(answers.ANSWER_FORMATS),
        help="default: official, unless the run's run.json recorded another (then it must be given)",
    )
    s.add_argument(
        "--family",
        choices=families.FAMILY_CHOICES,
        help="read the answers as this family's (its answer format and box convention), for predictions made "
        "elsewhere; explicit --answer-format / --coords still win",
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

    sub.add_parser("benchmarks", help="list the benchmarks `run --benchmark` knows")

    from eval.outcomes import OUTCOMES

    v = sub.add_parser(
        "view", help="write RUN/view/: every instance on its images, boxes drawn (HTML, no server)"
    )
    v.add_argument("run", type=Path, help="an `eval run` or `eval score` output folder")
    v.add_argument("--task", nargs="+", help="only these tasks (commas allowed)")
    v.add_argument("--outcome", nargs="+", choices=OUTCOMES, help="only these outcomes")
    v.add_argument("--limit", type=int, help="at most N instances per task (failures first)")
    v.add_argument("--page-size", type=int, default=200, help="instances per page (default: %(default)s)")
    v.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="thumbnail processes (default: all cores)"
    )

    d = sub.add_parser(
        "diff", help="what changed between two runs of one benchmark: settings, outcomes, flips"
    )
    d.add_argument("run_a", type=Path, help="an `eval run` or `eval score` output folder")
    d.add_argument("run_b", type=Path)
    d.add_argument("--all", action="store_true", help="list every flipped instance (default: 20 per task)")
    d.add_argument("--output", type=Path, help="also write the report (markdown) to this file")
    d.add_argument("--force", action="store_true", help="replace --output if it exists")

    from eval.lmms.wrappers import WRAPPERS

    m = sub.add_parser("lmms", help="run benchmarks through lmms-eval 0.7.3 (wrapper tasks over local data)")
    m.add_argument("--model", required=True, help="checkpoint folder (vllm) or served model name (openai)")
    m.add_argument("--output-dir", required=True, type=Path)
    m.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help=f"NAME one of mig-bench, {', '.join(WRAPPERS)}; PATH its local data (MIG_data.json, "
        "a snapshot folder or a parquet file); repeat for several",
    )
    m.add_argument(
        "--lmms-model",
        choices=("vllm", "openai", "from_log"),
        default="vllm",
        help="lmms-eval's model class (from_log: --model is a folder of lmms-eval response logs to replay)",
    )
    m.add_argument("--limit", type=int, help="at most N documents per task (lmms-eval's --limit)")
    m.add_argument("--answer-format", default="official", help="MIG-Bench: official or think")
    m.add_argument("--image-root", type=Path, help="MIG-Bench: folder holding MIG-Bench/")
    m.add_argument("--dtype", default="auto")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    m.add_argument("--tensor-parallel", type=int, default=1)
    m.add_argument("--max-model-len", type=int)
    m.add_argument(
        "--max-new-tokens", type=int, default=1024, help="cap of lmms-eval's vllm model (its default: 4096)"
    )
    m.add_argument("--api-base", default="http://127.0.0.1:8000/v1", help="openai: the server's URL")

    args = parser.parse_args(argv)
    from core.atomicio import exit_on_signals
    from core.cli import setup_logging

    setup_logging(PROG)

    exit_on_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C: no temporary report files are left behind
    from eval.bench import BenchError
    from eval.lmms.runner import LmmsError
    from eval.predictions import RunMismatchError

    try:
        if args.command == "run":
            return _run(args, argv)
        if args.command == "suite":
            return _suite(args, argv)
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
                args.benchmark,
                args.family,
            )
            _print_summary(metrics, args.output_dir)
            return EXIT_OK
        if args.command == "lmms":
            return _lmms(args)
        if args.command == "view":
            return _view(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "benchmarks":
            from eval.benchmarks import BENCHMARKS, get_benchmark

            for name in BENCHMARKS:
                b = get_benchmark(name)
                data = "--bench FILE" if b.data_kind == "file" else "--data-root DIR"
                tasks = f"the data's own ({len(b.tasks)} known)" if b.open_tasks else ", ".join(b.task_names)
                print(f"{name:10} {b.title:10} {data:16} tasks: {tasks}")
            return EXIT_OK
        if args.command == "compare":
            from core.atomicio import atomic_write_text, refuse_existing
            from eval.compare import compare

            table = compare(args.runs, args.metric)
            print(table, end="")
            if args.output:
                from core.atomicio import ensure_distinct_paths

                runs = [r / n for r in args.runs for n in ("metrics.json", "suite.json", "suite.md")]
                ensure_distinct_paths({"--output": args.output, "run": runs})
                refuse_existing(args.output, args.force)
                atomic_write_text(args.output, table)
            return EXIT_OK
        if args.command == "synth":
            from eval.synthetic import make_synthetic_bench

            path = make_synthetic_bench(
                args.out_root, args.per_task, args.mig_shaped, args.seed, args.thousand, args.force
            )
            print(f"synthetic bench written to {path}")
            return EXIT_OK
    except _Usage as exc:
        parser.print_usage(sys.stderr)
        return fail(PROG, exc, EXIT_USAGE)
    except (
        BenchError,
        RunMismatchError,
        OutputExistsError,
        FileNotFoundError,
        ValueError,
        LmmsError,
    ) as exc:
        return fail(PROG, exc, EXIT_BAD_INPUT)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
