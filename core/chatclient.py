"""One client for OpenAI-compatible `/v1/chat/completions` servers, shared by datagen and eval's backend.

Why httpx (not the `openai` SDK): it is already in both environments (huggingface_hub needs it), runs
the same in either, and hands us the response as a byte stream, so the three promises the SDK does not
keep can be kept here: a deadline per request (a server trickling one byte at a time cannot hold a
request past `timeout`), a cap on the response size, and a reply that did not finish normally
(`finish_reason` other than `stop` or `length`, e.g. vLLM's `abort` or `error`) retried, never handed
back as an answer. Requests go round robin over the base URLs; 429, 5xx, timeouts, dropped connections
and a body cut before its Content-Length are retried with exponential backoff and full jitter; any
other 4xx is a mistake in the request (a wrong model name, a bad key) that retrying cannot fix.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a chat answer is text; more than this is a broken server
RETRY_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
FINISHED = frozenset({"stop", "length"})  # a reply that ended normally (`length`: at the token limit)
MAX_TOKEN_COUNT = 10**9  # a usage figure above this (or negative) is not a count: ignored


class TeacherError(RuntimeError):
    """A request the server refused for good (4xx), or one that kept failing after every retry."""


class RequestRefused(TeacherError):
    """A 4xx other than 408/409/425/429: the request itself is wrong."""


class RetriesExhausted(TeacherError):
    """429/5xx/timeouts/unfinished replies on every attempt."""


class _Unfinished(Exception):
    """A well-formed reply whose finish_reason says it did not end normally (retried)."""


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    usage: dict  # prompt_tokens, completion_tokens (0 when the server does not say, or says nonsense)
    url: str = ""
    usage_ignored: bool = False  # the server's usage held a negative or absurd count


@dataclass
class ClientStats:
    attempts: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _token_count(value) -> int | None:
    """A usage count as given, or None when it is not a count (negative, absurd, not an integer)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKEN_COUNT:
        return None
    return value


def parse_reply(body: bytes, url: str) -> Reply:
    """The first choice of a chat completion that finished normally.

    TeacherError (naming the URL) for anything that is not a chat completion; _Unfinished for one whose
    finish_reason is not `stop` or `length` (the caller retries it)."""
    try:
        data = json.loads(body.decode("utf-8"))
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("message content is not a string")
        usage = data.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        finish = choice.get("finish_reason")
    except (
        UnicodeDecodeError,
        ValueError,
        RecursionError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as err:
        raise TeacherError(f"{url} did not answer a chat completion ({err}): {body[:200]!r}") from None
    if finish not in FINISHED:
        raise _Unfinished(f"{url} answered a reply with finish_reason {str(finish)[:40]!r}")
    counts = {k: _token_count(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")}
    tokens = {k: v or 0 for k, v in counts.items()}
    return Reply(text, finish, tokens, url, usage_ignored=None in counts.values())


def _cut(streams: list) -> None:
    """Shut the request's socket (from the watchdog thread): a blocked read then returns at once."""
    for stream in streams:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ChatClient:
    """POST chat completions round robin over `api_bases`, retrying what a retry can fix.

    `timeout` is a deadline per attempt (connect, send, wait and read together, enforced by a
    watchdog); `concurrency` bounds the requests in flight (the caller's thread pool uses it); `sleep`
    and `rng` are the clock and the jitter source (a test passes its own to run without waiting). A
    reply without a finish_reason is not a finished one either (OpenAI's format always has one).
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
        max_response_bytes: int = MAX_RESPONSE_BYTES,
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
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"--timeout must be a positive number of seconds (got {timeout})")
        self.urls = [base.rstrip("/") + "/chat/completions" for base in api_bases]
        self.api_key = api_key
        self.timeout, self.retries = float(timeout), retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.concurrency = concurrency
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next = itertools.count()
        self._lock = threading.Lock()
        # One connection per request (no keep-alive): its socket is the one the watchdog may shut. A chat
        # completion takes seconds; a TCP (or TLS) handshake per request is noise beside it.
        self._http = httpx.Client(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
        )
        self.stats = ClientStats()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        floor = floor if math.isfinite(floor) else 0.0
        return max(delay, min(floor, self.max_backoff))

    def _post(self, url: str, payload: bytes, headers: dict) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one attempt, within the deadline and the size cap.

        The connection is opened for this request (no keep-alive), and httpcore's trace hands us its
        socket; a watchdog shuts that socket at the deadline, so neither a stalled nor a trickling server
        (headers or body) holds the request longer than `timeout`."""
        deadline = time.monotonic() + self.timeout
        streams: list = []

        def trace(event: str, info: dict) -> None:
            if event == "connection.connect_tcp.complete":
                streams.append(info.get("return_value"))

        watchdog = threading.Timer(self.timeout, _cut, (streams,))
        watchdog.daemon = True
        watchdog.start()
        body = None
        try:
            with self._http.stream(
                "POST",
                url,
                content=payload,
                headers=headers,
                timeout=httpx.Timeout(self.timeout),
                extensions={"trace": trace},
            ) as resp:
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise TeacherError(
                        f"{url} announced {declared} bytes (at most {self.max_response_bytes})"
                    )
                chunks, size = [], 0
                for chunk in resp.iter_raw():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise TeacherError(f"{url} answered more than {self.max_response_bytes} bytes")
                    chunks.append(chunk)
                status, body, retry_after = (
                    resp.status_code,
                    b"".join(chunks),
                    resp.headers.get("Retry-After"),
                )
        except httpx.TransportError:
            if time.monotonic() < deadline:
                raise
        finally:
            watchdog.cancel()
        if body is None:  # the watchdog cut it
            raise TimeoutError(f"no whole reply within --timeout {self.timeout:g} s")
        return status, body, retry_after

    def complete(self, model: str, messages: list[dict], sampling: dict) -> Reply:
        """The first choice of `model`'s chat completion of `messages`, finished normally."""
        payload = json.dumps({"model": model, "messages": messages, **sampling}).encode()
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
                status, body, retry_after = self._post(url, payload, headers)
                if status == 200:
                    return parse_reply(body, url)
                detail = body[:500].decode("utf-8", "replace")
                if status not in RETRY_STATUSES:
                    raise RequestRefused(f"{url} answered HTTP {status}: {detail}")
                last = f"HTTP {status} from {url}"
            except _Unfinished as err:
                last = str(err)
            except (httpx.TransportError, TimeoutError, OSError) as err:  # incl. a body cut short
                last = f"{type(err).__name__} from {url}: {err}"
            if attempt < self.retries:
                delay = self._delay(attempt, retry_after)
                log.debug("retry %d after %.2f s: %s", attempt + 1, delay, last)
                self._sleep(delay)
        raise RetriesExhausted(f"gave up after {self.retries + 1} attempts; last: {last}")
