"""`python -m eval view`: the pages of a scored synthetic run, read back with the standard HTML parser.

The browser's own reading of the same pages (console, DOM, screenshot) is tests/test_view_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from eval.outcomes import OUTCOMES
from eval.synthetic import make_synthetic_bench, make_synthetic_run
from tests.conftest import run_main


class Page(HTMLParser):
    """The cards of a page (data-index, data-outcome, rects by class) and every src/href."""

    def __init__(self, path: Path):
        super().__init__()
        self.cards: list[dict] = []
        self.urls: list[str] = []
        self.scripts = 0
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.cards.append({"index": int(a["data-index"]), "outcome": a["data-outcome"], "rects": []})
        elif tag == "rect" and self.cards:
            self.cards[-1]["rects"].append(a["class"])
        elif tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in a:
                self.urls.append(a[key])


def eval_cli(*args, code=0):
    proc = run_main("eval", [str(a) for a in args])
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("view")
    bench = make_synthetic_bench(root / "data", per_task=6, seed=5)
    run = make_synthetic_run(bench, root / "run", seed=5)
    eval_cli("score", "--predictions", run / "predictions.jsonl", "--output-dir", run)
    return run


def pages(view: Path) -> list[Path]:
    return sorted(p for p in view.glob("*.html") if p.name != "index.html")


def test_every_instance_once_with_its_outcome_and_boxes(scored_run):
    proc = eval_cli("view", scored_run, "--page-size", "4")
    assert "60 instance(s)" in proc.stdout
    metrics = json.loads((scored_run / "metrics.json").read_text())
    preds = {
        r["index"]: r for r in map(json.loads, (scored_run / "predictions.jsonl").read_text().splitlines())
    }
    seen, by_task = {}, {}
    for page in pages(scored_run / "view"):
        parsed = Page(page)
        assert parsed.scripts == 1 and parsed.cards
        ranks = [("wrong_image", "miss", "unparsed", "hit").index(c["outcome"]) for c in parsed.cards]
        assert ranks == sorted(ranks)  # failures first
        for card in parsed.cards:
            assert card["index"] not in seen
            seen[card["index"]] = card
            task = preds[card["index"]]["task"]
            by_task.setdefault(task, dict.fromkeys(OUTCOMES, 0))[card["outcome"]] += 1
            # one GT rect (the target is known), one predicted rect whenever a box was read
            assert card["rects"].count("gt") == 1
            assert card["rects"].count("pred") == (card["outcome"] != "unparsed")
        # nothing is fetched from anywhere: links and images are files beside the page
        assert all(not re.match(r"^[a-z]+:|^//", u) for u in parsed.urls), parsed.urls
    assert sorted(seen) == sorted(preds)
    assert by_task == {t: m["outcomes"] for t, m in metrics["tasks"].items()}
    # the page series of a task: 6 instances, 4 a page -> 2 pages; the index links each
    index = (scored_run / "view" / "index.html").read_text()
    assert 'href="diff-2.html"' in index and (scored_run / "view" / "diff-2.html").is_file()


def test_rerun_reuses_thumbnails_and_drops_stale_pages(scored_run):
    eval_cli("view", scored_run, "--page-size", "4")
    proc = eval_cli("view", scored_run, "--task", "diff,region", "--outcome", "miss", "hit", "--limit", "2")
    assert " 0 new and " in proc.stdout
    names = {p.name for p in pages(scored_run / "view")}
    assert names <= {"diff-1.html", "region-1.html"}
    for page in pages(scored_run / "view"):
        cards = Page(page).cards
        assert 1 <= len(cards) <= 2 and {c["outcome"] for c in cards} <= {"miss", "hit"}


def test_a_score_folder_is_viewed_from_the_predictions_it_names(scored_run, tmp_path):
    out = tmp_path / "rescored"
    eval_cli("score", "--predictions", scored_run / "predictions.jsonl", "--output-dir", out)
    eval_cli("view", out, "--task", "common_object")
    cards = Page(out / "view" / "common_object-1.html").cards
    assert len(cards) == 6 and all("gt" in c["rects"] for c in cards)


def test_hostile_answers_render_as_text(scored_run, tmp_path):
    run = tmp_path / "hostile"
    shutil.copytree(scored_run, run, ignore=shutil.ignore_patterns("view"))
    lines = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    evil = [
        "<script>alert(1)</script>(100,100),(300,300)",
        "</svg></pre></article><img src=x onerror=alert(2)>",
        "A" * 1_000_000,
        "\ud800 lone \udfff surrogates \x00\x1b[31m",
    ]
    for rec, text in zip(lines, evil, strict=False):
        rec["response"] = text
    # json.dumps escapes the surrogates (ensure_ascii), as eval's own writer does for such text
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    eval_cli("view", run, "--task", lines[0]["task"])
    page = (run / "view" / f"{lines[0]['task']}-1.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/svg&gt;&lt;/pre&gt;&lt;/article&gt;" in page
    assert "[995,904 more characters not shown]" in page and len(page) < 200_000
    assert "\\ud800 lone \\udfff surrogates \\x00\\x1b[31m" in page
    assert len(Page(run / "view" / f"{lines[0]['task']}-1.html").cards) == 6


def test_refusals(scored_run, tmp_path):
    foreign = tmp_path / "run"
    shutil.copytree(scored_run, foreign, ignore=shutil.ignore_patterns("view"))
    (foreign / "view").mkdir()
    (foreign / "view" / "notes.txt").write_text("mine")
    proc = eval_cli("view", foreign, code=1)
    assert "no manifest.json" in proc.stderr and (foreign / "view" / "notes.txt").read_text() == "mine"
    assert "is not a folder" in eval_cli("view", tmp_path / "nothing", code=1).stderr
    assert "unknown task" in eval_cli("view", scored_run, "--task", "nope", code=1).stderr
    eval_cli("view", scored_run, "--outcome", "nope", code=2)
