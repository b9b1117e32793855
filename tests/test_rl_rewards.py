"""RL rewards (rl/rewards.py) against hand-computed values, rule by rule, and `python -m rl rewards`.

Every expected number is worked out in the comment beside it. Ground truth box G = [5, 5, 15, 15]
(area 100) unless said otherwise; the box (0,0),(10,10) overlaps it by 5 x 5 = 25, so IoU = 25 / 175.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl import rewards
from rl.__main__ import build_parser, main

REPO = Path(__file__).resolve().parents[1]
G = [5, 5, 15, 15]
SEVENTH = 25 / 175  # IoU of (0,0),(10,10) with G
BOX = "<|box_start|>(0,0),(10,10)<|box_end|>"
EXACT = "<|box_start|>(5,5),(15,15)<|box_end|>"


def mirg(text, image_index=2, box=G, num_images=2, **kw):
    return rewards.score(text, image_index=image_index, box=box, num_images=num_images, **kw)


def ta(think, answer):
    return f"<think>{think}</think><answer>{answer}</answer>"


# ---------------------------------------------------------------- mirg: the answer span and its box


def test_well_formed_answer_scores_all_three():
    r = mirg(ta("The cat is in the second image.", f"<bbox_id>[2-1]</bbox_id>cat {BOX}"))
    assert r == {
        "format": 1.0,
        "image": 1.0,
        "iou": pytest.approx(SEVENTH),
        "total": pytest.approx(2 + SEVENTH),
    }
    assert list(r) == ["format", "image", "iou", "total"]


def test_no_answer_span_scores_zero_everywhere():
    # A perfect box and image index, but only inside <think> (and an unclosed <answer>): all 0.
    assert mirg(f"<think>[2-1] {EXACT}</think>") == {"format": 0.0, "image": 0.0, "iou": 0.0, "total": 0.0}
    assert mirg(f"<think>x</think><answer>[2-1] {EXACT}")["total"] == 0.0
    assert mirg(f"[2-1] {EXACT}")["total"] == 0.0  # the official parse would score IoU 1 here


def test_prediction_is_the_answers_first_box():
    r = mirg(ta("x", f"[2-1] (0,0),(10,10) or rather {EXACT}"))
    assert r["iou"] == pytest.approx(SEVENTH)  # the first box, not the better second one
    r = mirg(ta("x", "[2-1] ( 0 , 0 ) , ( 10 , 10 )"))  # spaces allowed, no box tokens needed
    assert r["iou"] == pytest.approx(SEVENTH) and r["format"] == 1.0


def test_boxes_inside_think_never_count():
    r = mirg(ta(f"decoy {EXACT} in [2-1]", f"[2-1] {BOX}"))
    assert r["iou"] == pytest.approx(SEVENTH)  # the decoy (IoU 1) is ignored
    r = mirg(ta(f"decoy {EXACT}", "[2-1] no box here"))
    assert r["iou"] == 0.0 and r["format"] == 0.0 and r["image"] == 1.0


def test_iou_of_empty_inverted_and_disjoint_boxes():
    assert mirg(ta("x", "[2-1] (10,10),(0,0)"))["iou"] == 0.0  # inverted
    assert mirg(ta("x", "[2-1] (5,5),(5,15)"))["iou"] == 0.0  # empty (x1 == x2)
    assert mirg(ta("x", "[2-1] (20,20),(30,30)"))["iou"] == 0.0  # no overlap
    assert mirg(ta("x", "[2-1] (5,5),(15,25)"))["iou"] == pytest.approx(0.5)  # 100 / 200


# ---------------------------------------------------------------- mirg: the image index


@pytest.mark.parametrize(
    "answer, index",
    [
        (f"[3-2] {BOX}", 3),  # bare [N-M]
        (f"<bbox_id>[3-2]</bbox_id><|object_ref_start|>cat<|object_ref_end|>{BOX}", 3),  # with tags
        (f"[ 3 - 2 ] {BOX}", 3),
        (f"Image 1 then [3-2] {BOX}", 3),  # an [N-M] wins over an earlier Image N
        (f"in Image 3: {BOX}", 3),
        (f"in picture 3 {BOX}", 3),
        (f"in IMAGE-3 {BOX}", 3),
        (f"in picture3 {BOX}", 3),
        (f"image 3 and image 1 {BOX}", 3),  # the first one
        (f"in the third image {BOX}", None),  # ordinals are not an index
        (f"in images 3 {BOX}", None),
        (f"imagery3 {BOX}", None),
    ],
)
def test_image_index_rules(answer, index):
    assert rewards.predicted_image(answer, num_images=3) == index
    r = mirg(ta("x", answer), image_index=3, num_images=3)
    assert r["image"] == (1.0 if index == 3 else 0.0)
    assert r["format"] == (1.0 if index is not None else 0.0)  # several images: an index is required


def test_one_image_needs_no_index():
    r = mirg(ta("x", BOX), image_index=1, num_images=1)
    assert r == {
        "format": 1.0,
        "image": 1.0,
        "iou": pytest.approx(SEVENTH),
        "total": pytest.approx(2 + SEVENTH),
    }
    r = mirg(ta("x", BOX), image_index=1, num_images=2)  # two images, no index: image 0 and format 0
    assert (r["format"], r["image"]) == (0.0, 0.0)
    assert (
        mirg(ta("x", f"Image 2 {BOX}"), image_index=1, num_images=1)["image"] == 0.0
    )  # a named index counts


# ---------------------------------------------------------------- mirg: the format rule


@pytest.mark.parametrize(
    "text, ok",
    [
        (ta("r", f"[2-1] {BOX}"), True),
        (f"\n  {ta('r', f'[2-1] {BOX}')}  \n", True),  # whitespace around
        (f"<think>r</think>\n\n<answer>[2-1] {BOX}</answer>", True),  # whitespace between
        (ta("   \n", f"[2-1] {BOX}"), False),  # blank think
        (ta("", f"[2-1] {BOX}"), False),  # empty think
        (ta("r", "  "), False),  # blank answer
        (f"Sure! {ta('r', f'[2-1] {BOX}')}", False),  # text before
        (f"{ta('r', f'[2-1] {BOX}')} Done.", False),  # text after
        (f"<think>r</think> so <answer>[2-1] {BOX}</answer>", False),  # text between
        (f"<answer>[2-1] {BOX}</answer><think>r</think>", False),  # answer first
        (ta("r", f"[2-1] {BOX}") + f"<answer>[2-1] {BOX}</answer>", False),  # two answers
        (f"<think>r</think><think>s</think><answer>[2-1] {BOX}</answer>", False),  # two thinks
        (ta("r <answer>x</answer>", f"[2-1] {BOX}"), False),  # a tag inside think
        (ta("r", "[2-1] (10,10),(0,0)"), False),  # box order: x1 > x2
        (ta("r", "[2-1] (0,10),(10,0)"), False),  # y1 > y2
        (ta("r", "[2-1] (0,0),(0,10)"), False),  # x1 == x2
        (ta("r", "[2-1] (0,0),(1001,10)"), False),  # off the grid
        (ta("r", "[2-1] (0,0),(1000,1000)"), True),  # the grid's edge is on it
        (ta("r", f"[7-1] {BOX}"), False),  # an index to no image of the sample is no index (issue 25)
        (ta("r", "[2-1] (0.1,0.1),(0.5,0.5)"), False),  # decimals are not a box
        (f"<THINK>r</THINK><ANSWER>[2-1] {BOX}</ANSWER>", False),  # tags are case-sensitive
    ],
)
def test_format_rule(text, ok):
    assert mirg(text)["format"] == (1.0 if ok else 0.0)


def test_blank_think_still_earns_image_and_iou():
    r = mirg(ta(" ", f"[2-1] {BOX}"))
    assert r == {
        "format": 0.0,
        "image": 1.0,
        "iou": pytest.approx(SEVENTH),
        "total": pytest.approx(1 + SEVENTH),
    }


def test_total_uses_the_weights():
    text = ta("r", f"[2-1] {BOX}")
    r = mirg(text, weights=[2, 0.5, 3])
    assert r["total"] == pytest.approx(2 * 1 + 0.5 * 1 + 3 * SEVENTH)
    assert (r["format"], r["image"], r["iou"]) == (1.0, 1.0, pytest.approx(SEVENTH))  # unweighted
    assert mirg(text, weights="1,0,0")["total"] == 1.0
    assert mirg(text, weights={"iou": 0})["total"] == 2.0  # unnamed components keep their default 1
    for bad in ("1,1", "1,x,1", [1, float("nan"), 1], {"colour": 1}, [1, True, 1]):
        with pytest.raises(ValueError, match="weight|component"):
            mirg(text, weights=bad)


def test_bad_ground_truth_raises_naming_it():
    text = ta("r", f"[2-1] {BOX}")
    with pytest.raises(ValueError, match="image_index"):
        mirg(text, image_index=3, num_images=2)
    with pytest.raises(ValueError, match="image_index"):
        mirg(text, image_index=0)
    with pytest.raises(ValueError, match="num_images"):
        mirg(text, num_images=0)
    with pytest.raises(ValueError, match="box"):
        mirg(text, box=[15, 5, 5, 15])
    with pytest.raises(ValueError, match="box"):
        mirg(text, box=[0, 0, 10])
    with pytest.raises(ValueError, match="box"):
        mirg(text, box=[0, 0, 10, 2000])
    with pytest.raises(ValueError, match="profile"):
        mirg(text, profile="r1")


# ---------------------------------------------------------------- univg


def univg(text, box=G):
    return rewards.score(text, image_index=None, box=box, num_images=None, profile="univg")


@pytest.mark.parametrize(
    "text, fmt",
    [
        (ta("r", "(0,0),(10,10)"), 1.0),
        (ta("r", BOX), 1.0),  # box tokens allowed
        (ta("r", " (0, 0), (10, 10) "), 1.0),
        (ta("", "(0,0),(10,10)"), 1.0),  # UniVG-R1 accepts an empty think
        (ta("r", "[2-1] (0,0),(10,10)"), 0.0),  # anything besides the one box
        (ta("r", "(0,0),(10,10),(0,0),(10,10)"), 0.0),  # two boxes
        (ta("r", "(0,0),(10,10)<|box_end|>"), 0.0),  # half the tokens
        (f"ok {ta('r', '(0,0),(10,10)')}", 0.0),  # not the whole completion
    ],
)
def test_univg_format_and_iou(text, fmt):
    r = univg(text)
    assert list(r) == ["format", "iou", "total"]  # no image reward
    assert r["format"] == fmt
    assert r["iou"] == pytest.approx(SEVENTH)  # the answer's first box, whatever the format
    assert r["total"] == pytest.approx(fmt + SEVENTH)


def test_univg_ignores_think_boxes_and_needs_an_answer():
    assert univg(ta(EXACT, "(0,0),(10,10)"))["iou"] == pytest.approx(SEVENTH)
    assert univg(f"<think>{EXACT}</think>") == {"format": 0.0, "iou": 0.0, "total": 0.0}


def test_difficulty_weights_by_hand():
    w = rewards.difficulty_weights([1.0, 1.0, 0.0, 0.0, 0.2, 0.6], group_size=2)
    # groups: mean 1 -> e^0 = 1; mean 0 -> e^1; mean 0.4 -> e^0.6
    assert w == pytest.approx([1, 1, math.e, math.e, math.exp(0.6), math.exp(0.6)])
    assert rewards.difficulty_weights([], 8) == []
    for ious, size in (([0.5] * 3, 2), ([0.5], 0), ([1.5], 1), ([float("nan")], 1), ([0.5], True)):
        with pytest.raises(ValueError):
            rewards.difficulty_weights(ious, size)


def test_profiles_table():
    assert rewards.PROFILES["mirg"].names == ("format", "image", "iou")
    assert rewards.PROFILES["mirg"].weights == (1.0, 1.0, 1.0)
    assert rewards.PROFILES["univg"].names == ("format", "iou")
    assert (
        rewards.PROFILES["univg"].difficulty_weighting and not rewards.PROFILES["mirg"].difficulty_weighting
    )


# ---------------------------------------------------------------- garbage never raises


HOSTILE = [
    None,
    b"<think>r</think><answer>[2-1] (0,0),(10,10)</answer>",  # bytes are not text
    123,
    {"content": "<answer>(0,0),(10,10)</answer>"},
    [],
    [{"role": "user", "content": "<think>r</think><answer>[2-1] (0,0),(10,10)</answer>"}],  # not the model's
    [{"role": "assistant", "content": 5}],
    "",
    "<answer>",
    "</answer><answer>",
    "<think><answer></think></answer>",
    "<think>" * 20000,
    "<answer>" * 20000 + "(0,0),(10,10)",  # never closed
    "(" * 50000 + "1,",
    "[1-" * 30000,
    "(1, 2), (" * 20000,
    "image " * 20000,
    "\x00\ud800\uffff",
    ta("r", "Image 1 (" + "9" * 5000 + ",1),(2,3)"),  # a 5,000-digit number (and the wrong image)
    ta("a" * 200_000, "[2-1] (5,5),(15,15)"),  # beyond MAX_COMPLETION_CHARS: not read at all
]


@pytest.mark.parametrize("profile", ["mirg", "univg"])
def test_garbage_scores_zero_and_never_raises(profile):
    start = time.perf_counter()
    for item in HOSTILE:
        r = rewards.score(item, image_index=2, box=G, num_images=2, profile=profile)
        assert r["total"] == 0.0, item if not isinstance(item, str) else item[:80]
    assert time.perf_counter() - start < 10  # linear work: well under a second here


def test_huge_numbers_are_no_box_and_no_index():
    # 5,000 digits are never read as a number: no box (IoU 0, format 0); the index is not read either.
    r = mirg(ta("r", "[2-1] (" + "9" * 5000 + ",1),(2,3)"))
    assert r == {"format": 0.0, "image": 1.0, "iou": 0.0, "total": 1.0}
    r = mirg(ta("r", "[" + "9" * 5000 + "-1] (0,0),(10,10)"))
    assert r == {"format": 0.0, "image": 0.0, "iou": pytest.approx(SEVENTH), "total": pytest.approx(SEVENTH)}


def test_nested_answer_tags_read_to_the_first_close_but_are_not_well_formed():
    # The first <answer> runs to the first </answer>: "<answer>[2-1] (0,0),(10,10)" holds the box.
    r = mirg("<think>r</think><answer><answer>[2-1] (0,0),(10,10)</answer></answer>")
    assert r == {
        "format": 0.0,
        "image": 1.0,
        "iou": pytest.approx(SEVENTH),
        "total": pytest.approx(1 + SEVENTH),
    }


def test_random_text_never_raises():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    pieces = st.sampled_from(
        [
            "<think>",
            "</think>",
            "<answer>",
            "</answer>",
            "(",
            ")",
            ",",
            "[",
            "]",
            "-",
            " ",
            "Image",
            "12",
            "9" * 40,
        ]
        + ["<|box_start|>", "<|box_end|>", "<bbox_id>", "</bbox_id>", "\n"]
    )
    text = st.one_of(st.text(max_size=300), st.lists(pieces, max_size=60).map("".join))

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(text, st.sampled_from(["mirg", "univg"]))
    def check(s, profile):
        r = rewards.score(s, image_index=1, box=[0, 0, 1000, 1000], num_images=2, profile=profile)
        assert all(0.0 <= r[k] <= 1.0 for k in r if k != "total") and 0.0 <= r["total"] <= 3.0

    check()


# ---------------------------------------------------------------- TRL adapters


def test_reward_functions_for_trl():
    fns = rewards.reward_functions("mirg", [2, 1, 0.5])
    assert [f.__name__ for f in fns] == ["format", "image", "iou"]
    good = ta("r", f"[2-1] {BOX}")
    completions = [
        good,
        [{"role": "assistant", "content": good}],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "<think>r</think>"},
                    {"type": "text", "text": f"<answer>[1-1] {BOX}</answer>"},
                ],
            }
        ],
        None,
    ]
    cols = {"image_index": [2, 2, 2, 2], "box": [G] * 4, "num_images": [2] * 4}
    out = {f.__name__: f(completions, **cols, prompts=["p"] * 4, trainer_state=None) for f in fns}
    assert out["format"] == [2.0, 2.0, 2.0, 0.0]  # weighted by 2
    assert out["image"] == [1.0, 1.0, 0.0, 0.0]  # the third names image 1
    assert out["iou"] == pytest.approx([0.5 * SEVENTH] * 3 + [0.0])
    with pytest.raises(ValueError, match="num_images"):
        fns[0](completions, image_index=[2] * 4, box=[G] * 4, num_images=[2] * 3)
    assert [f.__name__ for f in rewards.reward_functions("univg")] == ["format", "iou"]


def test_one_score_per_completion_per_step_shared_by_the_components(monkeypatch):
    """TRL calls the profile's functions in turn on one batch: each completion is scored once, each
    function returns its own component as before, and a new batch (or a changed column) is scored again."""
    calls = []
    real = rewards.score

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(rewards, "score", counting)
    fns = rewards.reward_functions("mirg", [2, 1, 0.5])
    batch = [
        ta("r", f"[2-1] {BOX}"),
        [{"role": "assistant", "content": ta("r", f"[1-1] {EXACT}")}],
        None,
        "x",
    ]
    cols = {"image_index": [2, 2, 2, 2], "box": [G] * 4, "num_images": [2] * 4}
    out = {f.__name__: f(batch, **cols, prompts=["p"] * 4) for f in fns}
    assert len(calls) == 4
    direct = [real(ta("r", f"[2-1] {BOX}"), image_index=2, box=G, num_images=2)]
    direct.append(real(batch[1], image_index=2, box=G, num_images=2))
    direct += [real(c, image_index=2, box=G, num_images=2) for c in batch[2:]]
    for (name, weight), got in zip((("format", 2), ("image", 1), ("iou", 0.5)), out.values(), strict=True):
        assert got == [weight * d[name] for d in direct], name
    for f in fns:  # the next step's batch: another image_index is another batch
        f(batch, **{**cols, "image_index": [1, 2, 2, 2]})
    assert len(calls) == 8
    with pytest.raises(ValueError, match="image_index"):  # 2.0 equals 2 as a number, not as a column value
        fns[0](batch, **{**cols, "image_index": [2.0, 2, 2, 2]})
    monkeypatch.undo()
    unhashable = rewards.reward_functions("mirg")  # a box given as a dict is refused by score, not the cache
    with pytest.raises(ValueError, match="box"):
        unhashable[0](["x"], image_index=[1], box=[{"x": 1}], num_images=[2])


def test_rewards_import_no_torch():
    code = "import sys, rl.rewards; bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'trl')]; print(bad)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


# ---------------------------------------------------------------- the CLI


def _line(id_, completion, image_index=2, box=G, num_images=2):
    return json.dumps(
        {
            "id": id_,
            "completion": completion,
            "image_index": image_index,
            "box": box,
            "num_images": num_images,
        }
    )


def test_cli_keeps_ids_and_order_and_marks_bad_lines(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        _line("z", ta("r", f"[2-1] {BOX}")),
        "{not json",
        _line(7, f"<think>{EXACT}</think>"),
        "",
        '{"id": "n", "completion": "x", "image_index": '
        + "9" * 5000
        + ', "box": [5, 5, 15, 15], "num_images": 2}',
        _line("g", ta("r", "[1-1] (5,5),(15,15)"), image_index=3),  # image 3 of 2: bad ground truth
        json.dumps({"id": "m", "completion": "x"}),
        "[1, 2]",
        _line("a", ta("r", "[1-1] (5,5),(15,15)")),
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["rewards", "--input", str(src), "--output", str(dst)]) == 3  # partial
    err = capsys.readouterr().err
    assert (
        "line 2: not JSON" in err
        and "line 6 (id 'g')" in err
        and "missing image_index, box, num_images" in err
    )
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == 8  # every non-blank line, in order
    assert [r.get("id") for r in out] == ["z", None, 7, None, "g", "m", None, "a"]
    assert out[0]["total"] == pytest.approx(2 + SEVENTH) and out[0]["completion"] == ta("r", f"[2-1] {BOX}")
    assert {k: out[2][k] for k in ("format", "image", "iou", "total")} == dict.fromkeys(
        ("format", "image", "iou", "total"), 0.0
    )
    assert out[7] == {**json.loads(lines[8]), "format": 1.0, "image": 0.0, "iou": 1.0, "total": 2.0}
    assert out[1] == {"raw": "{not json", "error": out[1]["error"]} and out[1]["error"].startswith("line 2:")
    assert (
        out[3]["error"].startswith("line 5: cannot be decoded: Exceeds the limit")
        and len(out[3]["raw"]) > 5000
    )  # kept whole
    assert "image_index must be an integer from 1 to num_images (2), got 3" in out[4]["error"]
    assert out[6] == {"raw": "[1, 2]", "error": "line 8: not a JSON object"}
    assert all("total" not in r for r in out if "error" in r)


def test_cli_refuses_to_overwrite_and_never_writes_over_the_input(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_line("a", ta("r", f"[2-1] {BOX}")) + "\n")
    dst.write_text("mine\n")
    assert main(["rewards", "--input", str(src), "--output", str(dst)]) == 1  # an output in the way
    assert dst.read_text() == "mine\n"
    err = capsys.readouterr().err
    assert err.startswith("python -m rl: error: ") and "--force" in err and err.count("\n") == 1, err
    assert main(["rewards", "--input", str(src), "--output", str(src), "--force"]) == 1
    assert "python -m rl: error: --output" in capsys.readouterr().err
    assert json.loads(src.read_text())["id"] == "a" and "total" not in json.loads(src.read_text())
    assert main(["rewards", "--input", str(src), "--output", str(dst), "--force", "--weights", "1,1,2"]) == 0
    assert json.loads(dst.read_text())["total"] == pytest.approx(2 + 2 * SEVENTH)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_bad_input_and_usage_codes(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    assert main(["rewards", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o")]) == 1
    src.write_text("\n\n")
    assert main(["rewards", "--input", str(src), "--output", str(tmp_path / "o")]) == 1  # nothing to score
    assert not (tmp_path / "o").exists()
    src.write_text("garbage\n")
    capsys.readouterr()
    assert main(["rewards", "--input", str(src), "--output", str(tmp_path / "o")]) == 1  # nothing scored
    err = capsys.readouterr().err
    assert "none of its 1 line(s) could be scored (line 1: not JSON" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # exit 1: nothing written
    assert main(["rewards", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 1
    assert f"input {tmp_path} is a directory" in capsys.readouterr().err
    assert main(["rewards", "--input", str(src), "--output", str(tmp_path / "p"), "--weights", "1,1"]) == 1
    assert capsys.readouterr().err.startswith("python -m rl: error: --weights: ")
    assert not (tmp_path / "p").exists()
    # argparse's own usage errors are 2, with the same prefix
    assert main(["rewards", "--input", str(src), "--output", str(tmp_path / "p"), "--profile", "r1"]) == 2
    assert "python -m rl rewards: error: argument --profile" in capsys.readouterr().err
    assert main([]) == 2 and main(["rewards", "--help"]) == 0


def test_cli_univg_and_the_real_entry_point(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(_line("u", ta("r", "(0,0),(10,10)")) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl",
            "rewards",
            "--input",
            str(src),
            "--output",
            str(dst),
            "--profile",
            "univg",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(dst.read_text())
    assert rec["id"] == "u" and "image" not in rec
    assert (rec["format"], rec["iou"], rec["total"]) == (
        1.0,
        pytest.approx(SEVENTH),
        pytest.approx(1 + SEVENTH),
    )


def test_a_subcommand_is_one_function_and_one_add_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    p = sub.add_parser("echo")
    p.set_defaults(handler=lambda args, prog: 0)
    assert parser.parse_args(["echo"]).handler(None, parser.prog) == 0


# ---------------------------------------------------------------- families: the answer form each one writes
# Ground truth stays on the 0-1000 grid for every family. Qwen3-VL writes grid numbers in JSON bbox_2d;
# Qwen2.5-VL writes pixels of the target image as training fed it, read with the record's resized_sizes
# (here image 2 is 728x560, so grid [125, 250, 500, 875] is pixels [91, 140, 364, 490] exactly).

GRID_BOX = [125, 250, 500, 875]
SIZES_2 = [[112, 56], [728, 560]]
PIXELS = [91, 140, 364, 490]


def jbox(values, label="[2-1] cat", fenced=True):
    body = json.dumps([{"bbox_2d": list(values), "label": label}])
    return f"```json\n{body}\n```" if fenced else body


def fam(text, family, box=GRID_BOX, **kw):
    return mirg(text, box=box, family=family, **kw)


def test_qwen3_json_answer_scores_like_box_tokens():
    for answer in (jbox(GRID_BOX), jbox(GRID_BOX, fenced=False), f"[2-1] {jbox(GRID_BOX, label='cat')}"):
        r = fam(ta("the cat is in image 2", answer), "qwen3-vl")
        assert r == {"format": 1.0, "image": 1.0, "iou": pytest.approx(1.0), "total": pytest.approx(3.0)}
    # Box tokens are not Qwen3-VL's form: no box (IoU 0, format 0); the index still counts.
    r = fam(ta("x", f"[2-1] {grounding_box(GRID_BOX)}"), "qwen3-vl")
    assert (r["format"], r["image"], r["iou"]) == (0.0, 1.0, 0.0)
    # And JSON is not Qwen2-VL's: the default family reads box tokens only.
    assert fam(ta("x", jbox(GRID_BOX)), "qwen2-vl")["iou"] == 0.0


def grounding_box(box):
    from core import grounding

    return grounding.box_tokens(box)


def test_qwen25_pixels_are_read_with_the_target_images_resized_size():
    r = fam(ta("x", jbox(PIXELS)), "qwen2.5-vl", resized_sizes=SIZES_2)
    assert r == {"format": 1.0, "image": 1.0, "iou": pytest.approx(1.0), "total": pytest.approx(3.0)}
    # The same numbers read as Qwen3-VL's grid (the 2.39 fork's mistake) are a different, wrong box.
    assert fam(ta("x", jbox(PIXELS)), "qwen3-vl")["iou"] < 0.3
    # The first image's size is not the target's: a different box.
    assert fam(ta("x", jbox(PIXELS)), "qwen2.5-vl", resized_sizes=SIZES_2[::-1])["iou"] < 0.3
    # Off the resized image (x2 = 729 > 728): not well formed, IoU still computed (GT: pixels 364..728).
    edge = [500, 250, 1000, 875]
    assert (
        fam(ta("x", jbox([364, 140, 728, 490])), "qwen2.5-vl", edge, resized_sizes=SIZES_2)["format"] == 1.0
    )
    r = fam(ta("x", jbox([364, 140, 729, 490])), "qwen2.5-vl", edge, resized_sizes=SIZES_2)
    assert r["format"] == 0.0 and 0.9 < r["iou"] < 1.0


@pytest.mark.parametrize(
    "sizes, match",
    [
        (None, "resized_sizes must give"),
        ([[728, 560]], "resized_sizes must give"),  # one size for two images
        ([[112, 56], [728]], r"resized_sizes\[1\]"),
        ([[112, 56], [728, 0]], r"resized_sizes\[1\]"),
        ([[112, 56], [728.0, 560]], r"resized_sizes\[1\]"),
        ([[112, 56], "728x560"], r"resized_sizes\[1\]"),
    ],
)
def test_qwen25_records_without_usable_resized_sizes_are_refused(sizes, match):
    with pytest.raises(ValueError, match=match):
        fam(ta("x", jbox(PIXELS)), "qwen2.5-vl", resized_sizes=sizes)
    with pytest.raises(ValueError, match=match):  # univg reads no index, but the size needs the target
        fam(ta("x", jbox(PIXELS)), "qwen2.5-vl", resized_sizes=sizes, profile="univg")


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown model family 'qwen4'"):
        fam(ta("x", jbox(GRID_BOX)), "qwen4")
    with pytest.raises(ValueError, match="unknown model family"):
        rewards.reward_functions("mirg", family="Qwen2.5-VL")


@pytest.mark.parametrize(
    "answer, ok",
    [
        (jbox(GRID_BOX, label="cat"), True),
        (jbox(GRID_BOX, label="cat", fenced=False), True),
        (json.dumps({"bbox_2d": GRID_BOX}), True),  # one object, no list
        (json.dumps([{"bbox_2d": GRID_BOX}, {"bbox_2d": GRID_BOX}]), False),  # two boxes
        (f"here: {jbox(GRID_BOX)}", False),  # prose before
        (f"{jbox(GRID_BOX)} done", False),  # prose after
        ("```json\n" + json.dumps({"bbox_2d": GRID_BOX}), False),  # unclosed fence
        (json.dumps({"bbox_2d": [125, 250, 500]}), False),
        (json.dumps({"bbox_2d": [125, 250, 1500, 875]}), False),  # off the grid
        (grounding_box(GRID_BOX), False),  # box tokens: not this family's form
    ],
)
def test_univg_json_format_is_exactly_one_box(answer, ok):
    r = mirg(ta("", answer), box=GRID_BOX, profile="univg", family="qwen3-vl")
    assert r["format"] == (1.0 if ok else 0.0)


JSON_GARBAGE = (
    '{"bbox_2d": [1e999, 0, 10, 10]}',
    '{"bbox_2d": [NaN, 0, 10, 10]}',
    '{"bbox_2d": [-1, 0, 10, 10]}',
    '{"bbox_2d": [' + "9" * 5000 + ", 0, 10, 10]}",
    '{"bbox_2d": ["125", "250", "500", "875"]}',
    '{"bbox_2d": [true, 250, 500, 875]}',
    '{"bbox_2d": [125, 250, 500, 875]',  # unclosed
    "[" * 5000 + "]" * 5000,
    "[" * 100_000,
    '{"label": "\ud800"}',
    "```json\n" * 1000,
    "\x00" * 100,
)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
@pytest.mark.parametrize("profile", ["mirg", "univg"])
def test_hostile_json_answers_score_zero_box_and_never_raise(family, profile):
    for garbage in JSON_GARBAGE:
        r = fam(ta("x", f"[2-1] {garbage}"), family, resized_sizes=SIZES_2, profile=profile)
        assert r["iou"] == 0.0 and r["format"] == 0.0, garbage[:40]
    for completion in (None, 3, [{"role": "assistant", "content": None}], "x" * 200_000):
        assert fam(completion, family, resized_sizes=SIZES_2, profile=profile)["total"] == 0.0


def test_reward_functions_read_the_family_and_the_resized_sizes_column():
    funcs = rewards.reward_functions("mirg", family="qwen2.5-vl")
    good, bad = ta("x", jbox(PIXELS)), ta("x", "[2-1] no box")
    columns = {"image_index": [2, 2], "box": [GRID_BOX, GRID_BOX], "num_images": [2, 2]}
    values = {
        f.__name__: f([good, bad], **columns, resized_sizes=[SIZES_2, SIZES_2], prompts=["p", "p"])
        for f in funcs
    }
    assert values == {"format": [1.0, 0.0], "image": [1.0, 1.0], "iou": [pytest.approx(1.0), 0.0]}
    with pytest.raises(ValueError, match="resized_sizes"):  # a Qwen2.5-VL RL set without the column
        funcs[2]([good, bad], **columns)
    with pytest.raises(ValueError, match="2 completions but 1 values of resized_sizes"):
        funcs[2]([good, bad], **columns, resized_sizes=[SIZES_2])
    # Qwen3-VL and Qwen2-VL need no sizes (a column that is there is ignored).
    q3 = rewards.reward_functions("mirg", family="qwen3-vl")
    assert q3[2]([ta("x", jbox(GRID_BOX))], image_index=[2], box=[GRID_BOX], num_images=[2]) == [
        pytest.approx(1.0)
    ]
    q2 = rewards.reward_functions("mirg")
    assert q2[2](
        [ta("x", f"[2-1] {grounding_box(GRID_BOX)}")],
        image_index=[2],
        box=[GRID_BOX],
        num_images=[2],
        resized_sizes=[None],
    ) == [pytest.approx(1.0)]


@pytest.mark.vllm  # rl.config.split_config needs TRL (.venv-eval)
def test_rl_config_family_key(eval_python, tmp_path):
    script = (
        "from rl.config import ConfigError, split_config\n"
        "base = {'output_dir': 'o', 'use_cpu': True, 'bf16': False}\n"
        "print(split_config(base)[0].family)\n"
        "print(split_config(base | {'family': 'qwen2.5-vl'})[0].family)\n"
        "for bad in ('qwen4', 'Qwen2.5-VL', 3, None):\n"
        "    try:\n"
        "        split_config(base | {'family': bad})\n"
        "    except ConfigError as exc:\n"
        "        print('refused', exc)\n"
    )
    from tests.conftest import run_in

    out = run_in(eval_python, ["-c", script]).stdout.splitlines()
    assert out[:2] == ["qwen2-vl", "qwen2.5-vl"]
    assert len(out) == 6 and all(
        line.startswith("refused family must be one of qwen2-vl, qwen2.5-vl, qwen3-vl") for line in out[2:]
    )


def test_cli_reads_the_family_answer_form(tmp_path, capsys):
    """`python -m rl rewards --family qwen2.5-vl`: JSON pixel answers scored with each line's resized_sizes."""
    from rl.__main__ import main

    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    line = {"id": "a", "image_index": 2, "box": [100, 100, 500, 500], "num_images": 2}
    line["resized_sizes"] = [[280, 280], [560, 280]]
    answer = (
        '<think>Image-2.</think><answer>{"bbox_2d": [56, 28, 280, 140], "label": "cat"} in Image-2</answer>'
    )
    src.write_text(json.dumps({**line, "completion": answer}) + "\n")
    assert main(["rewards", "--input", str(src), "--output", str(dst), "--family", "qwen2.5-vl"]) == 0
    scored = json.loads(dst.read_text())
    assert scored["iou"] == pytest.approx(1.0) and scored["image"] == 1.0
    # the same line read as Qwen2-VL has no box tokens: IoU 0
    assert main(["rewards", "--input", str(src), "--output", str(dst), "--force"]) == 0
    assert json.loads(dst.read_text())["iou"] == 0.0


def test_rl_records_of_another_family_are_refused_and_sizes_kept(tmp_path):
    from rl.data import to_example

    image = tmp_path / "a.png"
    image.write_bytes(b"")  # only its existence is checked here
    rec = {
        "id": "r1",
        "images": [str(image)],
        "conversations": [
            {"from": "human", "value": "<image>\nFind the cat."},
            {"from": "gpt", "value": "x"},
        ],
        "image_index": 1,
        "box": [0, 0, 500, 500],
        "num_images": 1,
    }
    assert "resized_sizes" not in to_example(rec)
    with pytest.raises(ValueError, match="converted for 'qwen2-vl'.*--box-format qwen3-vl"):
        to_example(rec, "qwen3-vl")
    rec25 = {**rec, "box_format": "qwen2.5-vl"}
    with pytest.raises(ValueError, match="resized_sizes None is not"):
        to_example(rec25, "qwen2.5-vl")
    assert to_example({**rec25, "resized_sizes": [[56, 84]]}, "qwen2.5-vl")["resized_sizes"] == [[56, 84]]
    with pytest.raises(ValueError, match="box_format"):
        to_example(rec25, "qwen2-vl")


def test_a_thinking_template_opens_the_think_block_for_the_completion():
    """Qwen3-VL-*-Thinking's generation prompt ends in `<think>`, so a completion starts inside it: the
    format reward must read it with the tag put back, and a completion that repeats it is left as is."""
    from rl.rewards import reward_functions

    inside = 'look at Image-2</think><answer>Image-2 {"bbox_2d": [100, 100, 500, 500]}</answer>'
    cols = {"image_index": [1, 1], "box": [[100, 100, 500, 500]] * 2, "num_images": [2, 2]}
    plain = {f.__name__: f([inside, "<think>" + inside], **cols) for f in reward_functions(family="qwen3-vl")}
    opened = {
        f.__name__: f([inside, "<think>" + inside], **cols)
        for f in reward_functions(family="qwen3-vl", opened_think=True)
    }
    assert plain["format"][0] == 0.0 and plain["format"][1] == 1.0
    assert opened["format"] == [1.0, 1.0] and opened["iou"] == plain["iou"]


def test_cli_hostile_lines_are_named_and_the_good_ones_kept(tmp_path, capsys):
    """Issue #25: a lone surrogate in the completion or the id, and a line nested 100,000 deep, are
    each one malformed line (named, written with its error); the good line around them is scored."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = _line("ok", ta("r", "[1-1] (5,5),(15,15)"))
    lone_completion = _line("s1", "x").replace('"completion": "x"', '"completion": "a\\ud800b"')
    lone_id = _line("\\udfff", "x").replace('"\\\\udfff"', '"\\udfff"')
    paired = _line("p", "\U0001f600 " + ta("r", "[1-1] (5,5),(15,15)")).replace(
        "\U0001f600", "\\ud83d\\ude00"
    )
    deep = "[" * 100_000 + "]" * 100_000
    src.write_text("\n".join([lone_completion, good, deep, lone_id, paired]) + "\n", encoding="utf-8")
    assert "\\ud800" in lone_completion and "\\udfff" in lone_id and "\\ud83d" in paired
    assert main(["rewards", "--input", str(src), "--output", str(dst)]) == 3  # partial: the good ones kept
    err = capsys.readouterr().err
    assert "line 1: holds a lone surrogate" in err and "line 4: holds a lone surrogate" in err
    assert "line 3: cannot be decoded: nested too deeply" in err
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert [r.get("id") for r in out] == [None, "ok", None, None, "p"]
    assert out[1]["total"] == 2.0 and out[4]["completion"].startswith("\U0001f600")
    assert out[0]["raw"] == lone_completion and out[2]["raw"] == deep  # kept as it was (escaped text)
