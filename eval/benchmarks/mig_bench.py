"""MIG-Bench (Migician, Table 1): ten multi-image grounding tasks, the first benchmark of the table.

Why here and not spread over the evaluator: the task list and CoT prompts (eval/tasks.py), the
loader (eval/bench.py) and the paper's Table 1 rows are what makes MIG-Bench MIG-Bench; the runner,
the store, the backends and the scorer only see this value.
"""

from __future__ import annotations

from eval import tasks
from eval.bench import load_bench
from eval.benchmark import Benchmark, Reference, Task

TASKS: tuple[Task, ...] = tuple(Task(t.name, t.short, t.group) for t in tasks.TASKS)

# Migician paper, Table 1 (Acc@0.5, %), in the column order of TASKS, then AVE.
_TABLE1: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    (
        "Human",
        "Human Performance",
        (99.50, 97.87, 98.00, 100.00, 96.88, 100.00, 98.99, 91.06, 92.08, 97.44, 97.18),
    ),
    (
        "LLaVA-OV-72B",
        "70B-Scale MLLMs",
        (13.26, 5.34, 26.84, 12.91, 7.64, 2.14, 17.83, 21.60, 11.88, 8.55, 13.65),
    ),
    (
        "InternVL2-76B",
        "70B-Scale MLLMs",
        (15.91, 10.64, 36.40, 30.73, 20.83, 5.74, 46.46, 41.28, 32.67, 26.50, 26.72),
    ),
    (
        "Qwen2-VL-72B",
        "70B-Scale MLLMs",
        (46.12, 46.81, 64.46, 26.73, 22.57, 18.62, 33.33, 62.53, 50.50, 17.09, 38.88),
    ),
    ("Shikra", "7B-Scale MLLMs", (0.00, 2.13, 0.74, 0.00, 0.00, 0.83, 1.01, 0.60, 0.00, 0.85, 0.62)),
    ("GroundingGPT", "7B-Scale MLLMs", (0.38, 0.00, 19.85, 0.18, 0.35, 1.75, 2.02, 19.04, 5.94, 0.00, 4.95)),
    ("Ferret", "7B-Scale MLLMs", (8.90, 7.45, 14.09, 2.36, 0.69, 1.41, 2.02, 33.27, 12.87, 1.71, 8.48)),
    ("Mantis", "7B-Scale MLLMs", (1.52, 0.00, 3.31, 12.18, 2.08, 1.00, 1.01, 10.02, 0.00, 0.85, 3.20)),
    ("LLaVA-OV-7B", "7B-Scale MLLMs", (6.06, 3.19, 3.43, 0.18, 1.04, 1.08, 9.09, 15.43, 6.93, 0.85, 4.73)),
    (
        "MiniCPM-V 2.6",
        "7B-Scale MLLMs",
        (14.58, 2.13, 14.34, 9.82, 6.25, 1.75, 11.11, 10.02, 2.97, 2.56, 7.55),
    ),
    ("mPLUG-Owl3", "7B-Scale MLLMs", (18.56, 6.38, 34.93, 8.55, 7.64, 2.41, 7.07, 22.85, 9.09, 5.98, 12.35)),
    (
        "InternVL2-8B",
        "7B-Scale MLLMs",
        (6.92, 7.45, 25.49, 20.73, 9.72, 3.49, 28.28, 30.26, 17.82, 9.40, 15.96),
    ),
    (
        "Qwen2-VL-7B",
        "7B-Scale MLLMs",
        (27.84, 38.30, 19.36, 20.73, 11.81, 25.95, 23.23, 58.52, 48.51, 11.97, 28.62),
    ),
    (
        "mPLUG-Owl3+CoT",
        "7B-Scale MLLMs",
        (16.29, 8.51, 55.39, 44.36, 25.35, 19.04, 36.36, 30.86, 18.81, 10.26, 26.52),
    ),
    (
        "InternVL2-8B+CoT",
        "7B-Scale MLLMs",
        (14.58, 7.45, 72.54, 40.91, 27.78, 28.60, 67.68, 44.49, 41.58, 11.97, 35.76),
    ),
    (
        "Qwen2-VL-7B+CoT",
        "7B-Scale MLLMs",
        (23.48, 40.43, 63.85, 62.73, 42.71, 24.85, 54.55, 43.29, 51.49, 30.77, 43.82),
    ),
    (
        "Migician",
        "7B-Scale MLLMs",
        (65.15, 46.81, 84.19, 60.07, 70.73, 66.53, 74.31, 76.77, 59.41, 34.19, 63.82),
    ),
)
_COLUMNS = (*(t.name for t in TASKS), "AVE")
REFERENCES: tuple[Reference, ...] = tuple(
    Reference(name, section, dict(zip(_COLUMNS, values, strict=True))) for name, section, values in _TABLE1
)


def _target_image(inst) -> int | None:
    return tasks.target_image(inst.task, inst.question, len(inst.images), inst.additional_info)


BENCHMARK = Benchmark(
    name="mig-bench",
    title="MIG-Bench",
    tasks=TASKS,
    groups=tasks.GROUPS,
    load=load_bench,
    target_image=_target_image,
    references=REFERENCES,
    reference_table="the paper's Table 1",
    radar_references=("Migician", "Qwen2-VL-7B"),
    modes=("direct", "cot", "mcot"),
    default_suffix="script",
    data_kind="file",
)
