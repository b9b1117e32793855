"""Build the stage-1 and stage-2 training mixtures in the paper's Table 12 proportions.

Why: the paper trains on fixed category shares (stage 1, 1,000,000 examples:
LLaVA-OneVision 17%, RefCOCO family + Groma-Instruct 13%, M4-Instruct 16%,
MGrounding stage-1 tasks 54%; stage 2, 200,000: 9/7/8/27 and MGrounding
free-form 49%), read from recipes/mixtures.yaml (composition.py); a category's
sources are the sources table's (sources.py). How the paper split a category
among its sources is not published; here each category is split among its
sources in proportion to their sizes.

Counts are exact: categories get largest-remainder shares of the total, and
sources largest-remainder shares of their category, so every source is within
1 of its exact share and the total is exact. Each source is shuffled once with
a generator seeded by (seed, source name); a stage takes a prefix of that
order, so the smaller stage-2 selection is a subset of stage 1's ("reused",
as the paper says). A source shorter than its share is repeated whole as
often as needed (with a logged warning). The mixture order is shuffled with
(seed, stage). Same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from array import array
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.atomicio import atomic_file, ensure_distinct_paths, refuse_existing
from core.streaming import InvalidJSONError, RecordWriter, index_record_lines

from .composition import Composition, load_composition

log = logging.getLogger(__name__)


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
    stage: str,
    total: int,
    sizes: dict[str, int],
    allow_missing_categories: bool = False,
    composition: Composition | None = None,
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Counts per category and per source for one stage; warnings for missing categories."""
    comp = composition or load_composition()
    shares = dict(comp.stages[stage].shares)
    warnings: list[str] = []
    for category in list(shares):
        present = [s for s in comp.sources(category) if sizes.get(s, 0) > 0]
        if not present:
            message = (
                f"{stage}: category {category} has none of its sources ({', '.join(comp.sources(category))})"
            )
            if not allow_missing_categories:
                raise MixtureError(message + "; convert them first or pass --allow-missing-categories")
            warnings.append(message + f"; its {shares.pop(category)}% is spread over the other categories")
    if not shares:
        raise MixtureError(f"{stage}: no source files at all")
    per_category = apportion(total, shares)
    per_source: dict[str, int] = {}
    for category, count in per_category.items():
        present = {s: sizes[s] for s in comp.sources(category) if sizes.get(s, 0) > 0}
        per_source.update(apportion(count, present))
    return per_category, per_source, warnings


class _BadRecords(Exception):
    """Picked lines that do not decode to a record (source name -> {line index: reason})."""

    def __init__(self, bad: dict[str, dict[int, str]]):
        super().__init__(f"{sum(map(len, bad.values()))} unreadable record line(s)")
        self.bad = bad


_DUMPS = json.JSONEncoder(ensure_ascii=False).encode


def _mixture_line(source: str, raw: bytes) -> tuple[str, Any]:
    """(mixture line, record type) for one source line, or ValueError saying why the line is unusable."""
    try:
        record = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply to decode") from None
    except ValueError as err:  # JSONDecodeError, not UTF-8, an integer over the digit limit
        raise ValueError(f"not a JSON record ({str(err)[:120]})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not a record object")
    line = _DUMPS({"source": source, **record})
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"holds a lone surrogate ({err.reason})") from None
    return line, record.get("type", "")


def _write_picks(names, sources, indexes, picks, out: RecordWriter | None, desc: str) -> Counter:
    """Write the picked records to `out`; after the first unusable line stop writing and only
    collect the others, then raise _BadRecords with all of them."""
    types: Counter = Counter()
    bad: dict[str, dict[int, str]] = {}
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(sources[name], "rb")) for name in names]
        for k, i in tqdm(picks, desc=desc, unit="rec", disable=None):
            offsets, lengths = indexes[names[k]]
            handle = handles[k]
            handle.seek(offsets[i])
            try:
                line, rtype = _mixture_line(names[k], handle.read(lengths[i]))
            except ValueError as err:
                bad.setdefault(names[k], {})[i] = str(err)
                continue
            if not bad:
                types[rtype if isinstance(rtype, str) else str(rtype)] += 1
                out.write_line(line)
    if bad:
        raise _BadRecords(bad)
    return types


def build_mixture(
    stage: str,
    sources: dict[str, Path],
    output: Path,
    total: int,
    seed: int = 0,
    allow_missing_categories: bool = False,
    force: bool = False,
    indexes: dict[str, Any] | None = None,
    out: RecordWriter | None = None,
    composition: Composition | None = None,
) -> dict[str, Any]:
    """Write one stage's mixture; return its report (counts per category, source and type).

    With `out` (an entered RecordWriter) the records go there and the caller publishes
    the file; without, `output` is written here. Raises _BadRecords when a picked line is
    not a record (the caller drops those lines from `indexes` and builds again).
    """
    refuse_existing(output, force)
    comp = composition or load_composition()
    indexes = indexes if indexes is not None else {}
    for name, path in sorted(sources.items()):
        if name not in indexes:
            indexes[name] = index_record_lines(path)
    sizes = {name: len(indexes[name][0]) for name in sources}
    per_category, per_source, warnings = plan_stage(stage, total, sizes, allow_missing_categories, comp)

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

    if out is None:
        with RecordWriter(output, force=True) as own:
            types = _write_picks(names, sources, indexes, picks, own, output.name)
    else:
        types = _write_picks(names, sources, indexes, picks, out, output.name)

    shares = comp.stages[stage].shares
    return {
        "stage": stage,
        "output": str(output),
        "total": len(picks),
        "seed": seed,
        "categories": {
            c: {"percent": shares[c], "count": n, "sources": [s for s in comp.sources(c) if s in per_source]}
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


MAX_BAD_LINES = 100  # per source file; more means it is not a converters output, and it is refused


def _index_source(name: str, path: Path, skipped: list[dict]) -> Any:
    """Index one converted file; lines that are not one record each are skipped and reported."""
    bad: list = []
    index = index_record_lines(path, bad)
    if len(bad) > MAX_BAD_LINES:
        raise InvalidJSONError(
            f"{path}: {len(bad)} lines are not one whole JSON record (first: line {bad[0][0]}); "
            "the mixture reads files written by the converters (one record per line)"
        )
    skipped.extend({"source": name, "file": str(path), "line": n, "reason": why} for n, why in bad)
    return index


def _line_numbers(path: Path, offsets: list[int]) -> dict[int, int]:
    """The 1-based line number of each byte offset, in one pass over the file."""
    wanted = sorted(set(offsets))
    found, pos, j = {}, 0, 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            pos += len(raw)
            while j < len(wanted) and wanted[j] < pos:
                found[wanted[j]] = lineno
                j += 1
            if j == len(wanted):
                break
    return found


def _drop_bad(err: _BadRecords, sources: dict[str, Path], indexes: dict, skipped: list[dict]) -> None:
    for name, bad in err.bad.items():
        offsets, lengths = indexes[name]
        lines = _line_numbers(sources[name], [offsets[i] for i in bad])
        skipped.extend(
            {"source": name, "file": str(sources[name]), "line": lines.get(offsets[i]), "reason": why}
            for i, why in sorted(bad.items())
        )
        keep = [i for i in range(len(offsets)) if i not in bad]
        indexes[name] = (array("q", (offsets[i] for i in keep)), array("q", (lengths[i] for i in keep)))


def build_mixtures(
    sources: dict[str, Path],
    output_dir: Path,
    prefix: str,
    totals: dict[str, int] | None = None,
    seed: int = 0,
    report_dir: Path | None = None,
    allow_missing_categories: bool = False,
    force: bool = False,
    composition: Composition | None = None,
) -> list[dict[str, Any]]:
    """Every mixture stage from the same source files (indexed once); reports returned and written.

    Every stage is planned and built before any file is published, so a stage that fails
    leaves no earlier stage's mixture or report behind for the rerun to trip over. A source
    line that is not a record (malformed JSON, a lone surrogate) is skipped and named (file,
    line, reason) in the reports; the stage is then rebuilt without it, so counts stay exact.
    Warnings (upsampling, missing categories, skipped lines) are logged; `totals` defaults to
    the composition's (recipes/mixtures.yaml).
    """
    comp = composition or load_composition()
    stages = comp.stages  # the stages to build, in training order
    totals = {**comp.totals, **(totals or {})}
    report_dir = report_dir or output_dir
    outputs = {stage: output_dir / f"{prefix}_{stage}.json" for stage in stages}
    report_paths = {stage: report_dir / f"{prefix}_{stage}.report.json" for stage in stages}
    ensure_distinct_paths(
        {"--sharegpt-dir source": list(sources.values())}
        | {f"{stage} mixture": outputs[stage] for stage in stages}
        | {f"{stage} report": report_paths[stage] for stage in stages}
    )
    for stage in stages:
        refuse_existing(outputs[stage], force)
        refuse_existing(report_paths[stage], force, "mixture report")
    skipped: list[dict] = []
    indexes = {name: _index_source(name, path, skipped) for name, path in sorted(sources.items())}
    stage_sources = {
        stage: {n: p for n, p in sources.items() if any(n in comp.sources(c) for c in stages[stage].shares)}
        for stage in stages
    }
    for stage in stages:  # a stage that cannot be planned fails before anything is written
        sizes = {name: len(indexes[name][0]) for name in stage_sources[stage]}
        plan_stage(stage, totals[stage], sizes, allow_missing_categories, comp)
    while True:
        try:
            with contextlib.ExitStack() as publish:  # leaving it with an exception discards every file
                reports = []
                for stage in stages:
                    out = publish.enter_context(RecordWriter(outputs[stage], force=True))
                    reports.append(
                        build_mixture(
                            stage,
                            stage_sources[stage],
                            outputs[stage],
                            totals[stage],
                            seed,
                            allow_missing_categories,
                            True,
                            indexes,
                            out=out,
                            composition=comp,
                        )
                    )
                for stage, report in zip(stages, reports, strict=True):
                    mine = [s for s in skipped if s["source"] in stage_sources[stage]]
                    if mine:
                        first = mine[0]
                        report["warnings"].append(
                            f"{stage}: skipped {len(mine)} unreadable line(s), first {first['file']} "
                            f"line {first['line']}: {first['reason']}"
                        )
                    report["skipped_lines"] = mine
                    handle = publish.enter_context(atomic_file(report_paths[stage]))
                    handle.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            break
        except _BadRecords as err:  # drop those lines and build again (each round removes at least one)
            _drop_bad(err, sources, indexes, skipped)
    for report in reports:
        for message in report["warnings"]:
            log.warning("%s", message)
    return reports
