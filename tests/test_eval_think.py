"""`--answer-format think` and the answer diagnostics (well_formed, image_acc), values worked out by hand.

The end-to-end test runs the real `python -m eval run --backend openai` against a small std-lib HTTP
server on 127.0.0.1 that stands in for the model: it answers each question with a fixed reasoning-style
response (decoy boxes and images inside <think>) and records what it was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval import answers, scoring
from eval.prompts import FORMAT_SUFFIXES
from tests.conftest import REPO

THINK_SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the bounding box in "
    "<answer> </answer> tags."
)
# The decoy (0,0),(500,500) sits in <think>; the answer's box (500,500),(1000,1000) is the right one.
DECOY = "<think>Image 1 has a lamp at (0,0),(500,500) but it did not change.</think><answer>[2-1] (500,500),(1000,1000)</answer>"


def test_think_reads_only_the_answer_span():
    gt = [0.5, 0.5, 1.0, 1.0]
    official = scoring.score_response(DECOY, gt)
    think = scoring.score_response(DECOY, gt, answer_format="think")
    # official: the paper's (and UniVG-R1's) first box anywhere is the decoy [0, 0, .5, .5]: it only
    # touches the answer at a corner -> IoU 0. think: [.5, .5, 1, 1] -> IoU 1.
    assert official["parsed"] == [0.0, 0.0, 500.0, 500.0] and official["iou"] == 0.0
    assert think["parsed"] == [500.0, 500.0, 1000.0, 1000.0] and think["iou"] == 1.0
    assert think["pattern"] == "paren_pairs_int" and think["box"] == gt
    # No answer span: nothing, even with a perfect box in <think> (and an unclosed <answer>).
    for text in ("<think>(500,500),(1000,1000)</think>", "<think>x</think><answer>(500,500),(1000,1000)"):
        assert scoring.score_response(text, gt, answer_format="think") == {
            "parsed": None,
            "pattern": None,
            "box": None,
            "iou": 0.0,
        }
        assert scoring.score_response(text, gt)["iou"] == 1.0  # the official parse still finds it
    # The paper's other patterns apply inside the span: decimals in brackets are already 0-1.
    r = scoring.score_response(
        "<think>[0.1, 0.1, 0.2, 0.2]</think><answer>[0.5, 0.5, 0.9, 0.9]</answer>",
        [0.5, 0.5, 0.9, 0.9],
        answer_format="think",
    )
    assert r["pattern"] == "brackets_dec" and r["iou"] == 1.0
    with pytest.raises(ValueError, match="answer format"):
        scoring.score_response(DECOY, gt, answer_format="r1")


def test_think_suffix_is_univg_r1s():
    assert FORMAT_SUFFIXES["think"] == THINK_SUFFIX


def test_answer_stats_by_hand():
    recs = [
        # diff (target image 2): well-formed; names [2-1] -> right
        {"task": "diff", "response": DECOY, "n_images": 2, "target_image": 1},
        # diff: no answer span -> not well-formed, names nothing (the think's "Image 1" does not count)
        {"task": "diff", "response": "<think>Image 1 (1,1),(2,2)</think>", "n_images": 2, "target_image": 1},
        # diff: well-formed but names image 1 -> wrong
        {
            "task": "diff",
            "response": "<think>r</think><answer>Image 1 (1,1),(2,2)</answer>",
            "n_images": 2,
            "target_image": 1,
        },
        # diff: skipped -> counts in n, never well-formed
        {"task": "diff", "skipped": "image not found", "response": ""},
        # region: names picture 3 but no target is known -> not in image_acc; 2 images, picture 3 is none of
        # them -> not well-formed (issue 25: an index to no image is no index)
        {
            "task": "region",
            "response": "<think>r</think><answer>picture 3 (1,1),(2,2)</answer>",
            "images": ["a", "b"],
        },
        # region: no image count recorded -> assumed 1 (a note says so): no index needed -> well-formed
        {"task": "region", "response": "<think>r</think><answer>(1,1),(2,2)</answer>", "target_image": 0},
    ]
    stats, notes = answers.answer_stats(recs, "think")
    assert stats == {
        "diff": {"well_formed": 50.0, "image_acc": 50.0, "image_named": 2},  # 2 of 4; 1 right of 2 named
        "region": {"well_formed": 50.0, "image_acc": None, "image_named": 0},
    }
    assert notes == ["1 prediction(s) record no image count; well_formed assumed one image for them"]
    stats, notes = answers.answer_stats(recs, "official")
    # official: a box parses in 3 of 4 diff lines; the whole response is read, so line 2's "Image 1"
    # counts (wrong) and line 1's first [N-M] is [2-1] (right): 1 right of 3 named.
    assert stats["diff"] == {"well_formed": 75.0, "image_acc": round(100 / 3, 4), "image_named": 3}
    assert stats["region"] == {"well_formed": 100.0, "image_acc": None, "image_named": 0} and notes == []


# ---------------------------------------------------------------- end to end through `eval run`

# question -> the model's response. Ground truths and targets are in BENCH below.
RESPONSES = {
    # diff, target image 2, answer [.5, .5, 1, 1]. think: IoU 1, well-formed, names 2 (right).
    # official: the decoy (IoU 0); the first [N-M] anywhere is [2-1] (right).
    "Where did the lamp change?": DECOY,
    # diff, same answer. think: no answer span -> IoU 0, not well-formed, no image.
    # official: the box (IoU 1), "Image 1" (wrong).
    "Where did the cup change?": "<think>The change is at (500,500),(1000,1000).</think> The answer is Image 1.",
    # region, target image 1, answer [0, 0, .5, .5]. think: (0,0),(250,250) -> IoU .0625/.25 = .25,
    # well-formed, "Image 1" (right). official: the think's (0,0),(500,500) -> IoU 1; "picture 2" (wrong).
    "Find the region of the dog.": "<think>Looking at picture 2 (0,0),(500,500)</think><answer>Image 1 (0,0),(250,250)</answer>",
    # group_grounding, target image 3 (additional_info), answer [.1, .1, .3, .3]. Both: IoU 1, [3-1]
    # (right). think: blank think -> not well-formed. official: a box parses -> well-formed.
    "Which image shows the red car?": "<think> </think><answer>[3-1] (100,100),(300,300)</answer>",
}
BENCH = [
    {
        "task": "diff",
        "images": ["a.png", "b.png"],
        "question": "Where did the lamp change?",
        "answer": [0.5, 0.5, 1.0, 1.0],
    },
    {
        "task": "diff",
        "images": ["a.png", "b.png"],
        "question": "Where did the cup change?",
        "answer": [0.5, 0.5, 1.0, 1.0],
    },
    {
        "task": "region",
        "images": ["a.png", "b.png", "c.png"],
        "question": "Find the region of the dog.",
        "answer": [0.0, 0.0, 0.5, 0.5],
    },
    {
        "task": "group_grounding",
        "images": ["a.png", "b.png", "c.png"],
        "question": "Which image shows the red car?",
        "answer": [0.1, 0.1, 0.3, 0.3],
        "additional_info": "Image-3",
    },
]
THINK_METRICS = {
    "diff": {
        "n": 2,
        "acc@0.5": 50.0,
        "acc@0.3": 50.0,
        "acc@0.7": 50.0,
        "miou": 50.0,
        "well_formed": 50.0,
        "image_acc": 100.0,
        "image_named": 1,
    },
    "region": {
        "n": 1,
        "acc@0.5": 0.0,
        "acc@0.3": 0.0,
        "acc@0.7": 0.0,
        "miou": 25.0,
        "well_formed": 100.0,
        "image_acc": 100.0,
        "image_named": 1,
    },
    "group_grounding": {
        "n": 1,
        "acc@0.5": 100.0,
        "acc@0.3": 100.0,
        "acc@0.7": 100.0,
        "miou": 100.0,
        "well_formed": 0.0,
        "image_acc": 100.0,
        "image_named": 1,
    },
}


def _paper_metrics(tasks: dict) -> dict:
    """The tasks' metrics without the outcome counts (tests/test_eval_outcomes.py checks those)."""
    return {t: {k: v for k, v in m.items() if k != "outcomes"} for t, m in tasks.items()}


OFFICIAL_METRICS = {
    "diff": {
        "n": 2,
        "acc@0.5": 50.0,
        "acc@0.3": 50.0,
        "acc@0.7": 50.0,
        "miou": 50.0,
        "well_formed": 100.0,
        "image_acc": 50.0,
        "image_named": 2,
    },
    "region": {
        "n": 1,
        "acc@0.5": 100.0,
        "acc@0.3": 100.0,
        "acc@0.7": 100.0,
        "miou": 100.0,
        "well_formed": 100.0,
        "image_acc": 0.0,
        "image_named": 1,
    },
    "group_grounding": {
        "n": 1,
        "acc@0.5": 100.0,
        "acc@0.3": 100.0,
        "acc@0.7": 100.0,
        "miou": 100.0,
        "well_formed": 100.0,
        "image_acc": 100.0,
        "image_named": 1,
    },
}


@pytest.fixture()
def bench(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "MIG-Bench"
    (folder / "images").mkdir(parents=True)
    for name, colour in (("a.png", "red"), ("b.png", "green"), ("c.png", "blue")):
        Image.new("RGB", (64, 56), colour).save(folder / "images" / name)
    data = [dict(rec, images=[f"./MIG-Bench/images/{p}" for p in rec["images"]]) for rec in BENCH]
    path = folder / "MIG_data.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture()
def model_server():
    """A chat-completions endpoint answering from RESPONSES; `requests` records every payload."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(payload)
            text = payload["messages"][-1]["content"][-1]["text"]
            question = next((q for q in RESPONSES if text.startswith(q)), None)
            body = json.dumps(
                {
                    "choices": [
                        {"message": {"content": RESPONSES.get(question, "no idea")}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)  # a quick shutdown()
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "eval", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # an end-to-end run: `make test` runs it, `make test-unit` does not
def test_think_run_end_to_end(bench, model_server, tmp_path):
    base, requests = model_server
    out = tmp_path / "think"
    run = [
        "run",
        "--backend",
        "openai",
        "--model",
        "rl-model",
        "--api-base",
        base,
        "--bench",
        str(bench),
        "--output-dir",
        str(out),
        "--format-suffix",
        "think",
        "--max-new-tokens",
        "256",
    ]
    proc = cli(*run, "--answer-format", "think")
    assert proc.returncode == 0, proc.stderr
    # The model saw UniVG-R1's suffix appended to each question, and 256 new tokens.
    texts = sorted(r["messages"][-1]["content"][-1]["text"] for r in requests)
    assert texts == sorted(q + THINK_SUFFIX for q in RESPONSES)
    assert {r["max_tokens"] for r in requests} == {256}

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["tasks", "groups", "average"]
    assert _paper_metrics(metrics["tasks"]) == THINK_METRICS
    assert metrics["average"]["acc@0.5"] == pytest.approx((50 + 0 + 100) / 3, abs=1e-4)
    assert json.loads((out / "run.json").read_text())["protocol"]["answer_format"] == "think"
    assert json.loads((out / "scoring.json").read_text())["answer_format"] == "think"
    md = (out / "results.md").read_text()
    assert "- Answer format: `think`" in md and "MIRG-RL's think/answer format rule" in md
    assert "| GG | 1 | 0.00 | 1 | 100.00 |" in md
    preds = {r["index"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert preds[0]["iou"] == 1.0 and preds[1]["iou"] == 0.0  # per-line scores use the think parse too

    # `eval score` of this run without the flag is refused; with it, the same numbers.
    refused = cli(
        "score", "--predictions", str(out / "predictions.jsonl"), "--output-dir", str(tmp_path / "s0")
    )
    assert refused.returncode == 1 and "--answer-format think" in refused.stderr
    assert not (tmp_path / "s0").exists()
    again = cli(
        "score",
        "--predictions",
        str(out / "predictions.jsonl"),
        "--output-dir",
        str(tmp_path / "s1"),
        "--answer-format",
        "think",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "s1" / "metrics.json").read_text()) == metrics
    # Explicitly official: the paper's parse, with a note that the run recorded think.
    off = cli(
        "score",
        "--predictions",
        str(out / "predictions.jsonl"),
        "--output-dir",
        str(tmp_path / "s2"),
        "--answer-format",
        "official",
    )
    assert off.returncode == 0, off.stderr
    assert (
        _paper_metrics(json.loads((tmp_path / "s2" / "metrics.json").read_text())["tasks"])
        == OFFICIAL_METRICS
    )
    assert (
        "scored with --answer-format official; the run recorded think"
        in (tmp_path / "s2" / "results.md").read_text()
    )

    # The same folder with the official answer format is another protocol: refused, run untouched.
    before = (out / "predictions.jsonl").read_bytes()
    other = cli(*run)
    assert other.returncode == 1 and "answer_format" in other.stderr and "--force" in other.stderr
    assert (out / "predictions.jsonl").read_bytes() == before


@pytest.mark.slow  # an end-to-end run: `make test` runs it, `make test-unit` does not
def test_official_run_records_no_answer_format(bench, model_server, tmp_path):
    base, _ = model_server
    out = tmp_path / "official"
    proc = cli(
        "run",
        "--backend",
        "openai",
        "--model",
        "rl-model",
        "--api-base",
        base,
        "--bench",
        str(bench),
        "--output-dir",
        str(out),
        "--format-suffix",
        "think",
        "--max-new-tokens",
        "256",
    )
    assert proc.returncode == 0, proc.stderr
    # run.json of an official run has exactly the keys it had before answer formats existed.
    assert "answer_format" not in json.loads((out / "run.json").read_text())["protocol"]
    assert _paper_metrics(json.loads((out / "metrics.json").read_text())["tasks"]) == OFFICIAL_METRICS
    # A rerun resumes (nothing to generate), and `eval score` needs no flag.
    assert (
        cli(
            "run",
            "--backend",
            "openai",
            "--model",
            "rl-model",
            "--api-base",
            base,
            "--bench",
            str(bench),
            "--output-dir",
            str(out),
            "--format-suffix",
            "think",
            "--max-new-tokens",
            "256",
        ).returncode
        == 0
    )
    scored = cli(
        "score", "--predictions", str(out / "predictions.jsonl"), "--output-dir", str(tmp_path / "s")
    )
    assert scored.returncode == 0, scored.stderr
    assert (
        _paper_metrics(json.loads((tmp_path / "s" / "metrics.json").read_text())["tasks"]) == OFFICIAL_METRICS
    )


def test_pixel_coords_without_a_target_size_count_only_answer_boxes(tmp_path):
    from eval.runner import score_file

    rows = [  # no target_image: a box cannot be converted from pixels and is a miss, with a note
        {
            "index": 0,
            "task": "diff",
            "response": "<think>r</think><answer>(1,1),(5,5)</answer>",
            "answer": [0, 0, 1, 1],
        },
        {"index": 1, "task": "diff", "response": "<think>(1,1),(5,5)</think>", "answer": [0, 0, 1, 1]},
    ]
    path = tmp_path / "run" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for fmt, count in (("think", 1), ("official", 2)):  # think: the box in <think> is no box at all
        out = tmp_path / fmt
        metrics = score_file(path, out, coords="resized-pixels", answer_format=fmt)
        assert metrics["tasks"]["diff"]["acc@0.5"] == 0.0
        notes = json.loads((out / "scoring.json").read_text())["notes"]
        assert (
            f"{count} answer(s) had a box but no known target-image size for coords=resized-pixels; scored as misses"
            in notes
        )
