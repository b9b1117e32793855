"""`python -m converters preview`: converted records' boxes land where the source put them, in every family.

The same MGrounding-form records are converted for Qwen2-VL, Qwen2.5-VL (pixels of the resized image)
and Qwen3-VL by the real converter (`mgrounding --box-format ... --report`); each preview must draw every
answer box back on the image the text names, at the source's grid box (Qwen2.5-VL: within the pixel
rounding of its resized image), with the first box as families.parse_answer reads it.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

import families
from converters.__main__ import main
from tests.conftest import run_main


def _box(box) -> str:
    return "<|box_start|>({},{}),({},{})<|box_end|>".format(*box)


class Page(HTMLParser):
    """Per card (data-index): the rects of each picture, as (class, x1, y1, x2, y2) on 0-1000."""

    def __init__(self, path: Path):
        super().__init__()
        self.cards: dict[int, dict] = {}
        self.card = None
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.card = {"outcome": a["data-outcome"], "pictures": []}
            self.cards[int(a["data-index"])] = self.card
        elif tag == "figure" and self.card is not None:
            self.card["pictures"].append([])
        elif tag == "rect" and self.card is not None and self.card["pictures"]:
            x, y, w, h = (float(a[k]) for k in ("x", "y", "width", "height"))
            self.card["pictures"][-1].append((a["class"], x, y, x + w, y + h))


BIG, SMALL = (1024, 768), (300, 200)  # Qwen2.5-VL sees them as 728x560 and 308x196
GRID = (250, 500, 750, 1000)
OTHER = (100, 100, 400, 300)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preview")
    images = []
    for name, size in (("big.png", BIG), ("small.png", SMALL)):
        (root / "MGrounding-630k").mkdir(exist_ok=True)
        Image.new("RGB", size, "gray").save(root / "MGrounding-630k" / name)
        images.append(f"./MGrounding-630k/{name}")

    def record(rid, question, answer):
        turns = [
            {"from": "human", "value": "<image>\n<image>\n" + question},
            {"from": "gpt", "value": answer},
        ]
        return {"id": rid, "type": "t", "images": images, "conversations": turns}

    records = [
        # 0: the question names the second image; one box-only answer
        record("named", "Find the dog in the second image.", _box(GRID)),
        # 1: prose naming each box's image
        record("prose", "Find the dog.", f"Image-1: {_box(OTHER)}\nImage-2: {_box(GRID)}"),
        # 2: a question box (blue) on image 1, the answer on image 2
        record(
            "tracked",
            f"Track the object {_box(OTHER)} in the first image.",
            f"In the second image: {_box(GRID)}",
        ),
    ]
    (root / "in.json").write_text(json.dumps(records))
    return root


def convert(source: Path, family: str) -> Path:
    out = source / family / "data.jsonl"
    out.parent.mkdir(exist_ok=True)
    args = ["mgrounding", "--input", source / "in.json", "--image-root", source, "--output", out]
    args += ["--report", out.with_suffix(".report.json"), "--box-format", family, "--force"]
    assert main([str(a) for a in args]) == 0
    return out


# (card, picture, class, grid box): where each box must be drawn
EXPECTED = [
    (0, 1, "gt", GRID),
    (1, 0, "gt", OTHER),
    (1, 1, "gt", GRID),
    (2, 1, "gt", GRID),
    (2, 0, "ctx", OTHER),
]


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_boxes_land_where_the_source_put_them(source, family):
    data = convert(source, family)
    proc = run_main("converters", ["preview", str(data)])
    assert proc.returncode == 0, proc.stderr
    assert f"box format {family}" in proc.stdout and "recorded in" in proc.stdout
    page = Page(data.with_name("data.preview") / "t-1.html")
    # Qwen2.5-VL: one pixel of a 308-wide image is 3.2 grid units; the grid families are exact
    tolerance = 2.0 if family == "qwen2.5-vl" else 0.01
    for card, picture, kind, grid in EXPECTED:
        rects = [r for r in page.cards[card]["pictures"][picture] if r[0] == kind]
        assert len(rects) == 1, (family, card, page.cards[card])
        assert all(abs(a - b) <= tolerance for a, b in zip(rects[0][1:], grid, strict=True)), (rects, grid)
    assert sum(len(r) for c in page.cards.values() for r in c["pictures"]) == len(EXPECTED)
    assert {c["outcome"] for c in page.cards.values()} == {"drawn"}
    # the numbers are the family's parser's
    record = json.loads(data.read_text().splitlines()[0])
    first = families.parse_answer(record["conversations"][1]["value"], family).box
    assert tuple(first) == ((77, 98, 231, 196) if family == "qwen2.5-vl" else GRID)


def test_a_box_without_an_image_is_unplaced_and_first(tmp_path, source):
    rec = {
        "id": "lost",
        "type": "t",
        "images": [str(source / "MGrounding-630k" / n) for n in ("big.png", "small.png")],
        "conversations": [{"from": "human", "value": "Find it."}, {"from": "gpt", "value": _box(GRID)}],
    }
    data = tmp_path / "x.json"
    data.write_text(json.dumps([{**rec, "id": "ok", "images": rec["images"][:1]}, rec, "not a record"]))
    proc = run_main(
        "converters", ["preview", str(data), "--box-format", "qwen2-vl", "--output-dir", tmp_path / "p"]
    )
    assert proc.returncode == 0, proc.stderr
    page = Page(tmp_path / "p" / "t-1.html")
    assert [c["outcome"] for c in page.cards.values()] == ["unplaced", "drawn"]
    assert "names no image of the 2" in (tmp_path / "p" / "t-1.html").read_text()
    assert "unplaced" in (tmp_path / "p" / "index.html").read_text()
    assert (tmp_path / "p" / "group-1.html").is_file()  # the non-record has its own card, under type "?"


def test_no_report_is_said_and_bad_input_is_one_line(tmp_path, source):
    data = convert(source, "qwen3-vl")
    data.with_suffix(".report.json").unlink()
    proc = run_main("converters", ["preview", str(data), "--output-dir", tmp_path / "p"])
    assert "qwen2-vl, the default" in proc.stdout  # read as box tokens: no box found in the JSON answers
    proc = run_main("converters", ["preview", str(tmp_path / "missing.json")])
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
