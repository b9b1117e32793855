"""`python -m converters all`: every source found under DATA_ROOT, the mixtures, then the registry.

Why: one command should turn the published downloads into the files the
recipes train on, and re-running it should only redo what changed. Each step
records a stamp (input sizes and mtimes, options, converter version, output
sizes and mtimes) in its report; a step whose stamp still matches is skipped.
The sources and how to find them come from the sources table (sources.py);
sources missing from DATA_ROOT are skipped with a note. Files already at an
output path that this pipeline did not write are refused without --force.
Progress is logged; `run_all` returns what it did and raises only when nothing
can start.

Layout under OUT: sharegpt/<dataset>.json, rejects/<dataset>.jsonl,
reports/<dataset>.json, images/llava_onevision/..., mixtures/<prefix>_<stage>.json,
reports/<prefix>_<stage>.report.json, reports/image_check_cache.tsv; after the conversions,
sharegpt/mg_traj_sft.json and sharegpt/mg_rl.json (trajectories.py) with rejects/mg_trajectories.jsonl
and reports/mg_trajectories.json; last, dataset_info.json registering every file built (registry.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomicio import atomic_write_text
from core.streaming import InvalidJSONError

from . import sources as source_table
from .composition import load_composition
from .convert import write_report
from .mixture import MixtureError, build_mixtures, format_report
from .registry import MIXTURES_DIR, REGISTRY, SHAREGPT_DIR, entries_for, merged, update_registry
from .report import RejectRateExceeded
from .trajectories import DEFAULT_SIZES as TRAJ_SIZES
from .trajectories import NAME as TRAJ_NAME
from .trajectories import TASKS as TRAJ_TASKS
from .trajectories import VERSION as TRAJ_VERSION
from .trajectories import WRITERS as TRAJ_WRITERS
from .trajectories import build_trajectories, output_paths

log = logging.getLogger(__name__)

VERSION = 1  # bump when converted output changes, so up-to-date steps are redone


def fingerprint(paths: list[Path]) -> dict[str, list[int]]:
    out = {}
    for p in paths:
        st = Path(p).stat()
        out[str(p)] = [st.st_size, st.st_mtime_ns]
    return out


@dataclass
class Step:
    name: str
    inputs: list[Path]
    outputs: list[Path]
    params: dict[str, Any]
    report_path: Path
    run: Callable[[bool], Any]
    needs: tuple[str, ...] = ()  # steps that must not have failed in this run

    def stamp(self) -> dict[str, Any]:
        return {"version": VERSION, "inputs": fingerprint(self.inputs), "params": self.params}

    def up_to_date(self) -> bool:
        try:
            saved = json.loads(self.report_path.read_text(encoding="utf-8"))
            return saved.get("stamp") == self.stamp() and saved.get("output_files") == fingerprint(
                self.outputs
            )
        except (OSError, ValueError):
            return False

    def owned(self) -> bool:
        """True when this pipeline wrote the step's outputs before (so it may replace them)."""
        return self.report_path.exists()


GRID_DIR = "sharegpt_grid"  # the MGrounding tasks in Qwen2-VL form when --box-format is another family


def conversion_steps(root: Path, out: Path, options: dict[str, Any]) -> tuple[list[Step], list[str]]:
    """Conversion steps for the sources of the sources table present under `root`; notes for the rest.

    With a --box-format other than qwen2-vl, the box format is part of every stamp (a rerun with
    another format redoes the steps) and each MGrounding task also writes its Qwen2-VL form to
    OUT/sharegpt_grid/ (a second output, not registered), which the trajectory sets are built from.
    """
    steps, notes = [], []
    sharegpt, rejects, reports = out / SHAREGPT_DIR, out / "rejects", out / "reports"
    params = {k: options[k] for k in ("check_images", "max_reject_rate")}
    fmt = options.get("box_format")
    if fmt is not None:
        params.update(fmt.stamp())
    for source in source_table.SOURCES.values():
        found = source.discover(root, out)
        if isinstance(found, str):
            notes.append(f"skipped {source.name}: {found}")
            continue
        output, reject = sharegpt / f"{source.name}.json", rejects / f"{source.name}.jsonl"
        grid = out / GRID_DIR / f"{source.name}.json"
        extra = {"grid_output": grid} if source.name in TRAJ_TASKS and fmt and not fmt.is_default else {}

        def go(
            force: bool, found=found, output=output, reject=reject, images=source.needs_images, extra=extra
        ) -> Any:
            return found.convert(
                output=output, rejects=reject, force=force, require_images=images, **options, **extra
            )

        stamp = {**params, **found.params}
        outputs = [output, *extra.values()]
        steps.append(Step(source.name, found.inputs, outputs, stamp, reports / f"{source.name}.json", go))
    return steps, notes


def trajectory_step(
    out: Path,
    steps: list[Step],
    sft_size: int,
    rl_size: int,
    seed: int,
    writer: str = "template",
    box_format=None,
) -> Step | None:
    """The trajectory-SFT/RL step over the converted MGrounding tasks present (None: none is)."""
    inputs = {s.name: s.outputs[-1] for s in steps if s.name in TRAJ_TASKS}  # the grid form is last
    if not inputs:
        return None
    sharegpt = out / SHAREGPT_DIR
    source_dir = sharegpt if box_format is None or box_format.is_default else out / GRID_DIR
    outputs = list(output_paths(sharegpt).values())
    sizes = {"sft_size": sft_size, "rl_size": rl_size}
    stamp = {**sizes, "seed": seed, "version": TRAJ_VERSION, "writer": writer}
    if box_format is not None:
        stamp.update(box_format.stamp())
    return Step(
        TRAJ_NAME,
        list(inputs.values()),
        outputs,
        stamp,
        out / "reports" / f"{TRAJ_NAME}.json",
        lambda force: build_trajectories(
            source_dir,
            sharegpt,
            **sizes,
            seed=seed,
            rejects=out / "rejects" / f"{TRAJ_NAME}.jsonl",
            writer=TRAJ_WRITERS[writer](),
            force=force,
            box_format=box_format,
        ),
        needs=tuple(inputs),
    )


class PipelineError(ValueError):
    """Nothing can be done: DATA_ROOT is not a folder or holds no known source."""


@dataclass
class RunResult:
    """What `run_all` did: steps run, up to date or failed, and the registry it wrote."""

    ran: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the run stopped short (None: everything is built)
    registry: Path | None = None
    registered: list[str] = field(default_factory=list)

    @property
    def kept_some(self) -> bool:
        return bool(self.ran or self.up_to_date)


def _registered(step: Step) -> list[Path]:
    """The outputs LLaMA-Factory trains on (not the Qwen2-VL-form copies in OUT/sharegpt_grid/)."""
    return [p for p in step.outputs if p.parent.name != GRID_DIR]


def _register(out: Path, steps: list[Step], result: RunResult, force: bool) -> None:
    """Register the outputs of every step that is built in OUT/dataset_info.json (relative paths)."""
    built = set(result.ran) | set(result.up_to_date)
    files = {p.stem: p for step in steps if step.name in built for p in _registered(step)}
    if not files:
        return
    path = out / REGISTRY
    try:
        changed = update_registry(path, entries_for(files, out), force)
    except (OSError, ValueError) as err:  # e.g. made unwritable, or edited by hand, during the run
        log.error("%s not updated: %s", path, err)
        result.failed.append(REGISTRY)
        result.error = result.error or f"{path} not updated: {err}"
        return
    result.registry, result.registered = path, list(files)
    log.info(
        "%s %d datasets in %s (train with dataset_dir=%s)",
        "registered" if changed else "already registered:",
        len(files),
        path,
        out,
    )


def _run_step(step: Step, force: bool, result: RunResult) -> Any:
    """Run one step unless up to date; record the outcome; the report or None."""
    if not force and step.up_to_date():
        log.info("up to date: %s", step.name)
        result.up_to_date.append(step.name)
        return None
    try:
        report = step.run(force or step.owned())
    except RejectRateExceeded as err:
        write_report(err.report, step.report_path)
        log.info("%s", err.report.summary())
        log.error("%s", err)
        result.failed.append(step.name)
        return None
    except (InvalidJSONError, MixtureError, OSError, ValueError) as err:
        log.error("%s: %s", step.name, err)
        result.failed.append(step.name)
        return None
    result.ran.append(step.name)
    return report


def run_all(
    data_root: str | Path,
    output_dir: str | Path,
    *,
    totals: dict[str, int] | None = None,
    seed: int = 0,
    prefix: str = "migician",
    check_images: bool = False,
    workers: int | None = None,
    max_reject_rate: float = 0.01,
    allow_missing_categories: bool = False,
    traj_sft_size: int = TRAJ_SIZES["sft"],
    rl_size: int = TRAJ_SIZES["rl"],
    traj_writer: str = "template",
    mixtures: str | Path | None = None,
    force: bool = False,
    box_format=None,
) -> RunResult:
    """Run every step in order, then register what is built; progress is logged.

    Raises PipelineError (nothing to do), CompositionError (bad mixtures file) or RegistryError
    (OUT/dataset_info.json holds hand-edited entries of the same names) before any work. A failed
    step is logged and named in the result; the steps that need it are not run, the others are.
    """
    root, out = Path(data_root), Path(output_dir)
    if not root.is_dir():
        raise PipelineError(f"--data-root {root} is not a folder")
    composition = load_composition(mixtures)
    options = {
        "check_images": check_images,
        "workers": workers,
        "max_reject_rate": max_reject_rate,
        "image_cache": out / "reports" / "image_check_cache.tsv" if check_images else None,
        "box_format": box_format,
    }
    result = RunResult()
    steps, result.notes = conversion_steps(root, out, options)
    for note in result.notes:
        log.info("note: %s", note)
    if not steps:
        raise PipelineError(f"no known source under {root} ({len(result.notes)} looked for; see the notes)")

    traj = trajectory_step(out, steps, traj_sft_size, rl_size, seed, traj_writer, box_format)
    if traj is None:
        log.info("note: skipped %s: no converted MGrounding task", TRAJ_NAME)
    sources = {step.name: step.outputs[0] for step in steps}
    totals = {**composition.totals, **(totals or {})}  # one per mixture stage of stages.py
    mix = Step(
        f"{prefix} mixtures",
        list(sources.values()),
        [out / MIXTURES_DIR / f"{prefix}_{stage}.json" for stage in composition.stages],
        {
            "totals": totals,
            "seed": seed,
            "allow_missing_categories": allow_missing_categories,
            "composition": composition.stamp(),
            **(box_format.stamp() if box_format is not None else {}),
        },
        out / "reports" / f"{prefix}_mixtures.json",
        lambda f: build_mixtures(
            sources,
            out / MIXTURES_DIR,
            prefix,
            totals,
            seed,
            out / "reports",
            allow_missing_categories,
            f,
            composition,
        ),
    )
    every = [*steps, *([traj] if traj else []), mix]
    if not force:  # a hand-edited registry entry stops the run before any work
        merged(out / REGISTRY, entries_for({p.stem: p for s in every for p in _registered(s)}, out))

    for step in every[:-1]:
        if any(name in result.failed for name in step.needs):
            log.error("%s: not run, an input step failed", step.name)
            result.failed.append(step.name)
            continue
        report = _run_step(step, force, result)
        if report is not None:
            log.info("%s", report.summary())
            data = report.to_dict()
            data["stamp"], data["output_files"] = step.stamp(), fingerprint(step.outputs)
            atomic_write_text(step.report_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if result.failed:
        result.error = f"not mixing; failed step(s): {', '.join(result.failed)}"
    else:
        reports = _run_step(mix, force, result)
        if reports is not None:
            for report in reports:
                log.info("%s", format_report(report))
            data = {"stages": reports, "stamp": mix.stamp(), "output_files": fingerprint(mix.outputs)}
            atomic_write_text(mix.report_path, json.dumps(data, indent=2) + "\n")
        elif mix.name in result.failed:
            result.error = f"{mix.name} not built (see the error above); the converted files are kept"
    _register(out, every, result, force)
    return result
