"""IoU, the Migician rescale and the metric aggregation, with values worked out by hand."""

from __future__ import annotations

import pytest

from eval import scoring
from eval.benchmarks import get_benchmark


def pct(x):
    """metrics.json keeps 4 decimals of each percentage."""
    return pytest.approx(x, abs=1e-3)


@pytest.mark.parametrize(
    ("gt", "pred", "expected"),
    [
        ([0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], 1.0),
        ([0, 0, 1, 1], [0, 0, 0.5, 1], 0.5),  # half of the area
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # overlap 1, union 4 + 4 - 1
        ([0, 0, 1, 1], [0.25, 0.25, 0.75, 0.75], 0.25),  # inside
        ([0, 0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], 0.0),  # disjoint
        ([0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], 0.0),  # touching edge
        ([0, 0, 1, 1], [0.6, 0.6, 0.4, 0.4], 0.0),  # inverted prediction
        ([0.027, 0.18, 0.143, 0.051], [0, 0, 1, 1], 0.0),  # inverted answer (one exists in MIG-Bench)
        ([0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2], 0.0),  # two empty boxes: the script divides by zero
        ([0, 0, 1, 1], None, 0.0),
        ([0, 0, 1, 1], [], 0.0),
    ],
)
def test_iou(gt, pred, expected):
    assert scoring.iou(gt, pred) == pytest.approx(expected)


def test_thresholds_are_inclusive():
    # IoU exactly 0.5 counts for Acc@0.5 (the script tests `>=`).
    rec = [{"task": "diff", "iou": 0.5}, {"task": "diff", "iou": 0.3}, {"task": "diff", "iou": 0.7}]
    m = get_benchmark().aggregate(rec)["tasks"]["diff"]
    assert m == {
        "n": 3,
        "acc@0.5": pct(200 / 3),
        "acc@0.3": 100.0,
        "acc@0.7": pct(100 / 3),
        "miou": pct(50.0),
    }


def test_rescale_migician_by_hand():
    # y1 * 1.05 and y2 * 1.10, capped at 0.999, rounded to 3 decimals; x untouched.
    assert scoring.rescale_migician([0.1, 0.2, 0.3, 0.4], 1) == pytest.approx([0.1, 0.21, 0.3, 0.44])
    assert scoring.rescale_migician([0.1, 0.96, 0.3, 0.95], 1) == pytest.approx([0.1, 0.999, 0.3, 0.999])
    assert scoring.rescale_migician([0.1, 0.333, 0.3, 0.777], 1) == [0.1, 0.35, 0.3, 0.855]
    # The script's try/except skips answers with several boxes and answers without one.
    assert scoring.rescale_migician([0.1, 0.2, 0.3, 0.4], 2) == [0.1, 0.2, 0.3, 0.4]
    assert scoring.rescale_migician(None, 1) is None


def test_score_response_end_to_end():
    answer = [0.1, 0.21, 0.3, 0.44]
    out = scoring.score_response("(100,200),(300,400)", answer)
    assert out["box"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert out["iou"] == pytest.approx((0.2 * 0.19) / (0.2 * 0.23 + 0.2 * 0.2 - 0.2 * 0.19))
    shifted = scoring.score_response("(100,200),(300,400)", answer, rescale="migician")
    assert shifted["box"] == pytest.approx([0.1, 0.21, 0.3, 0.44])
    assert shifted["iou"] == pytest.approx(1.0)
    assert scoring.score_response("no box here", answer)["iou"] == 0.0


def test_qwen25_absolute_pixels_need_the_resized_size():
    # A Qwen2.5-VL answer in pixels of its 448x336 input; the answer box is 0-1.
    answer = [0.25, 0.25, 0.75, 0.75]
    text = '```json\n[{"bbox_2d": [112, 84, 336, 252], "label": "cup"}]\n```'
    assert scoring.score_response(text, answer)["iou"] < 0.01  # misread on the 0-1000 grid
    fixed = scoring.score_response(text, answer, coords="resized-pixels", size=(448, 336))
    assert fixed["iou"] == pytest.approx(1.0)


def test_aggregate_layout_groups_and_present_tasks():
    records = (
        [{"task": "diff", "iou": 0.9}, {"task": "diff", "iou": 0.1}]  # 50 / 50 / 50, miou 50
        + [{"task": "common_object", "iou": 0.6}]  # 100 / 100 / 0, miou 60
        + [{"task": "region", "iou": 0.0}, {"task": "region", "iou": 0.4}, {"task": "region", "iou": None}]
    )
    m = get_benchmark().aggregate(records)
    assert list(m) == ["tasks", "groups", "average"]
    assert list(m["tasks"]) == ["diff", "common_object", "region"]  # Table 1 order, present only
    for v in m["tasks"].values():
        assert list(v) == ["n", "acc@0.5", "acc@0.3", "acc@0.7", "miou"]
    assert m["tasks"]["region"] == {
        "n": 3,
        "acc@0.5": 0.0,
        "acc@0.3": pct(100 / 3),
        "acc@0.7": 0.0,
        "miou": pct(40 / 3),
    }
    spont = m["groups"]["spontaneous"]
    assert spont["n"] == 3
    assert spont["acc@0.5"] == pct((50 + 100) / 2)
    assert spont["miou"] == pct((50 + 60) / 2)
    assert m["groups"]["referential"]["acc@0.3"] == pct(100 / 3)
    # Unweighted over the three present tasks (not over the six instances).
    assert m["average"]["acc@0.5"] == pct((50 + 100 + 0) / 3)
    assert m["average"]["n"] == 6


def test_aggregate_reproduces_the_paper_average():
    # Migician's Table 1 row: AVE 63.82 is the unweighted mean of the ten task scores.
    from eval.benchmarks.mig_bench import REFERENCES
    from eval.tasks import TASK_NAMES

    row = next(r.values for r in REFERENCES if r.name == "Migician")
    records = []
    for task in TASK_NAMES:
        acc = row[task]
        hits = round(acc * 100)  # 10,000 instances per task reproduce the percentage exactly
        records += [{"task": task, "iou": 1.0}] * hits + [{"task": task, "iou": 0.0}] * (10000 - hits)
    assert get_benchmark().aggregate(records)["average"]["acc@0.5"] == pytest.approx(row["AVE"], abs=0.005)


def test_aggregate_refuses_unknown_tasks():
    with pytest.raises(ValueError, match="not MIG-Bench tasks"):
        get_benchmark().aggregate([{"task": "vqa", "iou": 1.0}])
