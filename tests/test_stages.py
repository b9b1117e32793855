"""The stage table (stages.py) and the recipes it names: one entry per stage, every recipe real.

Why: the stage names used to be literals in nine places; now the registry, the Makefile's
recipes and the demo read one table, and the mixture stages' composition (Table 12) is one
YAML file (recipes/mixtures.yaml) checked against it, so these tests hold the table, the
recipe files and the mixtures file to each other and to the papers' values (Migician Table 12,
MIRG-RL Sec. 3.1, UniVG-R1's GRPO settings).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from converters.composition import load_composition
from core.stages import MIXTURE, STAGES, mixture_stages
from tests.conftest import REPO, run_in


def recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / STAGES[name].recipe).read_text())


def test_every_stage_has_a_recipe_and_a_registered_dataset():
    registry = json.loads((REPO / "dataset_info.json").read_text())
    for name, stage in STAGES.items():
        data = recipe(name)
        assert data["output_dir"] == f"saves/{name}"
        assert data["dataset"] == stage.dataset_name(), name
        assert data["dataset"] in registry, f"{stage.recipe} trains on unregistered {data['dataset']}"
        if stage.starts_from:
            assert data["model_name_or_path"] == f"saves/{stage.starts_from}"
    assert list(mixture_stages()) == ["stage1", "stage2"]
    assert all(s.data == MIXTURE for s in mixture_stages().values())


def test_mixture_composition_is_table_12():
    composition = load_composition()
    assert list(composition.stages) == list(mixture_stages())  # one entry per mixture stage, in order
    assert composition.totals == {"stage1": 1_000_000, "stage2": 200_000}
    assert {stage: mix.shares for stage, mix in composition.stages.items()} == {
        "stage1": {"s_understanding": 17, "s_grounding": 13, "m_understanding": 16, "m_grounding_stage1": 54},
        "stage2": {
            "s_understanding": 9,
            "s_grounding": 7,
            "m_understanding": 8,
            "m_grounding_stage1": 27,
            "m_grounding_free_form": 49,
        },
    }
    assert composition.sources("s_grounding") == ("refcoco", "refcoco_plus", "refcocog", "groma_instruct")


def test_trajectory_sft_recipe_is_mirg_rl():
    r = recipe("traj_sft")
    assert r["stage"] == "sft" and r["finetuning_type"] == "full" and r["template"] == "qwen2_vl"
    assert float(r["learning_rate"]) == 2e-5 and r["lr_scheduler_type"] == "cosine" and r["bf16"] is True
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * 8 == 128
    assert r["freeze_vision_tower"] is True and r["deepspeed"] == "recipes/ds_z3_config.json"
    assert r["model_name_or_path"] == "Qwen/Qwen2-VL-7B-Instruct"


def test_grpo_recipe_values():
    r = recipe("grpo")
    assert r["model_name_or_path"] == "saves/traj_sft" and float(r["learning_rate"]) == 5e-6
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * 8 == 128
    assert (r["num_generations"], r["beta"], r["temperature"], r["max_completion_length"], r["epsilon"]) == (
        8,
        0.04,
        1.0,
        256,
        0.2,
    )
    assert r["reward_profile"] == "mirg" and r["reward_weights"] is None  # the profile's own: 1/1/1
    assert r["freeze_vision_tower"] is True and r["use_vllm"] is False


@pytest.mark.vllm
def test_grpo_recipe_keys_are_trl_fields_or_ours(eval_python):
    """Every key of recipes/grpo.yaml is accepted by TRL 1.16's GRPOConfig or by RLArguments."""
    code = (
        "from rl.config import load_recipe, split_config;"
        "r, g = split_config(load_recipe('recipes/grpo.yaml', ['use_cpu=true', 'bf16=false', 'deepspeed=null']));"
        "print(g.num_generations, g.beta, g.epsilon, g.learning_rate, r.reward_profile, g.vllm_mode)"
    )
    out = run_in(eval_python, ["-c", code], timeout=300).stdout.split()
    assert out == ["8", "0.04", "0.2", "5e-06", "mirg", "colocate"]


def test_make_targets_run_the_stage_recipes():
    out = subprocess.run(
        ["make", "-n", "traj-sft", "grpo", "DEVICE=cpu", "BASE_MODEL=saves/merged"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    text = out.stdout
    assert (
        "llamafactory-cli train recipes/traj_sft.yaml" in text and "model_name_or_path=saves/merged" in text
    )
    assert "-m rl train recipes/grpo.yaml model_name_or_path=saves/traj_sft" in text
    assert 'split="8 16"' in text  # 128 completions on one CPU process
