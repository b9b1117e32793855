"""The datagen client against a scripted stand-in HTTP server (stdlib, in a thread).

Why a stand-in here: the outside service is what is replaced, nothing of datagen. The server speaks
the OpenAI wire format; scripts make it fail on cue (429, 503, a hung reply, 4xx) so the retries,
the backoff, the round robin and the refusal are exercised over real sockets. `ScriptedTeacher`
answers each prompt of both pipelines the way a well-behaved teacher would, which the pipeline
tests and benchmarks/bench_datagen.py reuse.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datagen.client import ChatClient, RequestRefused, RetriesExhausted, TeacherError, parse_reply

PAIR = re.compile(r"\((\d+),(\d+)\),?\((\d+),(\d+)\)")


class StandIn:
    """An OpenAI-compatible server on 127.0.0.1: `script(n, body) -> (status, payload | None, headers)`."""

    def __init__(self, script=None, delay: float = 0.0):
        self.script = script or (lambda n, body: (200, None, {}))
        self.delay = delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with outer.lock:
                    outer.requests.append(body)
                    n = len(outer.requests)
                status, payload, headers = outer.script(n, body)
                if outer.delay:
                    time.sleep(outer.delay)
                if status == "hang":
                    time.sleep(3)
                    return
                if payload is None:
                    payload = completion(ScriptedTeacher.answer(body))
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # shutdown() waits out one poll: 0.5 s by default, paid by every test that starts a stand-in
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(text: str, finish: str = "stop") -> dict:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
    }


class ScriptedTeacher:
    """Well-formed answers to every datagen prompt, computed from the prompt itself."""

    @staticmethod
    def text_of(body: dict) -> str:
        return "\n".join(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text").strip()

    @classmethod
    def answer(cls, body: dict) -> str:
        text = cls.text_of(body)
        if text.startswith("Describe this image"):
            return "A plain synthetic picture with a few coloured shapes on a grey background."
        if "annotations I give to you are:" in text:
            lines = text.split("annotations I give to you are:")[1].strip().split("\n")
            return "\n".join(f"bright {line}" for line in lines if line.strip())
        if "Q: A:" in text or "format Q: A:" in text:
            images = re.findall(
                r"Image-(\d+):\nCaption: .*\nObjects:\n- (.*?) (\(\d+,\d+\),\(\d+,\d+\))", text
            )
            n, name, box = images[-1]
            return (
                f"Q: Which object in Image-{n} looks like the ones in the other images? Locate it.\n"
                f"A: In Image-{n}, it is <ref>{name}</ref>{box}."
            )
        if "Reason step by step" in text:
            m = re.search(r"target is in Image-(\d+) at (\(\d+,\d+\),\(\d+,\d+\))", text)
            return f"<think>The question points to Image-{m.group(1)}; the object there fits.</think><answer>Image-{m.group(1)}: {m.group(2)}</answer>"
        if "For each object this reasoning refers to" in text:
            m = re.search(r"Image-(\d+)", text)
            return f"Image-{m.group(1)}: the object (10,10),(20,20)"
        if text.startswith("Rewrite the reasoning"):
            listing = text.split("ids and boxes:")[1].split("Reasoning process:")[0].strip().split("\n")
            return "Looking at the images, " + " and ".join(listing) + " is the answer."
        return "I cannot help with that."


def make_client(bases, **kw) -> ChatClient:
    kw.setdefault("sleep", lambda s: None)
    return ChatClient(bases if isinstance(bases, list) else [bases], **kw)


def test_reply_parsed_and_round_robin():
    with StandIn() as a, StandIn() as b:
        client = make_client([a.base, b.base])
        replies = [client.chat("m", [{"text": "Describe this image"}], {"temperature": 0}) for _ in range(4)]
        assert len(a.requests) == 2 and len(b.requests) == 2
        assert replies[0].text.startswith("A plain synthetic")
        assert replies[0].usage == {"prompt_tokens": 10, "completion_tokens": 13}
        assert a.requests[0]["model"] == "m" and a.requests[0]["temperature"] == 0


def test_retries_429_and_5xx_with_growing_backoff():
    def script(n, body):
        return (
            (429, {"error": "slow down"}, {}) if n == 1 else (503, b"busy", {}) if n < 4 else (200, None, {})
        )  # noqa: E731

    waits = []
    with StandIn(script) as s:
        client = make_client(s.base, sleep=waits.append, backoff=1.0, max_backoff=100)
        reply = client.chat("m", [{"text": "hi"}], {})
    assert reply.text == "I cannot help with that."
    assert len(s.requests) == 4 and client.stats.retries == 3
    assert len(waits) == 3 and all(0 <= w <= 2**k for k, w in enumerate(waits))


def test_retry_after_is_a_floor():
    script = lambda n, body: (429, b"{}", {"Retry-After": "7"}) if n == 1 else (200, None, {})  # noqa: E731
    waits = []
    with StandIn(script) as s:
        make_client(s.base, sleep=waits.append, backoff=0.01).chat("m", [{"text": "x"}], {})
    assert waits == [7.0]


def test_timeout_is_retried_then_gives_up_naming_the_url():
    with StandIn(lambda n, body: ("hang", None, {})) as s:
        client = make_client(s.base, timeout=0.3, retries=2)
        with pytest.raises(RetriesExhausted, match=re.escape(s.base)):
            client.chat("m", [{"text": "x"}], {})
    assert len(s.requests) == 3


def test_connection_refused_is_retried():
    client = make_client("http://127.0.0.1:9/v1", retries=1)
    with pytest.raises(RetriesExhausted, match="127.0.0.1:9"):
        client.chat("m", [{"text": "x"}], {})
    assert client.stats.attempts == 2


def test_4xx_is_refused_at_once_with_url_and_status():
    with StandIn(lambda n, body: (404, {"error": {"message": "model 'nope' does not exist"}}, {})) as s:
        client = make_client(s.base)
        with pytest.raises(RequestRefused, match=r"/v1/chat/completions answered HTTP 404.*does not exist"):
            client.chat("nope", [{"text": "x"}], {})
    assert len(s.requests) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", b'{"choices": []}', b'{"choices": [{"message": {"content": 5}}]}', b"\xff\xfe"],
)
def test_a_reply_that_is_not_a_completion_names_the_url(body):
    with pytest.raises(TeacherError, match="http://x did not answer a chat completion"):
        parse_reply(body, "http://x")


def test_bad_options_refused():
    with pytest.raises(ValueError, match="not an http"):
        ChatClient(["file:///etc/passwd"])
    with pytest.raises(ValueError, match="at least one"):
        ChatClient([])


def test_images_go_as_data_urls(tmp_path):
    from PIL import Image

    png, bmp = tmp_path / "a.png", tmp_path / "b.bmp"
    Image.new("RGB", (4, 4), "red").save(png)
    Image.new("RGB", (4, 4), "blue").save(bmp)
    with StandIn() as s:
        make_client(s.base).chat("m", [{"image": str(png)}, {"image": str(bmp)}, {"text": "x"}], {})
    urls = [
        p["image_url"]["url"] for p in s.requests[0]["messages"][0]["content"] if p["type"] == "image_url"
    ]
    assert urls[0].startswith("data:image/png;base64,iVBOR") and urls[1].startswith("data:image/png;base64,")
