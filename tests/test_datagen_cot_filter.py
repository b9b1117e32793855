"""`datagen trajectories --filter-against`: MG-Thinker's "keep reasoning only where it helps" rule.

The rule itself on hand-picked IoUs (every branch, at its thresholds), then the whole pipeline against
the scripted stand-in teacher (the only stand-in: an outside service) with a predictions file in
`eval run`'s line format.
"""

from __future__ import annotations

import json

import pytest

from datagen.__main__ import main
from datagen.cot_filter import PredictionsError, load_predictions, verdict
from tests.test_datagen_pipeline import make_detections, read_json_array
from tests.test_datagen_server import StandIn


@pytest.mark.parametrize(
    "direct,cot,expected",
    [
        (0.60, 0.70, (True, "correct_gain")),  # correct, +0.10 exactly
        (0.60, 0.69, (False, "no_gain_correct")),
        (1.00, 1.00, (False, "no_gain_correct")),
        (0.40, 0.50, (True, "fixed")),  # wrong -> correct, whatever the gain
        (0.00, 0.20, (True, "wrong_gain")),  # still wrong, +0.20 exactly
        (0.10, 0.29, (False, "no_gain_wrong")),
        (0.30, 0.10, (False, "no_gain_wrong")),
    ],
)
def test_the_rule(direct, cot, expected):
    assert verdict(direct, cot) == expected


def _prediction(index, images, iou):
    """One line as `eval run` writes it (the fields the filter reads, and a few it ignores)."""
    return {"index": index, "task": "reasoning", "images": images, "response": "(1,2),(3,4)", "iou": iou,
            "answer": [0.1, 0.2, 0.3, 0.4], "target_image": 1}  # fmt: skip


def _rl_records(tmp_path, n):
    from converters.trajectories import PROMPT_SUFFIX

    det = make_detections(tmp_path / "det", n=4)
    imgs = [str(det.parent / "images" / f"{i:03d}.png") for i in range(4)]
    recs = [
        {"id": f"r{k}", "type": "x", "images": imgs[:2], "task": "reasoning", "image_index": 2, "box": [100, 200, 300, 400],
         "num_images": 2, "conversations": [{"from": "human", "value": "<image>\n<image>\nFind the dog in the second image." + PROMPT_SUFFIX},
                                            {"from": "gpt", "value": "x"}]}
        for k in range(n)
    ]  # fmt: skip
    path = tmp_path / "mg_rl.json"
    path.write_text(json.dumps(recs))
    return path, imgs[:2]


def test_filter_end_to_end_keeps_only_helpful_traces_and_reports_why(tmp_path, capsys):
    rl, images = _rl_records(tmp_path, 4)
    # The stand-in's reasoning answers the truth box (IoU 1.0). Record 3 has no prediction.
    preds = tmp_path / "direct" / "predictions.jsonl"
    preds.parent.mkdir()
    lines = [_prediction(0, images, 1.0), _prediction(1, images, 0.85), _prediction(2, images, 0.1)]
    lines.append({"index": 3, "skipped": "too many images", "images": images, "iou": 0.0})
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "traj"
    with StandIn() as s:
        args = ["trajectories", "--input", str(rl), "--api-base", s.base, "--cot-model", "c", "--mapping-model", "m",
                "--reassembly-model", "r", "--output", str(out), "--quiet", "--filter-against", str(preds)]  # fmt: skip
        assert main(args) == 0
        # 4 CoT requests; mapping and reassembly only for the 2 kept traces
        assert len(s.requests) == 4 + 2 + 2
    assert [r["id"] for r in read_json_array(out / "datagen_traj_sft.json")] == ["r1", "r2"]
    report = json.loads((out / "datagen_traj.report.json").read_text())
    assert report["filter"]["kept"] == {"correct_gain": 1, "fixed": 1}
    assert report["filter"]["dropped"] == {"no_gain_correct": 1, "no_direct_prediction": 1}
    assert report["steps"]["filter"]["accepted"] == 2
    rejects = [json.loads(x) for x in (out / "datagen_traj.rejects.jsonl").read_text().splitlines()]
    assert {(r["id"], r["step"], r["reason"]) for r in rejects} == {
        ("r0", "filter", "no_gain_correct"),
        ("r3", "filter", "no_direct_prediction"),
    }
    printed = capsys.readouterr().out
    assert "filter kept 2: correct_gain 1, fixed 1" in printed
    assert "filter dropped 2: no_direct_prediction 1, no_gain_correct 1" in printed


def test_predictions_of_other_records_are_refused_before_any_request(tmp_path, capsys):
    rl, images = _rl_records(tmp_path, 2)
    preds = tmp_path / "predictions.jsonl"
    preds.write_text(json.dumps(_prediction(0, ["/elsewhere/a.png", "/elsewhere/b.png"], 0.3)) + "\n")
    with StandIn() as s:
        args = ["trajectories", "--input", str(rl), "--api-base", s.base, "--cot-model", "c", "--mapping-model", "m",
                "--reassembly-model", "r", "--output", str(tmp_path / "o"), "--quiet", "--filter-against", str(preds)]  # fmt: skip
        assert main(args) == 1
    assert "same records in the same order" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,message",
    [
        ("not json\n", "line 1: not JSON"),
        ('{"index": "0", "iou": 0.5, "images": []}\n', "index '0' is not a non-negative integer"),
        ('{"index": 0, "iou": null, "images": []}\n', "iou None is not a number"),
        ('{"index": 0, "skipped": "x"}\n', "no scored prediction"),
    ],
)
def test_bad_predictions_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(PredictionsError, match=message):
        load_predictions(path)
    with pytest.raises(PredictionsError, match="no such file"):
        load_predictions(tmp_path / "missing.jsonl")
