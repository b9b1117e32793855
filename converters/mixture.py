"""Build the stage-1 and stage-2 training mixtures in the paper's Table 12 proportions.

Why: the paper trains on fixed category shares (stage 1, 1,000,000 examples:
LLaVA-OneVision 17%, RefCOCO family + Groma-Instruct 13%, M4-Instruct 16%,
MGrounding stage-1 tasks 54%; stage 2, 200,000: 9/7/8/27 and MGrounding
free-form 49%). How it split a category among its sources is not published;
here each category is split among its sources in proportion to their sizes.

Counts are exact: categories get largest-remainder shares of the total, and
sources largest-remainder shares of their category, so every source is within
1 of its exact share and the total is exact. Each source is shuffled once with
a generator seeded by (seed, source name); a stage takes a prefix of that
order, so the smaller stage-2 selection is a subset of stage 1's ("reused",
as the paper says). A source shorter than its share is repeated whole as
often as needed (with a printed warning). The mixture order is shuffled with
(seed, stage). Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

from tqdm import tqdm

from atomicio import atomic_write_text, refuse_existing

from .streaming import RecordWriter, index_record_lines

CATEGORIES: dict[str, tuple[str, ...]] = {
    "s_understanding": ("llava_onevision",),
    "s_grounding": ("refcoco", "refcoco_plus", "refcocog", "groma_instruct"),
    "m_understanding": ("m4_instruct",),
    "m_grounding_stage1": (
        "mg_common",
        "mg_diff",
        "mg_group_grounding",
        "mg_object_tracking",
        "mg_referring",
        "mg_region",
    ),
    "m_grounding_free_form": ("mg_free_form",),
}

# Table 12, in percent of the stage total.
STAGES: dict[str, dict[str, int]] = {
    "stage1": {"s_understanding": 17, "s_grounding": 13, "m_understanding": 16, "m_grounding_stage1": 54},
    "stage2": {
        "s_understanding": 9,
        "s_grounding": 7,
        "m_understanding": 8,
        "m_grounding_stage1": 27,
        "m_grounding_free_form": 49,
    },
}
DEFAULT_TOTALS = {"stage1": 1_000_000, "stage2": 200_000}


class MixtureError(ValueError):
    pass


def apportion(total: int, weights: dict[str, int | Fraction]) -> dict[str, int]:
    """Largest-remainder split of `total` by `weights` (ties: first key wins); sums to total exactly."""
    weight_sum = sum(weights.values())
    if total < 0 or weight_sum <= 0:
        raise MixtureError(f"cannot split {total} by weights {weights}")
    exact = {k: Fraction(total) * Fraction(w) / weight_sum for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}  # floor for non-negative values
    short = total - sum(counts.values())
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(weights).index(k)))
    for k in order[:short]:
        counts[k] += 1
    return counts


def source_order(seed: int, source: str, size: int) -> list[int]:
    """The fixed shuffled order of a source's records; stages take prefixes of it."""
    order = list(range(size))
    random.Random(f"{seed}:{source}").shuffle(order)
    return order


def select(seed: int, source: str, size: int, count: int) -> list[int]:
    if size == 0:
        raise MixtureError(f"source {source} is empty")
    order = source_order(seed, source, size)
    whole, rest = divmod(count, size)
    return order * whole + order[:rest]


def plan_stage(
    stage: str, total: int, sizes: dict[str, int], allow_missing_categories: bool = False
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Counts per category and per source for one stage; warnings for missing categories."""
    shares = dict(STAGES[stage])
    warnings: list[str] = []
    for category in list(shares):
        present = [s for s in CATEGORIES[category] if sizes.get(s, 0) > 0]
        if not present:
            message = (
                f"{stage}: category {category} has none of its sources ({', '.join(CATEGORIES[category])})"
            )
            if not allow_missing_categories:
                raise MixtureError(message + "; convert them first or pass --allow-missing-categories")
            warnings.append(message + f"; its {shares.pop(category)}% is spread over the other categories")
    if not shares:
        raise MixtureError(f"{stage}: no source files at all")
    per_category = apportion(total, shares)
    per_source: dict[str, int] = {}
    for category, count in per_category.items():
        present = {s: sizes[s] for s in CATEGORIES[category] if sizes.get(s, 0) > 0}
        per_source.update(apportion(count, present))
    return per_category, per_source, warnings


def build_mixture(
    stage: str,
    sources: dict[str, Path],
    output: Path,
    total: int,
    seed: int = 0,
    allow_missing_categories: bool = False,
    force: bool = False,
    indexes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one stage's mixture; return its report (counts per category, source and type)."""
    refuse_existing(output, force)
    indexes = indexes if indexes is not None else {}
    for name, path in sorted(sources.items()):
        if name not in indexes:
            indexes[name] = index_record_lines(path)
    sizes = {name: len(indexes[name][0]) for name in sources}
    per_category, per_source, warnings = plan_stage(stage, total, sizes, allow_missing_categories)

    picks: list[tuple[int, int]] = []
    names = sorted(per_source)
    upsampled = {}
    for k, name in enumerate(names):
        count = per_source[name]
        if count > sizes[name]:
            upsampled[name] = round(count / sizes[name], 3)
            warnings.append(
                f"{stage}: upsampling {name}: {count} examples from {sizes[name]} records (x{count / sizes[name]:.2f})"
            )
        picks.extend((k, i) for i in select(seed, name, sizes[name], count))
    random.Random(f"{seed}:{stage}").shuffle(picks)
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)

    types: Counter = Counter()
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(sources[name], "rb")) for name in names]
        out = stack.enter_context(RecordWriter(output, force=True))
        for k, i in tqdm(picks, desc=f"{output.name}", unit="rec", disable=None):
            offsets, lengths = indexes[names[k]]
            handle = handles[k]
            handle.seek(offsets[i])
            record = json.loads(handle.read(lengths[i]))
            types[record.get("type", "")] += 1
            out.write({"source": names[k], **record})

    shares = STAGES[stage]
    return {
        "stage": stage,
        "output": str(output),
        "total": len(picks),
        "seed": seed,
        "categories": {
            c: {"percent": shares[c], "count": n, "sources": [s for s in CATEGORIES[c] if s in per_source]}
            for c, n in per_category.items()
        },
        "sources": {
            name: {
                "file": str(sources[name]),
                "available": sizes[name],
                "selected": per_source[name],
                "upsampled_x": upsampled.get(name),
            }
            for name in names
        },
        "types": dict(sorted(types.items())),
        "warnings": warnings,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['stage']}: {report['total']} examples -> {report['output']}"]
    for category, info in report["categories"].items():
        lines.append(f"  {category:<24} {info['percent']:>3}%  {info['count']:>9}")
        for source in info["sources"]:
            s = report["sources"][source]
            up = f"  (upsampled x{s['upsampled_x']})" if s["upsampled_x"] else ""
            lines.append(f"    {source:<22} {s['selected']:>9} of {s['available']:>9}{up}")
    lines.append("  per task type:")
    lines.extend(f"    {t or '(none)':<36} {n:>9}" for t, n in report["types"].items())
    return "\n".join(lines)


def build_mixtures(
    sources: dict[str, Path],
    output_dir: Path,
    prefix: str,
    totals: dict[str, int],
    seed: int = 0,
    report_dir: Path | None = None,
    allow_missing_categories: bool = False,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Both stages from the same source files (indexed once); reports printed and written as JSON."""
    indexes: dict[str, Any] = {}
    reports = []
    report_dir = report_dir or output_dir
    for stage in STAGES:
        output = output_dir / f"{prefix}_{stage}.json"
        stage_sources = {n: p for n, p in sources.items() if any(n in CATEGORIES[c] for c in STAGES[stage])}
        report = build_mixture(
            stage, stage_sources, output, totals[stage], seed, allow_missing_categories, force, indexes
        )
        atomic_write_text(report_dir / f"{prefix}_{stage}.report.json", json.dumps(report, indent=2) + "\n")
        print(format_report(report))
        reports.append(report)
    return reports
