"""MG-Thinker's rewards (rl/mgthinker.py) against hand-computed values, and `python -m rl rewards --profile
mgthinker`. Pure Python (no model): no lock needed.

Targets unless said otherwise: T1 = image 1, [0, 0, 100, 100] (area 10,000); T2 = image 2,
[200, 200, 400, 400] (area 40,000); 2 images. format = 0.25*T + 0.25*A + 0.5*J; g(u) = 1 at >= 0.9, u
from 0.1, 0 below; image = agreeing pairs / n * min(1, n/m); iou = sum g / n * min(1, n/m).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from rl import mgthinker, rewards
from rl.__main__ import main

T1 = {"image_index": 1, "box": [0, 0, 100, 100]}
T2 = {"image_index": 2, "box": [200, 200, 400, 400]}
ZERO = {"format": 0.0, "image": 0.0, "iou": 0.0, "total": 0.0}


def obj(image_id, box, **extra) -> dict:
    return {"image_id": image_id, "bbox_2d": box, **extra}


def answer(*objects, think="The targets are found.") -> str:
    return f"<think>{think}</think><answer>{json.dumps(list(objects))}</answer>"


def mg(text, targets=(T1, T2), num_images=2, **kw) -> dict:
    return mgthinker.score(text, targets=list(targets), num_images=num_images, **kw)


# ---------------------------------------------------------------- g and the one-to-one match


@pytest.mark.parametrize(
    "u, expected",
    [(1.0, 1.0), (0.9, 1.0), (0.899, 0.899), (0.5, 0.5), (0.1, 0.1), (0.0999, 0.0), (0.0, 0.0)],
)
def test_g(u, expected):
    assert mgthinker.g(u) == pytest.approx(expected)


def test_both_targets_in_the_given_order_and_swapped_score_the_same():
    right = {"format": 1.0, "image": 1.0, "iou": 1.0, "total": 3.0}
    assert mg(answer(obj(1, T1["box"]), obj(2, T2["box"]))) == right
    assert mg(answer(obj(2, T2["box"]), obj(1, T1["box"]))) == right  # order of the list is free
    assert list(mg(answer(obj(1, T1["box"])))) == ["format", "image", "iou", "total"]


def test_swapped_ids_match_the_image_but_not_the_box():
    # id 2 holds T1's box: it pairs with T2 (ids agree) at IoU 0 -> 1 + g(0) = 1; likewise id 1 with T1.
    r = mg(answer(obj(2, T1["box"]), obj(1, T2["box"])))
    assert r == {"format": 1.0, "image": 1.0, "iou": 0.0, "total": 2.0}


def test_wrong_ids_score_nothing_but_format():
    # num_images 3: id 3 is a valid id (J holds) that agrees with no target.
    r = mg(answer(obj(3, T1["box"]), obj(3, T2["box"])), num_images=3)
    assert r == {"format": 1.0, "image": 0.0, "iou": 0.0, "total": 1.0}


def test_iou_through_g():
    # T1 with [0, 0, 100, 50]: 5,000 / 10,000 = 0.5; T2 with [200, 200, 400, 390]: 38,000 / 40,000 = 0.95 -> 1
    r = mg(answer(obj(1, [0, 0, 100, 50]), obj(2, [200, 200, 400, 390])))
    assert r["image"] == 1.0 and r["iou"] == pytest.approx((0.5 + 1.0) / 2)
    # [0, 0, 100, 5]: 0.05 -> 0 (below 0.1), and the pair still counts for the image
    r = mg(answer(obj(1, [0, 0, 100, 5])), targets=[T1])
    assert (r["image"], r["iou"]) == (1.0, 0.0)
    # [0, 0, 10, 100]: exactly 0.1 -> 0.1; [0, 0, 100, 90]: exactly 0.9 -> 1
    assert mg(answer(obj(1, [0, 0, 10, 100])), targets=[T1])["iou"] == pytest.approx(0.1)
    assert mg(answer(obj(1, [0, 0, 100, 90])), targets=[T1])["iou"] == 1.0


def test_extra_predictions_are_paid_for():
    # n = 1, m = 4 (one exact, three elsewhere in image 1): 1/1 * min(1, 1/4) = 0.25 for image and iou
    r = mg(
        answer(
            obj(1, T1["box"]), obj(1, [500, 500, 600, 600]), obj(1, [700, 0, 800, 50]), obj(2, [1, 1, 2, 2])
        ),
        targets=[T1],
    )
    assert r == {"format": 1.0, "image": 0.25, "iou": 0.25, "total": 1.5}
    # n = 2, m = 3: T1 exact (g 1), T2 half ([200, 200, 400, 300]: 20,000 / 40,000 = 0.5), one extra:
    # image = 2/2 * 2/3; iou = (1 + 0.5)/2 * 2/3 = 0.5
    r = mg(answer(obj(1, T1["box"]), obj(2, [200, 200, 400, 300]), obj(1, [500, 500, 600, 600])))
    assert r["image"] == pytest.approx(2 / 3) and r["iou"] == pytest.approx(0.5)
    # the same box twice for one target: one of them is matched, 1 * 1/2
    r = mg(answer(obj(1, T1["box"]), obj(1, T1["box"])), targets=[T1])
    assert (r["image"], r["iou"]) == (0.5, 0.5)


def test_missing_predictions_score_their_share():
    # n = 2, m = 1: 1/2 * min(1, 2) = 0.5
    assert mg(answer(obj(1, T1["box"]))) == {"format": 1.0, "image": 0.5, "iou": 0.5, "total": 2.0}


def test_the_assignment_is_the_best_one_not_the_greedy_one():
    # Two targets in image 1: A = [0,0,100,100], B = [0,0,100,95]; P1 = [0,0,100,97] fits both
    # (IoU 0.97 with A, 9,500/9,700 with B: g = 1 either way); P2 = [0,50,100,100] has IoU 0.5 with A
    # and 4,500/10,000 = 0.45 with B. P1->A, P2->B totals 2 + 1.45; P1->B, P2->A totals 2 + 1.5: the best.
    a, b = {"image_index": 1, "box": [0, 0, 100, 100]}, {"image_index": 1, "box": [0, 0, 100, 95]}
    r = mg(answer(obj(1, [0, 0, 100, 97]), obj(1, [0, 50, 100, 100])), targets=[a, b])
    assert r["image"] == 1.0 and r["iou"] == pytest.approx((1.0 + 0.5) / 2)
    m = mgthinker.evaluate(answer(obj(1, [0, 0, 100, 97]), obj(1, [0, 50, 100, 100])), [a, b], 2)
    assert sorted(m.pairs) == [(0, 1, pytest.approx(0.5)), (1, 0, 1.0)]


def test_hungarian_equals_brute_force_on_random_small_cases():
    rng = random.Random(0)

    def rand_box():
        x, y = rng.randrange(0, 800), rng.randrange(0, 800)
        return [x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)]

    for _ in range(200):
        n, m = rng.randint(1, 4), rng.randint(1, 5)
        targets = [{"image_index": rng.randint(1, 2), "box": rand_box()} for _ in range(n)]
        preds = []
        for _ in range(m):
            t = rng.choice(targets)  # near a target, so that IoUs span the whole range
            preds.append(obj(rng.randint(1, 2), [v + rng.randint(-30, 30) for v in t["box"]]))
        preds = [p for p in preds if p["bbox_2d"][0] < p["bbox_2d"][2] and p["bbox_2d"][1] < p["bbox_2d"][3]]
        if not preds:
            continue
        gains = [
            [
                1 + mgthinker.g(rewards.box_iou(p["bbox_2d"], t["box"]))
                if p["image_id"] == t["image_index"]
                else 0.0
                for p in preds
            ]
            for t in targets
        ]
        k = min(n, len(preds))
        best = max(
            sum(gains[i][j] for i, j in zip(rows, cols, strict=True))
            for rows in itertools.combinations(range(n), k)
            for cols in itertools.permutations(range(len(preds)), k)
        )
        m_ = mgthinker.evaluate(answer(*preds), targets, 2)
        total = sum(1 + g for _, _, g in m_.pairs)
        assert total == pytest.approx(best)


# ---------------------------------------------------------------- the format: T, A, J


@pytest.mark.parametrize(
    "text, fmt",
    [
        (answer(obj(1, T1["box"])), 1.0),
        (f"  \n{answer(obj(1, T1['box']))}\n\n ", 1.0),  # whitespace around
        (f"<answer>{json.dumps([obj(1, T1['box'])])}</answer>", 0.75),  # no think: A and J
        (
            f"Sure. <think>x</think> then <answer>{json.dumps([obj(1, T1['box'])])}</answer>",
            1.0,
        ),  # text between
        (answer(obj(1, T1["box"])) + " done", 0.25),  # text after </answer>: no A, so no J
        (answer(obj(1, T1["box"])) + "<answer>x</answer>", 0.25),  # two answers
        ("<think>x</think>", 0.25),  # no answer at all
        ("<think>x</think><answer>[1, 2]</answer>", 0.5),  # T and A, the span is no object list
        (f"<answer>{json.dumps([obj(1, T1['box'])])}</answer><think>x</think>", 0.25),  # answer first: T only
        (
            "</think>x<think>" + f"<answer>{json.dumps([obj(1, T1['box'])])}</answer>",
            0.0,
        ),  # T wrong order, open
        ("<THINK>x</THINK><ANSWER>[]</ANSWER>", 0.0),  # tags are case-sensitive
        ("", 0.0),
    ],
)
def test_format_components(text, fmt):
    assert mg(text, targets=[T1])["format"] == fmt


def test_an_answer_inside_think_never_scores():
    good = json.dumps([obj(1, T1["box"])])
    # T holds, the answer tags sit inside the think block: A fails, no prediction
    assert mg(f"<think>maybe <answer>{good}</answer></think>", targets=[T1]) == {
        **ZERO,
        "format": 0.25,
        "total": 0.25,
    }
    # an unclosed think: everything after <think> is reasoning
    assert mg(f"<think>maybe <answer>{good}</answer>", targets=[T1]) == ZERO
    assert mg(f"<think>a</think><think>b <answer>{good}</answer>", targets=[T1]) == ZERO
    # a think block inside the answer span
    assert mg(f"<think>a</think><answer><think>{good}</answer>", targets=[T1]) == ZERO
    # and boxes inside <think> never count: only the answer's (IoU 0.5 here) does
    text = f"<think>it is {good}</think><answer>{json.dumps([obj(1, [0, 0, 100, 50])])}</answer>"
    assert mg(text, targets=[T1])["iou"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "body, j",
    [
        ("```json\n" + json.dumps([obj(1, [0, 0, 100, 100])]) + "\n```", True),
        ("```JSON\n" + json.dumps([obj(1, [0, 0, 100, 100])]) + "```", True),
        ("```\n" + json.dumps([obj(1, [0, 0, 100, 100])]) + "\n```", True),
        ("```json\n" + json.dumps([obj(1, [0, 0, 100, 100])]), False),  # unclosed fence
        ("```json\n[]\n``` and ```json\n[]\n```", False),  # two fences
        (json.dumps(obj(1, [0, 0, 100, 100])), False),  # one object, not a list
        ("[]", False),  # no object
        (json.dumps([obj(1, [0, 0, 100, 100], label="cat")]), True),  # labels and other keys are free
        (json.dumps([obj(1, [0, 0, 100, 100])]) + " and more", False),  # text after the list
        ("Here: " + json.dumps([obj(1, [0, 0, 100, 100])]), False),  # text before it
        (json.dumps([obj(True, [0, 0, 100, 100])]), False),  # a bool is not an id
        (json.dumps([obj(1.0, [0, 0, 100, 100])]), False),  # nor a float
        (json.dumps([obj("1", [0, 0, 100, 100])]), False),
        (json.dumps([obj(0, [0, 0, 100, 100])]), False),  # ids are 1-based
        (json.dumps([obj(3, [0, 0, 100, 100])]), False),  # two images only
        (json.dumps([obj(1, [100, 0, 100, 100])]), False),  # x1 == x2
        (json.dumps([obj(1, [100, 0, 0, 100])]), False),  # x1 > x2
        (json.dumps([obj(1, [0, 100, 100, 100])]), False),  # y1 == y2
        (json.dumps([obj(1, [0, 0, 100])]), False),  # three numbers
        (json.dumps([obj(1, [0, 0, True, 100])]), False),
        (json.dumps([obj(1, [0, 0, "100", 100])]), False),
        ('[{"image_id": 1, "bbox_2d": [0, 0, NaN, 100]}]', False),
        ('[{"image_id": 1, "bbox_2d": [0, 0, Infinity, 100]}]', False),
        ('[{"image_id": 1, "bbox_2d": [0, 0, 1e999, 100]}]', False),  # overflows to inf
        ('[{"image_id": 1, "bbox_2d": [0, 0, ' + "9" * 40 + ", 100]}]", False),  # an unbounded number
        ('[{"image_id": ' + "1" * 5000 + ', "bbox_2d": [0, 0, 1, 1]}]', False),
        (json.dumps([obj(1, [0, 0, 100, 100]), {"image_id": 1}]), False),  # one bad object fails J
        (json.dumps([obj(1, [0, 0, 100, 100]), 7]), False),
        (json.dumps([obj(1, [0.5, 0.5, 99.5, 99.5])]), True),  # floats are numbers
        ('[{"image_id": 1, "image_id": 2, "bbox_2d": [0, 0, 100, 100]}]', True),  # JSON: the last key wins
    ],
)
def test_json_rule(body, j):
    r = mg(f"<think>x</think><answer>{body}</answer>", targets=[T1])
    assert r["format"] == (1.0 if j else 0.5)
    if not j:
        assert (r["image"], r["iou"]) == (0.0, 0.0)


def test_sixteen_objects_at_most():
    sixteen = [obj(1, T1["box"])] + [obj(2, [10 * i, 10 * i, 10 * i + 5, 10 * i + 5]) for i in range(15)]
    r = mg(answer(*sixteen), targets=[T1])
    assert r["format"] == 1.0 and r["image"] == pytest.approx(1 / 16)  # n/m = 1/16
    r = mg(answer(*sixteen, obj(2, [0, 0, 5, 5])), targets=[T1])  # 17 objects: no J, no prediction
    assert r == {**ZERO, "format": 0.5, "total": 0.5}


# ---------------------------------------------------------------- hostile and odd text


def test_hostile_text_never_raises():
    deep = "[" * 100_000
    for text in (
        f"<think>x</think><answer>{'[' * 5000}{']' * 5000}</answer>",  # RecursionError inside the decoder
        f"<think>x</think><answer>{deep}</answer>",  # an answer span over MAX_ANSWER_CHARS
        "<think>" * 50_000,  # over MAX_COMPLETION_CHARS
        "<think>" * 10_000 + "</answer>" * 1_000 + "<answer>[]</answer>",  # under it: counted, not parsed
        '<think>x</think><answer>[{"image_id": 1, "bbox_2d": [0, 0, 1, 1], "label": "\ud800"}]</answer>',
        '<think>\udfff</think><answer>[{"image_id": 1, "bbox_2d": [0, 0, 1e308, 1e308]}]</answer>',
        None,
        42,
        {"content": "x"},
        [{"role": "assistant", "content": 5}],
    ):
        r = mg(text, targets=[T1])
        assert set(r) == {"format", "image", "iou", "total"}
        assert all(0.0 <= r[k] <= 1.0 for k in ("format", "image", "iou"))
    # a lone surrogate in a label is fine; a box of 1e308 overflows the union: IoU 0, not NaN
    r = mg(
        '<think>\udfff</think><answer>[{"image_id": 1, "bbox_2d": [0, 0, 1e308, 1e308]}]</answer>',
        targets=[T1],
    )
    assert r == {"format": 1.0, "image": 1.0, "iou": 0.0, "total": 2.0}
    # text over MAX_COMPLETION_CHARS is not read
    long = answer(obj(1, T1["box"]), think="x" * mgthinker.MAX_COMPLETION_CHARS)
    assert mg(long, targets=[T1]) == ZERO


def test_conversational_completions_and_an_opened_think():
    messages = [{"role": "assistant", "content": [{"type": "text", "text": answer(obj(1, T1["box"]))}]}]
    assert mg(messages, targets=[T1])["total"] == 3.0
    (fmt, _, _) = mgthinker.reward_functions(opened_think=True)
    body = f"x</think><answer>{json.dumps([obj(1, T1['box'])])}</answer>"  # the prompt opened <think>
    assert fmt([body], num_images=[2], targets=[[T1]]) == [1.0]


# ---------------------------------------------------------------- families


def test_qwen25_pixels_of_each_image():
    # image 1 resized to 200x100, image 2 to 400x400: T1's grid box [0,0,100,100] is [0,0,20,10] pixels,
    # T2's [200,200,400,400] is [80,80,160,160]
    sizes = [[200, 100], [400, 400]]
    text = answer(obj(2, [80, 80, 160, 160]), obj(1, [0, 0, 20, 10]))
    r = mg(text, family="qwen2.5-vl", resized_sizes=sizes)
    assert r == {"format": 1.0, "image": 1.0, "iou": 1.0, "total": 3.0}
    # the same numbers read on the grid are wrong boxes
    assert mg(text)["iou"] == 0.0
    # [0,0,20,5] pixels of image 1 = [0,0,100,50] on the grid: IoU 0.5 with T1
    assert mg(answer(obj(1, [0, 0, 20, 5])), targets=[T1], family="qwen2.5-vl", resized_sizes=sizes)[
        "iou"
    ] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="resized_sizes"):
        mg(text, family="qwen2.5-vl")
    with pytest.raises(ValueError, match="resized_sizes"):
        mg(text, family="qwen2.5-vl", resized_sizes=[[200, 100]])


def test_qwen3_reads_the_grid():
    assert mg(answer(obj(1, T1["box"]), obj(2, T2["box"])), family="qwen3-vl")["total"] == 3.0


# ---------------------------------------------------------------- ground truth, weights, TRL functions


def test_single_target_fields_and_targets():
    text = answer(obj(1, T1["box"]))
    single = mgthinker.score(text, num_images=2, image_index=1, box=T1["box"])
    assert single == mg(text, targets=[T1]) == {"format": 1.0, "image": 1.0, "iou": 1.0, "total": 3.0}
    # targets win over image_index + box when both are there
    assert mgthinker.score(text, num_images=2, targets=[T2], image_index=1, box=T1["box"])["image"] == 0.0


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"targets": [], "num_images": 2}, "non-empty"),
        ({"targets": [T1, {"image_index": 3, "box": [0, 0, 1, 1]}], "num_images": 2}, r"targets\[1\]"),
        ({"targets": [{"image_index": 1, "box": [0, 0, 1001, 5]}], "num_images": 2}, "0-1000"),
        ({"targets": ["x"], "num_images": 2}, r"targets\[0\]"),
        ({"targets": [T1], "num_images": 0}, "num_images"),
        ({"targets": [T1], "num_images": True}, "num_images"),
        ({"num_images": 2}, "targets"),
    ],
)
def test_bad_ground_truth_is_refused_by_name(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        mgthinker.score("garbage", **kwargs)


def test_weights_and_the_profile_table():
    text = answer(obj(1, [0, 0, 100, 50]))  # format 1, image 1, iou 0.5
    assert mg(text, targets=[T1], weights="1,2,0.5")["total"] == pytest.approx(1 + 2 + 0.25)
    assert mg(text, targets=[T1], weights={"iou": 2})["total"] == pytest.approx(1 + 1 + 1.0)
    with pytest.raises(ValueError, match="3 weights"):
        mg(text, targets=[T1], weights="1,1")
    prof = rewards.get_profile("mgthinker")
    assert prof.names == ("format", "image", "iou") and prof.weights == (1.0, 1.0, 1.0)


def test_trl_reward_functions_mix_single_and_multi_target_rows():
    funcs = mgthinker.reward_functions(weights="1,1,2")
    assert [f.__name__ for f in funcs] == ["format", "image", "iou"]
    both = answer(obj(1, T1["box"]), obj(2, [200, 200, 400, 300]))  # T1 exact, T2 at 0.5
    kwargs = {
        "num_images": [2, 2],
        "targets": [[T1, T2], None],  # the second row is a single-target record
        "image_index": [1, 1],
        "box": [T1["box"], T1["box"]],
    }
    assert funcs[0]([both, "junk"], **kwargs) == [1.0, 0.0]
    assert funcs[1]([both, both], **kwargs) == [1.0, 0.5]  # one target: m = 2 > n = 1
    assert funcs[2]([both, both], **kwargs) == [pytest.approx(2 * 0.75), pytest.approx(2 * 0.5)]
    with pytest.raises(ValueError, match="values of num_images"):
        funcs[0]([both], **kwargs)


# ---------------------------------------------------------------- python -m rl rewards --profile mgthinker


def test_cli_scores_lines_in_order(tmp_path, capsys):
    lines = [
        {
            "id": "multi",
            "completion": answer(obj(2, T2["box"]), obj(1, T1["box"])),
            "num_images": 2,
            "targets": [T1, T2],
        },
        {"id": "single", "completion": answer(obj(1, [0, 0, 100, 50])), "num_images": 2, **T1},
        {
            "id": "inside-think",
            "completion": f"<think><answer>{json.dumps([obj(1, T1['box'])])}</answer></think>",
            "num_images": 2,
            "targets": [T1],
        },
        {"id": "no-gt", "completion": "x", "num_images": 2},
        {
            "id": "bad-gt",
            "completion": "x",
            "num_images": 2,
            "targets": [{"image_index": 9, "box": [0, 0, 1, 1]}],
        },
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    code = main(["rewards", "--profile", "mgthinker", "--input", str(src), "--output", str(dst)])
    assert code == 3  # partial: some lines malformed
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert [o.get("id") for o in out] == ["multi", "single", "inside-think", "no-gt", "bad-gt", None]
    assert {k: out[0][k] for k in ("format", "image", "iou", "total")} == {
        "format": 1.0,
        "image": 1.0,
        "iou": 1.0,
        "total": 3.0,
    }
    assert {k: out[1][k] for k in ("format", "image", "iou", "total")} == {
        "format": 1.0,
        "image": 1.0,
        "iou": 0.5,
        "total": 2.5,
    }
    assert out[2]["format"] == 0.25 and out[2]["total"] == 0.25
    assert "missing image_index, box" in out[3]["error"]
    assert "targets[0]" in out[4]["error"] and "format" not in out[4]
    assert "not JSON" in out[5]["error"]
    # weights overridable as for the other profiles
    code = main(
        [
            "rewards",
            "--profile",
            "mgthinker",
            "--weights",
            "0,0,1",
            "--input",
            str(src),
            "--output",
            str(dst),
            "--force",
        ]
    )
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert out[1]["total"] == 0.5
    assert "weights 0,0,1" in capsys.readouterr().out


def test_cli_names_a_lone_surrogate_line_and_scores_the_rest(tmp_path):
    """The pack's one JSONL reader (converters.streaming.decode_json_line) names a line holding a lone
    surrogate escape as malformed (no UTF-8 file can hold it); the other lines are scored (exit 3)."""
    src = tmp_path / "in.jsonl"
    text = answer(obj(1, T1["box"]), think="\ud800")  # json.dumps writes it as the escape \\ud800
    good = answer(obj(1, T1["box"]))
    src.write_text(
        json.dumps({"id": "s", "completion": text, "num_images": 1, **T1})
        + "\n"
        + json.dumps({"id": "g", "completion": good, "num_images": 1, **T1})
        + "\n",
        encoding="utf-8",
    )
    dst = tmp_path / "out.jsonl"
    assert main(["rewards", "--profile", "mgthinker", "--input", str(src), "--output", str(dst)]) == 3
    bad, ok = (json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines())
    assert "lone surrogate" in bad["error"] and ok["total"] == 3.0


# ---------------------------------------------------------------- the RL set's targets column (rl/data.py)


def test_rl_records_carry_their_targets(tmp_path):
    from PIL import Image

    from rl.data import to_example

    paths = []
    for j in range(2):
        paths.append(str(tmp_path / f"{j}.png"))
        Image.new("RGB", (28, 28)).save(paths[-1])
    record = {
        "id": "r",
        "images": paths,
        "conversations": [
            {"from": "human", "value": "<image><image>Find both."},
            {"from": "gpt", "value": "x"},
        ],
        "image_index": 1,
        "box": T1["box"],
        "num_images": 2,
    }
    assert to_example(record)["targets"] == [T1]  # one target: its own image_index + box
    assert to_example({**record, "targets": [T1, T2]})["targets"] == [T1, T2]
    for bad, needle in (
        ([], "non-empty"),
        ([T1, {"image_index": 3, "box": [0, 0, 1, 1]}], r"targets\[1\]: image_index 3"),
        ([{"image_index": 1, "box": [0, 0, 1001, 1]}], r"targets\[0\]: box"),
        ([{"image_index": 1, "box": [0.5, 0, 10, 10]}], r"targets\[0\]: box"),
    ):
        with pytest.raises(ValueError, match=needle):
            to_example({**record, "targets": bad})
