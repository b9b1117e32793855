"""`python -m eval score` and `compare` on a hand-made predictions file, through the real CLI.

The expected numbers are worked out by hand in the comments next to each line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_main

LINES = [
    # diff: exact box on the 0-1000 grid -> IoU 1
    {
        "index": 0,
        "task": "diff",
        "response": "<|box_start|>(100,200),(300,400)<|box_end|>",
        "answer": [0.1, 0.2, 0.3, 0.4],
    },
    # diff: garbage -> IoU 0
    {"index": 1, "task": "diff", "response": "\x00\x16 W colour),(", "answer": [0.1, 0.2, 0.3, 0.4]},
    # common_object: decimals in brackets, already 0-1 -> IoU 1
    {"index": 2, "task": "common_object", "response": "[0.5, 0.5, 0.9, 0.9]", "answer": [0.5, 0.5, 0.9, 0.9]},
    # region: box [0, 0, .5, .5] vs answer [0, 0, .5, .55] -> IoU .25/.275 = 0.90909;
    # with --rescale migician y2 becomes .55 -> IoU 1
    {"index": 3, "task": "region", "response": "(0,0),(500,500)", "answer": [0.0, 0.0, 0.5, 0.55]},
    # region: skipped at run time (missing image) -> a miss
    {
        "index": 4,
        "task": "region",
        "skipped": "image not found: ./MIG-Bench/images/region/x.png",
        "response": "",
    },
    # group_grounding: two boxes, the first counts; the rescale does not touch multi-box answers -> IoU 0.90909 both ways
    {
        "index": 5,
        "task": "group_grounding",
        "response": "It's in the third image. (0,0),(500,500) and (1,1),(2,2)",
        "answer": [0.0, 0.0, 0.5, 0.55],
    },
]


def cli(*args, check=True):
    proc = run_main("eval", args)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def predictions(tmp_path) -> Path:
    path = tmp_path / "predictions.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in LINES)
    text += "{not json\n" + json.dumps({"index": 6, "task": "diff", "response": "(1,2),(3,4)"}) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def test_score_by_hand(predictions, tmp_path):
    out = tmp_path / "scored"
    proc = cli("score", "--predictions", str(predictions), "--output-dir", str(out))
    assert "AVE" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["tasks", "groups", "average"]
    r = 100 * 0.25 / 0.275
    expected = {
        "diff": {"n": 2, "acc@0.5": 50.0, "acc@0.3": 50.0, "acc@0.7": 50.0, "miou": 50.0},
        "common_object": {"n": 1, "acc@0.5": 100.0, "acc@0.3": 100.0, "acc@0.7": 100.0, "miou": 100.0},
        "region": {"n": 2, "acc@0.5": 50.0, "acc@0.3": 50.0, "acc@0.7": 50.0, "miou": round(r / 2, 4)},
        "group_grounding": {
            "n": 1,
            "acc@0.5": 100.0,
            "acc@0.3": 100.0,
            "acc@0.7": 100.0,
            "miou": round(r, 4),
        },
    }
    paper_keys = ["n", "acc@0.5", "acc@0.3", "acc@0.7", "miou"]
    assert {t: {k: m[k] for k in paper_keys} for t, m in metrics["tasks"].items()} == expected
    # Answer diagnostics come after the paper's keys: a box parses in 1 of 2 diff answers, in the one
    # common_object answer, in 1 of 2 region lines (the other is skipped) and in the group_grounding
    # answer; none names an image as "Image N" or [N-M] ("the third image" is not an index).
    assert all(list(m)[:5] == paper_keys for m in metrics["tasks"].values())
    assert {t: (m["well_formed"], m["image_acc"], m["image_named"]) for t, m in metrics["tasks"].items()} == {
        "diff": (50.0, None, 0),
        "common_object": (100.0, None, 0),
        "region": (50.0, None, 0),
        "group_grounding": (100.0, None, 0),
    }
    assert metrics["groups"]["spontaneous"] == {
        "n": 3,
        "acc@0.5": 75.0,
        "acc@0.3": 75.0,
        "acc@0.7": 75.0,
        "miou": 75.0,
    }
    assert metrics["groups"]["referential"]["acc@0.5"] == 75.0
    assert metrics["groups"]["referential"]["miou"] == pytest.approx((r / 2 + r) / 2, abs=1e-3)
    assert metrics["average"]["n"] == 6
    assert metrics["average"]["acc@0.5"] == pytest.approx((50 + 100 + 50 + 100) / 4)

    md = (out / "results.md").read_text()
    assert "not measured here" in md and "| Migician (paper, 7B-Scale MLLMs) | 65.15 |" in md
    assert "Migician rescale (y1*1.05, y2*1.10, capped at 0.999): off" in md
    assert "Only 4 of 10 tasks are present" in md
    assert "instance 4 (region): image not found" in md
    assert "line 7: not JSON" in md and "`answer` must be 4 numbers" in md  # bad lines are listed, not fatal
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "scope,name,short,n,acc@0.5,acc@0.3,acc@0.7,miou"
    assert "task,diff,Static,2,50.0,50.0,50.0,50.0" in csv_lines
    assert (out / "radar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rescale_migician_is_an_option_and_is_reported(predictions, tmp_path):
    out = tmp_path / "rescaled"
    cli("score", "--predictions", str(predictions), "--output-dir", str(out), "--rescale", "migician")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["region"]["miou"] == 50.0  # (1 + 0) / 2: the single box moved
    assert metrics["tasks"]["group_grounding"]["miou"] == pytest.approx(
        100 * 0.25 / 0.275, abs=1e-3
    )  # unmoved
    assert "capped at 0.999): **on**" in (out / "results.md").read_text()


def test_score_refuses_to_overwrite_and_compare(predictions, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli("score", "--predictions", str(predictions), "--output-dir", str(a))
    again = cli("score", "--predictions", str(predictions), "--output-dir", str(a), check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    cli(
        "score", "--predictions", str(predictions), "--output-dir", str(a), "--rescale", "migician", "--force"
    )
    cli("score", "--predictions", str(predictions), "--output-dir", str(b))
    table = tmp_path / "cmp.md"
    proc = cli("compare", str(a), str(b), "--metric", "miou", "--output", str(table))
    assert table.read_text() == proc.stdout
    lines = proc.stdout.splitlines()
    header = [c.strip() for c in lines[2].split("|")]
    rows = {c[1].strip(): [x.strip() for x in c] for c in (r.split("|") for r in lines[4:])}
    region = header.index("Region")
    assert rows["a"][region] == "50.00" and rows["b"][region] == "45.45"  # rescaled vs not
    assert rows["a"][header.index("MV")] == "–"  # absent task
    bad = cli("compare", str(a), str(tmp_path / "nothing"), check=False)
    assert bad.returncode == 1 and "metrics.json" in bad.stderr


def test_score_rejects_a_file_without_predictions(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "vqa", "response": "x", "answer": [0, 0, 1, 1]}\n')
    proc = cli("score", "--predictions", str(path), "--output-dir", str(tmp_path / "o"), check=False)
    assert proc.returncode == 1 and "no usable prediction" in proc.stderr
    missing = cli(
        "score",
        "--predictions",
        str(tmp_path / "none.jsonl"),
        "--output-dir",
        str(tmp_path / "o"),
        check=False,
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_qwen25_pixel_answers_are_converted_with_the_resized_target_size(tmp_path):
    # Two instances answered in absolute pixels of the resized target image (Qwen2.5-VL style).
    rows = [
        {
            "index": 0,
            "task": "diff",
            "response": '[{"bbox_2d": [56, 21, 112, 63], "label": "x"}]',
            "answer": [0.5, 0.25, 1.0, 0.75],
            "target_image": 1,
            "resized_sizes": [[56, 56], [112, 84]],
        },
        {
            "index": 1,
            "task": "region",
            "response": "(28,28),(56,56)",
            "answer": [0.25, 0.25, 0.5, 0.5],
            "target_image": 0,
            "resized_sizes": [[112, 112], [56, 56]],
        },
    ]
    path = tmp_path / "q25.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli("score", "--predictions", str(path), "--output-dir", str(tmp_path / "grid"))
    cli(
        "score",
        "--predictions",
        str(path),
        "--output-dir",
        str(tmp_path / "px"),
        "--coords",
        "resized-pixels",
    )
    grid = json.loads((tmp_path / "grid" / "metrics.json").read_text())
    px = json.loads((tmp_path / "px" / "metrics.json").read_text())
    assert grid["average"]["acc@0.5"] == 0.0  # read as the 0-1000 grid: tiny boxes near the corner
    assert px["average"]["acc@0.5"] == 100.0 and px["average"]["miou"] == 100.0
    assert "Coordinate convention: `resized-pixels`" in (tmp_path / "px" / "results.md").read_text()
