"""Tiny random Qwen2.5-VL and Qwen3-VL checkpoints, built from demo/tiny_model.py's pieces.

Why a module of its own: tiny_model.py's Qwen2-VL build must stay byte for byte what the tests,
the benchmarks and `make demo` already use; the two newer families differ in their model class,
tokenizer tail, chat template and processor, and those differences live here. The configs are the
ones measured to build under transformers 5.6 and load and generate under 5.19, within vLLM 0.32's
CPU limits (../shared/BASE_MODELS.md): head_dim 64, Qwen2.5-VL's window_size // merge // patch >= 1,
Qwen3-VL's num_position_embeddings a perfect square and its deepstack indexes inside the tower.
"""

from __future__ import annotations

from pathlib import Path

from demo.tiny_model import _CORPUS_LINES, CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer, save_tiny
from families import FAMILIES, get_family

# The real tokenizers' added tokens after Qwen2-VL's specials, in their order (ordinary, non-special).
QWEN25_EXTRA_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN3_EXTRA_TOKENS = [*QWEN25_EXTRA_TOKENS, "<tool_response>", "</tool_response>", "<think>", "</think>"]

# Qwen3-VL-Instruct's chat template, reduced to what a grounding conversation uses: no default system
# prompt (a system turn only when given), images and videos through the render_content macro,
# `add_vision_id` numbering, and `<|im_start|>assistant\n` as the generation prompt (the Thinking
# variant adds `<think>\n`). Tool turns are rendered as in the released template's plain branch.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content, do_vision_count) %}"
    "{%- if content is string %}{{- content }}{%- else %}{%- for item in content %}"
    "{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- if do_vision_count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'video' in item or item.type == 'video' %}"
    "{%- if do_vision_count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- endmacro %}"
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + render_content(messages[0].content, false) + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- set content = render_content(message.content, true) %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# BPE lines for the JSON answer form, so `{"bbox_2d": [...]}` is a few tokens, not dozens of bytes.
_JSON_CORPUS_LINES = [
    '```json\n[\n\t{"bbox_2d": [73, 112, 364, 559], "label": "the red square"}\n]\n```',
    '[{"bbox_2d": [0, 0, 333, 333], "label": "a blue circle"}, {"bbox_2d": [667, 667, 1000, 1000]}]',
    *(FAMILIES[name].grounding_suffix.strip() for name in ("qwen2.5-vl", "qwen3-vl")),
    *(FAMILIES[name].refer_template for name in ("qwen2.5-vl", "qwen3-vl")),
]  # a fixed list: the tokenizer (and so every tiny JSON-family model) must not change when a family is added


def _tokenizer(extra_tokens: list[str], chat_template: str | None = None):
    tokenizer = build_tokenizer(
        corpus_lines=_CORPUS_LINES + _JSON_CORPUS_LINES, extra_tokens=extra_tokens, pad_token="<|endoftext|>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _base_configs(tokenizer, hidden: int, layers: int) -> tuple[dict, dict, dict]:
    """(text, vision, token-id) config values every tiny Qwen shares: head_dim 64 (vLLM's CPU kernel)."""
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    heads = hidden // 64
    text_config = {
        "vocab_size": (len(tokenizer) + 63) // 64 * 64,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_heads": heads,
        "out_hidden_size": hidden,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    return text_config, vision_config, token_ids


def qwen3_tokenizer():
    """The tiny Qwen3-VL tokenizer (Qwen3's extra tokens, its chat template); Qwen3.5's starts from it."""
    return _tokenizer(QWEN3_EXTRA_TOKENS, QWEN3_VL_CHAT_TEMPLATE)


# (min, max) of the tiny processors: 4 to 64 visual tokens per image, as the Qwen2-VL one
QWEN25_PIXELS = (28 * 28 * 4, 224 * 224)
QWEN3_PIXELS = (32 * 32 * 4, 256 * 256)


def qwen25_parts(hidden: int = 128, layers: int = 2):
    """Tiny Qwen2.5-VL (tokenizer, processor, config): window_size // merge // patch >= 1 for vLLM."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = _tokenizer(QWEN25_EXTRA_TOKENS)
    lo, hi = QWEN25_PIXELS
    size = {"shortest_edge": lo, "longest_edge": hi}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,  # Qwen2.5-VL-Instruct ships Qwen2-VL's processor template
    )
    text_config, vision_config, token_ids = _base_configs(tokenizer, hidden, layers)
    text_config["max_window_layers"] = layers
    text_config["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}
    vision_config.update(patch_size=14, window_size=112, fullatt_block_indexes=[layers - 1])
    return (
        tokenizer,
        processor,
        Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **token_ids),
    )


def qwen3_parts(hidden: int = 128, layers: int = 2):
    """Tiny Qwen3-VL (tokenizer, processor, config): patch 16, mean/std 0.5, num_position_embeddings a
    perfect square, deepstack indexes inside the tower."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = qwen3_tokenizer()
    lo, hi = QWEN3_PIXELS
    size = {"shortest_edge": lo, "longest_edge": hi}
    half = [0.5, 0.5, 0.5]
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, patch_size=16, image_mean=half, image_std=half),
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, image_mean=half, image_std=half),
        tokenizer=tokenizer,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    text_config, vision_config, token_ids = _base_configs(tokenizer, hidden, layers)
    text_config["head_dim"] = 64
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": [8, 12, 12],
        "mrope_interleaved": True,
    }
    vision_config.update(
        patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=list(range(layers))
    )
    return (
        tokenizer,
        processor,
        Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **token_ids),
    )


def _save_tiny(out_dir, family: str, parts, seed: int, force: bool) -> Path:
    import transformers

    _, processor, config = parts
    return save_tiny(
        out_dir, getattr(transformers, get_family(family).model_class), processor, config, seed, force
    )


def build_tiny_qwen25vl(out_dir, seed: int = 0, force: bool = False) -> Path:
    """A tiny Qwen2.5-VL checkpoint (Family.tiny_builder)."""
    return _save_tiny(out_dir, "qwen2.5-vl", qwen25_parts(), seed, force)


def build_tiny_qwen3vl(out_dir, seed: int = 0, force: bool = False) -> Path:
    """A tiny Qwen3-VL checkpoint (Family.tiny_builder)."""
    return _save_tiny(out_dir, "qwen3-vl", qwen3_parts(), seed, force)
