"""`converters trajectories --answer-style mgthinker`: MG-Thinker's JSON image-id answers, every target.

The inputs are the real MGrounding converter's output on the fixtures; the expected targets of every
turn are the ones read off the fixture records by hand (test_converters_trajectories.EXPECTED), and
each family's box numbers are checked against families.box_to_family on the image size PIL reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import families
from converters.boxformat import make_box_format
from converters.mgthinker import PROMPT_SUFFIX, STYLE, PlainWriter
from converters.trajectories import build_trajectories
from tests.test_converters_trajectories import EXPECTED, convert_fixtures, good_record, read, run

ANSWER_RE = re.compile(r"<think>(?P<think>[^<]+)</think><answer>(?P<json>\[.+\])</answer>", re.DOTALL)
NUMBERS_RE = re.compile(r"\d+\s*,\s*\d+")


@pytest.fixture(scope="module")
def sharegpt(tmp_path_factory) -> Path:
    return convert_fixtures(tmp_path_factory.mktemp("mgthinker"))


def expected_turns() -> dict[str, list[tuple[int, tuple]]]:
    """`<id>#<k>` -> all the turn's targets: one sample per turn (every fixture turn has a target)."""
    return {f"{rid}#{turn}": targets for (rid, turn), (targets, _context) in EXPECTED.items()}


def family_box(box, image_path: str, fmt) -> list[int]:
    from PIL import Image

    with Image.open(image_path) as im:
        size = fmt.resized(im.size) if fmt.needs_sizes else None
    return list(families.box_to_family(box, fmt.family, size))


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_every_turn_is_one_sample_with_all_its_targets_in_the_familys_numbers(sharegpt, tmp_path, family):
    out = tmp_path / family
    extra = [] if family == "qwen2-vl" else ["--box-format", family]
    assert (
        run(sharegpt, out, "--sft-size", "8", "--rl-size", "100", "--answer-style", "mgthinker", *extra) == 0
    )
    fmt = make_box_format(family)
    want = expected_turns()
    sft, rl = read(out / "mg_traj_sft.json"), read(out / "mg_rl.json")
    assert len(sft) == 8 and sorted(r["id"] for r in sft + rl) == sorted(want)  # no narrowing, none lost
    for record in sft + rl:
        targets = want[record["id"]]
        human, gpt = record["conversations"]
        assert human["value"].endswith(PROMPT_SUFFIX)
        if len(targets) > 1:  # not narrowed to one image, as MIRG-RL's style does
            assert " Locate it in the" not in human["value"]
        assert ("<|box_start|>" in human["value"]) == (
            family == "qwen2-vl" and record["id"].startswith("got10k")
        )
        m = (
            ANSWER_RE.fullmatch(gpt["value"])
            if record in sft
            else re.fullmatch(r"<answer>(?P<json>.+)</answer>", gpt["value"])
        )
        assert m, gpt["value"]
        objects = json.loads(m["json"])
        images = record["images"]
        assert [(o["image_id"], o["bbox_2d"]) for o in objects] == [
            (image, family_box(box, images[image - 1], fmt)) for image, box in targets
        ]
        assert all(isinstance(o["label"], str) and o["label"] for o in objects)
        if record in sft:  # reasoning in words: no box, no number pair, no tag
            assert not NUMBERS_RE.search(m["think"]) and "[" not in m["think"], m["think"]
        else:
            assert record["targets"][0] == {**record["targets"][0], "image_index": targets[0][0]}
            assert [(t["image_index"], tuple(t["box"])) for t in record["targets"]] == targets  # on the grid
            assert (record["image_index"], tuple(record["box"])) == targets[0]
            assert record["num_images"] == len(images) and record["answer_style"] == "mgthinker"
            if family == "qwen2-vl":
                assert "box_format" not in record and "family_box" not in record["targets"][0]
            else:
                assert record["box_format"] == family
                assert [t["family_box"] for t in record["targets"]] == [o["bbox_2d"] for o in objects]
                assert ("resized_sizes" in record) == (family == "qwen2.5-vl")
    several = [r for r in sft + rl if len(want[r["id"]]) > 1]
    assert {r["id"] for r in several} == {"coco_17_42#1", "ff_000003#1"}
    report = read(out / "mg_trajectories.report.json")
    assert report["answer_style"] == "mgthinker" and report["rejected"] == 0


def test_several_boxes_in_one_image_stay_together(tmp_path):
    box = "<|box_start|>(10,20),(300,400)<|box_end|>"
    record = good_record(
        "group", "Find the dogs.", f"Image-1: {box} Image-1: <|box_start|>(1,1),(5,5)<|box_end|>"
    )
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    (folder / "mg_group_grounding.json").write_text("[\n" + json.dumps(record) + "\n]\n", encoding="utf-8")
    assert (
        run(folder, tmp_path / "out", "--sft-size", "0", "--rl-size", "5", "--answer-style", "mgthinker") == 0
    )
    (rl,) = read(tmp_path / "out" / "mg_rl.json")  # MIRG-RL's style rejects it: several_targets_in_one_image
    assert rl["targets"] == [
        {"image_index": 1, "box": [10, 20, 300, 400]},
        {"image_index": 1, "box": [1, 1, 5, 5]},
    ]


class BoxLeakingWriter(PlainWriter):
    def think(self, item, rng):
        return super().think(item, rng) + " It spans (10,20),(300,400)."


def test_reasoning_that_holds_a_box_is_rejected(sharegpt, tmp_path):
    with pytest.raises(ValueError, match="no record gave a sample"):
        build_trajectories(
            sharegpt, tmp_path / "out", sft_size=3, rl_size=2, writer=BoxLeakingWriter(), style=STYLE
        )
    rejects = (tmp_path / "out" / "mg_trajectories.rejects.jsonl").read_text().splitlines()
    assert "a box inside the reasoning" in json.loads(rejects[0])["detail"]
