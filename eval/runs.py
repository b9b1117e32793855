"""A scored run folder read back: its settings, and every instance scored as its reports were.

Why: `eval view` and `eval diff` must show exactly the instances behind a folder's metrics.json. They
read the same predictions file, with the same options, through the same scorer (eval.runner's
read_predictions and score_records), never numbers of their own. The folder is an `eval run` output
(predictions.jsonl, run.json) or an `eval score` output (its scoring.json names the predictions file
and records the coords, rescale and answer format it used).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.benchmark import Benchmark
from eval.benchmarks import DEFAULT_BENCHMARK, get_benchmark
from eval.predictions import PREDICTIONS, RUN_FILE
from eval.runner import read_predictions, recorded_coords, score_records


@dataclass
class ScoredRun:
    dir: Path
    predictions: Path
    benchmark: Benchmark
    label: str
    protocol: dict  # run.json's protocol ({} when the predictions have no run.json beside them)
    info: dict  # run.json's info
    answer_format: str
    coords: str
    rescale: str
    records: list[dict]  # scored (box, iou, outcome), one per instance, by index
    notes: list[str] = field(default_factory=list)

    @property
    def image_root(self) -> Path | None:
        root = self.info.get("image_root")
        return Path(root) if isinstance(root, str) and root else None

    def image_path(self, image) -> Path | None:
        """Where an image of a predictions line is: absolute as written, else under the run's image root."""
        if not isinstance(image, str) or not image or "\x00" in image:
            return None
        path = Path(image)
        if path.is_absolute():
            return path
        return (self.image_root or self.predictions.parent) / path

    @property
    def by_index(self) -> dict[int, dict]:
        return {r["index"]: r for r in self.records if isinstance(r.get("index"), int)}


def _read_object(path: Path) -> dict:
    """A JSON object file of ours (run.json, scoring.json); {} when absent, ValueError when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def run_benchmark(run_dir) -> Benchmark:
    """The benchmark a run folder holds (metrics.json's, else its run.json's), before reading it whole."""
    return _locate(Path(run_dir))[4]


def _locate(run_dir: Path) -> tuple[Path, dict, dict, dict, Benchmark]:
    """(predictions file, scoring.json, run.json protocol, run.json info, benchmark) of a run folder."""
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a folder (give an `eval run` or `eval score` output folder)"
        )
    scoring = _read_object(run_dir / "scoring.json")
    given = scoring.get("predictions")
    # The folder's own predictions (an `eval run` folder, also when moved), else those scoring.json names.
    predictions = run_dir / PREDICTIONS
    if not predictions.is_file() and isinstance(given, str) and given:
        predictions = Path(given)
    if not predictions.is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no {PREDICTIONS}"
            + (f" and its scoring.json names {predictions}, which is missing" if given else "")
        )
    run = _read_object(predictions.parent / RUN_FILE)
    protocol = run.get("protocol") if isinstance(run.get("protocol"), dict) else {}
    info = run.get("info") if isinstance(run.get("info"), dict) else {}
    scored_as = _read_object(run_dir / "metrics.json").get("benchmark")  # `eval score --benchmark`
    benchmark = get_benchmark(scored_as or protocol.get("benchmark", DEFAULT_BENCHMARK))
    return predictions, scoring, protocol, info, benchmark


def load_run(run_dir) -> ScoredRun:
    """Read and score a run folder; ValueError (one line, naming the folder) when it is none."""
    run_dir = Path(run_dir)
    predictions, scoring, protocol, info, benchmark = _locate(run_dir)
    if benchmark.is_choice:
        raise ValueError(f"{run_dir} is a {benchmark.title} run: multiple choice, no boxes to show")
    # The options the reports used (scoring.json), else what run.json records, else the defaults.
    answer_format = scoring.get("answer_format") or protocol.get("answer_format", "official")
    coords = scoring.get("coords") or recorded_coords(predictions, protocol.get("family"))
    rescale = scoring.get("rescale") or "none"
    records, notes = read_predictions(predictions, benchmark)
    scored, score_notes = score_records(records, coords, rescale, answer_format, benchmark)
    names = set(benchmark.task_names)
    scored = sorted((r for r in scored if r.get("task") in names), key=lambda r: r.get("index", -1))
    label = scoring.get("model") or info.get("label") or run_dir.resolve().name
    return ScoredRun(
        dir=run_dir,
        predictions=predictions,
        benchmark=benchmark,
        label=str(label),
        protocol=protocol,
        info=info,
        answer_format=answer_format,
        coords=coords,
        rescale=rescale,
        records=scored,
        notes=notes + score_notes,
    )
