"""Give a tiny BPE the released added-token order of the Qwen-based tokenizers.

Why: the released Qwen2.5/Qwen3/Qwen3.5 and InternVL3.5 tokenizers append their added tokens after the
BPE vocabulary in one fixed order that starts `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (Qwen3.5:
248044..248076, InternVL3.5: 151643..151678). demo/tiny_model.py's tokenizer (kept byte for byte for the
existing tiny models) adds `<|im_end|>` first; the newer families' tiny checkpoints follow the release.
"""

from __future__ import annotations

import json


def reordered(tokenizer, tokenizer_class, added_tokens: list[str], ordinary: set[str]):
    """`tokenizer`'s BPE (vocab and merges) as a `tokenizer_class`, with `added_tokens` appended in order.

    `added_tokens[0]` must be `<|endoftext|>` (the class adds it first as unk/eos/pad); tokens in `ordinary`
    are added as non-special (Qwen3's tool, FIM and think tokens), the rest as special. The eos token
    becomes `<|im_end|>` and the pad token `<|endoftext|>`, as in the releases."""
    from tokenizers import AddedToken

    if added_tokens[0] != "<|endoftext|>":
        raise ValueError(f"the added tokens must start with <|endoftext|>, not {added_tokens[0]!r}")
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    out = tokenizer_class(vocab=model["vocab"], merges=merges)
    for token in added_tokens[1:]:
        out.add_tokens([AddedToken(token, special=token not in ordinary, normalized=False)])
    out.eos_token = "<|im_end|>"
    out.pad_token = "<|endoftext|>"
    return out
