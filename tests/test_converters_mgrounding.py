"""`python -m converters mgrounding` on the hand-made bad-case fixture (one record per reason).

Each fixture record's id starts with the outcome it must get: `ok__`, `fixed__`, or
the reject reason code; the two records without a usable id are bad_record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.records import REASONS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "converters"
CASES = FIXTURES / "mgrounding_cases.json"
ROOT = FIXTURES / "data_root"


def expected_outcome(record) -> str:
    if not isinstance(record, dict) or "id" not in record:
        return "bad_record"
    return record["id"].split("__")[0]


def run(tmp_path: Path, *extra: str, input_path: Path = CASES) -> tuple[int, Path, Path]:
    out, rej = tmp_path / "out.json", tmp_path / "rejects.jsonl"
    argv = ["mgrounding", "--input", str(input_path), "--image-root", str(ROOT), "--output", str(out)]
    code = main([*argv, "--rejects", str(rej), *extra])
    return code, out, rej


def test_every_bad_case_gets_its_reason_and_the_run_goes_on(tmp_path, capsys):
    cases = json.loads(CASES.read_text(encoding="utf-8"))
    code, out, rej = run(tmp_path, "--check-images", "--max-reject-rate", "1", "--workers", "2")
    assert code == 0
    rejects = [json.loads(line) for line in rej.read_text(encoding="utf-8").splitlines()]
    got = {r["index"]: r["reason"] for r in rejects}
    for index, record in enumerate(cases):
        want = expected_outcome(record)
        if want in ("ok", "fixed"):
            assert index not in got, (index, record.get("id"), got.get(index))
        else:
            assert got.get(index) == want, (index, record)
    assert all(r["id"] == cases[r["index"]].get("id") for r in rejects if isinstance(cases[r["index"]], dict))
    assert set(got.values()) == set(REASONS), "the fixture covers every reason code"

    kept = json.loads(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in kept] == [
        r["id"] for r in cases if expected_outcome(r) in ("ok", "fixed")
    ]  # order and ids kept
    for record in kept:
        assert set(record) == {"id", "type", "images", "conversations"}
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in record["images"])
        n_placeholders = sum(t["value"].count("<image>") for t in record["conversations"])
        assert n_placeholders == len(record["images"])
    fixed = next(r for r in kept if r["id"] == "fixed__no_placeholders")
    assert fixed["conversations"][0]["value"] == "<image>\n<image>\nLocate the common object."
    assert fixed["type"] == "common_train"

    summary = capsys.readouterr().out
    assert f"{len(cases)} records read, {len(kept)} kept (1 fixed" in summary
    assert "bad_box                        8" in summary
    assert "undecodable_image              2" in summary


def test_without_check_images_files_are_not_opened(tmp_path):
    code, out, rej = run(tmp_path, "--max-reject-rate", "1")
    assert code == 0
    kept = {r["id"] for r in json.loads(out.read_text(encoding="utf-8"))}
    assert {"missing_image", "undecodable_image__truncated"} <= kept


def test_reject_rate_above_limit_writes_rejects_but_not_output(tmp_path, capsys):
    code, out, rej = run(tmp_path)  # default --max-reject-rate 0.01
    assert code == 1  # cli.py's "bad input": nothing usable was kept (it was 3 before the shared table)
    assert not out.exists()
    assert rej.exists() and len(rej.read_text(encoding="utf-8").splitlines()) > 0
    assert "was not written" in capsys.readouterr().err


def test_invalid_json_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(CASES.read_text(encoding="utf-8")[:-40], encoding="utf-8")
    code, out, rej = run(tmp_path, "--max-reject-rate", "1", input_path=bad)
    assert code == 1
    assert not out.exists() and not rej.exists()
    assert "invalid JSON at line" in capsys.readouterr().err


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("keep me", encoding="utf-8")
    code, _, rej = run(tmp_path, "--max-reject-rate", "1")
    assert code == 1 and out.read_text(encoding="utf-8") == "keep me" and not rej.exists()
    assert "--force" in capsys.readouterr().err
    code, _, _ = run(tmp_path, "--max-reject-rate", "1", "--force")
    assert code == 0 and json.loads(out.read_text(encoding="utf-8"))


def test_jsonl_output_and_inline_checks_match_worker_checks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    base = ["mgrounding", "--input", str(CASES), "--image-root", str(ROOT), "--check-images"]
    assert main([*base, "--output", str(a / "o.jsonl"), "--workers", "0", "--max-reject-rate", "1"]) == 0
    assert main([*base, "--output", str(b / "o.jsonl"), "--workers", "2", "--max-reject-rate", "1"]) == 0
    assert (a / "o.jsonl").read_bytes() == (b / "o.jsonl").read_bytes()
    assert (a / "o.rejects.jsonl").read_bytes() == (b / "o.rejects.jsonl").read_bytes()


def test_image_cache_resumes_and_notices_changed_files(tmp_path):
    root = tmp_path / "root"
    src = ROOT / "MGrounding-630k" / "Group_Grounding"
    dst = root / "MGrounding-630k" / "Group_Grounding"
    dst.mkdir(parents=True)
    (dst / "SA-1B").mkdir()
    for f in (src / "SA-1B").iterdir():
        (dst / "SA-1B" / f.name).write_bytes(f.read_bytes())
    task = src / "gg_train_120k.json"
    cache = tmp_path / "cache.tsv"

    def once(n: int) -> dict:
        report = tmp_path / f"report{n}.json"
        argv = [
            "mgrounding",
            "--input",
            str(task),
            "--image-root",
            str(root),
            "--check-images",
            "--max-reject-rate",
            "1",
        ]
        argv += [
            "--output",
            str(tmp_path / f"o{n}.json"),
            "--image-cache",
            str(cache),
            "--report",
            str(report),
        ]
        assert main(argv) == 0
        return json.loads(report.read_text(encoding="utf-8"))["image_check"]

    assert once(1)["decoded"] == 4
    assert once(2) | {"seconds": 0} == {
        "decoded": 0,
        "from_cache": 4,
        "workers": os.cpu_count(),
        "seconds": 0,
    }
    img = dst / "SA-1B" / "sa_2.jpg"
    img.write_bytes(img.read_bytes()[:200])  # changed (and now truncated): must be decoded again
    third = once(3)
    assert (third["decoded"], third["from_cache"]) == (1, 3)
    rejects = (tmp_path / "o3.rejects.jsonl").read_text(encoding="utf-8")
    assert '"undecodable_image"' in rejects


def test_command_line_entry_point(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "converters", "mgrounding", "--input", str(CASES), "--image-root", str(ROOT)]
        + ["--output", str(out), "--max-reject-rate", "0.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # bad input (cli.py's table; 3 means a partial result)
    assert not out.exists() and (tmp_path / "out.rejects.jsonl").exists()
    assert "placeholder_mismatch" in proc.stderr
    assert "python -m converters: error: mgrounding_cases: 25 of 31 records rejected" in proc.stderr


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<|box_start|>(0,0),(1000,1000)<|box_end|>", None),
        ("<|box_start|>(0,0),(1000,1000)<|box_end|><|box_start|>(1,1),(2,2)<|box_end|>", None),
        ("<|box_end|>(0,0),(1,1)<|box_start|>", "bad_box"),
        ("<|box_start|>(1,1),(2,2),(3,3),(4,4)<|box_end|>", "bad_box"),
        ("<|box_start|>(1,1),(2,2)<|box_start|>(1,1),(2,2)<|box_end|><|box_end|>", "bad_box"),
        ("<|object_ref_start|>a<|object_ref_start|>b<|object_ref_end|><|object_ref_end|>", "bad_ref"),
        ("<|object_ref_end|>a<|object_ref_start|>", "bad_ref"),
        # MIG-Bench's format instruction (both spellings) is a template, not a box ...
        ("Format:<|box_start|>(x1,y1),(x2,y2)<|box_start|>. Don't generate addtional words.", None),
        ("Format:<|box_start|>(x1, y1), (x2, y2)<|box_end|>. <|box_start|>(1,1),(2,2)<|box_end|>", None),
        # ... but a real box next to it is still checked
        ("Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. <|box_start|>(9,9),(2,2)<|box_end|>", "bad_box"),
    ],
)
def test_box_and_ref_token_shapes(text, reason):
    from converters.records import Rejected, check_record

    record = {
        "id": "x",
        "images": ["/a.jpg"],
        "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": text}],
    }
    if reason is None:
        assert check_record(record)[0]["conversations"][1]["value"] == text
    else:
        with pytest.raises(Rejected) as err:
            check_record(record)
        assert err.value.reason == reason
