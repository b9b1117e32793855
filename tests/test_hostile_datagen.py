"""datagen's cases from issue #25: a misbehaving teacher server and careless options and folders.

Each case is a regression test against the scripted stand-in server (the outside service is the only
stand-in): a teacher text no UTF-8 file can hold, replies that did not finish, a server that trickles
bytes or cuts its body short, options that make no sense, outputs in the way.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.chatclient import RetriesExhausted
from datagen.__main__ import main
from tests.test_datagen_pipeline import ff_args, make_detections
from tests.test_datagen_server import ScriptedTeacher, StandIn, completion, make_client


def _lone_surrogate_captions(n, body):
    """A caption (freeform step 3) holding the JSON escape of a lone surrogate; everything else normal."""
    text = ScriptedTeacher.answer(body)
    if text.startswith("A plain synthetic"):
        return 200, json.dumps(completion("A \ud800 picture")).encode(), {}
    return 200, None, {}


def test_a_lone_surrogate_from_the_teacher_is_cached_and_rejected_not_fatal(tmp_path, capsys):
    det = make_detections(tmp_path / "det")
    out = tmp_path / "out"
    with StandIn(_lone_surrogate_captions) as s:
        assert main(ff_args(det, out, s.base)) == 0
        first = len(s.requests)
        assert main(ff_args(det, out, s.base, "--force")) == 0
        assert len(s.requests) == first  # every reply was cached: a rerun asks nothing
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    assert report["steps"]["caption"]["rejects"] == {"bad_text": 10}
    assert "\\ud800" in (out / "requests.jsonl").read_text(encoding="utf-8")


def _lone_surrogate_reassembly(n, body):
    if ScriptedTeacher.text_of(body).startswith("Rewrite the reasoning"):
        return 200, json.dumps(completion("Looking at \udfff the images")).encode(), {}
    return 200, None, {}


def _traj_input(tmp_path, ids):
    from converters.trajectories import PROMPT_SUFFIX

    det = make_detections(tmp_path / "det", n=2)
    imgs = [str(det.parent / "images" / f"{i:03d}.png") for i in range(2)]
    human = "<image>\n<image>\nFind the dog in the second image." + PROMPT_SUFFIX
    recs = [
        {"id": rid, "images": imgs, "image_index": 2, "box": [100, 200, 300, 400],
         "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": "x"}]}
        for rid in ids
    ]  # fmt: skip
    path = tmp_path / "mg_rl.json"
    path.write_text(json.dumps(recs))
    return path


def traj_args(src, out, base, *extra):
    return [
        "trajectories", "--input", str(src), "--api-base", base, "--cot-model", "c", "--mapping-model", "m",
        "--reassembly-model", "r", "--output", str(out), "--quiet", "--retries", "1", *extra,
    ]  # fmt: skip


def test_trajectories_reassembly_with_a_lone_surrogate_exits_1_and_reruns_from_cache(tmp_path, capsys):
    src, out = _traj_input(tmp_path, ["a"]), tmp_path / "out"
    with StandIn(_lone_surrogate_reassembly) as s:
        assert main(traj_args(src, out, s.base)) == 1  # nothing survived: rejects and report written
        assert main(traj_args(src, out, s.base, "--force")) == 1
        assert len(s.requests) == 3  # the rerun asked nothing again (it used to die with exit 3 each time)
    assert "no record gave a trajectory" in capsys.readouterr().err
    report = json.loads((out / "datagen_traj.report.json").read_text())
    assert report["steps"]["reassembly"]["rejects"] == {"bad_text": 1}


def test_duplicate_input_ids_are_rejected_as_duplicate_id(tmp_path):
    src, out = _traj_input(tmp_path, ["a", "b", "a"]), tmp_path / "out"
    with StandIn() as s:
        assert main(traj_args(src, out, s.base)) == 0
    report = json.loads((out / "datagen_traj.report.json").read_text())
    assert report["steps"]["input"]["rejects"] == {"duplicate_id": 1} and report["written"] == 2
    rejects = [json.loads(x) for x in (out / "datagen_traj.rejects.jsonl").read_text().splitlines()]
    assert rejects == [
        {
            "step": "input",
            "id": "record2",
            "reason": "duplicate_id",
            "detail": "a: already the id of an earlier record",
        }
    ]


def test_a_bad_dataset_info_json_stops_the_run_before_anything_is_written(tmp_path, capsys):
    src, out = _traj_input(tmp_path, ["a"]), tmp_path / "out"
    out.mkdir()
    (out / "dataset_info.json").write_text("[1, 2]")
    with StandIn() as s:
        assert main(traj_args(src, out, s.base)) == 1
    err = capsys.readouterr().err
    assert "dataset registry" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json", "requests.jsonl"]  # the cache kept
    with StandIn() as s:  # fixed: the rerun asks nothing and writes everything
        (out / "dataset_info.json").unlink()
        assert main(traj_args(src, out, s.base)) == 0 and s.requests == []
    assert json.loads((out / "datagen_traj_sft.json").read_text())[0]["id"] == "a"


@pytest.mark.parametrize("finish", ["abort", "error", None])
def test_unfinished_replies_are_retried_never_cached(tmp_path, finish):
    from datagen.cache import RequestCache
    from datagen.steps import Job, StepStats, Teacher

    def script(n, body):  # every odd request is cut off by the server; its retry answers
        return (200, completion("half an answer", finish=finish), {}) if n % 2 else (200, None, {})

    jobs = [Job(str(k), [{"text": f"Describe this image {k}"}]) for k in range(3)]
    with StandIn(script) as s, RequestCache(tmp_path / "requests.jsonl") as cache:
        teacher = Teacher(make_client(s.base, retries=1, concurrency=1), cache, {})
        replies = teacher.run(StepStats("caption", "m"), jobs)
        assert len(s.requests) == 6
    assert all(r["finish_reason"] == "stop" and r["text"] != "half an answer" for r in replies.values())
    cached = [json.loads(x) for x in (tmp_path / "requests.jsonl").read_text().splitlines()[1:]]
    assert len(cached) == 3 and all(e["finish_reason"] == "stop" for e in cached)
    with StandIn(lambda n, body: (200, completion("x", finish=finish), {})) as s:
        client = make_client(s.base, retries=2)
        with pytest.raises(RetriesExhausted, match=f"finish_reason {str(finish)!r}"):
            client.chat("m", [{"text": "x"}], {})
        assert len(s.requests) == 3


def test_ctrl_c_mid_step_stops_keeps_every_reply_and_the_rerun_asks_only_the_rest(tmp_path, ctrl_c_raises):
    from datagen.cache import RequestCache
    from datagen.steps import Job, StepStats, Teacher

    jobs = [Job(str(k), [{"text": f"Describe this image {k}"}]) for k in range(24)]
    main_thread = threading.main_thread().ident
    with StandIn(delay=0.1) as s, RequestCache(tmp_path / "requests.jsonl") as cache:
        teacher = Teacher(make_client(s.base, concurrency=2), cache, {})
        timer = threading.Timer(0.45, signal.pthread_kill, (main_thread, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            teacher.run(StepStats("caption", "m"), jobs)
        timer.join()
        asked = len(s.requests)
    cached = (tmp_path / "requests.jsonl").read_text().splitlines()[1:]
    assert 0 < asked < len(jobs) and len(cached) == asked  # nothing more sent; every reply kept
    with StandIn() as s, RequestCache(tmp_path / "requests.jsonl") as cache:
        stats = StepStats("caption", "m")
        replies = Teacher(make_client(s.base, concurrency=2), cache, {}).run(stats, jobs)
        assert (
            len(replies) == len(jobs) and stats.cache_hits == asked and len(s.requests) == len(jobs) - asked
        )


def test_an_unfinished_cache_line_from_an_older_run_is_asked_again(tmp_path):
    from datagen.cache import RequestCache

    path = tmp_path / "requests.jsonl"
    path.write_text('{"datagen_cache": 1}\n{"key": "k", "text": "half", "finish_reason": "abort"}\n')
    with RequestCache(path) as cache:
        assert cache.get("k") is None and cache.dropped == 1
        with pytest.raises(ValueError, match="only finished replies are cached"):
            cache.put({"key": "k", "text": "x", "finish_reason": "error"})


class _RawServer:
    """A server that answers every POST with `respond(handler)`; for bodies the stand-in cannot send."""

    def __init__(self, respond):
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.count += 1
                with contextlib.suppress(OSError):  # the client hung up (the deadline tests)
                    respond(self, outer.count)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _trickle(handler, n):
    body = json.dumps(completion("x" * 200)).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:  # one byte every 0.05 s: each read is quick, the whole reply takes 20 s
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.05)


def _trickle_headers(handler, n):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(400):  # a header one byte every 0.05 s: 20 s before the body would start
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.05)


def _stall(handler, n):
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.write(b'{"choices"')
    handler.wfile.flush()
    time.sleep(0.35)  # just under the read timeout, twice: only the watchdog stops it
    handler.wfile.write(b": [")
    handler.wfile.flush()
    time.sleep(0.35)


@pytest.mark.parametrize(
    "serve, timeout, limit, message",
    [
        (_trickle, 0.5, 1.5, "within --timeout 0.5 s"),  # the deadline bounds the request, not each read
        (_trickle_headers, 0.5, 1.5, "within --timeout 0.5 s"),  # headers trickled: cut too
        (_stall, 0.4, 0.65, "within --timeout"),  # a body stalled just under the read timeout, twice
    ],
    ids=["trickled-body", "trickled-headers", "stalled-body"],
)
def test_timeout_is_a_deadline_not_a_read_timeout(serve, timeout, limit, message):
    with _RawServer(serve) as s:
        client = make_client(s.base, timeout=timeout, retries=0)
        began = time.monotonic()
        with pytest.raises(RetriesExhausted, match=message):
            client.chat("m", [{"text": "x"}], {})
        assert time.monotonic() - began < limit


def _cut_short_once(handler, n):
    body = json.dumps(completion("the whole answer")).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if n == 1:
        handler.wfile.write(body[:10])  # then the connection closes before Content-Length bytes
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        return
    handler.wfile.write(body)


def test_a_reply_cut_before_its_content_length_is_retried():
    with _RawServer(_cut_short_once) as s:
        reply = make_client(s.base, retries=1).chat("m", [{"text": "x"}], {})
    assert reply.text == "the whole answer" and s.count == 2


@pytest.mark.parametrize(
    "usage", [{"prompt_tokens": -5, "completion_tokens": 10**31}, {"prompt_tokens": "7"}]
)
def test_absurd_usage_counts_are_ignored_with_a_note(tmp_path, usage):
    det = make_detections(tmp_path / "det", n=4)
    out = tmp_path / "out"
    with StandIn(
        lambda n, body: (200, {**completion(ScriptedTeacher.answer(body)), "usage": usage}, {})
    ) as s:
        assert main(ff_args(det, out, s.base)) == 0
    report = json.loads((out / "datagen_freeform.report.json").read_text())
    caption = report["steps"]["caption"]
    assert caption["prompt_tokens"] == 0 and caption["completion_tokens"] == 0
    assert caption["usage_ignored"] == caption["requests"] == 4


@pytest.mark.parametrize(
    "extra",
    [["--timeout", "-1"], ["--timeout", "nan"], ["--timeout", "0"], ["--timeout", "inf"], ["--max-objects", "-1"],
     ["--max-images", "0"], ["--concurrency", "0"], ["--retries", "-1"]],
)  # fmt: skip
def test_option_values_are_refused_by_argparse(tmp_path, capsys, extra):
    det = make_detections(tmp_path / "det", n=4)
    assert main(ff_args(det, tmp_path / "out", "http://127.0.0.1:9/v1", *extra)) == 2
    assert f"argument {extra[0]}: must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_limit_minus_one_is_refused_by_argparse(tmp_path, capsys):
    src = _traj_input(tmp_path, ["a"])
    assert main(traj_args(src, tmp_path / "out", "http://127.0.0.1:9/v1", "--limit", "-1")) == 2
    assert "argument --limit: must be >= 1" in capsys.readouterr().err


def test_output_that_is_the_detections_file_is_one_line(tmp_path, capsys):
    det = make_detections(tmp_path / "det", n=4)
    before = det.read_bytes()
    assert main(ff_args(det, det, "http://127.0.0.1:9/v1")) == 1
    err = capsys.readouterr().err
    assert f"--output {det} is a file" in err and err.count("\n") == 1, err
    assert det.read_bytes() == before


def test_requests_jsonl_that_is_a_directory_is_one_line(tmp_path, capsys):
    det = make_detections(tmp_path / "det", n=4)
    (tmp_path / "out" / "requests.jsonl").mkdir(parents=True)
    assert main(ff_args(det, tmp_path / "out", "http://127.0.0.1:9/v1")) == 1
    err = capsys.readouterr().err
    assert "requests.jsonl is a directory" in err and err.count("\n") == 1, err
