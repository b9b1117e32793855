"""Generation backends behind one small interface; each is imported only when chosen.

Why lazy: `import eval.scoring` must work in the training venv (no vLLM) and
the vLLM backend must not drag transformers' model classes into a scoring run.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("vllm", "hf", "openai")


@dataclass
class Generation:
    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None  # set when this request failed (the instance is retried on rerun)


def chat_messages(n_images: int, text: str, images=None) -> list[dict]:
    """One user turn: the images in order, then the text (the paper's message layout)."""
    content: list[dict] = []
    for i in range(n_images):
        content.append({"type": "image", "image": images[i]} if images is not None else {"type": "image"})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def chat_text(processor, n_images: int, text: str) -> str:
    """The prompt string the model's own chat template makes for that turn."""
    return processor.apply_chat_template(
        chat_messages(n_images, text), tokenize=False, add_generation_prompt=True
    )


class BackendUnavailable(ValueError):
    """The chosen backend's libraries are not installed in this environment."""


def make_backend(name: str, model: str, options: dict):
    """Build the named backend; options are the CLI's engine settings."""
    try:
        if name == "vllm":
            from eval.backends.vllm_backend import VLLMBackend

            return VLLMBackend(model, **options)
        if name == "hf":
            from eval.backends.hf_backend import HFBackend

            return HFBackend(model, **options)
        if name == "openai":
            from eval.backends.openai_backend import OpenAIBackend

            return OpenAIBackend(model, **options)
    except ImportError as exc:
        hint = " (run it with .venv-eval/bin/python)" if name == "vllm" else ""
        raise BackendUnavailable(f"the {name} backend cannot be used here: {exc}{hint}") from exc
    raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
