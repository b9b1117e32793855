"""transformers `generate`, one instance at a time: the paper script's way.

Why keep it: it is the reference the vLLM numbers are checked against, and it
runs in either environment (no vLLM needed). Same chat template, same
qwen_vl_utils images, greedy decoding (with the checkpoint's repetition
penalty, which the script inherits), `max_new_tokens`, and the same
decode call as MIG_bench_eval.py.
"""

from __future__ import annotations

from eval.backends import Generation, chat_text
from families import DEFAULT_FAMILY, get_family
from families.chat import TRAINING_LAYOUT


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model: str,
        max_new_tokens: int = 128,
        repetition_penalty: float = 1.0,
        dtype: str = "auto",
        device: str = "auto",
        attn_implementation: str | None = None,
        family=None,
        prompt_layout: str = TRAINING_LAYOUT,
        **_ignored,
    ):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = _device(device)
        kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.model = AutoModelForImageTextToText.from_pretrained(model, **kwargs).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(model)
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.family = family or get_family(DEFAULT_FAMILY)
        self.layout = prompt_layout

    def _one(self, text: str, imgs) -> Generation:
        import torch

        prompt = chat_text(self.processor, self.family, self.layout, len(imgs), text)
        inputs = self.processor(text=[prompt], images=list(imgs), padding=True, return_tensors="pt").to(
            self.device
        )
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=self.repetition_penalty,
            )
        n_in = inputs["input_ids"].shape[1]
        new = out[0][n_in:]
        text_out = self.family.decode(self.processor.tokenizer, new.tolist())
        return Generation(text_out, int(n_in), int(new.shape[0]))

    def generate(self, prompts, images) -> list[Generation]:
        return [self._one(p.text, imgs) for p, imgs in zip(prompts, images, strict=True)]

    def close(self) -> None:
        self.model = None
