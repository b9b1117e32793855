"""predictions.jsonl storage: torn lines, protocol refusal, --force, data-parallel shards."""

from __future__ import annotations

import json

import pytest

from core.atomicio import OutputExistsError
from eval.predictions import RunMismatchError, RunStore, read_jsonl

PROTOCOL = {"model": {"path": "/m", "fingerprint": "abc"}, "mode": "direct", "format_suffix": "F"}


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    store = RunStore(tmp_path / "out", PROTOCOL)
    assert store.open() == {}
    store.append([{"index": 0, "task": "diff"}, {"index": 1, "task": "diff"}])
    with open(store.predictions_path, "a") as f:
        f.write('{"index": 2, "task": "di')  # the process died mid-write
    again = RunStore(tmp_path / "out", PROTOCOL)
    assert sorted(again.open()) == [0, 1]
    assert any("unfinished last line" in n for n in again.notes)
    assert store.predictions_path.read_text().endswith("}\n")  # cut back to the last full line
    again.append([{"index": 2, "task": "diff"}])
    records, problems = read_jsonl(store.predictions_path)
    assert [r["index"] for r in records] == [0, 1, 2] and not problems


def test_different_protocol_is_refused_unless_forced(tmp_path):
    RunStore(tmp_path, PROTOCOL).open()
    RunStore(tmp_path, PROTOCOL).append([{"index": 0}])
    other = dict(PROTOCOL, model={"path": "/other", "fingerprint": "def"})
    with pytest.raises(RunMismatchError, match="different protocol") as err:
        RunStore(tmp_path, other).open()
    assert "/other" in str(err.value) and "--force" in str(err.value)
    assert RunStore(tmp_path, PROTOCOL).open() == {0: {"index": 0}}  # untouched
    assert RunStore(tmp_path, other, force=True).open() == {}  # discarded on request
    assert json.loads((tmp_path / "run.json").read_text())["protocol"]["model"]["path"] == "/other"


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds no eval run"):
        RunStore(tmp_path, PROTOCOL).open()
    RunStore(tmp_path, PROTOCOL, force=True).open()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # --force only removes the run's own files


def test_shards_are_merged_once_and_a_skip_is_superseded(tmp_path):
    store = RunStore(tmp_path, PROTOCOL)
    store.open()
    store.append([{"index": 0, "task": "diff", "skipped": "image not found"}, {"index": 1, "task": "diff"}])
    store.append([{"index": 0, "task": "diff", "response": "(1,2),(3,4)"}, {"index": 2}], rank=0)
    store.append([{"index": 1, "task": "diff", "response": "dup"}, {"index": 3}], rank=1)
    store.merge_shards()
    assert not list(tmp_path.glob("*.rank*.jsonl"))
    done = store.finished()
    assert sorted(done) == [0, 1, 2, 3]
    assert "skipped" not in done[0]  # the retried instance replaced its skip line
    assert "response" not in done[1]  # an instance already finished is not duplicated
    records, _ = read_jsonl(store.predictions_path)
    assert [r["index"] for r in records] == [0, 1, 0, 2, 3]
