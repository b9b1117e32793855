"""The tiny Qwen2-VL stand-in: deterministic, a real Qwen2-VL processor, accepted by all three stacks;
and its Qwen2.5-VL and Qwen3-VL siblings (`--family`), loaded and generated with under both transformers."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from demo.tiny_model import SPECIAL_TOKENS, build_tiny_qwen2vl
from tests.conftest import run_in

pytestmark = pytest.mark.train  # builds and loads the model with transformers (not in `make test-unit`)


def _digest(folder, name):
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model, tmp_path):
    again = build_tiny_qwen2vl(tmp_path / "again", seed=0)
    other = build_tiny_qwen2vl(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(tiny_model, name) == _digest(again, name), name
    assert _digest(tiny_model, "model.safetensors") != _digest(other, "model.safetensors")


def test_refuses_to_overwrite_a_model(tiny_model):
    from core.atomicio import OutputExistsError

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


# ---------------------------------------------------------------- the families (issue 15): --family qwen2.5-vl|qwen3-vl

# sha256 of the default (Qwen2-VL, seed 0) build as committed before --family existed: the demo's numbers,
# the benchmarks and every cached tokenization depend on these bytes staying the same.
QWEN2VL_SEED0_SHA256 = {
    "chat_template.jinja": "a0bc6f6fc7a29a80017a433e8f03a1cc1236e838a944a2d034295a60c4f2fddb",
    "config.json": "80541d4d0c63deaf68e2be36d3a3061adae1e89131a97fadb591c97b0f43d76e",
    "generation_config.json": "89d0b8e2f2a9fc853b8082378a9c8123a33ee9a35e282435c13d40888e341adf",
    "model.safetensors": "c86d465ae80189155d5d7d1dc0218d48967d8200b95398a1bb28450f95397584",
    "processor_config.json": "29a8066da0284617d6e457fe3da660f3b3737c3494f529b27defe79f45924710",
    "tokenizer.json": "ee6c34f7e916f405d6e7a91eac2cd70f12271ff930ad73f66bcd56972bc30a9c",
    "tokenizer_config.json": "ed9aa702db24ff12450a970baf1c3b18db38bb6cf87d384ca90ba10632b32569",
}
NEW_FAMILIES = ("qwen2.5-vl", "qwen3-vl")


@pytest.fixture(scope="module")
def family_models(tiny_family):
    return {f: tiny_family(f) for f in ("qwen2-vl", *NEW_FAMILIES)}


def _folder_digests(folder):
    return {p.name: _digest(folder, p.name) for p in sorted(folder.iterdir())}


def test_default_build_is_unchanged_byte_for_byte(tiny_model):
    assert _folder_digests(tiny_model) == QWEN2VL_SEED0_SHA256


@pytest.mark.parametrize("family", [None, *NEW_FAMILIES])
def test_cli_builds_each_family_deterministically(family, family_models, tmp_path, capsys):
    from demo.tiny_model import main

    out = tmp_path / "model"
    assert main([str(out)] + (["--family", family] if family else [])) == 0
    assert _folder_digests(out) == _folder_digests(family_models[family or "qwen2-vl"])
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_family_checkpoint_carries_its_tokens_config_and_processor(family, family_models):
    from transformers import AutoProcessor

    import families as F
    from demo.tiny_families import QWEN3_EXTRA_TOKENS, QWEN3_PIXELS, QWEN25_EXTRA_TOKENS, QWEN25_PIXELS

    tiny_pixels = {"qwen2.5-vl": QWEN25_PIXELS, "qwen3-vl": QWEN3_PIXELS}

    folder = family_models[family]
    fam = F.detect_family(folder)
    assert fam.name == family
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
    } <= {p.name for p in folder.iterdir()}
    assert F.processor_pixel_range(folder) == tiny_pixels[family]
    processor = AutoProcessor.from_pretrained(folder)
    tok = processor.tokenizer
    assert (
        type(processor).__name__
        == {"qwen2.5-vl": "Qwen2_5_VLProcessor", "qwen3-vl": "Qwen3VLProcessor"}[family]
    )
    extra = QWEN3_EXTRA_TOKENS if family == "qwen3-vl" else QWEN25_EXTRA_TOKENS
    for token in SPECIAL_TOKENS + extra:
        assert tok.tokenize(token) == [token], token
    special = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    ids = [tok.convert_tokens_to_ids(t) for t in extra]  # after the specials, in the real tokenizers' order
    assert ids == list(range(max(special) + 1, max(special) + 1 + len(extra)))
    assert not any(tok.added_tokens_decoder[i].special for i in ids)  # ordinary added tokens, as released
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    config = json.loads((folder / "config.json").read_text())
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_end_token_id"] == tok.convert_tokens_to_ids("<|vision_end|>")
    text, vision = config["text_config"], config["vision_config"]
    assert text["hidden_size"] // text["num_attention_heads"] == 64 == text.get("head_dim", 64)
    assert vision["hidden_size"] // vision["num_heads"] == 64
    assert text["vocab_size"] % 64 == 0 and text["vocab_size"] >= len(tok)
    assert (vision["patch_size"], processor.image_processor.patch_size) == (fam.patch_size, fam.patch_size)
    if family == "qwen2.5-vl":  # vLLM: window_size // merge // patch must be a positive integer
        assert vision["window_size"] // vision["spatial_merge_size"] // vision["patch_size"] >= 1
    else:  # vLLM: a square position grid; deepstack layers inside the tower and no more than LLM layers
        assert math.isqrt(vision["num_position_embeddings"]) ** 2 == vision["num_position_embeddings"]
        assert all(i < vision["depth"] for i in vision["deepstack_visual_indexes"])
        assert len(vision["deepstack_visual_indexes"]) <= text["num_hidden_layers"]
        assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_family_chat_template(family, family_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(family_models[family])
    image = {"type": "image"}
    user = {"role": "user", "content": [image, image, {"type": "text", "text": "hi"}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    body = "<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * 2 + "hi<|im_end|>\n"
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if family == "qwen2.5-vl" else ""
    assert text == system + body + "<|im_start|>assistant\n"  # Qwen3-VL has no default system prompt
    numbered = processor.apply_chat_template([user], tokenize=False, add_vision_id=True)
    assert "Picture 1: <|vision_start|>" in numbered and "Picture 2: <|vision_start|>" in numbered
    turns = [{"role": "system", "content": "S"}, user, {"role": "assistant", "content": "A"}]
    full = processor.apply_chat_template(turns, tokenize=False)
    assert full == "<|im_start|>system\nS<|im_end|>\n" + body + "<|im_start|>assistant\nA<|im_end|>\n"


@pytest.mark.parametrize("family", [*NEW_FAMILIES, "qwen2-vl"])
def test_llamafactory_family_template_expands_to_the_predicted_sizes(family, family_models):
    """The family's LLaMA-Factory template over the tiny processor gives exactly the tokens that
    families.training_resized_size predicts (LLaMA-Factory's defaults: 768*768 / 32*32 pixels)."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from PIL import Image
    from transformers import AutoProcessor

    import families as F

    fam = F.FAMILIES[family]
    processor = AutoProcessor.from_pretrained(family_models[family])
    template = get_template_and_fix_tokenizer(processor.tokenizer, DataArguments(template=fam.template))
    sizes = [(333, 517), (20, 10), (640, 90)]
    messages = [
        {"role": "user", "content": "<image>\n<image>\n<image>\nWhere?"},
        {"role": "assistant", "content": F.format_answer("x", (1, 2, 3, 4), fam)},
    ]
    messages = template.mm_plugin.process_messages(
        messages, [Image.new("RGB", s) for s in sizes], [], [], processor
    )
    prompt_ids, answer_ids = template.encode_oneturn(processor.tokenizer, messages)
    tokens = processor.tokenizer.convert_ids_to_tokens(prompt_ids)
    lo, hi = F.processor_pixel_range(family_models[family])
    expected = sum(
        fam.tokens_for(*F.training_resized_size(w, h, 768 * 768, 32 * 32, fam, lo, hi)) for w, h in sizes
    )
    assert tokens.count("<|vision_start|>") == 3 and tokens.count("<|image_pad|>") == expected
    answer = processor.tokenizer.decode(answer_ids, skip_special_tokens=False)
    assert F.parse_answer(answer.removesuffix("<|im_end|>\n"), fam).box == (1, 2, 3, 4)


def _hf_generate(python, folder):
    proc = run_in(python, ["tests/scripts/hf_generate.py", str(folder), "--images", "2"])
    return json.loads(
        next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT ")
    )


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_family_loads_with_auto_classes_and_generates(family, family_models, train_python):
    import families as F

    fam = F.FAMILIES[family]
    result = _hf_generate(train_python, family_models[family])
    assert result["transformers"].startswith("5.6") and result["model_class"] == fam.model_class
    assert result["missing_keys"] == [] and result["unexpected_keys"] == []  # no weight loaded as random
    assert len(result["new_token_ids"]) == 6 and all(
        0 <= t < result["vocab_size"] for t in result["new_token_ids"]
    )
    lo, hi = F.processor_pixel_range(family_models[family])
    for i, (_, gh, gw) in enumerate(result["image_grid_thw"]):  # hf_generate's images: (150+40i) x (100+30i)
        h, w = F.smart_resize(100 + 30 * i, 150 + 40 * i, fam.factor, lo, hi)
        assert (gh * fam.patch_size, gw * fam.patch_size) == (h, w)


@pytest.mark.vllm  # needs .venv-eval (transformers 5.19); vLLM itself is not started
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_family_generates_the_same_under_transformers_519(family, family_models, train_python, eval_python):
    new = _hf_generate(eval_python, family_models[family])
    assert new["transformers"].startswith("5.19")
    assert new["missing_keys"] == [] and new["unexpected_keys"] == []
    old = _hf_generate(train_python, family_models[family])
    assert (new["model_class"], new["new_token_ids"]) == (old["model_class"], old["new_token_ids"])
