"""The tokenized-cache fingerprint: it moves with the data and the tokenizer, not with the schedule."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import tokenized_path  # noqa: E402

RECIPE = str(REPO / "recipes/stage1.yaml")
pytestmark = pytest.mark.train  # the tiny model's tokenizer and LLaMA-Factory's dataclasses


@pytest.fixture
def workdir(tmp_path, tiny_model, monkeypatch):
    """A dataset_dir holding a registered stage-1 mixture, and a private copy of the tiny model."""
    data = tmp_path / "data"
    (data / "mixtures").mkdir(parents=True)
    (data / "mixtures/migician_stage1.json").write_text(json.dumps([{"conversations": [], "images": []}]))
    entry = {"file_name": "mixtures/migician_stage1.json", "formatting": "sharegpt"}
    (data / "dataset_info.json").write_text(json.dumps({"migician_stage1": entry}))
    shutil.copytree(tiny_model, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _path(capsys, *overrides: str) -> str:
    base = ["dataset_dir=data", "model_name_or_path=model"]
    assert tokenized_path.main([RECIPE, *base, *overrides]) == 0
    return capsys.readouterr().out.strip()


def test_prints_the_recipe_path_with_a_fingerprint(workdir, capsys):
    printed = _path(capsys)
    assert re.fullmatch(r"tokenized_path=saves/cache/stage1_tokenized-[0-9a-f]{12}", printed), printed
    assert _path(capsys) == printed  # deterministic


def test_schedule_and_speed_settings_keep_the_cache(workdir, capsys):
    printed = _path(capsys)
    for override in ("learning_rate=1e-3", "per_device_train_batch_size=1", "preprocessing_num_workers=2"):
        assert _path(capsys, override) == printed, override


def test_data_settings_data_files_and_tokenizer_each_move_it(workdir, capsys):
    seen = {_path(capsys)}
    for override in ("cutoff_len=4096", "image_max_pixels=200704", "template=qwen2_vl_nothink"):
        seen.add(_path(capsys, override))
    (workdir / "data/mixtures/migician_stage1.json").write_text("[]")
    seen.add(_path(capsys))
    config = workdir / "model/tokenizer_config.json"
    config.write_text(config.read_text().replace("}", ', "model_max_length": 7}', 1))
    seen.add(_path(capsys))
    assert len(seen) == 6, seen


def test_null_tokenized_path_prints_nothing(workdir, capsys):
    assert _path(capsys, "tokenized_path=null") == ""


def test_missing_data_file_is_refused_with_how_to_build_it(workdir, capsys):
    (workdir / "data/mixtures/migician_stage1.json").unlink()
    assert tokenized_path.main([RECIPE, "dataset_dir=data", "model_name_or_path=model"]) == 2
    err = capsys.readouterr().err
    assert "migician_stage1" in err and "migician_stage1.json does not exist" in err and "make data" in err


def test_unregistered_dataset_is_refused(workdir, capsys):
    assert tokenized_path.main([RECIPE, "dataset_dir=data", "dataset=nope"]) == 2
    assert "'nope' is not registered" in capsys.readouterr().err


def test_argument_names_match_llamafactorys_own_dataclasses():
    """The names are read from source (fast); they must be what the imported dataclasses hold."""
    import dataclasses

    from llamafactory.hparams.data_args import DataArguments
    from llamafactory.hparams.model_args import ProcessorArguments

    fields = {f.name for cls in (DataArguments, ProcessorArguments) for f in dataclasses.fields(cls)}
    expected = (fields | {"stage"}) - tokenized_path.NOT_CONTENT
    assert tokenized_path.data_argument_names() == expected
    assert {"cutoff_len", "template", "image_max_pixels"} <= expected
