"""GRPO through TRL's own GRPOTrainer on the CPU: a few steps on a tiny Qwen2-VL, then a resume.

Why a primed model: a random model never writes `<answer>`, so every reward is 0, every group's
advantage is 0 and nothing could change. The fixture first teaches the tiny model the answer form
with a short teacher-forced loop (here, in .venv), so sampled completions differ in format, image
and box and the rewards carry a signal. The GRPO runs themselves are `python -m rl train` with the
real recipe in .venv-eval (TRL 1.16, transformers 5.19).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_in

pytestmark = pytest.mark.vllm  # needs .venv-eval (TRL lives there)

SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the bounding box in "
    "<answer> </answer> tags."
)
CPU = [
    "use_cpu=true",
    "bf16=false",
    "deepspeed=null",
    "gradient_checkpointing=false",
    "per_device_train_batch_size=4",
    "gradient_accumulation_steps=1",
    "num_generations=4",
    "max_completion_length=48",
    "image_max_pixels=12544",
    "save_steps=2",
    "logging_steps=1",
    "learning_rate=1e-3",
]


def _answer(image: int, box) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<think>The target is in image {image}.</think><answer><bbox_id>[{image}-1]</bbox_id>"
        f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|></answer>"
    )


def write_images(root: Path, i: int, k: int, rng: random.Random) -> list[str]:
    """Record i's k plain 112 x 112 images (one colour each), as paths."""
    paths = []
    for j in range(k):
        path = root / f"img_{i}_{j}.png"
        Image.new("RGB", (112, 112), (rng.randrange(256), 90, 90)).save(path)
        paths.append(str(path))
    return paths


def write_rl_set(root: Path, n: int = 8, seed: int = 0) -> Path:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        k = rng.randint(2, 3)
        paths = write_images(root, i, k, rng)
        index = rng.randint(1, k)
        box = [0, 0, 333, 333] if i % 2 else [333, 333, 667, 667]
        records.append(
            {
                "id": f"rl-{i}",
                "type": "common_object",
                "task": "common_object",
                "images": paths,
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>\n" * k + f"Locate the red square in image {index}." + SUFFIX,
                    },
                    {"from": "gpt", "value": _answer(index, box)},
                ],
                "image_index": index,
                "box": box,
                "num_images": k,
            }
        )
    records.append({"id": "broken", "images": ["/nonexistent.png"], "conversations": []})
    path = root / "rl.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def prime(model_dir: Path, rl_set: Path, out: Path, steps: int = 300) -> Path:
    """Teacher-force the tiny model on the reference answers (text only: seconds, not minutes)."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    batches = []
    for r in (r for r in json.loads(rl_set.read_text()) if r.get("conversations")):
        question = r["conversations"][0]["value"].replace("<image>\n", "")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        prompt = tokenizer(text)["input_ids"]
        answer = tokenizer(r["conversations"][1]["value"] + "<|im_end|>")["input_ids"]
        ids = torch.tensor([list(prompt) + answer])
        labels = ids.clone()
        labels[:, : len(prompt)] = -100
        batches.append((ids, labels))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        model(input_ids=ids, labels=labels).loss.backward()
        optim.step()
        optim.zero_grad()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def primed(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    rl_set = write_rl_set(root)
    return prime(tiny_model, rl_set, root / "primed"), rl_set


def _state(out: Path) -> dict:
    return json.loads((out / "trainer_state.json").read_text())


def test_grpo_trains_logs_and_resumes(primed, eval_python, tmp_path):
    from safetensors.numpy import load_file

    model, rl_set = primed
    out = tmp_path / "grpo"
    base = ["-m", "rl", "train", "recipes/grpo.yaml", f"model_name_or_path={model}", f"dataset={rl_set}"]
    run_in(eval_python, [*base, f"output_dir={out}", "max_steps=2", *CPU], timeout=900)

    before = load_file(str(model / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = [k for k in after if "visual" not in k and not (after[k] == before[k]).all()]
    assert changed, "no language-model tensor changed in 2 GRPO steps"
    frozen = [k for k in after if k.startswith(("visual.blocks", "model.visual.blocks"))]
    assert frozen and all((after[k] == before[k]).all() for k in frozen), "the vision tower moved"

    logs = [e for e in _state(out)["log_history"] if "loss" in e]
    assert len(logs) == 2
    for key in (
        "rewards/format/mean",
        "rewards/image/mean",
        "rewards/iou/mean",
        "reward",
        "time/generation",
        "time/update",
    ):
        assert all(key in e for e in logs), key
    assert any(e["reward_std"] > 0 for e in logs), "the primed model's completions all scored alike"
    metrics = json.loads((out / "train_results.json").read_text())
    assert metrics["examples"] == 8 and metrics["skipped"] == 1
    assert json.loads((out / "rl_skipped.json").read_text())[0]["id"] == "broken"
    assert (out / "training_rewards.png").stat().st_size > 0

    # The final weights are written once: output_dir's are checkpoint-2's files (hard links).
    assert os.path.samefile(out / "model.safetensors", out / "checkpoint-2" / "model.safetensors")
    assert metrics["final_weights_from"].endswith("checkpoint-2")

    # A second call with a larger max_steps resumes from checkpoint-2 and continues the step count.
    proc = run_in(eval_python, [*base, f"output_dir={out}", "max_steps=3", *CPU], timeout=900)
    assert "resuming from" in proc.stderr + proc.stdout
    assert _state(out)["global_step"] == 3
    metrics = json.loads((out / "train_results.json").read_text())
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["final_weights_from"].endswith(
        "checkpoint-3"
    )
    assert os.path.samefile(out / "model.safetensors", out / "checkpoint-3" / "model.safetensors")
    kept = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all((kept[k] == after[k]).all() for k in after), "linking step 3's weights changed checkpoint-2"


def test_grpo_refuses_unknown_keys_and_missing_data(eval_python, tmp_path):
    import subprocess

    from tests.conftest import REPO

    for extra, needle in (
        (["learning_rat=1e-5"], "unknown key(s) learning_rat"),
        ([f"dataset={tmp_path / 'none.json'}", "dataset_dir=/nonexistent"], "none.json"),
    ):
        proc = subprocess.run(
            [
                eval_python,
                "-m",
                "rl",
                "train",
                "recipes/grpo.yaml",
                f"output_dir={tmp_path / 'o'}",
                *CPU,
                *extra,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr


def test_univg_profile_weighs_groups_by_difficulty(primed, eval_python, tmp_path):
    """reward_profile=univg: format + IoU only, and exp(1 - mean group IoU) logged as the groups' weights."""
    import math

    model, rl_set = primed
    out = tmp_path / "univg"
    args = ["-m", "rl", "train", "recipes/grpo.yaml", f"model_name_or_path={model}", f"dataset={rl_set}"]
    run_in(
        eval_python, [*args, f"output_dir={out}", "max_steps=1", "reward_profile=univg", *CPU], timeout=900
    )
    (log,) = [e for e in _state(out)["log_history"] if "loss" in e]
    assert "rewards/image/mean" not in log and "rewards/format/mean" in log
    # every group's weight lies in [1, e]; their mean follows the IoU reward's mean only loosely
    assert 1.0 <= log["difficulty_weight/mean"] <= log["difficulty_weight/max"] <= math.e + 1e-6
    assert json.loads((out / "train_results.json").read_text())["difficulty_weighting"] is True
