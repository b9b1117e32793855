"""predictions.jsonl: append-and-flush storage that a killed run resumes from.

Why: a MIG-Bench run is hours of generation on a real model; a crash must lose
at most the instances in flight. Each finished instance is one JSON line,
flushed and fsynced. A rerun of the same command reads the file, drops a torn
last line, and generates only what is missing. run.json holds the protocol
(model, backend, mode, format suffix, bench hash, ...); a rerun with a
different protocol into the same folder is refused unless --force is given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.atomicio import OutputExistsError, atomic_write_text

PREDICTIONS = "predictions.jsonl"
COT_STEP1 = "cot_step1.jsonl"
RUN_FILE = "run.json"
# Files a run writes; --force removes exactly these (never anything else in the folder).
OWN_FILES = (
    PREDICTIONS,
    COT_STEP1,
    RUN_FILE,
    "metrics.json",
    "metrics.csv",
    "results.md",
    "radar.png",
    "outcomes.png",
    "scoring.json",
)


class RunMismatchError(RuntimeError):
    """The output folder holds a run made with a different model or protocol."""


def read_jsonl(path: Path, repair: bool = False, line_numbers: bool = False) -> tuple[list, list[str]]:
    """Records of a JSONL file and problems found; a torn last line is dropped (and cut if repair).

    With line_numbers, records come as (line number, record) pairs.
    """
    path = Path(path)
    if not path.exists():
        return [], []
    raw = path.read_bytes()
    problems: list[str] = []
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        problems.append(f"{path.name}: dropped an unfinished last line ({len(raw) - cut} bytes)")
        raw = raw[:cut]
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
    records = []
    # Split on "\n" only: str.splitlines() would also cut at U+2028, U+0085, ... inside model text.
    for lineno, line in enumerate(raw.decode("utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name} line {lineno}: not JSON ({exc.msg})")
            continue
        except (ValueError, RecursionError) as exc:  # an integer over the digit limit, nesting too deep
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
            problems.append(f"{path.name} line {lineno}: not usable JSON ({why})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path.name} line {lineno}: not a JSON object")
            continue
        records.append((lineno, rec) if line_numbers else rec)
    return records, problems


def _line(record: dict) -> str:
    """One JSON line; text that UTF-8 cannot hold (a lone surrogate from model or bench text) is escaped."""
    line = json.dumps(record, ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(record)
    return line + "\n"


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records as lines, then flush and fsync so a crash cannot lose them."""
    if not records:
        return
    data = "".join(_line(r) for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class RunStore:
    """One output folder: its protocol (run.json), predictions and CoT step-1 answers."""

    def __init__(self, out_dir, protocol: dict, info: dict | None = None, force: bool = False):
        self.dir = Path(out_dir)
        self.protocol = protocol
        self.info = info or {}
        self.force = force
        self.notes: list[str] = []

    @property
    def predictions_path(self) -> Path:
        return self.dir / PREDICTIONS

    def shard_path(self, rank: int, name: str = PREDICTIONS) -> Path:
        return self.dir / f"{Path(name).stem}.rank{rank}.jsonl"

    def check(self) -> bool:
        """Refuse a foreign or different run (unless force); True when an earlier run will resume."""
        run_file = self.dir / RUN_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputExistsError(f"--output-dir {self.dir} is a file, not a folder")
        if run_file.exists():
            try:
                saved = json.loads(run_file.read_text(encoding="utf-8"))
                if not isinstance(saved, dict) or not isinstance(saved.get("protocol", {}), dict):
                    raise ValueError(f"it holds a JSON {type(saved).__name__}, not a run record")
                old = saved.get("protocol", {})
            except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                if self.force:
                    return False
                raise RunMismatchError(
                    f"{run_file} is unreadable ({exc}); pass --force to start over"
                ) from exc
            diffs = [k for k in sorted(set(old) | set(self.protocol)) if old.get(k) != self.protocol.get(k)]
            if not diffs:
                return True
            if not self.force:
                lines = "\n".join(f"  {k}: {old.get(k)!r} -> {self.protocol.get(k)!r}" for k in diffs)
                raise RunMismatchError(
                    f"{self.dir} holds a run with a different protocol:\n{lines}\n"
                    "use another --output-dir, or pass --force to discard that run"
                )
            return False
        if self.dir.is_dir() and any(self.dir.iterdir()) and not self.force:
            raise OutputExistsError(
                f"{self.dir} is not empty and holds no eval run; pass --force to write into it anyway"
            )
        return False

    def open(self) -> dict[int, dict]:
        """Prepare the folder and return the finished predictions by instance index."""
        resuming = self.check()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            for name in OWN_FILES:
                (self.dir / name).unlink(missing_ok=True)
            for shard in self.dir.glob("*.rank*.jsonl"):
                shard.unlink()
            atomic_write_text(
                self.dir / RUN_FILE,
                json.dumps({"protocol": self.protocol, "info": self.info}, indent=2) + "\n",
            )
        self.merge_shards()
        return self.finished()

    def finished(self, name: str = PREDICTIONS) -> dict[int, dict]:
        records, problems = read_jsonl(self.dir / name, repair=True)
        self.notes.extend(problems)
        done: dict[int, dict] = {}
        for rec in records:
            if isinstance(rec.get("index"), int):
                done[rec["index"]] = rec  # a later line (a retried skip) supersedes an earlier one
        return done

    def append(self, records: list[dict], name: str = PREDICTIONS, rank: int | None = None) -> None:
        append_jsonl(self.dir / name if rank is None else self.shard_path(rank, name), records)

    def merge_shards(self) -> None:
        """Fold data-parallel workers' shard files into the main files (after a finish or a crash)."""
        for name in (PREDICTIONS, COT_STEP1):
            shards = sorted(self.dir.glob(f"{Path(name).stem}.rank*.jsonl"))
            if not shards:
                continue
            have = self.finished(name)
            new: list[dict] = []
            for shard in shards:
                records, problems = read_jsonl(shard)
                self.notes.extend(problems)
                for rec in records:
                    idx = rec.get("index")
                    if isinstance(idx, int) and (idx not in have or have[idx].get("skipped")):
                        have[idx] = rec
                        new.append(rec)
            self.append(new, name)
            for shard in shards:
                shard.unlink()
