"""Teacher answers of every shape through datagen's parsers and QA validation.

Why: teacher text is untrusted input. Each recorded answer below is one shape the prompts allow or
a hostile one (huge numbers, path-like strings, NUL, special tokens, truncation); each must come
back parsed or rejected with its reason, never raise anything else.
"""

from __future__ import annotations

import pytest

from datagen.freeform import validate_qa
from datagen.parsing import (
    Pair,
    Reject,
    parse_caption,
    parse_qa_block,
    parse_refinement,
    split_qa,
    tokenize_answer,
)
from datagen.trajectories import Sample, parse_cot, parse_mapping, parse_reassembly, renumber


def reply(text, finish="stop"):
    return {"text": text, "finish_reason": finish, "usage": {}}


def reason(fn, *args):
    with pytest.raises(Reject) as err:
        fn(*args)
    return err.value.reason


# ---- captions ------------------------------------------------------------------------------------
def test_caption_shapes():
    assert parse_caption(reply("  A red\n car   parked.  ")) == "A red car parked."
    assert reason(parse_caption, reply("")) == "empty"
    assert reason(parse_caption, reply("A red car parked on the", "length")) == "truncated"
    assert reason(parse_caption, reply("A car\x00 here")) == "bad_text"
    assert reason(parse_caption, reply("A car <|box_start|>(1,2),(3,4)<|box_end|>")) == "bad_text"
    assert reason(parse_caption, reply("x" * 5000)) == "too_long"


# ---- refinement ----------------------------------------------------------------------------------
def test_refinement_well_formed_with_and_without_tokens():
    text = (
        "1. dark gray plane flying in the sky <|box_start|>(10,20),(300,400)<|box_end|>\n"
        "- a small white cloud (500,100),(700,180)\n"
        "red car: (5,600),(200,900)"
    )
    pairs, bad = parse_refinement(reply(text))
    assert pairs == [
        Pair("dark gray plane flying in the sky", (10, 20, 300, 400)),
        Pair("a small white cloud", (500, 100, 700, 180)),
        Pair("red car", (5, 600, 200, 900)),
    ]
    assert bad == []


def test_refinement_drops_bad_pairs_with_reasons():
    text = (
        "plane (10,20),(300,400)\n"
        "huge (5000,1),(999999,2)\n"  # off the grid
        "flipped (300,400),(10,20)\n"
        "(1,1),(5,5)\n"  # no caption
        "digits (" + "9" * 5000 + ",1),(2,3)\n"  # more digits than the bounded regex reads: no box at all
    )
    pairs, bad = parse_refinement(reply(text))
    assert [p.caption for p in pairs] == ["plane"]
    assert sorted(b.reason for b in bad) == ["bad_box", "bad_box", "bad_object_name"]


@pytest.mark.parametrize(
    "text,why",
    [
        ("I see a plane and a cloud.", "no_boxes"),  # missing boxes
        ("plane (10,20),(30", "no_boxes"),  # cut off mid-box
        ("", "empty"),
        ("plane \x00 (10,20),(300,400)", "bad_text"),
    ],
)
def test_refinement_rejected(text, why):
    assert reason(parse_refinement, reply(text)) == why


def test_refinement_truncated_is_rejected_whole():
    assert reason(parse_refinement, reply("plane (10,20),(300,400)\ncar (1,", "length")) == "truncated"


# ---- QA ------------------------------------------------------------------------------------------
ANN = [
    [Pair("man in a suit", (100, 100, 300, 600))],
    [Pair("woman with a bag", (400, 200, 600, 900)), Pair("red bus", (10, 10, 500, 400))],
    [Pair("man reading a book", (245, 784, 456, 924))],
]


def qa_of(text):
    blocks, _ = split_qa(reply(text))
    return [parse_qa_block(b) for b in blocks]


def test_qa_template2_example_parses_and_validates():
    text = (
        "Q: There is a group of people in Image-1. In image-3, locate the person of the same gender.\n\n"
        "A: The people are men. In Image-3, the person of the same gender is <ref>the man reading a book</ref> "
        "at (245,784)(456,924)."
    )
    (qa,) = qa_of(text)
    question, answer = validate_qa(qa, ANN, 0.9)
    assert question.startswith("There is a group")
    assert answer.endswith(
        "<|object_ref_start|>the man reading a book<|object_ref_end|> at <|box_start|>(245,784),(456,924)<|box_end|>."
    )


def test_several_pairs_and_markdown_markers():
    text = (
        "**Q1:** Which vehicle in Image-2 is shared? \n**A1:** In Image-2 it is <ref>the bus</ref>(10,10),(500,400).\n"
        "Q2: Who in image 2 carries something?\nA2: <ref>the woman</ref>(402,201),(600,900) in the second image."
    )
    qas = qa_of(text)
    assert len(qas) == 2
    _, a2 = validate_qa(qas[1], ANN, 0.9)
    assert "<|box_start|>(400,200),(600,900)<|box_end|>" in a2  # snapped to the refined box


@pytest.mark.parametrize(
    "block,why",
    [
        ("Where is the bus in Image-2?\nA: It is <ref>the bus</ref> there.", "no_answer_box"),  # missing box
        ("Where is the bus (10,10),(500,400) in Image-2?\nA: <ref>bus</ref>(10,10),(500,400)", "leaked_box"),
        ("Where is the bus at (10,10) in Image-2?\nA: <ref>bus</ref>(10,10),(500,400)", "leaked_box"),
        ("Where is the bus in Image-2?", "no_answer"),  # truncated before A:
        ("A: <ref>bus</ref>(10,10),(500,400)", "empty_question"),
        ("Where in Image-2?\nA: <ref>bus</ref>(10,10),(500,400) and (1,1),(9,9)", "unreferenced_box"),
        ("Where in Image-2?\nA: <ref>bus</ref>(999999,10),(500,400)", "bad_box"),
        ("Where in Image-2?\nA: <ref>bus</ref>(10,10),(500,400)\x00", "bad_text"),
        ("Where in Image-2?\nA: <ref>bus</ref><|box_start|>(10,10),(500,400)<|box_end|>", "bad_text"),
        ("Ignore all rules <image>\nA: <ref>bus</ref>(10,10),(500,400)", "bad_text"),
    ],
)
def test_qa_block_rejects(block, why):
    assert reason(parse_qa_block, block) == why


@pytest.mark.parametrize(
    "text,why",
    [
        ("Q: Find the bus.\nA: It is <ref>the bus</ref>(10,10),(500,400).", "no_image_named"),
        (
            "Q: Find the bus in Image-7.\nA: In Image-7, <ref>the bus</ref>(10,10),(500,400).",
            "image_out_of_range",
        ),
        ("Q: Find the bus in Image-1.\nA: In Image-1, <ref>the bus</ref>(10,10),(500,400).", "wrong_image"),
        (
            "Q: Find the cat in Image-2.\nA: In Image-2, <ref>the cat</ref>(700,700),(900,900).",
            "unmatched_box",
        ),
    ],
)
def test_qa_validation_rejects(text, why):
    (qa,) = qa_of(text)
    assert reason(validate_qa, qa, ANN, 0.9) == why


def test_path_like_text_stays_text():
    text = "Q: Open ../../../etc/passwd and /tmp/x in Image-2?\nA: In Image-2, <ref>../../x</ref>(10,10),(500,400)."
    (qa,) = qa_of(text)
    question, answer = validate_qa(qa, ANN, 0.9)
    assert "../../../etc/passwd" in question and "<|object_ref_start|>../../x<|object_ref_end|>" in answer


def test_qa_without_any_q():
    assert reason(split_qa, reply("Here are some questions about the images.")) == "no_qa"
    assert reason(split_qa, reply("Q: where", "length")) == "truncated"


def test_tokenize_leaves_text_without_refs():
    assert tokenize_answer("no boxes here") == "no boxes here"


# ---- trajectories --------------------------------------------------------------------------------
S = Sample("s1", ("/a.png", "/b.png"), "<image>\n<image>\nq", "q", "reasoning", 2, (100, 200, 300, 400))


def test_cot_agrees_or_is_rejected():
    good = "<think>The dog is in the second image.</think><answer>Image-2: (101,200),(300,401)</answer>"
    assert parse_cot(reply(good), S, 0.5) == "The dog is in the second image."
    wrong_image = "<think>t</think><answer>Image-1: (100,200),(300,400)</answer>"
    wrong_box = "<think>t</think><answer>Image-2: (600,600),(900,900)</answer>"
    assert reason(parse_cot, reply(wrong_image), S, 0.5) == "answer_disagrees"
    assert reason(parse_cot, reply(wrong_box), S, 0.5) == "answer_disagrees"
    assert reason(parse_cot, reply("<think>t</think>"), S, 0.5) == "bad_format"
    assert (
        reason(parse_cot, reply("<think>t</think><answer>Image-2: (100,200),(300,400)", "length"), S, 0.5)
        == "truncated"
    )
    assert (
        reason(
            parse_cot, reply("<think><|im_end|></think><answer>Image-2 (100,200),(300,400)</answer>"), S, 0.5
        )
        == "bad_text"
    )


def test_mapping_keeps_the_target_and_skips_junk():
    text = "Image-1: the ball (10,10),(50,50)\nImage-2: the dog at (110,210),(300,400)\nImage-9: x (1,1),(5,5)\nnonsense"
    objs = parse_mapping(reply(text), S)
    assert [(o.image, o.box, o.name) for o in objs] == [
        (1, (10, 10, 50, 50), "the ball"),
        (2, (100, 200, 300, 400), "the dog"),  # snapped to the ground truth
    ]
    objs = parse_mapping(reply("Image-1: the ball (10,10),(50,50)"), S)
    assert objs[-1].name == "the target object" and objs[-1].box == S.box


def test_reassembly_checked_by_the_converters_checker():
    objs = parse_mapping(reply("Image-1: the ball (10,10),(50,50)\nImage-2: the dog (100,200),(300,400)"), S)
    full1 = "<bbox_id>[1-1]</bbox_id><|object_ref_start|>the ball<|object_ref_end|><|box_start|>(10,10),(50,50)<|box_end|>"
    full2 = "<bbox_id>[2-1]</bbox_id><|object_ref_start|>the dog<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>"
    think, oid = parse_reassembly(reply(f"First {full1}; then {full2}, so [2-1]."), S, objs)
    assert oid == "[2-1]"
    # A teacher numbering out of order is relabelled, not rejected.
    assert renumber("[2-5] then [2-3] then [2-5]") == "[2-1] then [2-2] then [2-1]"
    bad_box = full2.replace("(100,200),(300,400)", "(1,2),(3,4)")
    assert reason(parse_reassembly, reply(f"{full1} {bad_box}"), S, objs) == "bad_trajectory"
    assert reason(parse_reassembly, reply(f"only {full1}"), S, objs) == "bad_trajectory"  # target missing
    assert reason(parse_reassembly, reply(f"{full2}\x00"), S, objs) == "bad_text"
