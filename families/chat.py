"""The chat turn a request is sent as, and the text read back from generated ids.

Why: a model is trained on the prompts LLaMA-Factory renders from the converters' records
(`<image>\\n` per image, then the question, under the template's system message) and then sampled in
GRPO (TRL) and scored in eval (transformers, vLLM) through the checkpoint's own chat template. Laid out
the naive way (the images, then the text) the two differ: Qwen's templates write the images back to
back where training had a newline after each, and InternVL's HF chat template has no system message
where LLaMA-Factory's `intern_vl` sends one. So every stage builds its turn here, from the family's
`system_message` and `template_image_suffix`, and the prompt is the training prompt token for token
(tests/test_family_prompts.py checks it for every family).

The `paper` layout keeps the paper script's turn (MIG_bench_eval.py: the images, then the text, the
chat template's own default system) for reproducing its numbers.

Decoding: InternVL's tokenizer marks `<ref>`, `</ref>`, `<box>`, `</box>` special, so the usual
`skip_special_tokens=True` strips the very tags its answers are written in. `decode` drops the other
special tokens and keeps a family's `answer_special_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PROMPT_LAYOUTS = ("training", "paper")
TRAINING_LAYOUT, PAPER_LAYOUT = PROMPT_LAYOUTS
IMAGE_SEPARATOR = "\n"  # what follows each `<image>` in a converted record (converters.records, MGrounding)


def plain_image(_index: int) -> dict:
    """An image part with nothing attached (the chat template only needs its place)."""
    return {"type": "image"}


def check_layout(layout: str) -> str:
    if layout not in PROMPT_LAYOUTS:
        raise ValueError(f"unknown prompt layout {layout!r}; choose from {', '.join(PROMPT_LAYOUTS)}")
    return layout


def chat_messages(
    system_message: str,
    template_image_suffix: str,
    n_images: int,
    text: str,
    layout: str = TRAINING_LAYOUT,
    image_part: Callable[[int], dict] = plain_image,
) -> list[dict]:
    """One request as chat messages: [system,] user (the images in order, then the text).

    training: the system message LLaMA-Factory's template adds (none when it adds none), and after each
    image the separator the records have, unless the chat template writes it itself. paper: the images,
    then the text, nothing else. Every content is a list of parts (TRL and datasets need one type).
    """
    check_layout(layout)
    content: list[dict] = []
    gap = IMAGE_SEPARATOR.removeprefix(template_image_suffix) if layout == TRAINING_LAYOUT else ""
    for i in range(n_images):
        content.append(image_part(i))
        if gap:
            content.append({"type": "text", "text": gap})
    content.append({"type": "text", "text": text})
    messages = [{"role": "user", "content": content}]
    if layout == TRAINING_LAYOUT and system_message:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_message}]})
    return messages


def decode(tokenizer, ids: Sequence[int], keep: Sequence[str] = ()) -> str:
    """Generated ids -> text without special tokens, except the `keep` ones (a family's answer tags)."""
    if not keep:
        return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    kept = set(tokenizer.convert_tokens_to_ids(list(keep)))
    special = set(tokenizer.all_special_ids)
    special.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    special -= kept
    return tokenizer.decode(
        [i for i in ids if i not in special], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
