"""demo/teacher.py: the demo's trajectory teacher writes a bottom-right target one cell up, in the solvable
tasks only, and the demo trains on that set (the default family's default, `--teacher exact` to opt out)."""

from __future__ import annotations

import copy
import json

import pytest

from core.cli import EXIT_USAGE
from demo.run import PROFILES, TEACHER_SET, Demo, DemoError, main, teacher_is_blind
from demo.teacher import TAUGHT_BOX, TRUE_BOX, applies_to, mistaken, with_blind_spot, write_teacher_set


def trace(kind: str, box: str, rid: str = "") -> dict:
    answer = f"<bbox_id>[2-1]</bbox_id><|box_start|>{box}<|box_end|>"
    return {
        "id": rid or f"{kind}-{box}",
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


# ids the teacher gets wrong and one it gets right (demo/teacher.py's stable hash)
WRONG = [f"diff_{k:06d}#1" for k in range(50) if mistaken(f"diff_{k:06d}#1")]
RIGHT = next(f"diff_{k:06d}#1" for k in range(50) if not mistaken(f"diff_{k:06d}#1"))
RECORDS = [
    trace("diff_train", TRUE_BOX, WRONG[0]),  # solvable, bottom-right, a mistaken trace: taught one cell up
    trace("diff_train", "(0,0),(333,333)", WRONG[1]),  # solvable, another cell: exact
    trace("common_train", TRUE_BOX, WRONG[2]),  # a task the model cannot solve: exact
    trace("gg_train", TRUE_BOX, WRONG[3]),
    trace("diff_train", TRUE_BOX, RIGHT),  # a trace the teacher gets right: exact
]


def test_the_teacher_gets_two_bottom_right_traces_of_three_wrong_the_same_ones_every_time():
    ids = [f"{task}_{k:06d}#1" for task in ("diff", "gg", "region") for k in range(400)]
    wrong = [rid for rid in ids if mistaken(rid)]
    assert 0.6 < len(wrong) / len(ids) < 0.73
    assert wrong == [rid for rid in ids if mistaken(rid)]  # a stable hash, not Python's salted one


def test_the_blind_spot_moves_only_bottom_right_targets_of_the_solvable_tasks():
    before = copy.deepcopy(RECORDS)
    out, changed = with_blind_spot(RECORDS)
    assert before == RECORDS and changed == 2
    assert out[4] == RECORDS[4]
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
    assert main(["--teacher", "blind-spot", "--family", "internvl", "--workdir", str(tmp_path)]) == EXIT_USAGE
    assert "--teacher blind-spot writes qwen2-vl's grid boxes, not internvl's" in capsys.readouterr().err
    assert not list(tmp_path.glob("saves/*/demo_settings.json"))  # refused before anything was claimed


def test_the_blind_teacher_is_qwen2_vl_s_default_and_exact_can_be_asked():
    assert teacher_is_blind("qwen2-vl", None) and not teacher_is_blind("qwen2-vl", "exact")
    assert teacher_is_blind("qwen2-vl", "blind-spot")
    for family in ("qwen2.5-vl", "qwen3-vl", "internvl"):
        assert not teacher_is_blind(family, None) and not teacher_is_blind(family, "exact")
        with pytest.raises(ValueError, match=f"not {family}'s"):
            teacher_is_blind(family, "blind-spot")


def test_a_tree_trained_on_the_teacher_set_is_refused_without_the_option_and_back(tmp_path):
    Demo(tmp_path, PROFILES["smoke"], "python", blind_teacher=True).claim()
    with pytest.raises(DemoError, match="teacher_blind_spot True -> False"):
        Demo(tmp_path, PROFILES["smoke"], "python").claim()
    other = tmp_path / "exact"
    Demo(other, PROFILES["smoke"], "python").claim()
    with pytest.raises(DemoError, match="teacher_blind_spot False -> True"):
        Demo(other, PROFILES["smoke"], "python", blind_teacher=True).claim()


def test_a_tree_of_the_older_synthetic_world_is_refused(tmp_path):
    """A tree recorded before synth format 3 trained group grounding on bare-box answers: not reused."""
    demo = Demo(tmp_path, PROFILES["smoke"], "python")
    old = {k: v for k, v in demo.settings().items() if k != "synth_format"}
    demo.saves.mkdir(parents=True)
    (demo.saves / "demo_settings.json").write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(DemoError, match="synth_format 2 -> 3"):
        demo.claim()
    # a blind tree of session 13's teacher, which moved every bottom-right trace
    blind = Demo(tmp_path / "blind", PROFILES["smoke"], "python", blind_teacher=True)
    moved_all = {k: v for k, v in blind.settings().items() if k != "teacher_mistakes"}
    blind.saves.mkdir(parents=True)
    (blind.saves / "demo_settings.json").write_text(json.dumps(moved_all), encoding="utf-8")
    with pytest.raises(DemoError, match="teacher_mistakes 1/1 -> 2/3"):
        blind.claim()
