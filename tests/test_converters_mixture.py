"""Stage mixtures: Table 12 proportions, exact counts, reproducibility, upsampling warnings."""

from __future__ import annotations

import json
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.composition import load_composition
from converters.mixture import MixtureError, apportion, build_mixtures, plan_stage
from core.streaming import RecordWriter

# Table 12 as the code reads it: recipes/mixtures.yaml, its categories' sources from the sources table.
COMPOSITION = load_composition()
STAGES = {stage: mix.shares for stage, mix in COMPOSITION.stages.items()}
CATEGORIES = {category: COMPOSITION.sources(category) for category in COMPOSITION.categories}

# The published sizes (MGrounding per-task files; general sets roughly as released).
PAPER_SIZES = {
    "mg_common": 70_000,
    "mg_diff": 70_000,
    "mg_group_grounding": 120_000,
    "mg_object_tracking": 130_000,
    "mg_referring": 70_000,
    "mg_region": 70_000,
    "mg_free_form": 130_000,
    "llava_onevision": 3_200_000,
    "m4_instruct": 615_000,
    "refcoco": 120_624,
    "refcoco_plus": 120_191,
    "refcocog": 80_512,
    "groma_instruct": 30_000,
}


def test_apportion_is_exact_and_within_one_of_each_share():
    rng = random.Random(7)
    for _ in range(500):
        total = rng.randrange(0, 10**7)
        weights = {f"s{i}": rng.randrange(1, 10**6) for i in range(rng.randrange(1, 8))}
        counts = apportion(total, weights)
        assert sum(counts.values()) == total
        wsum = sum(weights.values())
        for k, w in weights.items():
            assert abs(counts[k] - Fraction(total * w, wsum)) < 1


@pytest.mark.parametrize(("stage", "total"), [("stage1", 1_000_000), ("stage2", 200_000)])
def test_paper_totals_give_table_12_exactly(stage, total):
    per_category, per_source, warnings = plan_stage(stage, total, PAPER_SIZES)
    assert warnings == []
    assert per_category == {c: total * pct // 100 for c, pct in STAGES[stage].items()}
    assert sum(per_source.values()) == total
    for category, pct in STAGES[stage].items():
        size = sum(PAPER_SIZES[s] for s in CATEGORIES[category])
        for source in CATEGORIES[category]:
            exact = Fraction(total * pct, 100) * Fraction(PAPER_SIZES[source], size)
            assert abs(per_source[source] - exact) <= 1, (source, per_source[source], float(exact))
    if stage == "stage1":  # the 530k stage-1 MGrounding part fits into its 540k share: upsampled by 540/530
        assert sum(per_source[s] for s in CATEGORIES["m_grounding_stage1"]) == 540_000


def make_sources(folder: Path, sizes: dict[str, int]) -> dict[str, Path]:
    paths = {}
    for name, n in sizes.items():
        path = folder / f"{name}.json"
        with RecordWriter(path) as out:
            for i in range(n):
                out.write(
                    {
                        "id": f"{name}-{i}",
                        "type": f"{name}_type{i % 2}",
                        "images": [],
                        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                    }
                )
        paths[name] = path
    return paths


SMALL = {name: 30 + 7 * i for i, name in enumerate(PAPER_SIZES)}


def test_mixtures_match_plan_are_reproducible_and_reuse_stage1(tmp_path, capsys):
    sources = make_sources(tmp_path / "sharegpt", SMALL)
    totals = {"stage1": 500, "stage2": 100}
    reports = build_mixtures(sources, tmp_path / "a", "t", totals, seed=3)
    capsys.readouterr()
    for report, stage in zip(reports, STAGES, strict=True):
        records = json.loads((tmp_path / "a" / f"t_{stage}.json").read_text(encoding="utf-8"))
        assert len(records) == totals[stage] == report["total"]
        counts = Counter(r["source"] for r in records)
        _, plan, _ = plan_stage(stage, totals[stage], SMALL)
        assert counts == Counter({s: n for s, n in plan.items() if n})
        assert Counter(r["type"] for r in records) == Counter(report["types"])
        assert all(r["id"].startswith(r["source"] + "-") for r in records)
        assert (tmp_path / "a" / f"t_{stage}.report.json").is_file()

    build_mixtures(sources, tmp_path / "b", "t", totals, seed=3)
    build_mixtures(sources, tmp_path / "c", "t", totals, seed=4)
    for stage in STAGES:
        same = (tmp_path / "a" / f"t_{stage}.json").read_bytes()
        assert same == (tmp_path / "b" / f"t_{stage}.json").read_bytes()
        assert same != (tmp_path / "c" / f"t_{stage}.json").read_bytes()

    # Stage 2 takes a prefix of the same per-source order: its picks are among stage 1's.
    ids = {
        stage: {r["id"] for r in json.loads((tmp_path / "a" / f"t_{stage}.json").read_text(encoding="utf-8"))}
        for stage in STAGES
    }
    shared = {s for c in STAGES["stage2"] if c in STAGES["stage1"] for s in CATEGORIES[c]}
    assert {i for i in ids["stage2"] if i.rsplit("-", 1)[0] in shared} <= ids["stage1"]


def test_short_source_is_upsampled_with_a_warning(tmp_path, caplog):
    sources = make_sources(tmp_path / "s", SMALL)
    reports = build_mixtures(sources, tmp_path / "o", "t", {"stage1": 2000, "stage2": 10}, seed=0)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("stage1: upsampling mg_common:") for m in warned), warned
    src = reports[0]["sources"]["mg_common"]
    assert src["selected"] > src["available"] and src["upsampled_x"] == round(
        src["selected"] / src["available"], 3
    )
    records = json.loads((tmp_path / "o" / "t_stage1.json").read_text(encoding="utf-8"))
    per_id = Counter(r["id"] for r in records if r["source"] == "mg_common")
    whole, rest = divmod(src["selected"], src["available"])
    assert len(per_id) == src["available"]  # every record used, none more than once extra
    assert sorted(Counter(per_id.values()).items()) == sorted(
        {whole: src["available"] - rest, whole + 1: rest}.items()
    )


def test_missing_category_is_refused_unless_allowed(tmp_path, caplog):
    sizes = {k: v for k, v in SMALL.items() if k != "m4_instruct"}
    sources = make_sources(tmp_path / "s", sizes)
    with pytest.raises(MixtureError, match="m_understanding"):
        build_mixtures(sources, tmp_path / "o", "t", {"stage1": 100, "stage2": 50})
    assert not (tmp_path / "o" / "t_stage1.json").exists()
    reports = build_mixtures(
        sources, tmp_path / "o", "t", {"stage1": 100, "stage2": 50}, allow_missing_categories=True
    )
    assert reports[0]["total"] == 100 and "m_understanding" not in reports[0]["categories"]
    assert "spread over the other categories" in caplog.text


def test_mix_command_refuses_to_overwrite(tmp_path, capsys):
    make_sources(tmp_path / "sharegpt", SMALL)
    argv = ["mix", "--sharegpt-dir", str(tmp_path / "sharegpt"), "--output-dir", str(tmp_path / "m")]
    argv += ["--stage1-total", "60", "--stage2-total", "20", "--mixture-prefix", "demo"]
    assert main(argv) == 0
    first = (tmp_path / "m" / "demo_stage1.json").read_bytes()
    assert main(argv) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert (tmp_path / "m" / "demo_stage1.json").read_bytes() == first
