"""One client for OpenAI-compatible `/v1/chat/completions`, stdlib only.

Why: every step of both pipelines talks to a teacher through the same wire format; a vLLM server,
several replicas of it or a hosted API differ only in their base URLs. Requests go round robin over
the URLs from a bounded thread pool; 429, 5xx, timeouts and dropped connections are retried with
exponential backoff and full jitter; any other 4xx is a mistake in the request (a wrong model name,
a bad key) that retrying cannot fix, so it stops the run with the URL and the status.
"""

from __future__ import annotations

import base64
import http.client
import io
import itertools
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a teacher answer is text; more than this is a broken server
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class TeacherError(RuntimeError):
    """A request the server refused for good (4xx), or one that kept failing after every retry."""


class RequestRefused(TeacherError):
    """A 4xx other than 408/409/425/429: the request itself is wrong."""


class RetriesExhausted(TeacherError):
    """429/5xx/timeouts on every attempt."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    usage: dict  # prompt_tokens, completion_tokens (0 when the server does not say)
    url: str = ""


@dataclass
class ClientStats:
    attempts: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def image_data_url(path: str) -> str:
    """A file as a `data:` URL: PNG and JPEG bytes as they are, any other format re-encoded as PNG."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif raw.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    else:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as img:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
        raw, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def build_messages(parts: list[dict]) -> list[dict]:
    """One user message from parts `{"image": path}` / `{"text": str}`, images as data URLs."""
    content = []
    for part in parts:
        if "image" in part:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"])}})
        else:
            content.append({"type": "text", "text": part["text"]})
    return [{"role": "user", "content": content}]


def parse_reply(body: bytes, url: str) -> Reply:
    """The first choice of a chat completion; anything else names the URL (TeacherError)."""
    try:
        data = json.loads(body.decode("utf-8"))
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("message content is not a string")
        usage = data.get("usage") or {}
        tokens = {
            k: int(usage.get(k) or 0) if isinstance(usage.get(k, 0), int) else 0
            for k in ("prompt_tokens", "completion_tokens")
        }
        finish = choice.get("finish_reason")
        return Reply(text, finish if isinstance(finish, str) else None, tokens, url)
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise TeacherError(f"{url} did not answer a chat completion ({err}): {body[:200]!r}") from None


class ChatClient:
    """POST chat completions round robin over `api_bases`, retrying what a retry can fix.

    `concurrency` bounds the requests in flight (the caller's thread pool uses it); `sleep` and
    `rng` are the clock and the jitter source (a test passes its own to run without waiting).
    """

    def __init__(
        self,
        api_bases: list[str],
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        concurrency: int = 8,
        sleep=time.sleep,
        rng: random.Random | None = None,
    ):
        if not api_bases:
            raise ValueError("at least one --api-base is needed")
        for base in api_bases:
            if not base.startswith(("http://", "https://")):
                raise ValueError(f"--api-base {base!r} is not an http(s) URL")
        if concurrency < 1 or retries < 0:
            raise ValueError(f"--concurrency must be >= 1 and --retries >= 0 (got {concurrency}, {retries})")
        self.urls = [base.rstrip("/") + "/chat/completions" for base in api_bases]
        self.api_key = api_key
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.concurrency = concurrency
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.stats = ClientStats()

    def _url(self) -> str:
        with self._lock:
            return self.urls[next(self._next) % len(self.urls)]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Full jitter over an exponential cap; a server's Retry-After (seconds) is a floor."""
        with self._lock:
            delay = self._rng.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        try:
            floor = float(retry_after) if retry_after else 0.0
        except ValueError:
            floor = 0.0
        return max(delay, min(floor, self.max_backoff))

    def chat(self, model: str, parts: list[dict], sampling: dict) -> Reply:
        payload = json.dumps({"model": model, "messages": build_messages(parts), **sampling}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            url = self._url()
            with self.stats.lock:
                self.stats.attempts += 1
                self.stats.retries += attempt > 0
            retry_after = None
            try:
                req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = resp.read(MAX_RESPONSE_BYTES + 1)
                if len(body) > MAX_RESPONSE_BYTES:
                    raise TeacherError(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
                return parse_reply(body, url)
            except urllib.error.HTTPError as err:
                detail = err.read(500).decode("utf-8", "replace") if err.fp else ""
                if err.code not in RETRY_STATUSES:
                    raise RequestRefused(f"{url} answered HTTP {err.code} {err.reason}: {detail}") from None
                retry_after = err.headers.get("Retry-After") if err.headers else None
                last = f"HTTP {err.code} from {url}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                last = f"{type(err).__name__} from {url}: {getattr(err, 'reason', err)}"
            if attempt < self.retries:
                delay = self._delay(attempt, retry_after)
                log.debug("retry %d after %.2f s: %s", attempt + 1, delay, last)
                self._sleep(delay)
        raise RetriesExhausted(f"gave up after {self.retries + 1} attempts; last: {last}")
