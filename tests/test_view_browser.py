"""The eval viewer in a real browser: Debian's chromium, headless (`.ci/run` installs it when missing).

Each page is opened from disk as a user would: the DOM after its own script ran (--dump-dom) is counted
(one article per instance, GT and predicted rects where they belong, the outcome filter applied from the
URL), the console must hold no error (--enable-logging: a blocked script, a missing image, a CSP
violation would all be there; a control page shows the check sees them), a screenshot must show the
boxes' colours, and hostile answers must stay text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from eval.synthetic import make_synthetic_bench, make_synthetic_run
from tests.conftest import run_main

pytestmark = pytest.mark.slow  # a browser start is ~1-2 s; CI runs them (make test)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: `apt-get install chromium` (.ci/run installs it)"
    return path


def browse(chromium: str, url: str, *flags: str) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the console messages)."""
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            *flags,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Chromium logs every console message (errors, CSP violations, failed loads) as INFO:CONSOLE; the
    # viewer's pages write none of their own, so any is a problem.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


class Dom(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.cards: list[dict] = []
        self.scripts = 0
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.cards.append(
                {
                    "index": int(a["data-index"]),
                    "outcome": a["data-outcome"],
                    "hidden": "hidden" in a,
                    "rects": [],
                }
            )
        elif tag == "rect" and self.cards:
            self.cards[-1]["rects"].append(a.get("class"))
        elif tag == "script":
            self.scripts += 1
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    bench = make_synthetic_bench(root / "data", per_task=4, seed=11)
    out = make_synthetic_run(bench, root / "run", seed=11)
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    hostile = [
        "<script>document.title='pwned'</script>[1-1](100,100),(300,300)",
        '</svg></pre></article><img src=x onerror="document.title=\'pwned\'"><svg><rect class="pred"/></svg>',
        "<b>" + "x" * 1_000_000,
        "\ud800 lone surrogates \udfff",
    ]
    diffs = [r for r in lines if r["task"] == "diff"]
    for rec, text in zip(diffs, hostile, strict=False):
        rec["response"] = text
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert (
        run_main(
            "eval", ["score", "--predictions", str(out / "predictions.jsonl"), "--output-dir", str(out)]
        ).returncode
        == 0
    )
    assert run_main("eval", ["view", str(out)]).returncode == 0
    return out


def test_console_capture_sees_errors(chromium, tmp_path):
    """The control: a page with a failing script and a missing image does log errors."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><img src="missing.png"><script>undefinedFunction();</script>')
    _, console = browse(chromium, page.as_uri(), "--dump-dom")
    assert any("undefinedFunction" in line for line in console), console


def test_pages_render_every_box_with_no_console_error(chromium, run, tmp_path):
    metrics = json.loads((run / "metrics.json").read_text())
    counted: dict[str, dict[str, int]] = {}
    for page in sorted((run / "view").glob("*-1.html")):
        dom, console = browse(chromium, page.as_uri(), "--dump-dom")
        assert console == [], (page.name, console)
        parsed = Dom(dom)
        assert parsed.scripts == 1 and parsed.title.startswith("MIG-Bench")
        task = page.name.rsplit("-", 1)[0]
        for card in parsed.cards:
            assert card["rects"].count("gt") == 1
            assert card["rects"].count("pred") == (card["outcome"] != "unparsed")
            counted.setdefault(task, dict.fromkeys(metrics["tasks"][task]["outcomes"], 0))[
                card["outcome"]
            ] += 1
    assert counted == {t: m["outcomes"] for t, m in metrics["tasks"].items()}
    # the page's own script filters by the URL's outcome list (CSP lets it run)
    page = next(p for p in (run / "view").glob("*-1.html") if "hit" in p.read_text())
    dom, console = browse(chromium, page.as_uri() + "#only=hit", "--dump-dom")
    cards = Dom(dom).cards
    assert console == [] and cards and all(c["hidden"] == (c["outcome"] != "hit") for c in cards)
    # the index finds an instance's page
    index = (run / "view" / "index.html").as_uri()
    dom, console = browse(chromium, index + "#i99999", "--dump-dom")
    assert console == [] and "instance 99999 is not in this view" in dom


def test_hostile_answers_stay_text_and_the_boxes_are_drawn(chromium, run, tmp_path):
    page = run / "view" / "diff-1.html"
    dom, console = browse(chromium, page.as_uri(), "--dump-dom")
    parsed = Dom(dom)
    assert console == [] and "pwned" not in parsed.title and parsed.scripts == 1
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "&lt;/svg&gt;&lt;/pre&gt;&lt;/article&gt;&lt;img src=x" in dom
    assert "[995,907 more characters not shown]" in dom and "\\ud800 lone surrogates \\udfff" in dom
    assert len(parsed.cards) == 4  # the markup in the answers opened no element
    shot = tmp_path / "diff-1.png"
    browse(chromium, page.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars")
    with Image.open(shot) as im:  # below the legend's swatches: the cards' own rects
        colours = set(im.convert("RGB").crop((0, 160, im.width, im.height)).getdata())
    assert (0, 200, 83) in colours and (213, 0, 0) in colours  # rect.gt and rect.pred strokes were painted
    keep = run.parent / "diff-1.png"  # beside the run, for a look (the path is in the test's output)
    shutil.copy(shot, keep)
    print(f"screenshot: {keep}")
