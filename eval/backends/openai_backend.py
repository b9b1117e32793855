"""Any OpenAI-compatible chat server (e.g. `vllm serve`), with concurrent requests.

Why: a model already served (or several replicas behind one or more URLs) can
be scored without loading it again. Images travel as PNG data URLs of the
same qwen_vl_utils-resized pictures the other backends get (lossless, so the
server sees the same pixels). Std-lib HTTP only: it runs in either venv.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from eval.backends import Generation


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
        **_ignored,
    ):
        self.model = model
        self.bases = [b.strip().rstrip("/") for b in api_base.split(",") if b.strip()]
        if not self.bases:
            raise ValueError("--api-base needs at least one URL")
        self._next_base = itertools.cycle(self.bases)
        self._lock = threading.Lock()
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = max(1, concurrency)
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.timeout = timeout
        self.retries = max(0, retries)

    def _base(self) -> str:
        with self._lock:
            return next(self._next_base)

    def _post(self, payload: dict) -> dict:
        body = json.dumps(payload).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(
                self._base() + "/chat/completions",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", errors="replace")[:300]
                last = f"HTTP {exc.code}: {detail}"
                if exc.code < 500 and exc.code != 429:
                    break  # a bad request does not get better by retrying
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(min(2**attempt, 8))
        raise RuntimeError(last)

    def _one(self, text: str, imgs) -> Generation:
        content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in imgs]
        content.append({"type": "text", "text": text})
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }
        if self.repetition_penalty is not None:  # a vLLM extension; None leaves the server's default
            payload["repetition_penalty"] = self.repetition_penalty
        try:
            reply = self._post(payload)
            message = reply["choices"][0]["message"]
            usage = reply.get("usage") or {}
            return Generation(
                message.get("content") or "", usage.get("prompt_tokens"), usage.get("completion_tokens")
            )
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as exc:
            return Generation("", error=str(exc) or type(exc).__name__)

    def generate(self, prompts, images) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(
                pool.map(lambda pair: self._one(pair[0].text, pair[1]), zip(prompts, images, strict=True))
            )

    def close(self) -> None:
        pass
