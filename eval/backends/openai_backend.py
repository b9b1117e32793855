"""Any OpenAI-compatible chat server (e.g. `vllm serve`), with concurrent requests.

Why: a model already served (or several replicas behind one or more URLs) can
be scored without loading it again. Images travel as PNG data URLs of the
same qwen_vl_utils-resized pictures the other backends get (lossless, so the
server sees the same pixels). The HTTP side is the pack's one client
(chatclient.py, shared with datagen): a deadline per request, retries on
429/5xx/timeouts/unfinished replies, a response size cap.
"""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor, wait

from core.chatclient import ChatClient, TeacherError
from core.signals import SIGNAL_POLL_SECONDS, deferred_signals
from eval.backends import Generation
from families import DEFAULT_FAMILY, get_family
from families.chat import TRAINING_LAYOUT


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        api_base: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        concurrency: int = 8,
        max_new_tokens: int = 128,
        repetition_penalty: float | None = None,
        timeout: float = 600.0,
        retries: int = 3,
        family=None,
        prompt_layout: str = TRAINING_LAYOUT,
        **_ignored,
    ):
        self.model = model
        self.family = family or get_family(DEFAULT_FAMILY)
        self.layout = prompt_layout
        bases = [b.strip().rstrip("/") for b in api_base.split(",") if b.strip()]
        if not bases:
            raise ValueError("--api-base needs at least one URL")
        self.concurrency = max(1, concurrency)
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.client = ChatClient(
            bases,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            retries=max(0, retries),
            max_backoff=8.0,
            concurrency=self.concurrency,
        )

    def _one(self, text: str, imgs) -> Generation:
        messages = self.family.chat_messages(
            len(imgs),
            text,
            self.layout,
            lambda i: {"type": "image_url", "image_url": {"url": data_url(imgs[i])}},
        )
        sampling = {"temperature": 0.0, "max_tokens": self.max_new_tokens}
        if self.family.answer_special_tokens:  # vLLM's: the server would strip the answer's own tags
            sampling["skip_special_tokens"] = False
        if self.repetition_penalty is not None:  # a vLLM extension; None leaves the server's default
            sampling["repetition_penalty"] = self.repetition_penalty
        try:
            reply = self.client.complete(self.model, messages, sampling)
        except TeacherError as exc:
            return Generation("", error=str(exc) or type(exc).__name__)
        return Generation(reply.text, reply.usage["prompt_tokens"], reply.usage["completion_tokens"])

    def generate(self, prompts, images) -> list[Generation]:
        # Signals are taken between waits (core.signals): never inside the pool's locks. On a stop the
        # requests not yet sent are dropped; those in flight end within their deadline.
        with deferred_signals() as signals, ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, p.text, imgs) for p, imgs in zip(prompts, images, strict=True)]
            try:
                while wait(futures, timeout=SIGNAL_POLL_SECONDS).not_done:
                    signals.check()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            return [future.result() for future in futures]

    def close(self) -> None:
        self.client.close()
