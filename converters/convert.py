"""The one conversion loop every source goes through: check, fix, check images, write.

Why: MGrounding, RefCOCO, LLaVA-style data and Groma all have to meet the same
contract (LLaMA-Factory ShareGPT, absolute image paths, one `<image>` per
image, valid boxes), with the same skip-and-report behaviour and the same
refusal when too much is bad. Sources only turn their layout into candidate
records; this module decides what is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.atomicio import atomic_write_text, ensure_distinct_paths, refuse_existing
from core.signals import deferred_signals
from core.streaming import RecordWriter, SourceReject

from .boxformat import BoxFormat, rewrite_record
from .images import ImageChecker
from .records import Rejected, check_record
from .report import ConversionReport, RejectRateExceeded

__all__ = ["SourceReject", "convert", "convert_file", "write_report"]

log = logging.getLogger(__name__)

IMAGE_BATCH = 256  # records per image-check batch
MAX_PENDING = 4  # batches in flight while the next ones are read


def _ready(ticket) -> bool:
    return ticket is None or isinstance(ticket, list) or ticket.ready()


class _Run:
    """One conversion's writers, counters and in-flight image checks."""

    def __init__(
        self,
        report: ConversionReport,
        out: RecordWriter,
        rej: RecordWriter,
        checker,
        check_kwargs,
        box_format: BoxFormat | None = None,
        grid_out: RecordWriter | None = None,
    ):
        self.report, self.out, self.rej, self.checker = report, out, rej, checker
        self.check_kwargs = check_kwargs
        self.box_format = None if box_format is None or box_format.is_default else box_format
        self.grid_out = grid_out
        self.dumps = json.JSONEncoder(ensure_ascii=False).encode
        self.dumps_ascii = json.JSONEncoder().encode
        self.pending: deque = deque()  # (batch, ticket) whose images are being checked, oldest first
        self.batch: list = []

    def reject(self, index: int, rid: Any, reason: str, detail: str) -> None:
        self.report.reasons[reason] += 1
        entry = {"index": index, "id": rid, "reason": reason, "detail": detail}
        line = self.dumps(entry)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in the id or detail: escape it, keep the entry
                line = self.dumps_ascii(entry)
        self.rej.write_line(line)

    def keep(self, clean: dict, fixed: bool, index: int = -1) -> None:
        if self.box_format is not None:
            try:
                family_form = rewrite_record(clean, self.box_format)
            except Rejected as bad:
                self.reject(index, clean["id"], bad.reason, bad.detail)
                return
            if self.grid_out is not None:  # the checked grid form, for the trajectory sets
                self.grid_out.write_line(self.dumps(clean))
            clean = family_form
        self.out.write_line(self.dumps(clean))
        self.report.kept += 1
        self.report.fixed += fixed
        self.report.types[clean["type"]] += 1

    def add(self, index: int, raw: Any) -> None:
        self.report.total += 1
        if isinstance(raw, SourceReject):
            self.reject(index, raw.id, raw.reason, raw.detail)
            return
        try:
            clean, fixed = check_record(raw, **self.check_kwargs)
        except Rejected as bad:
            rid = raw.get("id") if isinstance(raw, dict) else None
            self.reject(index, rid if isinstance(rid, (str, int)) else None, bad.reason, bad.detail)
            return
        if self.checker is None:
            self.keep(clean, fixed, index)
            return
        self.batch.append((index, clean, fixed))
        if len(self.batch) >= IMAGE_BATCH:
            self.send()

    def send(self) -> None:
        """Start checking the batch's images; write out every finished batch (records stay in order)."""
        paths = [p for _, clean, _ in self.batch for p in clean["images"]]
        self.pending.append((self.batch, self.checker.submit(paths)))
        self.batch = []
        while self.pending and (len(self.pending) > MAX_PENDING or _ready(self.pending[0][1])):
            self.finish(*self.pending.popleft())

    def finish(self, batch: list, ticket) -> None:
        self.checker.wait(ticket)
        for index, clean, fixed in batch:
            for path in clean["images"]:
                problem = self.checker.problem(path)
                if problem is not None:
                    self.reject(index, clean["id"], *problem)
                    break
            else:
                self.keep(clean, fixed, index)

    def drain(self) -> None:
        if self.checker is None:
            return
        if self.batch:
            self.send()
        while self.pending:
            self.finish(*self.pending.popleft())
        self.report.image_check = {
            "decoded": self.checker.decoded,
            "from_cache": self.checker.from_cache,
            "workers": self.checker.workers,
            "seconds": round(self.checker.busy_seconds, 3),
        }


def convert(
    records: Iterable[Any],
    output: str | Path,
    rejects: str | Path,
    *,
    name: str,
    inputs: Iterable[str | Path] = (),
    require_images: bool = True,
    resolve: Callable[[str], str] | None = None,
    default_type: str | None = None,
    check_images: bool = False,
    workers: int | None = None,
    image_cache: str | Path | None = None,
    max_reject_rate: float = 0.01,
    force: bool = False,
    box_format: BoxFormat | None = None,
    grid_output: str | Path | None = None,
) -> ConversionReport:
    """Validate `records` into `output` (.json/.jsonl); write each rejected one to `rejects` (.jsonl).

    With a `box_format` other than the default, kept records are rewritten in that family's form
    (boxformat.py; a box it cannot write is rejected with its reason) and, when `grid_output` is
    given, also written there in the checked Qwen2-VL form (what the trajectory sets are built from).

    Raises RejectRateExceeded (after writing `rejects`, without writing `output`)
    when more than `max_reject_rate` of the records are rejected; any exception
    from the source (e.g. InvalidJSONError) leaves neither file written.
    """
    output, rejects = Path(output), Path(rejects)
    inputs = [Path(p) for p in inputs]
    grid_output = Path(grid_output) if grid_output is not None else None
    ensure_distinct_paths(
        {
            "--input": inputs,
            "--output": output,
            "--rejects": rejects,
            "--image-cache": image_cache,
            "grid output": grid_output,
        }
    )
    refuse_existing(output, force)
    refuse_existing(rejects, force)
    if grid_output is not None:
        refuse_existing(grid_output, force)
    report = ConversionReport(
        name=name, output=str(output), rejects=str(rejects), inputs=[str(p) for p in inputs]
    )
    if box_format is not None:
        report.box_format = box_format.describe()
    check_kwargs = {"require_images": require_images, "default_type": default_type}
    if resolve is not None:
        check_kwargs["resolve"] = resolve
    start = time.perf_counter()
    exceeded = None
    with RecordWriter(rejects, force=True) as rej:
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(RecordWriter(output, force=True))
                grid_out = None
                if grid_output is not None and box_format is not None and not box_format.is_default:
                    grid_out = stack.enter_context(RecordWriter(grid_output, force=True))
                # With a checker's worker pool alive, signals are taken between records (core.signals).
                signals = stack.enter_context(deferred_signals())
                checker = None
                if check_images:
                    checker = stack.enter_context(
                        ImageChecker(workers=workers, cache_path=image_cache, force=force)
                    )
                run = _Run(report, out, rej, checker, check_kwargs, box_format, grid_out)
                for index, raw in enumerate(records):
                    signals.check()
                    run.add(index, raw)
                run.drain()
                report.seconds = time.perf_counter() - start
                if report.total == 0:
                    note = f"warning: no records read from {', '.join(map(str, inputs)) or 'the input'}"
                    log.warning("%s: %s", name, note)
                    report.notes.append(note)
                if report.reject_rate > max_reject_rate:
                    # Leaving the stack with an exception discards the temporary output.
                    raise RejectRateExceeded(report, max_reject_rate)
        except RejectRateExceeded as err:
            exceeded = err  # the rejects file is still written: it says what went wrong
    if exceeded is not None:
        raise exceeded
    report.written = True
    return report


def write_report(report: ConversionReport, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


def convert_file(
    input_path: str | Path,
    what: str,
    make_records: Callable[[Path, Callable[[int], Any]], Iterable[Any]],
    output: str | Path,
    rejects: str | Path,
    **options,
) -> ConversionReport:
    """`convert` one annotation file with a progress bar over its bytes.

    make_records(path, progress) iterates the file's records, calling progress(n_bytes) as it
    reads; `what` names the file in the error when it is missing.
    """
    input_path = Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"{what} {input_path} not found")
    name = options.get("name")
    with tqdm(total=input_path.stat().st_size, unit="B", unit_scale=True, desc=name, disable=None) as bar:
        report = convert(
            make_records(input_path, bar.update), output, rejects, inputs=[input_path], **options
        )
        bar.n = bar.total
    return report
