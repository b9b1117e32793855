"""The evaluator per model family (issue 15): Qwen2-VL's official protocol, Qwen2.5-VL's resized pixels,
Qwen3-VL's JSON on the 0-1000 grid.

Fast tests use real checkpoint configs (a config.json is all families.detect_family reads), the real
parser and scorer, and `python -m eval score` in a subprocess. The slow ones build a tiny random model of
each family, generate through vLLM on the CPU (.venv-eval) with `eval run --family auto` and score it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import families
from core import grounding
from eval import answers, prompts, scoring
from eval.benchmarks import get_benchmark
from eval.runner import RunConfig, family_defaults, resolve_family, score_file, score_records
from tests.conftest import run_in, run_main

JSON_FAMILIES = ("qwen2.5-vl", "qwen3-vl")
# Boxes on an eighths lattice land exactly on the 0-1000 grid (125 per eighth) and on pixels of any
# resized size divisible by 8, so the round trip is exact for every family.
LATTICE_BOXES = ([0.125, 0.25, 0.5, 0.875], [0.0, 0.0, 1.0, 1.0], [0.375, 0.5, 0.625, 0.75])
SIZES = ((728, 560), (840, 448), (112, 56))  # multiples of 28 (the factor), and of 8


def model_dir(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def cfg(model, **kw) -> RunConfig:
    return RunConfig(model=str(model), bench="b.json", output_dir="out", **kw)


def family_answer(unit_box, family: str, size) -> str:
    """The family's own answer text for a 0-1 box on an image the model saw at `size` (width, height)."""
    fam = families.get_family(family)
    grid = [grounding.to_grid(v, 1) for v in unit_box]
    return families.format_answer("the object", families.box_to_family(grid, fam, size), fam)


def score_as_family(text, unit_box, family: str, size) -> dict:
    run = family_defaults(cfg("m", family=family), families.get_family(family))
    return scoring.score_response(text, unit_box, run.coords, size, "none", run.answer_format)


# ---------------------------------------------------------------- which family, and its defaults


@pytest.mark.parametrize(
    "model_type, family",
    [
        ("qwen2_vl", "qwen2-vl"),
        ("qwen2_5_vl", "qwen2.5-vl"),
        ("qwen3_vl", "qwen3-vl"),
        ("qwen3_vl_moe", "qwen3-vl"),
    ],
)
def test_auto_detects_the_family_from_config_json(tmp_path, model_type, family):
    choice = resolve_family(cfg(model_dir(tmp_path, model_type)))
    assert choice.family.name == family and choice.source.startswith("detected from ")
    assert choice.source.endswith("config.json")


def test_family_given_wins_and_a_server_defaults_to_qwen2vl(tmp_path):
    folder = model_dir(tmp_path, "qwen2_5_vl")
    assert resolve_family(cfg(folder, family="qwen3-vl")).family.name == "qwen3-vl"
    served = resolve_family(cfg("Qwen/Qwen2.5-VL-7B-Instruct", backend="openai"))
    assert served.family.name == "qwen2-vl" and "served" in served.source
    assert resolve_family(cfg("name", backend="openai", family="qwen2.5-vl")).family.name == "qwen2.5-vl"
    # A served model with a local processor folder that holds the checkpoint's config: detected from it.
    assert resolve_family(cfg("name", backend="openai", processor=str(folder))).family.name == "qwen2.5-vl"


def test_unknown_or_missing_model_type_is_refused_naming_the_file(tmp_path):
    for model_type in ("llava", None):
        folder = tmp_path / str(model_type)
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(families.UnknownFamilyError, match=r"config\.json.*--family"):
            resolve_family(cfg(folder))
    with pytest.raises(ValueError, match="unknown model family 'qwen4'"):
        resolve_family(cfg(folder, family="qwen4"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(families.UnknownFamilyError, match=r"no config\.json .*--family"):
        resolve_family(cfg(empty))
    assert resolve_family(cfg("served", backend="openai", processor=str(empty))).family.name == "qwen2-vl"


def test_each_family_gets_its_prompt_answer_format_and_convention():
    expect = {
        "qwen2-vl": (None, "official", "grid1000"),
        "qwen2.5-vl": ("qwen2.5-vl", "json", "resized-pixels"),
        "qwen3-vl": ("qwen3-vl", "json", "grid1000"),
    }
    for name, (suffix, answer_format, coords) in expect.items():
        run = family_defaults(cfg("m"), families.get_family(name))
        assert (run.family, run.format_suffix, run.answer_format, run.coords) == (
            name,
            suffix,
            answer_format,
            coords,
        )
    # Explicit options win over the family's.
    explicit = cfg("m", format_suffix="think", answer_format="think-json", coords="original-pixels")
    run = family_defaults(explicit, families.get_family("qwen2.5-vl"))
    assert (run.format_suffix, run.answer_format, run.coords) == ("think", "think-json", "original-pixels")


def test_qwen2vl_prompt_stays_the_paper_scripts_and_json_families_get_their_native_request():
    bench = get_benchmark()
    question = "Find the red square in the second image. "
    qwen2 = family_defaults(cfg("m"), families.get_family("qwen2-vl"))
    suffix = prompts.suffix_text(qwen2.format_suffix or bench.default_suffix)
    assert prompts.with_suffix(question, suffix) == (
        question + "Format:<|box_start|>(x1,y1),(x2,y2)<|box_start|>. Don't generate addtional words."
    )
    for name, request in (
        ("qwen2.5-vl", " Output its bbox coordinates using JSON format."),
        ("qwen3-vl", " Report bbox coordinates in JSON format."),
    ):
        run = family_defaults(cfg("m"), families.get_family(name))
        text = prompts.with_suffix(question, prompts.suffix_text(run.format_suffix))
        assert text == question.rstrip() + request
        assert request == families.get_family(name).grounding_suffix


# ---------------------------------------------------------------- round trip: box -> family's answer -> score


@pytest.mark.parametrize("family", families.FAMILY_CHOICES)
def test_round_trip_gives_iou_one_for_every_family(family):
    for size in SIZES:
        for box in LATTICE_BOXES:
            text = family_answer(box, family, size)
            result = score_as_family(text, box, family, size)
            assert result["iou"] == pytest.approx(1.0, abs=1e-12), (family, size, box, text, result)
    # Fenced or bare JSON, a list or one object, prose around it: the same box.
    if family in JSON_FAMILIES:
        size, box = (728, 560), LATTICE_BOXES[0]
        numbers = families.box_to_family([125, 250, 500, 875], family, size)
        for text in (
            json.dumps({"bbox_2d": list(numbers)}),
            "Here it is: " + json.dumps([{"bbox_2d": list(numbers), "label": "x"}]) + " done",
            "```json\n" + json.dumps([{"bbox_2d": list(numbers)}]) + "\n```",
        ):
            assert score_as_family(text, box, family, size)["iou"] == pytest.approx(1.0)


def test_round_trip_off_the_lattice_loses_only_rounding():
    box = [0.1234, 0.3333, 0.7771, 0.9012]
    for family in families.FAMILY_CHOICES:
        for size in SIZES:
            assert score_as_family(family_answer(box, family, size), box, family, size)["iou"] > 0.96


def test_qwen25_pixels_read_on_the_grid_are_wrong_the_forks_mistake():
    # The 2.39 fork: Qwen2.5-VL's pixels compared as 0-1000 values. Only the resized size reads them right.
    box, size = [0.5, 0.5, 1.0, 1.0], (476, 840)  # a portrait image
    text = family_answer(box, "qwen2.5-vl", size)  # [238, 420, 476, 840]
    assert score_as_family(text, box, "qwen2.5-vl", size)["iou"] == pytest.approx(1.0)
    wrong = scoring.score_response(text, box, "grid1000", None, "none", "json")
    assert wrong["box"] == [0.238, 0.42, 0.476, 0.84] and wrong["iou"] == 0.0


def test_qwen3_json_is_read_on_the_grid_without_the_papers_fraction_rule():
    # The paper's rule keeps a value < 1 as a fraction; Qwen3-VL's JSON is always on the grid.
    text = json.dumps({"bbox_2d": [0.5, 0, 500, 500]})
    result = scoring.score_response(text, [0.0005, 0, 0.5, 0.5], "grid1000", None, "none", "json")
    assert result["box"] == [0.0005, 0.0, 0.5, 0.5] and result["iou"] == pytest.approx(1.0)


def test_json_formats_ignore_box_tokens_and_think_json_reads_only_the_answer():
    tokens = "<|box_start|>(125,250),(500,875)<|box_end|>"
    assert answers.parse_answer(tokens, "json") is None
    decoy = json.dumps({"bbox_2d": [0, 0, 10, 10]})
    right = json.dumps([{"bbox_2d": [125, 250, 500, 875], "label": "[2-1] cat"}])
    text = f"<think>not {decoy}</think><answer>{right}</answer>"
    parsed = answers.parse_answer(text, "think-json")
    assert parsed.values == (125.0, 250.0, 500.0, 875.0)
    assert answers.well_formed(text, "think-json", 2) and answers.named_image(text, "think-json") == 2
    assert not answers.well_formed(
        f"<think>x</think><answer>{json.dumps({'bbox_2d': [1, 2, 3, 4]})}</answer>", "think-json", 2
    )
    assert answers.well_formed(right, "json", 2) and not answers.well_formed(tokens, "json", 2)


def test_think_well_formed_reads_the_box_the_score_reads_internvls_brackets_too():
    """InternVL's reasoning answers (`<box>[[...]]</box>`) scored as hits yet counted 0% well formed: the
    rule read only Qwen2-VL's box-token pair. Now it reads the box the think score reads."""
    internvl = (
        "<think>The target is <ref>the red square</ref><box>[[333, 333, 667, 667]]</box>.</think>"
        "<answer><bbox_id>[2-1]</bbox_id><box>[[333, 333, 667, 667]]</box></answer>"
    )
    assert answers.parse_answer(internvl, "think").values == (333.0, 333.0, 667.0, 667.0)
    assert answers.well_formed(internvl, "think", 2)
    assert answers.well_formed("<think>a</think><answer>[2-1] (1,2),(30,40)</answer>", "think", 2)
    for bad in (
        "<think>a</think><answer>[2-1] <box>[[667, 333, 333, 667]]</box></answer>",  # x1 > x2
        "<think>a</think><answer>[2-1] <box>[[0, 0, 1001, 9]]</box></answer>",  # off the grid
        "<think>a</think><answer>[3-1] <box>[[1, 2, 30, 40]]</box></answer>",  # no image 3
        "<answer>[2-1] <box>[[1, 2, 30, 40]]</box></answer>",  # no think
    ):
        assert not answers.well_formed(bad, "think", 2), bad


HOSTILE = (
    '{"bbox_2d": [1e999, 0, 10, 10]}',
    '{"bbox_2d": [NaN, 0, 10, 10]}',
    '{"bbox_2d": [Infinity, 0, 10, 10]}',
    '{"bbox_2d": [-5, 0, 10, 10]}',
    '{"bbox_2d": [' + "9" * 5000 + ", 0, 10, 10]}",
    '{"bbox_2d": [1.' + "5" * 5000 + ", 0, 10, 10]}",
    '{"bbox_2d": [1, 2, 3]}',
    '{"bbox_2d": [1, 2, 3, 4, 5]}',
    '{"bbox_2d": ["1", "2", "3", "4"]}',
    '{"bbox_2d": [true, false, true, true]}',
    '{"bbox_2d": "125,250,500,875"}',
    '{"bbox_2d": {"x1": 1}}',
    '{"bbox_2d": [[1, 2], [3, 4]]}',
    '{"bbox_2d": [500, 500, 100, 100]}',  # inverted
    '{"bbox_2d": [7, 7, 7, 7]}',  # empty
    '{"bbox_2d": [1000000, 0, 1000001, 10]}',  # over the 999999 bound
    "[" * 100_000 + "]" * 100_000,
    "[" * 5000,
    '{"bbox_2d": [1, 2, 3, 4]',  # unclosed
    "```json\n" + '[{"bbox_2d": [1, 2, 3, 4]}',  # unclosed fence, unclosed list
    '{"label": "\ud800", "bbox_2d": [1, 2, 3, 4' + "]",  # lone surrogate, unclosed object
    '{"bbox_2d": [1, 2, 3, 4]}' + " " * 20_000,  # past the answer bound
    "\x00" * 1000 + '{"bbox_2d": [1, 2, 3, 4]',
    "{" * 3 + '"bbox_2d"' + ":" * 1000,
    '{"a": ' * 2000 + "1" + "}" * 2000,  # deep, inside the answer bound
    "[" * 5000 + "]" * 5000,
)


@pytest.mark.parametrize("fmt", ["json", "think-json"])
def test_hostile_json_answers_score_zero_without_raising(fmt):
    answer = [0.1, 0.1, 0.5, 0.5]
    for text in HOSTILE:
        for response in (text, f"<think>x</think><answer>{text}</answer>"):
            for coords, size in (
                ("grid1000", None),
                ("resized-pixels", (728, 560)),
                ("resized-pixels", None),
            ):
                result = scoring.score_response(response, answer, coords, size, "none", fmt)
                assert result["iou"] == 0.0, (text[:60], result)
                assert result["box"] is None or all(math.isfinite(v) for v in result["box"])
            answers.well_formed(response, fmt, 2)
            answers.named_image(response, fmt)
    for response in (None, 7, ["x"], {"bbox_2d": [1, 2, 3, 4]}, b'{"bbox_2d": [1, 2, 3, 4]}'):
        assert scoring.score_response(response, answer, "grid1000", None, "none", fmt)["iou"] == 0.0
        assert not answers.well_formed(response, fmt, 1)


# ---------------------------------------------------------------- eval score of a family's run


def write_family_run(folder: Path, family: str, sizes_per_record, boxes, responses=None) -> Path:
    """A predictions file and run.json as `eval run` writes them for a run of this family."""
    folder.mkdir(parents=True)
    run = family_defaults(cfg("m", family=family), families.get_family(family))
    protocol = {
        "model": {"name": "m"},
        "backend": "vllm",
        "mode": "direct",
        "answer_format": run.answer_format,
    }
    if family != "qwen2-vl":
        protocol |= {"family": family}
    else:
        protocol.pop("answer_format")
    (folder / "run.json").write_text(json.dumps({"protocol": protocol, "info": {}}))
    tasks = get_benchmark().task_names
    with open(folder / "predictions.jsonl", "w") as f:
        for i, (sizes, box) in enumerate(zip(sizes_per_record, boxes, strict=True)):
            target = i % len(sizes)
            text = responses[i] if responses else family_answer(box, family, sizes[target])
            rec = {
                "index": i,
                "task": tasks[i % len(tasks)],
                "images": [f"{i}_{k}.png" for k in range(len(sizes))],
                "response": text,
                "answer": box,
                "n_images": len(sizes),
                "target_image": target,
                "image_sizes": [[w * 2, h * 2] for w, h in sizes],
                "resized_sizes": [list(s) for s in sizes],
            }
            f.write(json.dumps(rec) + "\n")
    return folder / "predictions.jsonl"


@pytest.mark.parametrize("family", families.FAMILY_CHOICES)
def test_eval_score_reads_the_recorded_family_convention(family, tmp_path):
    sizes = [[(728, 560), (840, 448)], [(112, 56), (728, 560), (840, 448)]] * 5
    boxes = [list(LATTICE_BOXES[i % len(LATTICE_BOXES)]) for i in range(len(sizes))]
    preds = write_family_run(tmp_path / "run", family, sizes, boxes)
    out = tmp_path / "scored"
    proc = run_main("eval", ["score", "--predictions", preds, "--output-dir", out])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["average"]["miou"] == pytest.approx(100.0) and metrics["average"]["acc@0.5"] == 100.0
    results = (out / "results.md").read_text()
    if family == "qwen2-vl":
        assert "Coordinate convention: `grid1000`" in results  # as before: run.json names no family
    else:
        fam = families.get_family(family)
        assert (
            f"Coordinate convention: `{fam.display} ({family}, from run.json): {fam.box_convention},"
            in results
        )
        # The wrong convention, given explicitly, is honoured (and scores what it reads).
        other = "grid1000" if fam.box_convention == "resized-pixels" else "resized-pixels"
        wrong = score_file(preds, tmp_path / "wrong", coords=other)
        assert wrong["average"]["miou"] < 90


def test_score_records_uses_the_target_images_resized_size():
    # Two images of different resized sizes: the answer is in pixels of the target (second) one.
    box = [0.125, 0.25, 0.5, 0.875]
    text = family_answer(box, "qwen2.5-vl", (840, 448))
    sizes = [[728, 560], [840, 448]]
    rec = {"task": "diff", "response": text, "answer": box, "target_image": 1, "resized_sizes": sizes}
    (scored,), notes = score_records([rec], "resized-pixels", "none", "json")
    assert scored["iou"] == pytest.approx(1.0) and not notes
    (first,), _ = score_records([dict(rec, target_image=0)], "resized-pixels", "none", "json")
    assert first["iou"] < 0.95


# ---------------------------------------------------------------- the real thing: tiny models through vLLM


def _processor_grid(model: Path, bench: Path, records: list[dict]) -> list[list[list[int]]]:
    """What the checkpoint's processor makes of each record's images: [[w, h], ...] in pixels."""
    from transformers import AutoProcessor

    from eval.images import load_image
    from families.budget import eval_budget

    processor = AutoProcessor.from_pretrained(model)
    patch = processor.image_processor.patch_size
    fam = families.detect_family(model)
    budget = eval_budget(None, fam, model)  # what `eval run` feeds by default: the training budget
    out = []
    for r in records:
        imgs = [load_image(str(bench.parent.parent / p), budget, fam).image for p in r["images"]]
        grid = processor.image_processor(images=imgs, return_tensors="pt")["image_grid_thw"].tolist()
        out.append([[w * patch, h * patch] for _, h, w in grid])
    return out


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("family", JSON_FAMILIES)
def test_tiny_model_of_each_family_generates_through_vllm_and_is_scored(
    family, eval_python, tmp_path, tiny_family
):
    from eval.synthetic import make_synthetic_bench

    fam = families.get_family(family)
    model = tiny_family(family)
    bench = make_synthetic_bench(tmp_path / "mig", per_task=1, seed=3)
    out = tmp_path / "run"
    cmd = ["-m", "eval", "run", "--model", str(model), "--bench", str(bench), "--output-dir", str(out)]
    cmd += ["--backend", "vllm", "--dtype", "float32", "--max-new-tokens", "24"]
    run_in(eval_python, cmd, timeout=1200)

    saved = json.loads((out / "run.json").read_text())
    assert saved["protocol"]["family"] == family and saved["info"]["coords"] == fam.box_convention
    assert saved["protocol"]["answer_format"] == "json"
    assert saved["protocol"]["format_suffix"] == fam.grounding_suffix
    assert saved["info"]["family_source"] == f"detected from {model / 'config.json'}"
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    data = json.loads(bench.read_text())
    assert sorted(r["index"] for r in records) == list(range(len(data)))
    for r in records:
        assert r["prompt"] == data[r["index"]]["question"].rstrip() + fam.grounding_suffix
        assert isinstance(r["response"], str) and 0.0 <= r["iou"] <= 1.0 and r["prompt_tokens"] > 0
    # resized_sizes are what the processor fed the model (Qwen2.5-VL's pixels are read against them).
    assert [r["resized_sizes"] for r in records] == _processor_grid(model, bench, records)
    assert all(w % fam.factor == 0 and h % fam.factor == 0 for r in records for w, h in r["resized_sizes"])
    results = (out / "results.md").read_text()
    assert f"Coordinate convention: `{fam.display} ({family}, detected from" in results
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["average"]["n"] == len(data) and all(
        0 <= m["acc@0.5"] <= 100 for m in metrics["tasks"].values()
    )

    # The same run with every response replaced by the family's right answer (from the run's own
    # resized sizes): `eval score` with the recorded defaults puts every box where it belongs.
    right = tmp_path / "right"
    right.mkdir()
    shutil.copy(out / "run.json", right / "run.json")
    with open(right / "predictions.jsonl", "w") as f:
        for r in records:
            size = r["resized_sizes"][r["target_image"]] if r["target_image"] is not None else None
            if size is None:
                continue
            f.write(json.dumps(dict(r, response=family_answer(r["answer"], family, tuple(size)))) + "\n")
    scored = score_file(right / "predictions.jsonl", tmp_path / "right-scored")
    assert scored["average"]["acc@0.5"] == 100.0 and scored["average"]["miou"] > 90


def test_eval_score_takes_the_coords_run_json_records_and_refuses_a_bad_one(tmp_path):
    box = [0.125, 0.25, 0.5, 0.875]
    preds = write_family_run(tmp_path / "run", "qwen2.5-vl", [[(728, 560)]], [box])
    run_json = preds.parent / "run.json"
    saved = json.loads(run_json.read_text())
    # The run scored against the file's own size (--coords original-pixels): `eval score` does too.
    run_json.write_text(json.dumps(dict(saved, info={"coords": "original-pixels"})))
    assert score_file(preds, tmp_path / "a")["average"]["miou"] < 90  # image_sizes are twice the resized
    for bad in (["grid1000"], "pixels", 3):
        run_json.write_text(json.dumps(dict(saved, info={"coords": bad})))
        with pytest.raises(ValueError, match="records coords"):
            score_file(preds, tmp_path / "b")
        assert score_file(preds, tmp_path / "c", coords="resized-pixels", force=True)["average"][
            "miou"
        ] == pytest.approx(100)


def test_a_thinking_checkpoint_gets_the_thinking_budget_and_says_so(tmp_path):
    """Qwen3-VL Thinking and Instruct share model_type; the chat template tells them apart, and a Thinking
    one is given room to reason (2048 new tokens unless --max-new-tokens says otherwise)."""
    from eval.runner import RunConfig, family_defaults, resolve_family, thinking_file
    from tests.test_families_data import THINKING_TEMPLATE, _model

    thinking = _model(tmp_path / "Qwen3-VL-8B-Thinking", "qwen3_vl", THINKING_TEMPLATE, where="jinja")
    instruct = _model(tmp_path / "Qwen3-VL-8B-Instruct", "qwen3_vl", "{{ messages }}", where="jinja")
    budgets = {}
    for name, model, asked in (
        ("thinking", thinking, None),
        ("instruct", instruct, None),
        ("asked", thinking, 64),
    ):
        cfg = RunConfig(model=str(model), bench="", output_dir=str(tmp_path / name), max_new_tokens=asked)
        fam = resolve_family(cfg).family
        found = thinking_file(cfg, fam)
        budgets[name] = (family_defaults(cfg, fam, found is not None).max_new_tokens, found)
    assert budgets["thinking"] == (2048, thinking / "chat_template.jinja")
    assert budgets["instruct"] == (128, None) and budgets["asked"][0] == 64
    # the same answer is read after the think block, and only there
    text = '<think>maybe {"bbox_2d": [1, 2, 3, 4]}</think>{"bbox_2d": [100, 200, 300, 400]}'
    assert families.parse_answer(text, "qwen3-vl").box == (100, 200, 300, 400)
