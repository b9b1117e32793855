"""Both datagen pipelines end to end against the scripted stand-in teacher, and the request cache.

Why: the outside service is the only stand-in; detections, grouping, parsing, validation, the cache,
the converters that read the output are all the real ones. A rerun must make zero requests; a run
stopped by the teacher (exit 3) must, when rerun, ask only for what was not finished.
"""

from __future__ import annotations

import json
from random import Random

import pytest
from PIL import Image

from datagen.__main__ import main
from datagen.cache import CacheError, RequestCache
from tests.conftest import run_main
from tests.test_datagen_server import StandIn

CLASSES = ["cat", "dog", "ball", "dining table"]


def make_detections(root, n=10, seed=0, extra_images=(), extra_annotations=()):
    rng = Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = Image.new("RGB", (80, 60), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        img.save(root / "images" / f"{i:03d}.png")
        images.append({"id": i, "file_name": f"{i:03d}.png", "width": 80, "height": 60})
        for k in range(2):
            x, y = rng.randrange(0, 40), rng.randrange(0, 30)
            anns.append({"image_id": i, "category_id": (i + k) % 4, "bbox": [x, y, 30, 20], "iscrowd": 0})
    data = {
        "images": images + list(extra_images),
        "annotations": anns + list(extra_annotations),
        "categories": [{"id": k, "name": c} for k, c in enumerate(CLASSES)],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def ff_args(det, out, base, *extra):
    return [
        "freeform", "--detections", str(det), "--image-dir", str(det.parent / "images"),
        "--api-base", base, "--caption-model", "cap", "--refine-model", "ref", "--qa-model", "qa",
        "--output", str(out), "--retries", "1", "--quiet", *extra,
    ]  # fmt: skip


def read_json_array(path):
    return json.loads(path.read_text())


def test_freeform_end_to_end_converts_and_reruns_from_cache(tmp_path, capsys):
    det = make_detections(tmp_path / "det")
    out = tmp_path / "out"
    with StandIn() as s:
        assert main(ff_args(det, out, s.base)) == 0
        first = len(s.requests)
        # 10 images in groups of 4-6 (2 groups, every image used): 10 captions + 10 refinements + 2 QA.
        assert first == 22
        models = {r["model"] for r in s.requests}
        assert models == {"cap", "ref", "qa"}
        assert main(ff_args(det, out, s.base)) == 1  # outputs in the way without --force
        assert "--force" in capsys.readouterr().err
        assert main(ff_args(det, out, s.base, "--force")) == 0
        assert len(s.requests) == first  # a rerun asks nothing
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    assert report["steps"]["qa"]["cache_hits"] == 2 and report["steps"]["qa"]["requests"] == 0
    records = read_json_array(out / "MGrounding-630k/Free-Form/free_form_grounding_130k.json")
    assert len(records) == 2
    rec = records[0]
    assert rec["conversations"][0]["value"].startswith("<image>\n" * len(rec["images"]))
    assert "<|object_ref_start|>bright " in rec["conversations"][1]["value"]
    assert "<|box_start|>(" in rec["conversations"][1]["value"]
    for rel in rec["images"]:
        assert (out / rel).resolve().is_file()
    # The real converter reads it.
    conv = tmp_path / "conv"
    proc = run_main(
        "converters",
        ["mgrounding", "--input", out / "MGrounding-630k/Free-Form/free_form_grounding_130k.json",
         "--image-root", out, "--output", conv / "mg_free_form.json", "--rejects", conv / "rej.jsonl"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    converted = read_json_array(conv / "mg_free_form.json")
    assert len(converted) == 2 and all(p.startswith("/") for p in converted[0]["images"])


def test_freeform_resumes_after_the_teacher_stops(tmp_path):
    det = make_detections(tmp_path / "det")
    out = tmp_path / "out"
    # The server refuses for good after 15 requests (a 4xx stops the run at once: exit 3, partial).
    with StandIn(lambda n, body: (400, {"error": "quota"}, {}) if n > 15 else (200, None, {})) as s:
        assert main(ff_args(det, out, s.base, "--concurrency", "1")) == 3
    assert not (out / "MGrounding-630k").exists()
    with StandIn() as s:
        assert main(ff_args(det, out, s.base)) == 0
        assert len(s.requests) == 22 - 15  # only what was not finished


def test_cache_torn_line_and_foreign_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    with RequestCache(path) as cache:
        cache.put({"key": "a", "text": "one", "usage": {}, "finish_reason": "stop"})
        cache.put({"key": "b", "text": "two", "usage": {}, "finish_reason": "stop"})
    raw = path.read_bytes()
    path.write_bytes(raw[:-9])  # a crash in the middle of the last line
    with RequestCache(path) as cache:
        assert set(cache.entries) == {"a"}
        cache.put({"key": "c", "text": "three", "usage": {}, "finish_reason": "stop"})
    with RequestCache(path) as cache:
        assert set(cache.entries) == {"a", "c"}
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"hello": 1}\n')
    with pytest.raises(CacheError, match="not a datagen request cache"):
        RequestCache(foreign)
    assert foreign.read_text() == '{"hello": 1}\n'


def test_hostile_detections_are_skipped_with_reasons(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    det = make_detections(
        tmp_path / "det",
        extra_images=[
            {"id": 100, "file_name": "../secret.png", "width": 8, "height": 8},
            {"id": 101, "file_name": str(outside), "width": 8, "height": 8},
            {"id": 102, "file_name": "nope\x00.png", "width": 8, "height": 8},
            {"id": 103, "file_name": "000.png", "width": -5, "height": 8},
        ],
        extra_annotations=[
            {"image_id": 0, "category_id": 0, "bbox": [1e308, 0, 1e308, 5]},
            {"image_id": 0, "category_id": 99, "bbox": [0, 0, 5, 5]},
            {"image_id": 0, "category_id": 0, "bbox": ["0", 0, 5, 5]},
            {"image_id": 555, "category_id": 0, "bbox": [0, 0, 5, 5]},
        ],
    )
    out = tmp_path / "out"
    with StandIn() as s:
        assert main(ff_args(det, out, s.base)) == 0
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    assert report["detection_rejects"] == {
        "bad_box": 2,
        "bad_image_entry": 2,
        "box_without_image": 1,
        "image_outside_root": 2,
        "unknown_category": 1,
    }
    assert report["images"] == 10
    # Nothing outside --output was written (the symlinks point at the dataset's own images).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det", "out", "secret.png"]


def test_trajectories_end_to_end(tmp_path):
    from converters.trajectories import PROMPT_SUFFIX

    det = make_detections(tmp_path / "det", n=4)
    imgs = [str(det.parent / "images" / f"{i:03d}.png") for i in range(4)]
    rl = tmp_path / "mg_rl.json"
    recs = [
        {"id": f"r{k}", "type": "x", "images": imgs[:2], "task": "reasoning", "image_index": 2, "box": [100, 200, 300, 400],
         "num_images": 2, "conversations": [{"from": "human", "value": "<image>\n<image>\nFind the dog in the second image." + PROMPT_SUFFIX},
                                            {"from": "gpt", "value": "x"}]}
        for k in range(3)
    ] + [{"id": "bad", "images": imgs[:2], "image_index": 7, "box": [1, 2, 3, 4], "conversations": [{"from": "human", "value": "q"}]}]  # fmt: skip
    rl.write_text(json.dumps(recs))
    out = tmp_path / "traj"
    args = ["trajectories", "--input", str(rl), "--api-base", "", "--cot-model", "c", "--mapping-model", "m",
            "--reassembly-model", "r", "--output", str(out), "--quiet"]  # fmt: skip
    with StandIn() as s:
        args[4] = s.base
        assert main(args) == 0
        assert len(s.requests) == 9
    got = read_json_array(out / "datagen_traj_sft.json")
    assert len(got) == 3
    answer = got[0]["conversations"][1]["value"]
    assert answer.startswith("<think>") and answer.endswith(
        "<answer><bbox_id>[2-2]</bbox_id><|box_start|>(100,200),(300,400)<|box_end|></answer>"
    )
    assert "<bbox_id>[2-1]</bbox_id><|object_ref_start|>the object<|object_ref_end|>" in answer
    report = json.loads((out / "datagen_traj.report.json").read_text())
    assert report["steps"]["input"]["rejects"] == {"bad_input": 1}
    from converters.records import check_record

    for record in got:  # what LLaMA-Factory will read: roles, placeholders, boxes
        check_record(record, require_images=True)
    # registered beside it, as the converters register their sets (dataset_dir=OUT)
    registry = json.loads((out / "dataset_info.json").read_text())
    assert registry["datagen_traj_sft"]["file_name"] == "datagen_traj_sft.json"
    assert registry["datagen_traj_sft"]["columns"] == {"messages": "conversations", "images": "images"}


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--grouping", "clip"], "--grouping clip needs --clip-model"),
        (["--templates", "3"], "--templates must be 1 and/or 2"),
        (["--match-iou", "0"], "--match-iou must be in"),
        (["--max-tokens", "0"], "--max-tokens must be >= 1"),
    ],
)
def test_bad_options_are_bad_input_before_any_request(tmp_path, capsys, extra, message):
    det = make_detections(tmp_path / "det", n=4)
    with StandIn() as s:
        assert main(ff_args(det, tmp_path / "out", s.base, *extra)) == 1
        assert s.requests == []
    err = capsys.readouterr().err
    assert err.startswith("python -m datagen: error: ") and message in err


def test_input_equal_to_an_output_is_refused(tmp_path, capsys):
    det = make_detections(tmp_path / "det", n=4)
    out = tmp_path / "out"
    out.mkdir()
    clash = out / "datagen_freeform.report.json"
    clash.write_text(det.read_text())
    with StandIn() as s:
        assert main(ff_args(clash, out, s.base, "--force")) == 1
    assert "same file" in capsys.readouterr().err
    assert clash.read_text() == det.read_text()


def test_a_new_model_asks_again_only_its_step_and_stale_records_go(tmp_path, capsys):
    from tests.test_datagen_server import completion

    det = make_detections(tmp_path / "det")
    out = tmp_path / "out"
    data = out / "MGrounding-630k/Free-Form/free_form_grounding_130k.json"
    with StandIn() as s:
        assert main(ff_args(det, out, s.base)) == 0
    assert data.is_file()
    args = ff_args(det, out, "", "--force")
    args[args.index("--qa-model") + 1] = "qa-2"
    with StandIn(lambda n, body: (200, completion("Q: Where is it?\nA: Somewhere."), {})) as s:
        args[args.index("--api-base") + 1] = s.base
        assert main(args) == 1
        assert len(s.requests) == 2 and {r["model"] for r in s.requests} == {"qa-2"}
    assert "no group gave a valid QA pair" in capsys.readouterr().err
    assert not data.exists()
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    assert report["steps"]["qa"]["rejects"] == {"no_answer_box": 2}


def test_common_object_grouping_from_the_cli(tmp_path):
    det = make_detections(tmp_path / "det", n=16)
    out = tmp_path / "out"
    with StandIn() as s:
        assert main(ff_args(det, out, s.base, "--grouping", "common", "--cooccur-share", "1.1")) == 0
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    # Classes per image are (i % 4, (i + 1) % 4) and "dining table" (class 3) is excluded by D.1's list.
    assert report["groups"] >= 2 and report["groups"] * 4 + report["leftover_images"] <= 16
    records = read_json_array(out / "MGrounding-630k/Free-Form/free_form_grounding_130k.json")
    assert len(records) == report["groups"]
