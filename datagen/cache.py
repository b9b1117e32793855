"""The request cache: one fsynced JSON line per finished teacher request.

Why: a teacher run is hours of GPU time on someone's server. Every finished reply is appended and
fsynced before the next is counted, keyed by sha256 over (model, prompt parts with each image
replaced by the sha256 of its bytes, sampling parameters); a rerun or a run after a crash asks the
server only for what is missing. A torn last line (the crash itself) is cut off; a file that is not
a cache (no header line) is refused rather than appended to. Only replies that finished normally
(finish_reason `stop` or `length`) are stored or read back; lines are written ASCII-escaped, so any
text a teacher sends (a lone surrogate `\ud800` included) can be stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from core.chatclient import FINISHED

log = logging.getLogger(__name__)

HEADER = {"datagen_cache": 1}


class CacheError(ValueError):
    """The cache path holds something that is not a datagen request cache."""


_image_hashes: dict[str, str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (memoised per path for one process: images repeat across steps)."""
    with _hash_lock:
        known = _image_hashes.get(path)
    if known:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _hash_lock:
        _image_hashes[path] = digest.hexdigest()
    return _image_hashes[path]


def request_key(model: str, parts: list[dict], sampling: dict) -> str:
    """The cache key: images by content, never by path (a moved dataset keeps its cache)."""
    logical = [{"image": file_sha256(p["image"])} if "image" in p else {"text": p["text"]} for p in parts]
    blob = json.dumps({"model": model, "parts": logical, "sampling": sampling}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """Append-only JSONL of `{"key", "step", "text", "finish_reason", "usage"}` lines."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.dropped = 0
        self._lock = threading.Lock()
        self._load()
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if self.path.stat().st_size == 0:
            self._append(HEADER)

    def _load(self) -> None:
        if self.path.is_dir():
            raise CacheError(f"{self.path} is a directory, not a datagen request cache; move it away")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            log.warning(
                "%s: cut an unfinished last line (%d bytes) left by a crash", self.path, len(raw) - cut
            )
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            raw = raw[:cut]
        lines = raw.decode("utf-8", errors="replace").split("\n")
        if raw:
            try:
                first = json.loads(lines[0])
            except ValueError:
                first = None
            if first != HEADER:
                raise CacheError(f"{self.path} is not a datagen request cache (no header line); move it away")
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                    raise ValueError("not a cache entry")
                if not isinstance(entry.get("text"), str):
                    raise ValueError("no text")
                if entry.get("finish_reason") not in FINISHED:
                    raise ValueError(
                        f"finish_reason {str(entry.get('finish_reason'))[:40]!r}, not a finished reply"
                    )
            except (ValueError, RecursionError) as err:
                self.dropped += 1
                log.warning(
                    "%s line %d: ignored (%s); that request will be asked again", self.path, lineno, err
                )
                continue
            self.entries[entry["key"]] = entry

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self.entries.get(key)

    def put(self, entry: dict) -> None:
        if entry.get("finish_reason") not in FINISHED:
            raise ValueError(
                f"only finished replies are cached, not finish_reason {entry.get('finish_reason')!r}"
            )
        with self._lock:
            self.entries[entry["key"]] = entry
            self._append(entry)

    def _append(self, entry: dict) -> None:
        self._handle.write(json.dumps(entry, ensure_ascii=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
