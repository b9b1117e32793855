"""MIG_data.json loading, task rules and prompts (no model involved)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval import prompts, tasks
from eval.bench import BenchError, load_bench
from eval.synthetic import make_synthetic_bench


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic_bench(tmp_path_factory.mktemp("bench"), per_task=2, seed=1)


def _write(tmp_path: Path, src: Path, records) -> Path:
    """A copy of the synthetic bench with replaced records (images shared by a symlink)."""
    root = tmp_path / "root"
    (root / "MIG-Bench").mkdir(parents=True)
    (root / "MIG-Bench" / "images").symlink_to(src.parent / "images")
    path = root / "MIG-Bench" / "MIG_data.json"
    path.write_text(records if isinstance(records, str) else json.dumps(records), encoding="utf-8")
    return path


def test_synthetic_bench_has_the_published_layout(synth):
    data = json.loads(synth.read_text())
    assert {r["task"] for r in data} == set(tasks.TASK_NAMES)
    assert {len(r["images"]) for r in data} == {2, 3, 4, 5, 6}
    for r in data:
        assert set(r) == {"task", "images", "question", "answer", "additional_info", "need_format"}
        assert all(p.startswith(f"./MIG-Bench/images/{r['task']}/") for p in r["images"])
        assert all(0 <= v <= 1 for v in r["answer"])
    bench = load_bench(synth)
    assert bench.image_root == synth.resolve().parent.parent  # default: the folder holding MIG-Bench/
    assert len(bench.instances) == len(data) and not bench.problems
    assert bench.answer_scale == "unit"
    assert all(Path(p).is_file() for i in bench.instances for p in i.image_paths)


def test_answers_on_the_0_1000_grid_are_accepted(tmp_path):
    path = make_synthetic_bench(tmp_path, per_task=1, seed=1, thousand=True)
    unit = make_synthetic_bench(tmp_path / "unit", per_task=1, seed=1)
    a, b = load_bench(path), load_bench(unit)
    assert a.answer_scale == "thousand"
    for x, y in zip(a.instances, b.instances, strict=True):
        assert x.answer == pytest.approx(y.answer, abs=1e-3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"task": "diff"}', "must hold a JSON list"),
        ("[]", "holds no instances"),
        ('[{"task": "vqa"}, 3]', "no well-formed instance"),
    ],
)
def test_malformed_file_fails_before_anything_runs(tmp_path, synth, content, message):
    with pytest.raises(BenchError, match=message):
        load_bench(_write(tmp_path, synth, content))


def test_missing_file_and_unknown_task_filter(tmp_path, synth):
    with pytest.raises(BenchError, match="does not exist"):
        load_bench(tmp_path / "nope.json")
    with pytest.raises(BenchError, match="unknown task"):
        load_bench(synth, task_names=["difff"])


def test_bad_instances_are_reported_by_index_and_skipped(tmp_path, synth):
    records = json.loads(synth.read_text())
    records[1]["answer"] = [0.1, 0.2, 0.3]
    records[3]["images"][0] = "./MIG-Bench/images/diff/missing.png"
    records[5]["task"] = "counting"
    records[7]["question"] = ""
    records[9]["answer"] = [10, 20, 30, 40000]  # makes the file 0-1000, and this one outside the image
    bench = load_bench(_write(tmp_path, synth, records))
    bad = {p.index: p.reason for p in bench.problems}
    assert set(bad) == {1, 3, 5, 7, 9}
    assert "4 numbers" in bad[1]
    assert "image not found" in bad[3] and "missing.png" in bad[3]
    assert "unknown task 'counting'" in bad[5]
    assert "question" in bad[7]
    assert "outside the image" in bad[9]
    assert len(bench.instances) == len(records) - 5
    assert bench.answer_scale == "thousand"


def test_limit_is_per_task_and_tasks_filter(synth):
    bench = load_bench(synth, limit=1)
    assert sorted(i.task for i in bench.instances) == sorted(tasks.TASK_NAMES)
    only = load_bench(synth, task_names=["region", "diff"])
    assert {i.task for i in only.instances} == {"region", "diff"}


def test_image_root_option(tmp_path, synth):
    moved = tmp_path / "elsewhere" / "MIG_data.json"
    moved.parent.mkdir()
    shutil.copy(synth, moved)
    assert load_bench(moved).problems  # relative paths no longer resolve
    bench = load_bench(moved, image_root=synth.parent.parent)
    assert not bench.problems


def test_inverted_answer_is_kept_with_a_warning(tmp_path, synth):
    records = json.loads(synth.read_text())
    records[0]["answer"] = [0.027, 0.18, 0.143, 0.051]  # as in the released MIG_data.json
    bench = load_bench(_write(tmp_path, synth, records))
    assert not bench.problems and "inverted" in bench.warnings[0]


@pytest.mark.parametrize(
    ("task", "question", "n", "hint", "expected"),
    [
        ("diff", "anything", 2, "", 1),
        ("region", "Please locate the 2th region picture in the source image. ", 4, "", 0),
        ("common_object", "Recognize and locate this object in the 3th image. ", 4, "", 2),
        (
            "multi_view",
            "(the object marked with red bounding box in the first image(<|box_start|>(2,205),(428,1000)"
            "<|box_end|>). Recognize and locate this object in the 2th image. ",
            3,
            "",
            1,
        ),
        ("object_tracking", "marked in the first image ... locate it in the 5th image", 6, "", 4),
        ("group_grounding", "q", 5, "It is in the fifth image. <|box_start|>(1,2),(3,4)<|box_end|>. ", 4),
        ("group_grounding", "q", 3, "Image2", 1),
        ("group_grounding", "q", 3, "no idea", None),
        ("common_object", "in the 6th image", 3, "", None),  # names an image that is not there
    ],
)
def test_target_image_rules(task, question, n, hint, expected):
    assert tasks.target_image(task, question, n, hint) == expected


def test_direct_prompt_appends_the_named_suffix_directly(synth):
    inst = load_bench(synth).instances[0]
    p = prompts.direct_prompt(inst, prompts.suffix_text("script"))
    assert p.images == inst.image_paths
    assert (
        p.text
        == inst.question + "Format:<|box_start|>(x1,y1),(x2,y2)<|box_start|>. Don't generate addtional words."
    )
    released = prompts.direct_prompt(inst, prompts.suffix_text("released")).text
    assert released.endswith("(x2,y2)<|box_end|>. Don't generate addtional words.")
    gg = next(i for i in load_bench(synth).instances if not i.need_format)
    assert prompts.direct_prompt(gg, "SUFFIX").text.endswith("SUFFIX")  # the script appends it always
    assert prompts.direct_prompt(gg, "SUFFIX", when="need_format").text == gg.question
    with pytest.raises(ValueError, match="unknown format suffix"):
        prompts.suffix_text("nope")


def test_cot_prompts_follow_the_appendix(synth):
    bench = load_bench(synth)
    by_task = {i.task: i for i in bench.instances}
    suffix = prompts.suffix_text("script")

    region = by_task["region"]
    named = tasks.image_index_named(region.question)
    s1 = prompts.cot_step1_prompt(region)
    assert s1.images == region.image_paths
    assert s1.text == f"Describe the content of the {named + 2}th picture with simple phrase or words."
    s2 = prompts.cot_step2_prompt(region, "a red car.", suffix, "cot")
    assert s2.images == [region.image_paths[0]]  # the source image alone
    assert s2.text.startswith("Please ground the object <|object_ref_start|>a red car<|object_ref_end|>")
    assert s2.text.endswith(suffix)

    mv = by_task["multi_view"]
    assert "(<|box_start|>(" in prompts.cot_step1_prompt(mv).text  # the marked box is quoted
    target = tasks.target_image("multi_view", mv.question, len(mv.images))
    assert prompts.cot_step2_prompt(mv, "a chair", suffix, "cot").images == [mv.image_paths[target]]
    m = prompts.cot_step2_prompt(mv, "a chair", suffix, "mcot")
    assert m.images == mv.image_paths and m.text.startswith(
        f"Now only look at the {tasks.ORDINALS[target]} image."
    )

    gg = by_task["group_grounding"]
    s1 = prompts.cot_step1_prompt(gg).text
    assert s1.startswith(gg.question.strip()) and s1.endswith(
        "Answer from: " + " | ".join(f"Image{k + 1}" for k in range(len(gg.images))) + "."
    )
    assert prompts.cot_step2_prompt(gg, "Image2", suffix, "cot").images == [gg.image_paths[1]]
    assert prompts.cot_step2_prompt(gg, "I don't know", suffix, "cot").images == [gg.image_paths[0]]
    assert prompts.cot_step2_prompt(gg, "Image2", suffix, "cot").text == gg.question.strip() + suffix

    reason = by_task["reasoning"]
    s1 = prompts.cot_step1_prompt(reason).text
    assert "Find it and locate it" not in s1 and s1.endswith(
        "Name this object in the Image-2 with simple phrase."
    )
    assert prompts.cot_step2_prompt(reason, "x", suffix, "cot").images == [reason.image_paths[1]]
