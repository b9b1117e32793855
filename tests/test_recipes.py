"""The two stage recipes: LLaMA-Factory's own validation, their invariants, and real CPU training.

Training runs `llamafactory-cli train recipes/stageN.yaml key=value ...` with
overrides only (model, data, device, steps), the same files the 8-GPU run uses.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_in

RECIPES = REPO / "recipes"
CPU_OVERRIDES = {"use_cpu": True, "bf16": False, "deepspeed": None}


def load_recipe(stage: int) -> dict:
    return yaml.safe_load((RECIPES / f"stage{stage}.yaml").read_text())


# ---- LLaMA-Factory's own argument parsing ------------------------------------------------
@pytest.mark.train
@pytest.mark.parametrize("stage", [1, 2])
def test_recipe_passes_llamafactory_validation(stage, tiny_model, tmp_path):
    """Everything but the model path and the device keys is parsed exactly as written."""
    from llamafactory.hparams import get_train_args

    recipe = load_recipe(stage)
    args = {**recipe, **CPU_OVERRIDES, "model_name_or_path": str(tiny_model), "output_dir": str(tmp_path)}
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    assert finetuning_args.finetuning_type == "full"
    assert finetuning_args.freeze_vision_tower is True
    assert data_args.template == "qwen2_vl"
    assert data_args.cutoff_len == recipe["cutoff_len"]
    assert training_args.learning_rate == pytest.approx(float(recipe["learning_rate"]))
    assert training_args.lr_scheduler_type == "cosine"
    assert model_args.image_max_pixels == recipe["image_max_pixels"]


@pytest.mark.train
def test_unknown_recipe_key_is_refused(tiny_model, tmp_path):
    from llamafactory.hparams import get_train_args

    args = {**load_recipe(1), **CPU_OVERRIDES, "model_name_or_path": str(tiny_model)}
    args.update(output_dir=str(tmp_path), learning_rat=1e-5)  # a typo must not pass silently
    with pytest.raises(ValueError, match="learning_rat"):
        get_train_args(args)


def test_deepspeed_configs_are_valid_zero_configs():
    for stage, name in ((3, "ds_z3_config.json"), (2, "ds_z2_config.json")):
        config = json.loads((RECIPES / name).read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert config["train_micro_batch_size_per_gpu"] == "auto"  # taken from the recipe
    assert load_recipe(1)["deepspeed"] == load_recipe(2)["deepspeed"] == "recipes/ds_z3_config.json"


# ---- invariants asserted from the recipe files -------------------------------------------
def test_paper_configuration_invariants():
    s1, s2 = load_recipe(1), load_recipe(2)
    for recipe in (s1, s2):
        assert recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * 8 == 48
        assert recipe["finetuning_type"] == "full" and recipe["template"] == "qwen2_vl"
        assert recipe["bf16"] is True and recipe["num_train_epochs"] == 1.0
        assert recipe["logging_steps"] == 1 and recipe["overwrite_output_dir"] is False
        assert recipe["dataset_dir"] == "." and recipe["tokenized_path"]
    assert s1["model_name_or_path"] == "Qwen/Qwen2-VL-7B-Instruct"
    assert s2["model_name_or_path"] == s1["output_dir"]  # stage 2 starts from stage 1
    assert (float(s1["learning_rate"]), s1["warmup_ratio"], s1["cutoff_len"], s1["save_steps"]) == (
        5e-6,
        0.015,
        6000,
        1000,
    )
    assert (float(s2["learning_rate"]), s2["warmup_ratio"], s2["cutoff_len"], s2["save_steps"]) == (
        4e-6,
        0.05,
        8192,
        750,
    )
    assert (1_000_000 + 200_000) // 48 == 25_000  # the paper's step count over both stages


def test_recipe_datasets_are_registered():
    registry = json.loads((REPO / "dataset_info.json").read_text())
    for stage in (1, 2):
        name = load_recipe(stage)["dataset"]
        assert name in registry, f"recipes/stage{stage}.yaml trains on unregistered dataset {name}"
        assert registry[name]["formatting"] == "sharegpt"
        assert registry[name]["columns"]["images"] == "images"


@pytest.mark.parametrize(("world", "split"), [(8, "2 3"), (16, "1 3"), (4, "2 6"), (1, "2 24")])
def test_global_batch_stays_48(world, split):
    out = subprocess.run(
        [sys.executable, "scripts/global_batch.py", "--world-size", str(world)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    per_device, accumulation = map(int, out)
    assert " ".join(out) == split and per_device * accumulation * world == 48


def test_global_batch_refuses_uneven_world():
    proc = subprocess.run(
        [sys.executable, "scripts/global_batch.py", "--world-size", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "cannot be split evenly over 5" in proc.stderr


# ---- real training on the CPU --------------------------------------------------------------
def _grid_dataset(root: Path, n: int = 48) -> Path:
    """A learnable multi-image set: a red square in one of 4 cells of the second image."""
    from PIL import Image, ImageDraw

    images = root / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(n):
        cell = i % 4
        paths = []
        for j in range(2):
            img = Image.new("RGB", (56, 56), "white")
            if j == 1:
                x, y = (cell % 2) * 28, (cell // 2) * 28
                ImageDraw.Draw(img).rectangle([x, y, x + 27, y + 27], fill="red")
            path = images / f"{i}_{j}.png"
            img.save(path)
            paths.append(str(path))
        x1, y1 = (cell % 2) * 500, (cell // 2) * 500
        answer = f"<|box_start|>({x1},{y1}),({x1 + 500},{y1 + 500})<|box_end|>"
        question = "<image>\n<image>\nFind the red square in the second image."
        records.append(
            {
                "images": paths,
                "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            }
        )
    (root / "grid.json").write_text(json.dumps(records))
    entry = {
        "file_name": "grid.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    (root / "dataset_info.json").write_text(json.dumps({"grid": entry}))
    return root


def _cpu_args(data: Path, out: Path, **extra) -> list[str]:
    args = {
        "dataset_dir": data,
        "dataset": "grid",
        "output_dir": out,
        "tokenized_path": "null",
        "use_cpu": "true",
        "bf16": "false",
        "deepspeed": "null",
        "cutoff_len": 512,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": "1e-3",
        "freeze_vision_tower": "false",
        "report_to": "none",
        **extra,
    }
    return [f"{k}={v}" for k, v in args.items()]


def _losses(out: Path) -> list[float]:
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


@pytest.mark.train
def test_stage1_resumes_then_stage2_chains(tiny_model, tmp_path):
    """Stage 1 is killed after its first checkpoint, resumed, then `make stage2` starts from it."""
    data = _grid_dataset(tmp_path / "data")
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    cli = str(Path(sys.executable).parent / "llamafactory-cli")
    cmd = [cli, "train", "recipes/stage1.yaml", f"model_name_or_path={tiny_model}"]
    cmd += _cpu_args(data, stage1, max_steps=30, save_steps=5, logging_steps=1, save_total_limit=2)

    # 1. start stage 1 and kill it hard as soon as its first checkpoint is complete
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = stage1 / "checkpoint-5" / "trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "stage 1 never wrote checkpoint-5"
    assert not (stage1 / "all_results.json").exists(), "stage 1 finished before it could be interrupted"

    # 2. the same command resumes from the last checkpoint instead of starting over
    resumed = run_in(sys.executable, ["-m", "llamafactory.cli", *cmd[1:]], timeout=900)
    assert "Resuming training from" in resumed.stdout + resumed.stderr
    state = json.loads((stage1 / "trainer_state.json").read_text())
    assert state["global_step"] == 30
    first_logged_after_resume = min(e["step"] for e in state["log_history"] if "loss" in e and e["step"] > 5)
    assert first_logged_after_resume == 6, "resumed run re-trained steps before the checkpoint"
    losses = _losses(stage1)
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, (
        f"stage 1 loss did not fall: {losses[:5]} -> {losses[-5:]}"
    )

    # 3. stage 2 through the Makefile, from stage 1's output, CPU overrides only
    make_args = [
        "make",
        "stage2",
        "DEVICE=cpu",
        f"STAGE1_OUT={stage1}",
        f"STAGE2_OUT={stage2}",
        "TRAIN_ARGS="
        + " ".join(
            _cpu_args(
                data,
                stage2,
                max_steps=10,
                save_steps=100,
                logging_steps=1,
                tokenized_path=tmp_path / "cache/stage2",
            )
        ),
    ]
    made = subprocess.run(make_args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert "global batch 48 = 2 per device x 24 accumulation x 1 CPU process" in made.stdout
    caches = [p.name for p in (tmp_path / "cache").iterdir()]  # make fingerprints the cache folder
    assert len(caches) == 1 and re.fullmatch(r"stage2-[0-9a-f]{12}", caches[0]), caches
    stage2_args = json.loads((stage2 / "all_results.json").read_text())
    assert stage2_args["epoch"] > 0
    assert all(math.isfinite(x) for x in _losses(stage2))

    # 4. both checkpoints load in transformers and their weights differ from the start
    from safetensors.torch import load_file
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    base = load_file(tiny_model / "model.safetensors")
    for out in (stage1, stage2):
        model = Qwen2VLForConditionalGeneration.from_pretrained(out)
        AutoProcessor.from_pretrained(out)
        trained = model.state_dict()
        assert any(not base[k].equal(trained[k]) for k in base if k in trained)


# ---- the base model's family -----------------------------------------------------------------
def test_family_overrides_leave_qwen2vl_recipes_unchanged():
    """A Qwen2-VL (and a Qwen2.5-VL) base gets no override: the recipe's template and budget are theirs;
    a Qwen3-VL base gets its template and its 512 x 32 x 32 budget."""
    import families

    for name in ("stage1", "stage2", "traj_sft"):
        recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        assert families.recipe_overrides(recipe, "qwen2-vl") == []
        assert families.recipe_overrides(recipe, "qwen2.5-vl") == []
        assert families.recipe_overrides(recipe, "qwen3-vl") == [
            "template=qwen3_vl_nothink",
            "image_max_pixels=524288",
            "image_min_pixels=4096",
        ]
    # The Makefile's default BASE_MODEL (a Hub id, not downloaded): Qwen2-VL, so an empty override list.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "families",
            "train-args",
            "recipes/stage1.yaml",
            "--model",
            "Qwen/Qwen2-VL-7B-Instruct",
        ]
        + ["--default-family", "qwen2-vl"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stderr


def test_family_is_read_from_config_and_forced_by_flag(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))

    def detect(*extra):
        return subprocess.run(
            [sys.executable, "-m", "families", "detect", str(model), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
        )

    assert detect().stdout.strip() == "qwen3-vl"
    assert detect("--family", "qwen2.5-vl").stdout.strip() == "qwen2.5-vl"
    (model / "config.json").write_text('{"model_type": "llava"}')
    bad = detect()
    assert bad.returncode == 1 and "model_type 'llava' is not a known family" in bad.stderr
    (model / "config.json").write_text("[" * 100_000)  # hostile JSON: a clear error, no traceback
    bad = detect()
    assert bad.returncode == 1 and "cannot be read as JSON" in bad.stderr and "Traceback" not in bad.stderr
