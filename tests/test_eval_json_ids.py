"""`--answer-format think-json-ids` (eval/json_ids.py): MG-Thinker's JSON image-id answers, values by hand.

The box scored is the one the answer gives for the target image; image_acc in metrics.json is the share of
answers whose first object names the target; boxes in <think> and an <answer> inside <think> never count.
"""

from __future__ import annotations

import json

from eval import answers, scoring
from tests.conftest import run_main

FMT = "think-json-ids"
GT = [0.5, 0.5, 1.0, 1.0]  # 0-1 on the target image (image 2: target_image 1)


def ids(*objects, think="Image 1 has a lamp at [0, 0, 500, 500]; it did not change.") -> str:
    body = json.dumps([{"image_id": k, "bbox_2d": b} for k, b in objects])
    return f"<think>{think}</think><answer>{body}</answer>"


def score(text, target_image=1, **kw):
    return scoring.score_response(text, GT, answer_format=FMT, target_image=target_image, **kw)


def test_the_target_images_box_is_scored():
    # image 1's box first, then image 2's (the target): the target's box [500,500,1000,1000] -> IoU 1
    r = score(ids((1, [0, 0, 500, 500]), (2, [500, 500, 1000, 1000])))
    assert (
        r["parsed"] == [500.0, 500.0, 1000.0, 1000.0] and r["iou"] == 1.0 and r["pattern"] == "json_bbox_2d"
    )
    # the right box under the wrong id is a miss; the official parse would take the first box anywhere
    r = score(ids((1, [500, 500, 1000, 1000])))
    assert r == {"parsed": None, "pattern": None, "box": None, "iou": 0.0}
    # no target known: the first object ([0,0,500,500] only touches GT at a corner -> IoU 0)
    assert score(ids((1, [0, 0, 500, 500]), (2, [500, 500, 1000, 1000])), target_image=None)["iou"] == 0.0
    # Qwen2.5-VL pixels of the target image (resized 200x100): [100,50,200,100] -> [.5,.5,1,1]
    r = score(ids((2, [100, 50, 200, 100])), coords="resized-pixels", size=[200, 100])
    assert r["iou"] == 1.0


def test_boxes_in_think_and_answers_inside_think_never_count():
    good = json.dumps([{"image_id": 2, "bbox_2d": [500, 500, 1000, 1000]}])
    for text in (
        f"<think>it is {good}</think>",  # only in <think>
        f"<think>maybe <answer>{good}</answer></think>",  # an <answer> nested in <think>
        f"<think>maybe <answer>{good}</answer>",  # an unclosed <think>
        f"<think>x</think><answer>{good}",  # an unclosed <answer>
        f"<think>x</think><answer>{good}</answer> more",  # text after </answer>
        "<think>x</think><answer>[{'image_id': 2}]</answer>",
    ):
        assert score(text)["iou"] == 0.0, text
        assert answers.named_image(text, FMT) is None
    # `think` (the MIRG-RL format) does not count the nested answer either (issue 25)
    nested = "<think>maybe <answer>[2-1] (500,500),(1000,1000)</answer></think>"
    assert scoring.score_response(nested, GT, answer_format="think")["iou"] == 0.0


def test_answer_stats_image_acc_by_hand():
    recs = [
        # names image 2 first, the target -> right; well formed
        {"task": "diff", "response": ids((2, [500, 500, 1000, 1000])), "n_images": 2, "target_image": 1},
        # names image 1 first -> wrong (its second object, the target's, is still the box scored)
        {
            "task": "diff",
            "response": ids((1, [0, 0, 9, 9]), (2, [1, 1, 5, 5])),
            "n_images": 2,
            "target_image": 1,
        },
        # no think: names image 2 -> right, not well formed (T fails)
        {
            "task": "diff",
            "response": '<answer>[{"image_id": 2, "bbox_2d": [1, 1, 5, 5]}]</answer>',
            "n_images": 2,
            "target_image": 1,
        },
        # image id 3 of 2 images: names 3 (scoring reads any id), not well formed
        {"task": "diff", "response": ids((3, [1, 1, 5, 5])), "n_images": 2, "target_image": 1},
    ]
    stats, _ = answers.answer_stats(recs, FMT)
    # well formed: 2 of 4; image_acc: 2 right of 4 naming an image
    assert stats["diff"] == {"well_formed": 50.0, "image_acc": 50.0, "image_named": 4}


def test_eval_score_writes_image_acc_to_metrics(tmp_path):
    rows = [
        {
            "index": 0,
            "task": "diff",
            "target_image": 1,
            "n_images": 2,
            "answer": GT,
            "response": ids((2, [500, 500, 1000, 1000])),
        },
        {
            "index": 1,
            "task": "diff",
            "target_image": 0,
            "n_images": 2,
            "answer": [0.0, 0.0, 0.5, 0.5],
            "response": ids((2, [0, 0, 500, 500])),
        },  # the right box in the wrong image: a miss, image wrong
        {
            "index": 2,
            "task": "region",
            "target_image": 0,
            "n_images": 2,
            "answer": [0.0, 0.0, 0.5, 0.5],
            "response": f"<think>{ids((1, [0, 0, 500, 500]))}</think>",
        },  # all inside <think>: nothing
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "scored"
    proc = run_main(
        "eval", ["score", "--predictions", str(path), "--output-dir", str(out), "--answer-format", FMT]
    )
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads((out / "metrics.json").read_text())["tasks"]
    assert (tasks["diff"]["acc@0.5"], tasks["diff"]["image_acc"], tasks["diff"]["well_formed"]) == (
        50.0,
        50.0,
        100.0,
    )
    assert (tasks["region"]["acc@0.5"], tasks["region"]["image_acc"], tasks["region"]["well_formed"]) == (
        0.0,
        None,
        0.0,
    )
    assert "MG-Thinker's think/answer/JSON-ids rule" in (out / "results.md").read_text()
