"""The tiny Qwen2-VL stand-in: deterministic, a real Qwen2-VL processor, accepted by all three stacks."""

from __future__ import annotations

import hashlib
import json

import pytest

from demo.tiny_model import SPECIAL_TOKENS, build_tiny_qwen2vl
from tests.conftest import run_in


def _digest(folder, name):
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model, tmp_path):
    again = build_tiny_qwen2vl(tmp_path / "again", seed=0)
    other = build_tiny_qwen2vl(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(tiny_model, name) == _digest(again, name), name
    assert _digest(tiny_model, "model.safetensors") != _digest(other, "model.safetensors")


def test_refuses_to_overwrite_a_model(tiny_model):
    from atomicio import OutputExistsError

    with pytest.raises(OutputExistsError):
        build_tiny_qwen2vl(tiny_model, seed=0)


def test_processor_carries_qwen2vl_tokens_template_and_budget(tiny_model):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    tok = processor.tokenizer
    for token in SPECIAL_TOKENS:
        assert tok.tokenize(token) == [token], token  # each is one unsplittable token
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config["text_config"]["hidden_size"] // config["text_config"]["num_attention_heads"] == 64
    assert tok.eos_token == "<|im_end|>"
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")
    assert processor.image_processor.size["longest_edge"] == 224 * 224


def test_llamafactory_template_expands_one_placeholder_per_image(tiny_model):
    """LLaMA-Factory's qwen2_vl template turns each <image> into vision_start + pads + vision_end."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    template = get_template_and_fix_tokenizer(processor.tokenizer, DataArguments(template="qwen2_vl"))
    images = [Image.new("RGB", (112, 112)), Image.new("RGB", (56, 112))]
    messages = [
        {"role": "user", "content": "<image>\n<image>\nWhere?"},
        {"role": "assistant", "content": "<|box_start|>(1,2),(3,4)<|box_end|>"},
    ]
    messages = template.mm_plugin.process_messages(messages, images, [], [], processor)
    prompt_ids, _ = template.encode_oneturn(processor.tokenizer, messages)
    tokens = processor.tokenizer.convert_ids_to_tokens(prompt_ids)
    assert tokens.count("<|vision_start|>") == 2 and tokens.count("<|vision_end|>") == 2
    assert tokens.count("<|image_pad|>") == (112 * 112 + 56 * 112) // (28 * 28)


@pytest.mark.vllm
def test_generates_through_vllm_on_cpu(tiny_model, eval_python):
    proc = run_in(eval_python, ["tests/scripts/vllm_generate.py", str(tiny_model), "--images", "3"])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert len(result["outputs"]) == 3
    for out in result["outputs"]:
        assert len(out["token_ids"]) == 8
        assert all(0 <= t < result["vocab_size"] for t in out["token_ids"])
    assert len({tuple(o["token_ids"]) for o in result["outputs"]}) == 1  # greedy: same prompt, same text
