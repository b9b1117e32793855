"""`python -m converters all`: every source found under DATA_ROOT, then both mixtures.

Why: one command should turn the published downloads into the files the
recipes train on, and re-running it should only redo what changed. Each step
records a stamp (input sizes and mtimes, options, converter version, output
sizes and mtimes) in its report; a step whose stamp still matches is skipped.
Sources missing from DATA_ROOT are skipped with a note. Files already at an
output path that this pipeline did not write are refused without --force.

Layout under OUT: sharegpt/<dataset>.json, rejects/<dataset>.jsonl,
reports/<dataset>.json, images/llava_onevision/..., mixtures/<prefix>_stage{1,2}.json,
reports/<prefix>_stage{1,2}.report.json, reports/image_check_cache.tsv; after the conversions,
sharegpt/mg_traj_sft.json and sharegpt/mg_rl.json (trajectories.py) with rejects/mg_trajectories.jsonl
and reports/mg_trajectories.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomicio import atomic_write_text

from .convert import write_report
from .groma import convert_groma
from .llava import collect_llava_inputs, convert_llava_onevision, convert_m4_instruct
from .mgrounding import TASK_FILES, convert_mgrounding
from .mixture import DEFAULT_TOTALS, MixtureError, build_mixtures
from .refcoco import DATASETS as REFCOCO_DATASETS
from .refcoco import convert_refcoco
from .report import RejectRateExceeded
from .streaming import InvalidJSONError
from .trajectories import DEFAULT_SIZES as TRAJ_SIZES
from .trajectories import NAME as TRAJ_NAME
from .trajectories import TASKS as TRAJ_TASKS
from .trajectories import VERSION as TRAJ_VERSION
from .trajectories import WRITERS as TRAJ_WRITERS
from .trajectories import build_trajectories, output_paths

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


def conversion_steps(root: Path, out: Path, options: dict[str, Any]) -> tuple[list[Step], list[str]]:
    """Conversion steps for the sources present under `root`; notes for the ones absent."""
    steps, notes = [], []
    sharegpt, rejects, reports = out / "sharegpt", out / "rejects", out / "reports"
    params = {k: options[k] for k in ("check_images", "max_reject_rate")}

    def add(name: str, inputs: list[Path], run: Callable[..., Any], extra: dict | None = None) -> None:
        output, reject = sharegpt / f"{name}.json", rejects / f"{name}.jsonl"

        def go(force: bool, run=run, output=output, reject=reject) -> Any:
            return run(output=output, rejects=reject, force=force, **options)

        steps.append(Step(name, inputs, [output], {**params, **(extra or {})}, reports / f"{name}.json", go))

    mg = root / "MGrounding-630k"
    for name, rel in TASK_FILES.items():
        path = mg / rel
        if path.is_file():
            add(name, [path], lambda p=path, n=name, **kw: convert_mgrounding(p, root, name=n, **kw))
        else:
            notes.append(f"skipped {name}: {path} not found")

    coco_images = root / "coco" / "train2014"
    for name, (folder, refs_file) in REFCOCO_DATASETS.items():
        refs, instances = root / folder / refs_file, root / folder / "instances.json"
        if refs.is_file() and instances.is_file():
            add(
                name,
                [refs, instances],
                lambda r=refs, i=instances, n=name, **kw: convert_refcoco(r, i, coco_images, name=n, **kw),
            )
        else:
            notes.append(f"skipped {name}: {refs} or {instances} not found")

    ov = root / "LLaVA-OneVision-Data"
    ov_files = collect_llava_inputs([ov]) if ov.is_dir() else []
    if ov_files:
        image_dir = out / "images" / "llava_onevision"
        add(
            "llava_onevision",
            ov_files,
            lambda **kw: convert_llava_onevision(ov_files, image_dir=image_dir, base=ov, **kw),
            {"image_dir": str(image_dir)},
        )
    else:
        notes.append(f"skipped llava_onevision: no .parquet/.json files under {ov}")

    m4 = root / "M4-Instruct-Data" / "m4_instruct_annotations.json"
    if m4.is_file():
        add("m4_instruct", [m4], lambda **kw: convert_m4_instruct(m4, m4.parent, **kw))
    else:
        notes.append(f"skipped m4_instruct: {m4} not found")

    groma = root / "Groma-Instruct" / "groma_instruct.json"
    if groma.is_file():
        vg = root / "visual_genome" / "images"
        add("groma_instruct", [groma], lambda **kw: convert_groma(groma, vg, **kw))
    else:
        notes.append(f"skipped groma_instruct: {groma} not found")
    return steps, notes


def trajectory_step(
    out: Path, steps: list[Step], sft_size: int, rl_size: int, seed: int, writer: str = "template"
) -> Step | None:
    """The trajectory-SFT/RL step over the converted MGrounding tasks present (None: none is)."""
    inputs = {s.name: s.outputs[0] for s in steps if s.name in TRAJ_TASKS}
    if not inputs:
        return None
    sharegpt = out / "sharegpt"
    outputs = list(output_paths(sharegpt).values())
    sizes = {"sft_size": sft_size, "rl_size": rl_size}
    return Step(
        TRAJ_NAME,
        list(inputs.values()),
        outputs,
        {**sizes, "seed": seed, "version": TRAJ_VERSION, "writer": writer},
        out / "reports" / f"{TRAJ_NAME}.json",
        lambda force: build_trajectories(
            sharegpt,
            sharegpt,
            **sizes,
            seed=seed,
            rejects=out / "rejects" / f"{TRAJ_NAME}.jsonl",
            writer=TRAJ_WRITERS[writer](),
            force=force,
        ),
        needs=tuple(inputs),
    )


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
    force: bool = False,
) -> int:
    """Run every step in order; return the process exit code (0: all done or up to date)."""
    root, out = Path(data_root), Path(output_dir)
    if not root.is_dir():
        print(f"error: --data-root {root} is not a folder", file=sys.stderr)
        return 1
    options = {
        "check_images": check_images,
        "workers": workers,
        "max_reject_rate": max_reject_rate,
        "image_cache": out / "reports" / "image_check_cache.tsv" if check_images else None,
    }
    steps, notes = conversion_steps(root, out, options)
    for note in notes:
        print(f"note: {note}")
    if not steps:
        print(f"error: no known source under {root}", file=sys.stderr)
        return 1

    traj = trajectory_step(out, steps, traj_sft_size, rl_size, seed, traj_writer)
    if traj is None:
        print(f"note: skipped {TRAJ_NAME}: no converted MGrounding task")
    failed = []
    for step in [*steps, *([traj] if traj else [])]:
        if any(name in failed for name in step.needs):
            print(f"error: {step.name}: not run, an input step failed", file=sys.stderr)
            failed.append(step.name)
            continue
        if not force and step.up_to_date():
            print(f"up to date: {step.name}")
            continue
        try:
            report = step.run(force or step.owned())
        except RejectRateExceeded as err:
            write_report(err.report, step.report_path)
            print(err.report.summary(), f"\nerror: {err}", sep="", file=sys.stderr)
            failed.append(step.name)
            continue
        except (InvalidJSONError, OSError, ValueError) as err:
            print(f"error: {step.name}: {err}", file=sys.stderr)
            failed.append(step.name)
            continue
        print(report.summary())
        data = report.to_dict()
        data["stamp"], data["output_files"] = step.stamp(), fingerprint(step.outputs)
        atomic_write_text(step.report_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if failed:
        print(f"error: not mixing; failed step(s): {', '.join(failed)}", file=sys.stderr)
        return 1

    sources = {step.name: step.outputs[0] for step in steps}
    totals = {**DEFAULT_TOTALS, **(totals or {})}  # one per mixture stage of stages.py
    mix_outputs = [out / "mixtures" / f"{prefix}_{stage}.json" for stage in totals]
    mix = Step(
        f"{prefix} mixtures",
        list(sources.values()),
        mix_outputs,
        {"totals": totals, "seed": seed, "allow_missing_categories": allow_missing_categories},
        out / "reports" / f"{prefix}_mixtures.json",
        lambda f: build_mixtures(
            sources, out / "mixtures", prefix, totals, seed, out / "reports", allow_missing_categories, f
        ),
    )
    if not force and mix.up_to_date():
        print(f"up to date: {mix.name}")
        return 0
    try:
        reports = mix.run(force or mix.owned())
    except (MixtureError, InvalidJSONError, OSError) as err:
        print(f"error: {mix.name}: {err}", file=sys.stderr)
        return 1
    data = {"stages": reports, "stamp": mix.stamp(), "output_files": fingerprint(mix.outputs)}
    atomic_write_text(mix.report_path, json.dumps(data, indent=2) + "\n")
    return 0
