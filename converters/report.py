"""Counts of one conversion run: kept, fixed, rejected per reason, kept per task type.

Why: a data run is only trustworthy if its losses are visible; the same
numbers are printed, written as JSON next to the outputs, and used by the
pipeline to decide whether a step is up to date.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from families import DEFAULT_FAMILY, provenance

from .boxformat import REASONS as FORMAT_REASONS
from .records import REASONS


class RejectRateExceeded(RuntimeError):
    def __init__(self, report: ConversionReport, limit: float):
        super().__init__(
            f"{report.name}: {report.rejected} of {report.total} records rejected "
            f"({report.reject_rate:.2%}) > --max-reject-rate {limit:.2%}; {report.output} was not written "
            f"(see {report.rejects})"
        )
        self.report = report


@dataclass
class ConversionReport:
    name: str
    output: str
    rejects: str
    inputs: list[str] = field(default_factory=list)
    total: int = 0
    kept: int = 0
    fixed: int = 0
    reasons: Counter = field(default_factory=Counter)
    types: Counter = field(default_factory=Counter)
    image_check: dict[str, Any] | None = None
    seconds: float = 0.0
    written: bool = False
    notes: list[str] = field(default_factory=list)
    box_format: dict[str, Any] | None = None  # boxformat.BoxFormat.describe(): the family the records are in

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": self.inputs,
            "output": self.output,
            "rejects": self.rejects,
            "written": self.written,
            "total": self.total,
            "kept": self.kept,
            "fixed": self.fixed,
            "rejected": self.rejected,
            "reject_rate": round(self.reject_rate, 6),
            "reasons": dict(sorted(self.reasons.items())),
            "types": dict(sorted(self.types.items())),
            "image_check": self.image_check,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
            provenance.REPORT_KEY: provenance.report_entry(self.box_format),
        }

    def summary(self) -> str:
        lines = [
            f"{self.name}: {self.total} records read, {self.kept} kept ({self.fixed} fixed by adding <image>), "
            f"{self.rejected} rejected ({self.reject_rate:.2%}) in {self.seconds:.1f} s"
        ]
        described = {**REASONS, **FORMAT_REASONS}
        for reason in described:
            if self.reasons.get(reason):
                lines.append(f"  {reason:<22} {self.reasons[reason]:>9}   {described[reason]}")
        if self.box_format and self.box_format.get("family") != DEFAULT_FAMILY:
            lines.append(f"  box format: {self.box_format['family']} ({self.box_format['boxes']})")
        if self.image_check:
            ic = self.image_check
            lines.append(
                f"  images: {ic['decoded']} decoded, {ic['from_cache']} known good from the cache, "
                f"{ic['workers']} worker(s), {ic['seconds']:.1f} s"
            )
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.written:
            lines.append(f"  wrote {self.output}")
        if self.rejected:
            lines.append(f"  rejects: {self.rejects}")
        return "\n".join(lines)
