"""Stage 1 + stage 2 tiny Qwen2-VL checkpoints -> merge_tool -> transformers and vLLM load and generate.

Stage 1 is the tiny model saved in bf16 as one file (what a short training
run writes); stage 2 is a perturbed copy saved in shards inside a
`checkpoint-N/` folder next to optimizer and trainer leftovers, so the merge
reads both layouts LLaMA-Factory produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_in

pytestmark = pytest.mark.train  # the tiny model and transformers generation (not in `make test-unit`)


@pytest.fixture(scope="module")
def two_stages(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    root = tmp_path_factory.mktemp("stages")
    processor = AutoProcessor.from_pretrained(tiny_model)
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.bfloat16)
    stage1 = root / "stage1"
    model.save_pretrained(stage1)
    processor.save_pretrained(stage1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_((torch.randn(param.shape, generator=g) * 0.05).to(param.dtype))
    stage2 = root / "stage2" / "checkpoint-8"
    model.save_pretrained(stage2, max_shard_size="1MB")
    processor.save_pretrained(stage2)
    (stage2 / "optimizer.pt").write_bytes(b"\0" * 64)
    (stage2 / "trainer_state.json").write_text("{}")
    assert (stage2 / "model.safetensors.index.json").exists() and (stage1 / "model.safetensors").exists()
    return stage1, stage2


def _images():
    from PIL import Image, ImageDraw

    out = []
    for i in range(2):
        img = Image.new("RGB", (112, 84), "white")
        ImageDraw.Draw(img).rectangle([10 + 20 * i, 10, 40 + 20 * i, 40], fill="red")
        out.append(img)
    return out


def test_merged_model_loads_and_generates_in_transformers(two_stages, tmp_path):
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    stage1, stage2 = two_stages
    out = tmp_path / "merged"
    run_in(sys.executable, ["-m", "merge_tool", "--models", str(stage1), str(stage2), "--output", str(out),
                            "--max-shard-size", "1MB"])  # fmt: skip
    assert (out / "model.safetensors.index.json").exists()
    assert not (out / "optimizer.pt").exists() and not (out / "trainer_state.json").exists()

    merged, info = Qwen2VLForConditionalGeneration.from_pretrained(
        out, dtype=torch.bfloat16, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    first = Qwen2VLForConditionalGeneration.from_pretrained(stage1, dtype=torch.bfloat16).state_dict()
    second = Qwen2VLForConditionalGeneration.from_pretrained(stage2, dtype=torch.bfloat16).state_dict()
    state = merged.state_dict()
    assert set(state) == set(first)
    for name, tensor in state.items():
        expected = (first[name].float() * 0.5 + second[name].float() * 0.5).to(first[name].dtype)
        assert torch.equal(tensor, expected), name
    assert any(not torch.equal(state[n], first[n]) for n in state)  # really a new model

    processor = AutoProcessor.from_pretrained(out)  # tokenizer, processor and template were carried over
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Where is the red square?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    inputs = processor(text=[text], images=_images(), return_tensors="pt")
    generated = merged.eval().generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 8
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "Qwen2VLForConditionalGeneration"
    ]


@pytest.mark.vllm
def test_merge_in_eval_env_then_generate_in_vllm(two_stages, tmp_path, eval_python):
    """merge_tool runs in .venv-eval too (no LLaMA-Factory there), bit-identically; vLLM serves the result."""
    stage1, stage2 = two_stages
    args = ["--models", str(stage1), str(stage2), "--max-shard-size", "1MB", "--no-progress"]
    run_in(eval_python, ["-m", "merge_tool", *args, "--output", str(tmp_path / "eval_env")])
    run_in(sys.executable, ["-m", "merge_tool", *args, "--output", str(tmp_path / "train_env")])
    weights = sorted(p.name for p in (tmp_path / "train_env").glob("model*"))
    assert len(weights) > 2
    for name in weights:
        assert (tmp_path / "eval_env" / name).read_bytes() == (tmp_path / "train_env" / name).read_bytes(), (
            name
        )

    proc = run_in(
        eval_python, ["tests/scripts/vllm_generate.py", str(tmp_path / "eval_env"), "--images", "2"]
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert len(result["outputs"]) == 3
    for output in result["outputs"]:
        assert len(output["token_ids"]) == 8
        assert all(0 <= t < result["vocab_size"] for t in output["token_ids"])
