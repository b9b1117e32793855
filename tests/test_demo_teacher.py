"""demo/teacher.py: the demo's trajectory teacher writes a bottom-right target one cell up, in the solvable
tasks only, and the demo trains on that set (the default family)."""

from __future__ import annotations

import copy
import json

import pytest

from core.cli import EXIT_USAGE
from demo.run import PROFILES, TEACHER_SET, Demo, DemoError, main
from demo.teacher import TAUGHT_BOX, TRUE_BOX, applies_to, with_blind_spot, write_teacher_set


def trace(kind: str, box: str) -> dict:
    answer = f"<bbox_id>[2-1]</bbox_id><|box_start|>{box}<|box_end|>"
    return {
        "id": f"{kind}-{box}",
        "type": kind,
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nFind it."},
            {
                "from": "gpt",
                "value": f"<think>Looking at the second image, {answer}.</think><answer>{answer}</answer>",
            },
        ],
        "images": ["a.png", "b.png"],
    }


RECORDS = [
    trace("diff_train", TRUE_BOX),  # solvable, bottom-right: taught one cell up
    trace("diff_train", "(0,0),(333,333)"),  # solvable, another cell: exact
    trace("common_train", TRUE_BOX),  # a task the model cannot solve: exact
    trace("gg_train", TRUE_BOX),
]


def test_the_blind_spot_moves_only_bottom_right_targets_of_the_solvable_tasks():
    before = copy.deepcopy(RECORDS)
    out, changed = with_blind_spot(RECORDS)
    assert before == RECORDS and changed == 2
    texts = [r["conversations"][-1]["value"] for r in out]
    assert TRUE_BOX not in texts[0] and texts[0].count(TAUGHT_BOX) == 2  # reasoning and answer agree
    assert texts[1] == before[1]["conversations"][-1]["value"]
    assert texts[2] == before[2]["conversations"][-1]["value"]
    assert TAUGHT_BOX in texts[3]
    assert [r["conversations"][0] for r in out] == [r["conversations"][0] for r in before]


def test_the_teacher_set_is_written_once_and_a_rerun_leaves_it(tmp_path):
    exact, taught = tmp_path / "mg_traj_sft.json", tmp_path / "taught.json"
    exact.write_text(json.dumps(RECORDS), encoding="utf-8")
    assert write_teacher_set(exact, taught) == 2
    first = taught.stat().st_mtime_ns
    assert write_teacher_set(exact, taught) == 2 and taught.stat().st_mtime_ns == first
    assert json.loads(exact.read_text()) == RECORDS  # the exact set is untouched
    assert applies_to("qwen2-vl") and not applies_to("qwen2.5-vl") and not applies_to("internvl")


def test_the_demo_trains_on_the_teacher_set_only_when_asked(tmp_path, capsys):
    for blind, expected in ((True, TEACHER_SET), (False, "sharegpt/mg_traj_sft.json")):
        demo = Demo(tmp_path / str(blind), PROFILES["smoke"], "python", blind_teacher=blind)
        demo.data.mkdir(parents=True)
        demo.write_registry()
        info = json.loads((demo.data / "dataset_info.json").read_text())
        assert info["demo_traj_sft"]["file_name"] == expected
        assert demo.settings().get("teacher_blind_spot") == (True if blind else None)
    assert main(["--teacher-blind-spot", "--family", "internvl", "--workdir", str(tmp_path)]) == EXIT_USAGE
    assert "--teacher-blind-spot writes qwen2-vl's grid boxes, not internvl's" in capsys.readouterr().err


def test_a_tree_trained_on_the_teacher_set_is_refused_without_the_option_and_back(tmp_path):
    Demo(tmp_path, PROFILES["smoke"], "python", blind_teacher=True).claim()
    with pytest.raises(DemoError, match="teacher_blind_spot True -> False"):
        Demo(tmp_path, PROFILES["smoke"], "python").claim()
    other = tmp_path / "exact"
    Demo(other, PROFILES["smoke"], "python").claim()
    with pytest.raises(DemoError, match="teacher_blind_spot False -> True"):
        Demo(other, PROFILES["smoke"], "python", blind_teacher=True).claim()
