"""`python -m converters all`: every source in order, then the mixtures; up-to-date steps skipped.

Progress goes to stderr through logging (`converters: ...`); the final one-line summary to stdout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.sources import SOURCES

FIXTURE_ROOT = Path(__file__).resolve().parent / "fixtures" / "converters" / "data_root"


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE_ROOT, root)
    return root


def run_all(root: Path, out: Path, *extra: str) -> int:
    argv = ["all", "--data-root", str(root), "--output-dir", str(out), "--stage1-total", "50"]
    return main([*argv, "--stage2-total", "20", "--max-reject-rate", "0.5", *extra])


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.suffix != ".tsv"}


def test_all_then_rerun_skips_everything_then_redoes_only_what_changed(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_all(data_root, out, "--check-images") == 0
    first = capsys.readouterr()
    assert "skipped" not in first.err and first.out.startswith("all: 15 step(s) run, 0 already up to date")
    for name in SOURCES:
        assert (out / "sharegpt" / f"{name}.json").is_file(), name
        report = json.loads((out / "reports" / f"{name}.json").read_text(encoding="utf-8"))
        assert report["written"] and report["image_check"] is not None
    for stage in ("stage1", "stage2"):
        assert (out / "mixtures" / f"migician_{stage}.json").is_file()
        assert (out / "reports" / f"migician_{stage}.report.json").is_file()
    before = mtimes(out)

    registry = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(registry) == {*SOURCES, "mg_traj_sft", "mg_rl", "migician_stage1", "migician_stage2"}
    assert registry["mg_common"]["file_name"] == "sharegpt/mg_common.json"  # relative to OUT
    assert registry["migician_stage2"]["file_name"] == "mixtures/migician_stage2.json"

    assert run_all(data_root, out, "--check-images") == 0
    second = capsys.readouterr().err
    assert second.count("up to date:") == len(SOURCES) + 2  # the conversions, the trajectories, the mixtures
    assert mtimes(out) == before  # the registry too: rewritten only when its content changes

    diff = data_root / "MGrounding-630k" / "Difference" / "diff_train_70k.json"
    records = json.loads(diff.read_text(encoding="utf-8"))
    diff.write_text(json.dumps(records[:1]), encoding="utf-8")
    assert run_all(data_root, out, "--check-images") == 0
    third = capsys.readouterr().err
    assert "mg_diff: 1 records read" in third
    # everything but mg_diff, the trajectory sets built from it, and the mixtures
    assert third.count("up to date:") == len(SOURCES) - 1
    changed = {p.relative_to(out).as_posix() for p, t in mtimes(out).items() if before.get(p) != t}
    assert changed == {
        "sharegpt/mg_diff.json",
        "rejects/mg_diff.jsonl",
        "reports/mg_diff.json",
        "sharegpt/mg_traj_sft.json",
        "sharegpt/mg_rl.json",
        "rejects/mg_trajectories.jsonl",
        "reports/mg_trajectories.json",
        "mixtures/migician_stage1.json",
        "mixtures/migician_stage2.json",
        "reports/migician_stage1.report.json",
        "reports/migician_stage2.report.json",
        "reports/migician_mixtures.json",
    }

    # Different options are part of the stamp: without --check-images every step runs again.
    assert run_all(data_root, out) == 0
    assert "up to date:" not in capsys.readouterr().err


def test_absent_sources_are_skipped_with_a_note(data_root, tmp_path, capsys):
    shutil.rmtree(data_root / "Groma-Instruct")
    shutil.rmtree(data_root / "LLaVA-OneVision-Data")
    out = tmp_path / "demo"
    assert run_all(data_root, out, "--mixture-prefix", "demo", "--allow-missing-categories") == 0
    text = capsys.readouterr()
    assert "note: skipped groma_instruct" in text.err and "note: skipped llava_onevision" in text.err
    assert "converters: warning: stage1: category s_understanding has none of its sources" in text.err
    report = json.loads((out / "reports" / "demo_stage1.report.json").read_text(encoding="utf-8"))
    assert "groma_instruct" not in report["sources"] and report["total"] == 50
    assert (out / "mixtures" / "demo_stage2.json").is_file()
    registry = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["demo_stage2"]["file_name"] == "mixtures/demo_stage2.json"  # any --mixture-prefix
    assert "groma_instruct" not in registry and "migician_stage1" not in registry


def test_failed_step_stops_before_mixing(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["all", "--data-root", str(data_root), "--output-dir", str(out), "--stage1-total", "50"]
    # Default --max-reject-rate 0.01: the fixtures' bad refs, rows and Groma records exceed it.
    # Exit 3 (partial: the other conversions are kept); it was 1 before cli.py's shared table.
    assert main([*argv, "--stage2-total", "20"]) == 3
    err = capsys.readouterr().err
    assert (
        "python -m converters: error: not mixing; failed step(s): "
        "refcoco, refcoco_plus, refcocog, llava_onevision, groma_instruct"
    ) in err
    assert not (out / "mixtures").exists()
    assert not (out / "sharegpt" / "refcoco.json").exists() and (out / "rejects" / "refcoco.jsonl").exists()
    assert (out / "sharegpt" / "mg_common.json").exists()
    registry = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))  # what was built
    assert "mg_common" in registry and "mg_rl" in registry
    assert "refcoco" not in registry and "migician_stage1" not in registry
    # The pipeline's own earlier attempt is not a foreign file: the rerun may replace it.
    assert run_all(data_root, out) == 0


def test_foreign_output_file_is_refused_without_force(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "sharegpt").mkdir(parents=True)
    foreign = out / "sharegpt" / "mg_common.json"
    foreign.write_text("[]\n", encoding="utf-8")
    assert run_all(data_root, out) == 3  # partial: the other sources are converted (was 1 before cli.py)
    assert "mg_common" in capsys.readouterr().err and foreign.read_text(encoding="utf-8") == "[]\n"
    assert run_all(data_root, out, "--force") == 0
    assert len(json.loads(foreign.read_text(encoding="utf-8"))) == 3
