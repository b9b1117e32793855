"""Run one pipeline step's requests through the cache and the client, and count what happened.

Why one runner: every step (captions, refinement, QA, CoT, mapping, reassembly) needs the same
things — cache look-up first, bounded concurrency for the rest, every reply cached the moment it
arrives, a progress bar, token counts and rejects by reason for the end-of-run summary.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tqdm import tqdm

from core.signals import SIGNAL_POLL_SECONDS, deferred_signals

from .cache import RequestCache, request_key
from .client import ChatClient, TeacherError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    id: str
    parts: list  # [{"image": path} | {"text": str}]


@dataclass
class StepStats:
    step: str
    model: str
    jobs: int = 0
    requests: int = 0  # sent to a server (cache misses)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_ignored: int = 0  # replies whose usage held a negative or absurd count (counted as 0)
    accepted: int = 0
    rejects: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model,
            "jobs": self.jobs,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "usage_ignored": self.usage_ignored,
            "accepted": self.accepted,
            "rejects": dict(sorted(self.rejects.items())),
        }

    def line(self) -> str:
        rejects = ", ".join(f"{r} {c}" for r, c in sorted(self.rejects.items())) or "none"
        return (
            f"{self.step:<11} {self.model}: {self.jobs} jobs, {self.requests} requests, {self.cache_hits} cache "
            f"hits, {self.prompt_tokens}+{self.completion_tokens} tokens, {self.accepted} accepted; "
            f"rejects: {rejects}"
            + (
                f"; note: {self.usage_ignored} replies gave a negative or absurd token count (counted as 0)"
                if self.usage_ignored
                else ""
            )
        )


class Teacher:
    """The client and the cache together: `run` returns each job's cached or fresh reply entry."""

    def __init__(self, client: ChatClient, cache: RequestCache, sampling: dict):
        self.client, self.cache, self.sampling = client, cache, dict(sampling)

    def run(self, stats: StepStats, jobs: list[Job]) -> dict[str, dict]:
        """{job id: {"text", "finish_reason", "usage", ...}}; raises TeacherError after caching what finished."""
        stats.jobs += len(jobs)
        out: dict[str, dict] = {}
        todo: list[tuple[Job, str]] = []
        for job in jobs:
            key = request_key(stats.model, job.parts, self.sampling)
            hit = self.cache.get(key)
            if hit is not None:
                stats.cache_hits += 1
                out[job.id] = hit
            else:
                todo.append((job, key))
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=stats.step, unit="req", disable=None)
        try:
            if todo:
                self._send(stats, todo, out, bar)
        finally:
            bar.close()
        return out

    def _send(self, stats: StepStats, todo, out: dict, bar) -> None:
        def one(job: Job, key: str) -> tuple[str, dict]:
            reply = self.client.chat(stats.model, job.parts, self.sampling)
            entry = {
                "key": key,
                "step": stats.step,
                "model": stats.model,
                "text": reply.text,
                "finish_reason": reply.finish_reason,
                "usage": reply.usage,
            }
            if reply.usage_ignored:
                entry["usage_ignored"] = True
            self.cache.put(entry)  # fsynced before it is counted: a crash after this loses nothing
            return job.id, entry

        # Signals are taken between waits (core.signals): never inside the pool's locks.
        with deferred_signals() as signals, ThreadPoolExecutor(max_workers=self.client.concurrency) as pool:
            pending = {pool.submit(one, job, key) for job, key in todo}
            error: BaseException | None = None
            while pending:
                try:
                    done, pending = wait(pending, timeout=SIGNAL_POLL_SECONDS, return_when=FIRST_EXCEPTION)
                    signals.check()
                except BaseException:  # Ctrl-C, SIGTERM: send nothing more; replies in flight still cache
                    for other in pending:
                        other.cancel()
                    raise
                for fut in done:
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is not None:
                        if error is None:
                            error = exc
                            for other in pending:  # stop asking; requests in flight still finish and cache
                                other.cancel()
                        continue
                    job_id, entry = fut.result()
                    out[job_id] = entry
                    stats.requests += 1
                    stats.prompt_tokens += entry["usage"].get("prompt_tokens", 0)
                    stats.completion_tokens += entry["usage"].get("completion_tokens", 0)
                    stats.usage_ignored += bool(entry.get("usage_ignored"))
                    bar.update(1)
            if error is not None:
                if isinstance(error, TeacherError):
                    raise error
                raise TeacherError(f"step {stats.step}: {type(error).__name__}: {error}") from error
