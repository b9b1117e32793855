"""MG-Thinker's group gate and curriculum (rl/gated.py) on a real, tiny TRL run, and the recipe's values.

Why a primed model: a random model never writes an answer, so every group's rewards are equal and the gate
would drop everything. The fixture teaches the tiny Qwen2-VL MG-Thinker's JSON answer form (a few seconds,
teacher-forced, in .venv) so that sampled completions differ in format, image id and box; then
`python -m rl train recipes/grpo_mgthinker.yaml` runs TRL 1.16's GRPOTrainer in .venv-eval for 4 steps
(4 phases of 1 step: alpha 0.4, 0.2, 0.1, 0.05, from the recipe's 0.05 raised so that the first steps
keep too few groups and are topped up) with a pool of 3 x 2 groups. The assertions read
what the run logged: gate_steps.jsonl (per group mean, std, kept, trained order) and TRL's own
trainer_state.json (gate/* metrics beside TRL's reward and frac_reward_zero_std, over the same pool).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import run_in
from tests.test_rl_train import prime, write_images

pytestmark = pytest.mark.vllm  # needs .venv-eval (TRL lives there)

SUFFIX = " Answer with <think>...</think><answer>JSON</answer>."
CPU = [
    "use_cpu=true",
    "bf16=false",
    "deepspeed=null",
    "gradient_checkpointing=false",
    "family=qwen2-vl",
    "per_device_train_batch_size=4",
    "gradient_accumulation_steps=2",  # a step = 2 micro-batches of one group each
    "num_generations=4",
    "max_completion_length=40",
    "image_max_pixels=12544",
    "save_steps=100",
    "logging_steps=1",
    "learning_rate=1e-4",
    "plot=false",
    "gate_alpha=0.4",  # alpha 0.4, 0.2, 0.1, 0.05: the weak primed model's groups both pass and fail it
]


def _answer(targets) -> str:
    objects = [{"image_id": t["image_index"], "bbox_2d": t["box"]} for t in targets]
    return f"<think>Image {targets[0]['image_index']}.</think><answer>{json.dumps(objects)}</answer>"


def write_mg_set(root: Path, n: int = 8, seed: int = 0) -> Path:
    """RL records in MG-Thinker's answer form; every third one has two targets (a `targets` list)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        k = rng.randint(2, 3)
        paths = write_images(root, i, k, rng)
        index = rng.randint(1, k)
        box = [0, 0, 333, 333] if i % 2 else [333, 333, 667, 667]
        targets = [{"image_index": index, "box": box}]
        if i % 3 == 0:
            targets.append({"image_index": 1 + index % k, "box": [500, 500, 900, 900]})
        records.append(
            {
                "id": f"mg-{i}",
                "task": "common_object",
                "images": paths,
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>\n" * k + f"Find the squares in image {index}." + SUFFIX,
                    },
                    {"from": "gpt", "value": _answer(targets)},
                ],
                "image_index": index,
                "box": box,
                "num_images": k,
                "targets": targets,
            }
        )
    path = root / "mg_rl.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gated_run(tiny_model, eval_python, tmp_path_factory):
    root = tmp_path_factory.mktemp("gated")
    rl_set = write_mg_set(root)
    model = prime(tiny_model, rl_set, root / "primed", steps=200)
    out = root / "run"
    args = [
        "-m",
        "rl",
        "train",
        "recipes/grpo_mgthinker.yaml",
        f"model_name_or_path={model}",
        f"dataset={rl_set}",
    ]
    run_in(eval_python, [*args, f"output_dir={out}", "max_steps=4", *CPU], timeout=900)
    records = [json.loads(line) for line in (out / "gate_steps.jsonl").read_text().splitlines()]
    logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    return out, records, logs


def test_gate_keeps_groups_above_alpha_and_alpha_halves(gated_run):
    out, records, logs = gated_run
    assert [r["step"] for r in records] == [0, 1, 2, 3] and len(logs) == 4
    assert [r["alpha"] for r in records] == [0.4, 0.2, 0.1, 0.05]  # halved at each of 4 phases of max_steps 4
    for rec, entry in zip(records, logs, strict=True):
        (proc,) = rec["processes"]
        groups = proc["groups"]
        assert rec["pool_groups"] == len(groups) == 6  # 3 x the step's 2 groups
        for g in groups:
            assert g["kept"] == (g["std"] > rec["alpha"]), g
        assert rec["kept"] == sum(g["kept"] for g in groups) and rec["dropped"] == 6 - rec["kept"]
        # TRL's own metrics, over the same pool, agree with the per-group record
        assert entry["reward"] == pytest.approx(sum(g["mean"] for g in groups) / 6, abs=1e-5)
        zero = sum(g["std"] < 1e-6 for g in groups) / 6
        assert entry["frac_reward_zero_std"] == pytest.approx(zero)
        assert entry["gate/alpha"] == rec["alpha"]
        assert (entry["gate/pool_groups"], entry["gate/kept"], entry["gate/dropped"]) == (
            6,
            rec["kept"],
            rec["dropped"],
        )
        kept_stds = [g["std"] for g in groups if g["kept"]]
        assert entry["gate/kept_std_mean"] == pytest.approx(
            sum(kept_stds) / len(kept_stds) if kept_stds else 0
        )
    # the run saw every outcome: groups dropped (std under alpha), kept, and a step topped up
    assert sum(r["dropped"] for r in records) > 0 and sum(r["kept"] for r in records) > 0
    assert sum(r["topped_up"] for r in records) > 0
    metrics = json.loads((out / "train_results.json").read_text())
    assert metrics["reward_profile"] == "mgthinker" and metrics["group_gate"]["pool_factor"] == 3


def test_the_step_is_filled_by_mean_reward_high_to_low(gated_run):
    _, records, logs = gated_run
    for rec, entry in zip(records, logs, strict=True):
        (proc,) = rec["processes"]
        groups, trained = proc["groups"], proc["trained"]
        assert len(trained) == 2 and len(set(trained)) == 2
        kept = [i for i, g in enumerate(groups) if g["kept"]]
        best_kept = sorted(kept, key=lambda i: -groups[i]["mean"])[:2]
        assert set(best_kept) | set(proc["topped_up"]) == set(trained)  # the kept groups of highest mean
        means = [groups[i]["mean"] for i in trained]
        assert means == sorted(means, reverse=True)
        # too few kept: topped up with the dropped groups of highest std, and logged
        assert len(proc["topped_up"]) == max(0, 2 - len(kept)) == entry["gate/topped_up"]
        dropped = sorted((g["std"] for g in groups if not g["kept"]), reverse=True)
        assert (
            sorted((groups[i]["std"] for i in proc["topped_up"]), reverse=True)
            == dropped[: len(proc["topped_up"])]
        )
        assert entry["gate/trained_reward_mean"] == pytest.approx(sum(means) / 2, abs=1e-6)


def test_the_recipe_holds_the_papers_values(eval_python):
    code = (
        "from rl.config import load_recipe, split_config\n"
        "r, g = split_config(load_recipe('recipes/grpo_mgthinker.yaml', ['output_dir=o', 'use_cpu=true', "
        "'bf16=false', 'deepspeed=null']))\n"
        "print(r.reward_profile, r.group_gate, r.pool_factor, r.gate_alpha, r.gate_phases, g.num_generations, "
        "g.max_completion_length, g.temperature, g.epsilon, g.epsilon_high, g.loss_type, g.beta, g.learning_rate, "
        "g.per_device_train_batch_size * g.gradient_accumulation_steps * 8 // g.num_generations)\n"
        "r, g = split_config(load_recipe('recipes/grpo.yaml', ['output_dir=o', 'use_cpu=true', 'bf16=false', "
        "'deepspeed=null']))\n"
        "print(g.loss_type, g.epsilon_high, g.beta, r.group_gate)\n"
        "for bad in ('pool_factor=0', 'gate_phases=1.5', 'gate_alpha=-1', 'group_gate=maybe'):\n"
        "    try:\n"
        "        split_config(load_recipe('recipes/grpo_mgthinker.yaml', ['output_dir=o', bad]))\n"
        "    except ValueError as exc:\n"
        "        print('refused', exc)\n"
    )
    lines = run_in(eval_python, ["-c", code], timeout=300).stdout.splitlines()
    refused = lines[-4:]
    lines = lines[:-4]
    for key, line in zip(("pool_factor", "gate_phases", "gate_alpha", "group_gate"), refused, strict=True):
        assert line.startswith(f"refused {key} must be"), line
    assert lines[-2].split() == [
        "mgthinker",
        "True",
        "3",
        "0.05",
        "4",
        "16",
        "1024",
        "1.0",
        "0.2",
        "0.28",
        "dapo",
        "0.01",
        "1e-06",
        "16",
    ]
    assert lines[-1].split() == ["grpo", "None", "0.04", "False"]  # the default recipe: MIRG-RL's GRPO
