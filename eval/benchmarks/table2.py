"""The Migician paper's Table 2 (multi-image understanding, accuracy %), one place for its rows.

Why here: the suite lays the whole table out, and MIBench's and MMIU's own benchmark modules print
their column beside a run; both read these rows by column name.
"""

from __future__ import annotations

from eval.benchmark import Reference

COLUMNS = ("muirbench", "blink", "mibench", "mantis", "mmiu")
TITLES = ("MuirBench", "BLINK val", "MIBench", "Mantis-Eval", "MMIU", "AVE")
# columns as TITLES; None where the paper has no value.
ROWS: tuple[tuple[str, tuple], ...] = (
    ("GPT-4o", (62.31, 60.04, 71.88, 62.67, 55.7, 62.52)),
    ("Gemini-Pro", (49.35, 45.16, None, None, 53.4, 49.30)),
    ("LLaVA-1.5", (23.46, 37.13, 26.83, 31.34, 19.20, 27.59)),
    ("CogVLM", (20.85, 41.54, None, 45.16, 23.57, 32.78)),
    ("Idefics2-8B", (26.08, None, 46.39, 48.85, 27.80, 37.28)),
    ("mPLUG-Owl3", (39.67, 50.30, 56.66, 63.10, 21.72, 46.29)),
    ("InternVL2-8B", (48.70, 50.57, 52.91, 60.37, 42.00, 50.05)),
    ("Mantis", (44.50, 49.05, 45.09, 57.14, 45.60, 48.28)),
    ("LLaVA-OV-7B", (41.80, 48.20, 71.29, 64.20, 44.46, 53.99)),
    ("MiniCPM-V 2.6", (42.65, 51.45, 71.09, 69.12, 50.19, 56.90)),
    ("Qwen2-VL-7B", (42.04, 52.35, 68.06, 70.97, 54.36, 57.56)),
    ("Migician", (53.69, 51.53, 71.42, 69.12, 60.32, 61.51)),
)


def column_references(column: str) -> tuple[Reference, ...]:
    """One column of Table 2 as reference rows of that benchmark: only its average ("AVE")."""
    k = COLUMNS.index(column)
    return tuple(
        Reference(name, "the paper's Table 2", {"AVE": values[k]})
        for name, values in ROWS
        if values[k] is not None
    )
