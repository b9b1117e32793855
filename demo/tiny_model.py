"""Build a tiny random-weight Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint with a real processor.

Why: no model hub is reachable here, yet tests, benchmarks and `make demo` must
run the real stack (LLaMA-Factory's `qwen2_vl` template and trainer, vLLM's
Qwen2-VL model, transformers' classes). This writes a checkpoint that all three
accept: a byte-level BPE tokenizer with Qwen2's pre-tokenizer and every
Qwen2-VL special token, Qwen2-VL's chat template, an image processor with a
small pixel budget, and a 2-layer language model whose head_dim is 64 (the
smallest size vLLM's CPU attention kernel accepts).

Deterministic: the same seed gives byte-identical weight and tokenizer files.

`--family qwen2.5-vl|qwen3-vl` builds the same for those families (families/): their model
classes, their tokenizers' extra tokens (tool calls, FIM, and for Qwen3 `<think>`), their chat
templates and processors (Qwen3-VL: patch 16, mean/std 0.5, its own video processor), in the
tiny configs measured to build, load and generate (../shared/BASE_MODELS.md). The default
(Qwen2-VL) build is unchanged byte for byte.

    python -m demo.tiny_model OUT [--family qwen2-vl|qwen2.5-vl|qwen3-vl] [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from core.atomicio import OutputExistsError, atomic_dir
from core.cli import EXIT_BAD_INPUT, EXIT_OK, fail
from families import DEFAULT_FAMILY, FAMILIES, FAMILY_CHOICES, get_family

# Qwen2-VL's special tokens, in the order (and relative ids) of the real tokenizer.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL-Instruct's chat template (as shipped with Qwen/Qwen2-VL-7B-Instruct).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the BPE merges are learnt from: grounding prompts, answers and plain English.
_CORPUS_WORDS = (
    "you are a helpful assistant system user the a an of in on to and or is it its it's which where "
    "what how many image images picture first second third fourth fifth sixth last one two three four "
    "five six seven eight nine zero find locate give bounding box region object objects common "
    "difference different same appears appear all these those this that other find between compare "
    "please recognize target sentence refers refer referring phrase grounding group tracking track "
    "view multi correspondence reasoning position coordinates format don't generate additional "
    "addtional words answer question red green blue yellow purple orange black white gray cyan "
    "square circle triangle cross star shape shapes color colour small large big left right top bottom "
    "middle center corner upper lower there here only not no yes with without has have show shows"
)
_CORPUS_LINES = [
    _CORPUS_WORDS,
    "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words.",
    "It's in the third image. (316,58),(764,999) (0,0),(333,333) (667,667),(1000,1000)",
    "Give the bounding box of the region this sentence refers to: a red square in the second image.",
    "[0.12, 0.34, 0.56, 0.78] <box>12 34 56 78</box> (0.1, 0.2, 0.3, 0.4)",
    # The RL stage's reasoning trajectories (MIRG-RL's <think>/<answer> with [N-M] object ids), so its
    # tags are a few tokens each, not a dozen bytes.
    "<think>The target is in the third image: <bbox_id>[3-1]</bbox_id> so [1-1] [2-1] [4-1] [1-2].</think>"
    "<answer><bbox_id>[2-1]</bbox_id></answer> First output the thinking process in <think> </think> tags "
    "and then output the bounding box in <answer> </answer> tags.",
]


def build_tokenizer(vocab_size: int = 1024, corpus_lines=None, extra_tokens=(), pad_token=None):
    """Train a small byte-level BPE with Qwen2's pre-tokenizer; add Qwen2-VL's specials.

    `extra_tokens` follow them as ordinary (non-special) added tokens, as `<tool_call>` and `<think>`
    are in the Qwen2.5 and Qwen3 tokenizers; the defaults give the Qwen2-VL tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    from tokenizers import Regex

    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    bpe.train_from_iterator((corpus_lines or _CORPUS_LINES) * 20, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    if extra_tokens:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def build_processor(tokenizer, max_pixels: int = 224 * 224, min_pixels: int = 28 * 28 * 4):
    """Qwen2-VL processor with a small pixel budget (at most 64 visual tokens per image)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        video_processor=Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, hidden: int = 128, layers: int = 2, vision_dim: int = 128):
    """Qwen2-VL config: head_dim 64 for vLLM's CPU kernel, token ids from the tokenizer."""
    from transformers import Qwen2VLConfig

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    vocab_padded = (vocab + 63) // 64 * 64
    text_config = {
        "vocab_size": vocab_padded,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64,
        "max_position_embeddings": 32768,
        "max_window_layers": layers,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 2,
        "embed_dim": vision_dim,
        "hidden_size": hidden,
        "num_heads": vision_dim // 64,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def save_tiny(
    out_dir, model_class, processor, config, seed: int, force: bool, generation: dict | None = None
) -> Path:
    """Random weights (seeded) for `config` in `model_class`, greedy generation, everything written atomically:
    the one writer of every tiny checkpoint (each family's builder makes its tokenizer, processor and config).
    `generation`: GenerationConfig values (default: bos/eos/pad from the text config, as the Qwen tiny ones)."""
    import torch
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32).eval()
    if generation is None:
        text = config.text_config
        generation = {
            "bos_token_id": text.bos_token_id,
            "eos_token_id": [text.eos_token_id, text.pad_token_id],
            "pad_token_id": text.pad_token_id,
        }
    model.generation_config = GenerationConfig(**generation, do_sample=False)  # greedy (the releases sample)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return out_dir


def build_tiny_qwen2vl(out_dir: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write the tiny checkpoint (weights, config, generation config, tokenizer, processor)."""
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = build_tokenizer()
    return save_tiny(
        out_dir,
        Qwen2VLForConditionalGeneration,
        build_processor(tokenizer),
        build_config(tokenizer),
        seed,
        force,
    )


def build_tiny_model(
    out_dir: str | Path, family: str = DEFAULT_FAMILY, seed: int = 0, force: bool = False, **options
) -> Path:
    """The tiny checkpoint of a family: the builder its Family names (`tiny_builder`, "module:function"
    taking (out_dir, seed, force) and its own keyword `options`, e.g. Family.demo_tiny_options), found by
    name so the families table stays the one place a family is added."""
    fam = get_family(family)
    module, _, name = fam.tiny_builder.partition(":")
    builder = getattr(importlib.import_module(module), name)
    return builder(out_dir, seed=seed, force=force, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.tiny_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty folder")
    parser.add_argument(
        "--family", choices=FAMILY_CHOICES, default=DEFAULT_FAMILY, help="model family to build"
    )
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(args.out, family=args.family, seed=args.seed, force=args.force)
    except OutputExistsError as err:
        return fail(parser.prog, err, EXIT_BAD_INPUT)
    print(f"tiny {FAMILIES[args.family].display} written to {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
