"""A tiny random InternVL3.5 checkpoint in the HF (`-HF`) layout (`model_type: internvl`).

Why: no hub is reachable here, yet the InternVL family must be trained (LLaMA-Factory's `intern_vl`
template), sampled (TRL) and served (transformers, vLLM) on the CPU. This writes what
`OpenGVLab/InternVL3_5-*-HF` ship, shrunk: InternViT (448x448 tiles, patch 14, mean pooling, layer
scale) with a pixel-shuffle MLP projector (downsample 0.5: 256 tokens per tile) in front of a Qwen3
language model; the Qwen3 tokenizer plus InternVL's specials (`<img>`, `</img>`, `<IMG_CONTEXT>`,
`<quad>`, `</quad>`, `<ref>`, `</ref>`, `<box>`, `</box>`, `<video>`) named as the HF processor reads
them; the HF chat template (one `<IMG_CONTEXT>\\n` per image, no default system prompt) and the
GotOCR2 image processor with dynamic tiling settings as released (min 1, max 12 tiles plus a
thumbnail; `crop_to_patches` false in the saved config, while InternVLProcessor's call default is
true).

Tiny but shaped like the release: text head_dim 64 (vLLM's CPU attention needs 64), vision head size 64,
tiles kept at 448 so the tiling, the 256 tokens per tile and the projector's input width are the real
ones. `tile` shrinks the tiles for the CPU demo (Family.demo_tiny_options: 56 pixels, 4 tokens a tile);
everything else stays as released. Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from demo.tiny_families import _JSON_CORPUS_LINES, QWEN3_EXTRA_TOKENS
from demo.tiny_model import _CORPUS_LINES, SPECIAL_TOKENS, build_tokenizer, save_tiny
from demo.tiny_vocab import reordered

# InternVL's own specials after Qwen3's added tokens (InternVL3.5: <img> 151669 ... </box> 151677), then
# the HF conversion's <video>.
INTERNVL_TOKENS = [
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
]
VIDEO_TOKEN = "<video>"
ADDED_TOKENS = [*SPECIAL_TOKENS, *QWEN3_EXTRA_TOKENS, *INTERNVL_TOKENS, VIDEO_TOKEN]
# The names InternVLProcessor reads from the tokenizer (tokenizer_config.json `extra_special_tokens`).
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": VIDEO_TOKEN,
}

# The -HF checkpoints' chat template (transformers' InternVL conversion): ChatML, one `<IMG_CONTEXT>\n`
# per image and `<video>\n` per video (the processor expands each into `<img>` + 256 x tiles
# `<IMG_CONTEXT>` + `</img>`), no default system prompt, `<|im_start|>assistant\n` as generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)

TILE = 448  # InternViT's input side; every tile (and the thumbnail) is resized to it
MIN_TILES, MAX_TILES = 1, 12  # the released dynamic-tiling bounds
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# BPE lines for InternVL's answer form, so `<ref>..</ref><box>[[x1, y1, x2, y2]]</box>` is a few tokens.
_INTERNVL_CORPUS_LINES = [
    "<ref>the red square</ref><box>[[73, 112, 364, 559]]</box>",
    "<ref>a blue circle</ref><box>[[0, 0, 333, 333], [667, 667, 1000, 1000]]</box>",
    "Please provide the bounding box coordinate of the region this sentence describes: <ref>the red square</ref>",
]


def build_internvl_tokenizer():
    """The InternVL3.5-HF tokenizer: the tiny Qwen3 BPE plus Qwen3's and InternVL's added tokens in the
    released order, each InternVL token named for the processor as the HF conversion does (the tokenizer
    is loaded with `extra_special_tokens`, which tokenizer_config.json then records)."""
    from transformers import AutoTokenizer, Qwen2Tokenizer

    corpus = _CORPUS_LINES + _JSON_CORPUS_LINES + _INTERNVL_CORPUS_LINES
    base = reordered(
        build_tokenizer(corpus_lines=corpus), Qwen2Tokenizer, ADDED_TOKENS, set(QWEN3_EXTRA_TOKENS)
    )
    base.chat_template = CHAT_TEMPLATE
    base.model_max_length = 40960  # Qwen3's max_position_embeddings, as in the InternVL3.5 text configs
    with tempfile.TemporaryDirectory() as tmp:
        base.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(tmp, extra_special_tokens=NAMED_TOKENS)
    for key in ("is_local", "local_files_only"):  # loading details, not part of a released tokenizer
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def tokens_per_tile(tile: int) -> int:
    """Image tokens of one tile: (tile / patch 14)^2 patches, pixel-shuffled by 0.5 (256 at 448)."""
    if tile % 28:
        raise ValueError(f"tile {tile} is not a multiple of 28 (patch 14, pixel shuffle 0.5)")
    return (tile // 14) ** 2 // 4


def build_processor(tokenizer, tile: int = TILE):
    """InternVLProcessor over GotOCR2's image processor: `tile` tiles, 1..12 tiles plus a thumbnail."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    size = {"height": tile, "width": tile}
    norm = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3}  # bicubic
    image_processor = GotOcr2ImageProcessor(
        size=size, crop_to_patches=False, min_patches=MIN_TILES, max_patches=MAX_TILES, **norm
    )
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size, **norm),
        image_seq_length=tokens_per_tile(tile),
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, hidden: int = 128, vision_hidden: int = 128, tile: int = TILE):
    """InternVLConfig in the released shape, shrunk: InternViT-300M's layout, a Qwen3 text model."""
    from transformers import InternVLConfig

    ids = {
        tok: tokenizer.convert_tokens_to_ids(tok) for tok in ("<|endoftext|>", "<|im_end|>", "<IMG_CONTEXT>")
    }
    text_config = {
        "model_type": "qwen3",
        "vocab_size": (len(tokenizer) + 63) // 64 * 64,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64,
        "head_dim": 64,
        "max_position_embeddings": 40960,
        "max_window_layers": 2,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],  # the HF conversion forces <|im_end|> for InternVL3/3.5
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {  # InternViT-300M-448px-V2.5 shape, shrunk
        "hidden_size": vision_hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": vision_hidden // 64,
        "intermediate_size": vision_hidden * 2,
        "attention_bias": True,
        "use_qk_norm": False,
        "norm_type": "layer_norm",
        "hidden_act": "gelu",
        "image_size": [tile, tile],
        "patch_size": [14, 14],
        "layer_scale_init_value": 0.1,
        "use_mean_pooling": True,
        "use_absolute_position_embeddings": True,
    }
    return InternVLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=tokens_per_tile(tile),  # (448 / 14)^2 * 0.5^2 = 256 as released
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def build(out_dir: str | Path, seed: int = 0, force: bool = False, tile: int = TILE) -> Path:
    """Write the tiny InternVL3.5-HF checkpoint (weights, configs, tokenizer, processor, chat template)."""
    from transformers import InternVLForConditionalGeneration

    tokenizer = build_internvl_tokenizer()
    return save_tiny(
        out_dir,
        InternVLForConditionalGeneration,
        build_processor(tokenizer, tile),
        build_config(tokenizer, tile=tile),
        seed,
        force,
    )
