"""The benchmark table: `eval run --benchmark NAME` looks NAME up here.

Why a table of module paths: a benchmark is one module (its `Benchmark` value, see eval/benchmark.py)
plus one entry here; modules are imported only when their benchmark is asked for, so a benchmark
with heavy or optional parts costs nothing to the others.
"""

from __future__ import annotations

import importlib

from eval.benchmark import Benchmark

DEFAULT_BENCHMARK = "mig-bench"

# name -> "module:attribute" holding the Benchmark
BENCHMARKS: dict[str, str] = {
    "mig-bench": "eval.benchmarks.mig_bench:BENCHMARK",
    "refcoco": "eval.benchmarks.refcoco:REFCOCO",
    "refcoco+": "eval.benchmarks.refcoco:REFCOCO_PLUS",
    "refcocog": "eval.benchmarks.refcoco:REFCOCOG",
    "mibench": "eval.benchmarks.mibench:BENCHMARK",
    "mmiu": "eval.benchmarks.mmiu:BENCHMARK",
}


def get_benchmark(name: str | None = None) -> Benchmark:
    """The Benchmark registered as `name` (default MIG-Bench); ValueError naming the choices."""
    name = name or DEFAULT_BENCHMARK
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    module, attr = BENCHMARKS[name].split(":")
    bench = getattr(importlib.import_module(module), attr)
    if bench.name != name:
        raise RuntimeError(f"benchmark table entry {name!r} points at {bench.name!r}")
    return bench
