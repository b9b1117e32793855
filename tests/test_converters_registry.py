"""OUT/dataset_info.json follows the data: written by `converters all`, merged, never clobbered.

A user's own entries are kept; an entry of one of our names that a user changed stops the run
before any work unless --force; an unreadable registry is named and left alone. The repository's
dataset_info.json is the same registry for the recipes' datasets, seen from the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.registry import entry, stage_files
from core.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
FIXTURE_ROOT = REPO / "tests" / "fixtures" / "converters" / "data_root"
ALL = ["all", "--data-root", str(FIXTURE_ROOT), "--max-reject-rate", "0.5"]
ALL += ["--stage1-total", "40", "--stage2-total", "20", "--traj-sft-size", "6"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("registry") / "out"
    assert main([*ALL, "--output-dir", str(out)]) == 0
    return out


def registry(out: Path) -> dict:
    return json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))


def test_every_file_built_is_registered_relative_to_the_output_folder(built):
    info = registry(built)
    assert len(info) == 17  # 13 sources, the trajectory-SFT and RL sets, two mixtures
    for name, value in info.items():
        rel = value["file_name"]
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, rel
        assert (built / rel).is_file(), name
        assert value == entry(rel)


def test_the_repository_registry_is_the_default_layout_seen_from_the_root(built):
    top = json.loads((REPO / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(top) == {s.dataset_name() for s in STAGES.values()} == set(stage_files())
    info = registry(built)
    for name, value in top.items():  # `dataset_dir: .` + data/...  ==  `dataset_dir: data` + ...
        assert value == {**info[name], "file_name": "data/" + info[name]["file_name"]}, name


def test_a_users_own_entries_are_kept_and_an_unchanged_registry_is_not_rewritten(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*ALL, "--output-dir", str(out)]) == 0
    capsys.readouterr()
    mine = {"my_set": {"file_name": "mine/my_set.json", "formatting": "alpaca"}}
    (out / "dataset_info.json").write_text(json.dumps({**mine, **registry(out)}, indent=4))
    before = (out / "dataset_info.json").read_bytes()
    assert main([*ALL, "--output-dir", str(out)]) == 0
    assert (out / "dataset_info.json").read_bytes() == before  # nothing to add: the user's layout stays
    assert main([*ALL, "--output-dir", str(out), "--mixture-prefix", "custom"]) == 0
    info = registry(out)
    assert info["my_set"] == mine["my_set"]
    assert info["custom_stage1"]["file_name"] == "mixtures/custom_stage1.json"
    out_text = capsys.readouterr().out  # the summary lines, on stdout
    assert "all: 0 step(s) run, 15 already up to date" in out_text
    assert "all: 1 step(s) run, 14 already up to date" in out_text


def test_a_hand_edited_entry_stops_the_run_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    edited = {"mg_common": {**entry("elsewhere/mg_common.json"), "ranking": False}, "other": entry("o.json")}
    (out / "dataset_info.json").write_text(json.dumps(edited))
    before = (out / "dataset_info.json").read_bytes()
    assert main([*ALL, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"python -m converters: error: {out / 'dataset_info.json'}: entries mg_common differ" in err
    assert "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json"]  # nothing converted
    assert (out / "dataset_info.json").read_bytes() == before

    assert main([*ALL, "--output-dir", str(out), "--force"]) == 0
    info = registry(out)
    assert info["mg_common"] == entry("sharegpt/mg_common.json") and info["other"] == entry("o.json")
    assert "replacing entry mg_common (--force)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"mg_common": ', "is not JSON"),
        ("[1, 2]", "is a JSON list, not an object of dataset entries"),
        ("[" * 100_000 + "]" * 100_000, "is nested too deeply"),
        ('{"a": ' + "9" * 5000 + "}", "is not JSON"),
    ],
)
def test_an_unreadable_registry_is_named_and_kept_without_force(tmp_path, capsys, text, problem):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_info.json").write_text(text)
    assert main([*ALL, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the dataset registry {out / 'dataset_info.json'} {problem}" in err and "--force" in err
    assert (out / "dataset_info.json").read_text() == text and not (out / "sharegpt").exists()
