"""Benchmark `python -m eval run`: vLLM batched vs. the paper script's way, in one run.

A MIG-Bench-shaped synthetic bench (4,295 instances; 2/3/4/5/6 images on
1,040/529/1,637/534/555 of them; small images) and the tiny random Qwen2-VL,
greedy, `--max-new-tokens` (default 128) new tokens. Both ways are timed as
whole CLI processes, so the wall time includes interpreter start, model load
and (for vLLM) engine start:

  vllm  python -m eval run --backend vllm   (offline engine, prompts batched)
  hf    python -m eval run --backend hf     (transformers generate, one instance at a time,
                                             as MIG_bench_eval.py does)

The hf way takes ~10x longer, so by default it runs on a random sample of
--hf-sample instances and its total is extrapolated: load time + sample
generation time x (instances / sample). The printout says when it did that.
Same dtype for both (default float32, the checkpoint's), so both produce the
same tokens (checked on the sampled instances). Goal (issue 7): ratio >= 10.

    python benchmarks/bench_eval.py [--limit N] [--hf-sample 100] [--max-new-tokens 128]
                                    [--model DIR] [--workdir DIR] [--keep]
Run it with the evaluation environment: .venv-eval/bin/python benchmarks/bench_eval.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def subset(bench: Path, n: int | None, seed: int, name: str) -> tuple[Path, list[int]]:
    """A MIG_data.json beside `bench` holding a seeded random sample of n instances (all if None)."""
    data = json.loads(bench.read_text())
    keep = (
        sorted(random.Random(seed).sample(range(len(data)), n))
        if n and n < len(data)
        else list(range(len(data)))
    )
    path = bench.with_name(name)
    path.write_text(json.dumps([data[i] for i in keep]), encoding="utf-8")
    return path, keep


def timed_run(python: str, model: Path, bench: Path, out: Path, backend: str, args) -> dict:
    cmd = [
        python,
        "-m",
        "eval",
        "run",
        "--backend",
        backend,
        "--model",
        str(model),
        "--bench",
        str(bench),
        "--output-dir",
        str(out),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--dtype",
        args.dtype,
        "--chunk-size",
        str(args.chunk_size),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gb)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{backend} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    m = re.search(r"generated (\d+) instance\(s\) in ([\d.]+) s", proc.stderr)
    n, gen = (int(m.group(1)), float(m.group(2))) if m else (0, wall)
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines() if x.strip()]
    tokens = sum(r.get("output_tokens") or 0 for r in records)
    return {"wall": wall, "generate": gen, "n": n, "tokens": tokens, "records": records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint (default: build the tiny Qwen2-VL)")
    ap.add_argument("--limit", type=int, help="benchmark a random sample of N instances instead of 4,295")
    ap.add_argument(
        "--hf-sample",
        type=int,
        default=100,
        help="time the hf way on N instances and extrapolate (0: run it on all)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--kv-cache-gb", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    from eval.synthetic import make_synthetic_bench

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = args.model
        if model is None:
            from demo.tiny_model import build_tiny_qwen2vl

            model = build_tiny_qwen2vl(work / "tiny", seed=0, force=True)
        t0 = time.perf_counter()
        full = make_synthetic_bench(work / "data", mig_shaped=True, seed=args.seed, force=True)
        print(f"synthetic MIG-shaped bench: {full} ({time.perf_counter() - t0:.1f} s to write)")
        bench, picked = subset(full, args.limit, args.seed, "MIG_data.bench.json")
        total = len(picked)
        counts = {}
        for r in json.loads(bench.read_text()):
            counts[len(r["images"])] = counts.get(len(r["images"]), 0) + 1
        print(
            f"instances: {total}; images per instance: {dict(sorted(counts.items()))}; "
            f"max new tokens {args.max_new_tokens}; dtype {args.dtype}"
        )

        vllm = timed_run(sys.executable, model, bench, work / "out_vllm", "vllm", args)
        print(
            f"vllm : {vllm['wall']:8.1f} s wall (engine start and load included; generation "
            f"{vllm['generate']:.1f} s, {vllm['tokens']} new tokens)"
        )

        sample = args.hf_sample if args.hf_sample and args.hf_sample < total else None
        hf_bench, hf_picked = subset(bench, sample, args.seed + 1, "MIG_data.hf.json")
        hf = timed_run(sys.executable, model, hf_bench, work / "out_hf", "hf", args)
        overhead = hf["wall"] - hf["generate"]
        if sample:
            hf_total = overhead + hf["generate"] * total / len(hf_picked)
            how = (
                f"EXTRAPOLATED from {len(hf_picked)} instances: {overhead:.1f} s start/load + "
                f"{hf['generate'] / len(hf_picked):.3f} s/instance x {total}"
            )
        else:
            hf_total = hf["wall"]
            how = "measured on all instances"
        print(
            f"hf   : {hf_total:8.1f} s wall ({how}; {hf['tokens']} new tokens on {len(hf_picked)} instances)"
        )

        # Same tokens on the instances both ran (greedy, same dtype).
        by_v = {r["index"]: r for r in vllm["records"]}
        same = sum(1 for r in hf["records"] if by_v[hf_picked[r["index"]]]["response"] == r["response"])
        print(f"same responses on the shared instances: {same}/{len(hf['records'])}")
        print(f"ratio: hf / vllm = {hf_total / vllm['wall']:.1f}x  (goal >= 10x)")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"work folder kept: {work}")


if __name__ == "__main__":
    main()
