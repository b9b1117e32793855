"""Box parsing and normalisation, checked by hand against the paper's protocol.

Each expected value below was worked out from the rules in the issue (ordered
patterns, first box, >= 1 means the 0-1000 grid) and the paper script's
behaviour where it differs (several boxes: `> 1`).
"""

from __future__ import annotations

import pytest

from eval.parsing import parse_box
from eval.scoring import normalise


def box(text, coords="grid1000", size=None):
    return normalise(parse_box(text), coords, size)


@pytest.mark.parametrize(
    ("text", "pattern", "values"),
    [
        ("<|box_start|>(316,58),(764,999)<|box_end|>", "paren_pairs_int", (316, 58, 764, 999)),
        ("(316, 58), (764, 999)", "paren_pairs_int", (316, 58, 764, 999)),  # spaces after commas
        ("[0.12, 0.34, 0.56, 0.78]", "brackets_dec", (0.12, 0.34, 0.56, 0.78)),
        ("(0.1,0.2),(0.3,0.4)", "paren_pairs_dec", (0.1, 0.2, 0.3, 0.4)),
        ("(0.1, 0.2, 0.3, 0.4)", "paren_four_dec", (0.1, 0.2, 0.3, 0.4)),
        ('[{"bbox_2d": [12, 34, 560, 780], "label": "cup"}]', "brackets_int", (12, 34, 560, 780)),
        ("<box>12 34 56 78</box>", "box_tag_int", (12, 34, 56, 78)),
    ],
)
def test_each_pattern(text, pattern, values):
    parsed = parse_box(text)
    assert parsed is not None
    assert parsed.pattern == pattern
    assert parsed.values == pytest.approx(values)


def test_pattern_order_wins_over_position():
    # The integer pair pattern is tried first even though the decimals come first in the text.
    text = "[0.1, 0.2, 0.3, 0.4] then (100,200),(300,400)"
    assert parse_box(text).pattern == "paren_pairs_int"
    assert box(text) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # "(a,b),(c,d)" decimals come before "[a, b, c, d]" integers.
    assert parse_box("[10, 20, 30, 40] (0.5,0.5),(0.9,0.9)").pattern == "paren_pairs_dec"


def test_first_box_is_used():
    parsed = parse_box("It's in the second image (10,20),(30,40) and also (500,500),(900,900)")
    assert parsed.n_matches == 2
    assert parsed.values == (10, 20, 30, 40)


def test_grid_and_unit_values():
    assert box("(500,250),(1000,750)") == pytest.approx([0.5, 0.25, 1.0, 0.75])
    # Values < 1 are taken as already normalised, >= 1 as the 0-1000 grid, within one box.
    assert box("[0.5, 0.25, 0.75, 0.9]") == pytest.approx([0.5, 0.25, 0.75, 0.9])
    assert box("(0,0),(1,999)") == pytest.approx([0.0, 0.0, 0.001, 0.999])


def test_value_one_with_several_boxes_keeps_the_script_quirk():
    # One box: 1 -> 0.001 (">= 1"). Several boxes: the script tests "> 1", so 1 stays 1.0.
    assert box("(1,1),(500,500)") == pytest.approx([0.001, 0.001, 0.5, 0.5])
    assert box("(1,1),(500,500) and (2,2),(3,3)") == pytest.approx([1.0, 1.0, 0.5, 0.5])


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "I cannot find it.",
        "(x1,y1),(x2,y2)",
        "(12,34)",  # one point only
        "[1, 2, 3]",
        "<box>1 2 3</box>",
        "(-5,10),(20,30)",  # the patterns have no sign
        "\x00\x16\u001b garbage (((( ]]]",
        42,
    ],
)
def test_garbage_gives_no_box(text):
    assert parse_box(text) is None
    assert box(text) is None


def test_pixel_conventions_divide_by_the_image_size():
    # Qwen2.5-VL style: absolute pixels of a 448x336 resized input.
    assert box("[112, 84, 336, 252]", "resized-pixels", (448, 336)) == pytest.approx([0.25, 0.25, 0.75, 0.75])
    assert box("(50,25),(100,75)", "original-pixels", (200, 100)) == pytest.approx([0.25, 0.25, 0.5, 0.75])
    # Without a size the box cannot be converted.
    assert box("[112, 84, 336, 252]", "resized-pixels", None) is None
