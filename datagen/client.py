"""The teacher client: the pack's one OpenAI-compatible client (chatclient.py), asked with prompt parts.

Why: every step of both pipelines talks to a teacher through the same wire format; a vLLM server,
several replicas of it or a hosted API differ only in their base URLs. The retries, the deadline, the
size cap and the finish_reason check live in chatclient.py (shared with eval's openai backend); here
the parts `{"image": path}` / `{"text": str}` become one user message with images as data URLs.
"""

from __future__ import annotations

import base64
import io

from core import chatclient
from core.chatclient import (  # noqa: F401 (the datagen names of the shared client's errors and reply)
    MAX_RESPONSE_BYTES,
    Reply,
    RequestRefused,
    RetriesExhausted,
    TeacherError,
    parse_reply,
)


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


class ChatClient(chatclient.ChatClient):
    """The shared client; `chat` takes datagen's prompt parts."""

    def chat(self, model: str, parts: list[dict], sampling: dict) -> Reply:
        return self.complete(model, build_messages(parts), sampling)
