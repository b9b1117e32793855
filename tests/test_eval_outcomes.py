"""The outcome taxonomy (eval/outcomes.py) through `python -m eval score`, on hand-made predictions.

Each line's expected outcome is worked out in the comment beside it; Acc@0.5 must stay hits / n.
"""

from __future__ import annotations

import json

import pytest

from eval import outcomes
from tests.conftest import run_main

GT = [0.1, 0.2, 0.3, 0.4]
BOX = "<|box_start|>(100,200),(300,400)<|box_end|>"  # = GT on the 0-1000 grid
FAR = "<|box_start|>(600,600),(900,900)<|box_end|>"  # IoU 0 with GT


def line(index, task, response, target=1, n=3, **extra):
    return {
        "index": index,
        "task": task,
        "response": response,
        "answer": GT,
        "images": [f"./MIG-Bench/images/{task}/{index}_{k}.png" for k in range(n)],
        "n_images": n,
        "target_image": target,
        **extra,
    }


LINES = [
    line(0, "common_object", BOX),  # hit
    line(1, "common_object", f"[2-1] {BOX}"),  # hit, and names the target (image 2 = index 1)
    line(
        2, "common_object", f"[3-1] {BOX}"
    ),  # hit although it names image 3: scored on the target, as Acc@0.5
    line(3, "common_object", f"[3-1] {FAR}"),  # wrong_image
    line(4, "common_object", f"In Image 1: {FAR}"),  # wrong_image (Image N counts too)
    line(5, "common_object", f"[2-1] {FAR}"),  # miss: the target image, IoU 0
    line(6, "common_object", FAR),  # miss: no image named
    line(7, "common_object", "I cannot see it."),  # unparsed
    line(8, "common_object", "[3-1] but no box"),  # unparsed: no box read, whatever image is named
    {"index": 9, "task": "common_object", "skipped": "image not found: x.png", "response": ""},  # unparsed
    line(10, "diff", BOX, target=1, n=2),  # hit
    line(11, "diff", f"[1-1] {FAR}", target=None, n=2),  # miss: no known target, so no wrong image
]
EXPECTED = ["hit", "hit", "hit", "wrong_image", "wrong_image", "miss", "miss", "unparsed", "unparsed"]
EXPECTED += ["unparsed", "hit", "miss"]


def score(tmp_path, lines, *extra) -> tuple[dict, str]:
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    out = tmp_path / "scored"
    proc = run_main("eval", ["score", "--predictions", preds, "--output-dir", out, *extra])
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "metrics.json").read_text()), (out / "results.md").read_text()


def test_each_outcome_by_hand_and_acc_is_hits_over_n(tmp_path):
    metrics, results = score(tmp_path, LINES)
    co, diff = metrics["tasks"]["common_object"], metrics["tasks"]["diff"]
    assert co["outcomes"] == {"hit": 3, "miss": 2, "wrong_image": 2, "unparsed": 3}
    assert diff["outcomes"] == {"hit": 1, "miss": 1, "wrong_image": 0, "unparsed": 0}
    for m in metrics["tasks"].values():
        assert sum(m["outcomes"].values()) == m["n"]
        assert m["acc@0.5"] == round(100.0 * m["outcomes"]["hit"] / m["n"], 4)
    assert "| Common | 10 | 3 | 2 | 2 | 3 |" in results
    assert "![Outcomes per task](outcomes.png)" in results and "view/index.html" in results
    png = (tmp_path / "scored" / "outcomes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_classify_one_record_at_a_time():
    from eval.runner import score_records

    scored, _ = score_records(LINES, "grid1000", "none")
    assert [r["outcome"] for r in scored] == EXPECTED
    assert [outcomes.classify(r, "official") for r in scored] == EXPECTED


@pytest.mark.parametrize(
    ("fmt", "response", "expected"),
    [
        # think: the box inside <think> is not read; an answer span without a box is unparsed
        ("think", f"<think>{BOX}</think><answer>none</answer>", "unparsed"),
        (
            "think",
            f"<think>[3-1]</think><answer>[2-1] {FAR}</answer>",
            "miss",
        ),  # the think's image is not read
        ("think", f"<think>[2-1]</think><answer>[3-1] {FAR}</answer>", "wrong_image"),
        # json: image_id names the image (1-based); a box-token answer is no answer in this format
        ("json", '{"bbox_2d": [600, 600, 900, 900], "image_id": 3}', "wrong_image"),
        ("json", '```json\n[{"bbox_2d": [600, 600, 900, 900], "image_id": "2"}]\n```', "miss"),
        ("json", '{"bbox_2d": [100, 200, 300, 400], "image_id": 1}', "hit"),
        ("json", BOX, "unparsed"),
        (
            "think-json",
            '<think>{"image_id": 2}</think><answer>{"bbox_2d": [1,1,2,2], "image_id": 1}</answer>',
            "wrong_image",
        ),
    ],
)
def test_answer_formats(fmt, response, expected):
    from eval.runner import score_records

    [rec], _ = score_records([line(0, "common_object", response)], "grid1000", "none", fmt)
    assert rec["outcome"] == expected


def test_a_huge_or_hostile_answer_names_no_image():
    from eval import answers

    assert answers.json_image_id('{"image_id": 2}' + " " * 20_000) is None  # over the answer bound
    assert answers.json_image_id('{"image_id": 12345}') is None  # more than 3 digits: not an index
    assert answers.json_image_id('<think>{"image_id": 2}') is None  # an unclosed think holds no answer
    assert answers.named_image("\ud800[2-1]", "official") == 2
