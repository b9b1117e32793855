"""Generation backends behind one small interface; each is imported only when chosen.

Why lazy: `import eval.scoring` must work in the training venv (no vLLM) and
the vLLM backend must not drag transformers' model classes into a scoring run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from families import Family

# The backend table: name -> "module:class". A backend is one module plus one entry here (and its own
# flags, if any, in BACKEND_FLAGS); the class takes (model, **engine options) and has generate/close.
BACKEND_CLASSES: dict[str, str] = {
    "vllm": "eval.backends.vllm_backend:VLLMBackend",
    "hf": "eval.backends.hf_backend:HFBackend",
    "openai": "eval.backends.openai_backend:OpenAIBackend",
}
BACKENDS = tuple(BACKEND_CLASSES)

# The engine and server flags of `eval run` / `eval suite`, and the backends that read each one:
# a flag given for a backend that does not read it is refused (check_flags), never silently ignored.
BACKEND_FLAGS: dict[str, tuple[str, ...]] = {
    "--dtype": ("vllm", "hf"),
    "--device": ("vllm", "hf"),
    "--tensor-parallel": ("vllm",),
    "--data-parallel": ("vllm", "hf"),
    "--kv-cache-gb": ("vllm",),
    "--gpu-memory-utilization": ("vllm",),
    "--enforce-eager": ("vllm",),
    "--no-enforce-eager": ("vllm",),
    "--max-model-len": ("vllm",),
    "--seed": ("vllm",),
    "--attn-implementation": ("hf",),
    "--api-base": ("openai",),
    "--api-key": ("openai",),
    "--concurrency": ("openai",),
    "--request-timeout": ("openai",),
    "--processor": ("openai",),
}


def check_flags(backend: str, argv: list[str]) -> None:
    """ValueError naming the first engine/server flag in argv that `backend` does not read."""
    for arg in argv:
        flag = arg.split("=", 1)[0]
        readers = BACKEND_FLAGS.get(flag)
        if readers is not None and backend not in readers:
            takes = sorted(f for f, who in BACKEND_FLAGS.items() if backend in who)
            raise ValueError(
                f"{flag} is not an option of --backend {backend} (it is read by {', '.join(readers)}); "
                f"--backend {backend} takes {', '.join(takes)}"
            )


@dataclass
class Generation:
    text: str
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None  # set when this request failed (the instance is retried on rerun)


def chat_text(processor, family: Family, layout: str, n_images: int, text: str) -> str:
    """The prompt string the model's own chat template makes for that request."""
    return processor.apply_chat_template(
        family.chat_messages(n_images, text, layout), tokenize=False, add_generation_prompt=True
    )


class BackendUnavailable(ValueError):
    """The chosen backend's libraries are not installed in this environment."""


def make_backend(name: str, model: str, options: dict):
    """Build the named backend (imported only now); options are the CLI's engine settings."""
    if name not in BACKEND_CLASSES:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    module, cls = BACKEND_CLASSES[name].split(":")
    try:  # the backends import their libraries when built, so the constructor is inside too
        return getattr(importlib.import_module(module), cls)(model, **options)
    except ImportError as exc:
        hint = " (run it with .venv-eval/bin/python)" if name == "vllm" else ""
        raise BackendUnavailable(f"the {name} backend cannot be used here: {exc}{hint}") from exc
