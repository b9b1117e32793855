"""Every dataset_info.json entry loads through LLaMA-Factory's own data loader (qwen2_vl template).

The files and the registry come from `python -m converters all --output-dir OUT` on the fixtures
(twice: the default mixture prefix and another one, into the same OUT), and LLaMA-Factory reads
OUT as `dataset_dir`: the registry's paths are relative to it (LLaMA-Factory's own convention),
not to the working directory, so `make stage1 DATA_OUT=/scratch` trains on /scratch. Nothing may
be dropped by LLaMA-Factory, and every image must become exactly one vision block in the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.__main__ import main
from converters.registry import dataset_info_text
from core.streaming import index_record_lines

REPO = Path(__file__).resolve().parents[1]
FIXTURE_ROOT = REPO / "tests" / "fixtures" / "converters" / "data_root"


def test_committed_registry_is_the_generated_one(capsys):
    assert (REPO / "dataset_info.json").read_text(encoding="utf-8") == dataset_info_text()
    assert main(["registry", "--output", str(REPO / "dataset_info.json"), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.train
def test_every_registered_dataset_loads_in_llamafactory(tiny_model, tmp_path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    dataset_dir = tmp_path / "scratch" / "out"  # any folder: nothing under the repository's data/
    common = ["all", "--data-root", str(FIXTURE_ROOT), "--max-reject-rate", "0.5", "--check-images"]
    common += ["--stage1-total", "40", "--stage2-total", "20", "--output-dir", str(dataset_dir)]
    common += ["--traj-sft-size", "12"]  # the fixtures' other samples go to mg_rl
    assert main(common) == 0
    assert main([*common, "--mixture-prefix", "scratch"]) == 0

    info = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    assert len(info) == 19  # 13 sources, mg_traj_sft, mg_rl, migician_stage{1,2}, scratch_stage{1,2}
    top = json.loads((REPO / "dataset_info.json").read_text(encoding="utf-8"))
    for name, value in top.items():  # the repository's registry: the same entries under data/
        assert value == {**info[name], "file_name": "data/" + info[name]["file_name"]}, name
    for name, entry in info.items():
        assert not Path(entry["file_name"]).is_absolute(), name
        path = dataset_dir / entry["file_name"]
        n_records = len(index_record_lines(path)[0])
        assert n_records > 0, name
        model_args, data_args, training_args, _, _ = get_train_args(
            {
                "model_name_or_path": str(tiny_model),
                "stage": "sft",
                "do_train": True,
                "finetuning_type": "full",
                "dataset": name,
                "dataset_dir": str(dataset_dir),
                "template": "qwen2_vl",
                "cutoff_len": 4096,
                "output_dir": str(tmp_path / "out"),
                "cache_dir": str(tmp_path / "hf_cache"),
                "overwrite_cache": True,
                "use_cpu": True,
                "report_to": "none",
            }
        )
        modules = load_tokenizer(model_args)
        tokenizer = modules["tokenizer"]
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        train = get_dataset(template, model_args, data_args, training_args, "sft", **modules)["train_dataset"]
        assert len(train) == n_records, f"{name}: LLaMA-Factory kept {len(train)} of {n_records} records"
        vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
        for example in train:
            images = example["images"] or []
            assert all(Path(p).is_absolute() and Path(p).is_file() for p in images), name
            assert example["input_ids"].count(vision_start) == len(images), name
            assert any(label != -100 for label in example["labels"]), name
