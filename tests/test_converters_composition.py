"""The mixtures file (recipes/mixtures.yaml): read by the code, checked on load, named when wrong.

Every refusal names the file and the key, and a command given a bad file stops before writing
anything; a good file other than the default really changes what is mixed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from converters.__main__ import main
from converters.composition import DEFAULT_PATH, CompositionError, load_composition
from core.streaming import RecordWriter

FIXTURE_ROOT = Path(__file__).resolve().parent / "fixtures" / "converters" / "data_root"


def table12() -> dict:
    return yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "mix.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _set(data: dict, keys: str, value) -> dict:
    *parents, last = keys.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("keys", "value", "message"),
    [
        ("stages.stage1.shares.s_grounding", 12, "stages.stage1.shares: sum to 99, not 100"),
        ("stages.stage1.shares.s_video", 1, "stages.stage1.shares.s_video: unknown category"),
        ("stages.stage3", {"total": 5, "shares": {}}, "stages.stage3: not a stage that stages.py trains on"),
        ("stages.stage2", KeyError, "stages: no entry for stage2"),
        ("stages.stage1.total", "1e6", "stages.stage1.total: '1e6' is not a whole number"),
        ("stages.stage1.total", 0, "stages.stage1.total: 0 is not at least 1"),
        ("stages.stage1.total", True, "stages.stage1.total: True is not a whole number"),
        ("stages.stage1.shares.s_grounding", 13.0, "stages.stage1.shares.s_grounding: 13.0 is not a whole"),
        ("stages.stage1.shares.s_grounding", 150, "s_grounding: 150 is not between 1 and 100"),
        ("stages.stage1.shares", [17, 13], "stages.stage1.shares: expected a mapping, found a list"),
        ("stages.stage1.weights", {}, "stages.stage1.weights: unknown key (expected total, shares)"),
        ("colours", {}, "colours: unknown key (expected categories, stages)"),
        ("categories.s_grounding", KeyError, "stages.stage1.shares.s_grounding: unknown category"),
        ("categories.Bad-Name", "x", "categories: 'Bad-Name' is not a category name"),
        ("categories.s_grounding", ["a"], "categories.s_grounding: the description must be text"),
    ],
)
def test_a_wrong_entry_is_named_with_the_file_and_key(tmp_path, keys, value, message):
    path = write(tmp_path, _set(table12(), keys, value))
    with pytest.raises(CompositionError) as err:
        load_composition(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), err.value


def test_a_category_no_source_feeds_and_a_source_whose_category_is_gone(tmp_path):
    data = table12()
    data["categories"]["m_video"] = "multi-image video (no converter yet)"
    data["stages"]["stage1"]["shares"] |= {"m_video": 4, "m_grounding_stage1": 50}
    with pytest.raises(
        CompositionError, match="stages.stage1.shares.m_video: no source in the sources table"
    ):
        load_composition(write(tmp_path, data))

    data = table12()  # s_grounding dropped from the file, but refcoco (sources.py) still feeds it
    del data["categories"]["s_grounding"]
    for stage in data["stages"].values():
        stage["shares"]["s_understanding"] += stage["shares"].pop("s_grounding")
    with pytest.raises(CompositionError, match="categories: no 's_grounding', which source 'refcoco'"):
        load_composition(write(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: [", "not valid YAML"),
        ("", "the file: expected a mapping, found nothing"),
        ("- 1\n- 2\n", "the file: expected a mapping, found a list"),
        ("categories: {a: x}\ncategories: {b: y}\n", "key 'categories' appears twice"),
        ("!!python/object/apply:os.system ['echo owned']\n", "not valid YAML"),
        ("stages:\n  stage1:\n    total: " + "9" * 5000 + "\n", "cannot be read as YAML: Exceeds the limit"),
        (b"categories: {s_understanding: caf\xe9}\n", "not UTF-8 text"),
        ("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\ncategories: {s_understanding: *b}\n", "unknown key"),
    ],
)
def test_hostile_files_are_refused_by_name(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(CompositionError, match="^" + str(path)) as err:
        load_composition(path)
    assert message in str(err.value)


def test_a_missing_or_huge_file_is_named(tmp_path):
    with pytest.raises(CompositionError, match="cannot read .*nope.yaml"):
        load_composition(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(CompositionError, match="larger than"):
        load_composition(big)


def _sharegpt(folder: Path, names: list[str], n: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with RecordWriter(folder / f"{name}.json", force=True) as out:
            for i in range(n):
                turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
                out.write({"id": f"{name}-{i}", "type": name, "images": [], "conversations": turns})


def test_the_commands_read_the_file_they_are_given(tmp_path, capsys):
    shared = tmp_path / "sharegpt"
    _sharegpt(shared, ["llava_onevision", "mg_common", "mg_free_form"])
    data = {
        "categories": table12()["categories"],
        "stages": {
            "stage1": {"total": 40, "shares": {"s_understanding": 25, "m_grounding_stage1": 75}},
            "stage2": {"total": 8, "shares": {"m_grounding_free_form": 100}},
        },
    }
    argv = ["mix", "--sharegpt-dir", str(shared), "--output-dir", str(tmp_path / "m")]
    assert main([*argv, "--mixtures", str(write(tmp_path, data))]) == 0  # no other category needed
    report = json.loads((tmp_path / "m" / "migician_stage1.report.json").read_text(encoding="utf-8"))
    assert report["total"] == 40  # the file's total, no --stage1-total given
    assert {c: v["count"] for c, v in report["categories"].items()} == {
        "s_understanding": 10,
        "m_grounding_stage1": 30,
    }
    assert re.search(r"^  s_understanding +25% +10$", capsys.readouterr().out, re.MULTILINE)


def test_a_bad_file_stops_the_commands_before_any_work(tmp_path, capsys):
    bad = write(tmp_path, _set(table12(), "stages.stage2.shares.s_grounding", 8))
    shared = tmp_path / "sharegpt"
    _sharegpt(shared, ["llava_onevision"])
    argv = ["mix", "--sharegpt-dir", str(shared), "--output-dir", str(tmp_path / "m"), "--mixtures", str(bad)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"python -m converters: error: {bad}: stages.stage2.shares: sum to 101, not 100" in err
    assert not (tmp_path / "m").exists()

    out = tmp_path / "out"
    argv = ["all", "--data-root", str(FIXTURE_ROOT), "--output-dir", str(out), "--mixtures", str(bad)]
    assert main(argv) == 1
    assert "sum to 101" in capsys.readouterr().err and not out.exists()
