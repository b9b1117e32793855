"""Benchmark datagen's request path: requests/s with the cache cold and warm, and the concurrency
that saturates a server, against the scripted stand-in server of tests/test_datagen_server.py.

Each request goes through the real Teacher (cache look-up, thread pool, client, fsynced append). The
stand-in sleeps `--latency` seconds per request, like a teacher's generation time, and serves at
most `--server-slots` requests at once, like a server's batch; the concurrency sweep shows where
adding threads stops helping. Cold: every request is sent and cached; warm: the same requests again,
answered from the cache (the ratio is what a rerun after a crash saves per finished request).

    .venv/bin/python benchmarks/bench_datagen.py [--requests 400] [--latency 0.02] [--server-slots 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.cache import RequestCache  # noqa: E402
from datagen.client import ChatClient  # noqa: E402
from datagen.steps import Job, StepStats, Teacher  # noqa: E402
from tests.test_datagen_server import StandIn  # noqa: E402


def timed(teacher: Teacher, jobs: list[Job]) -> tuple[float, StepStats]:
    stats = StepStats("bench", "m")
    start = time.perf_counter()
    teacher.run(stats, jobs)
    return time.perf_counter() - start, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--server-slots", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sweep", default="1,2,4,8,16,32")
    args = ap.parse_args()
    slots = threading.Semaphore(args.server_slots)

    def script(n, body):
        with slots:
            time.sleep(args.latency)
        return 200, None, {}

    with StandIn(script) as server, tempfile.TemporaryDirectory() as tmp:
        jobs = [Job(str(i), [{"text": f"Describe this image {i}"}]) for i in range(args.requests)]
        with RequestCache(Path(tmp) / "requests.jsonl") as cache:
            client = ChatClient([server.base], concurrency=args.concurrency, retries=0)
            teacher = Teacher(client, cache, {"temperature": 0.0, "max_tokens": 64})
            cold, cold_stats = timed(teacher, jobs)
            warm, warm_stats = timed(teacher, jobs)
        assert cold_stats.requests == args.requests and warm_stats.requests == 0
        assert warm_stats.cache_hits == args.requests
        print(
            f"{args.requests} requests, {args.latency * 1000:.0f} ms each, {args.server_slots} server slots"
        )
        print(f"  cold cache (concurrency {args.concurrency}): {args.requests / cold:9.1f} requests/s")
        print(f"  warm cache:                   {args.requests / warm:9.1f} requests/s")
        print(f"  ratio warm/cold: {cold / warm:.1f}x")
        print("  concurrency sweep (cold cache):")
        best = 0.0
        for c in [int(x) for x in args.sweep.split(",")]:
            sweep_jobs = [Job(f"{c}:{j.id}", [{"text": f"{c} {j.parts[0]['text']}"}]) for j in jobs]
            with RequestCache(Path(tmp) / f"sweep{c}.jsonl") as cache:
                t = Teacher(ChatClient([server.base], concurrency=c, retries=0), cache, {"max_tokens": 64})
                secs, _ = timed(t, sweep_jobs)
            rate = args.requests / secs
            mark = "" if rate > best * 1.1 else "  (saturated)"
            best = max(best, rate)
            print(f"    {c:>3} threads: {rate:9.1f} requests/s{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
