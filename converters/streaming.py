"""Read huge JSON record files incrementally and write record files atomically.

Why: MGrounding-630k's JSON files are hundreds of MB. `json.load` holds the
whole parsed list (1.7 GB for 630k records) before the first record is
checked; decoding one array element at a time with the C scanner keeps memory
flat and is just as fast. Outputs are written one record per line (inside a
JSON array for `.json`, bare for `.jsonl`) so the mixture builder can index
records by byte offset without parsing the whole file.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atomicio import atomic_file, refuse_existing

_WS = re.compile(r"[ \t\n\r]*")
CHUNK_CHARS = 1 << 20


class InvalidJSONError(ValueError):
    """The input file is not a JSON array / JSON lines file; names file, line and column."""


def _position(consumed_lines: int, buf: str, pos: int, line_start_col: int) -> tuple[int, int]:
    head = buf[:pos]
    nl = head.count("\n")
    line = consumed_lines + nl + 1
    col = pos - head.rfind("\n") if nl else pos + 1 + line_start_col
    return line, col


def iter_json_records(
    path: str | os.PathLike, progress: Callable[[int], Any] | None = None, chunk_chars: int = CHUNK_CHARS
) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array, or the values of a JSON-lines file, one by one.

    `progress(n)` is called with the number of characters consumed since the last call
    (close to bytes for ASCII-heavy JSON), for a tqdm bar over the file size.
    Raises InvalidJSONError (file, line, column, reason) on malformed input.
    """
    path = Path(path)
    decoder = json.JSONDecoder()
    decode = decoder.raw_decode
    ws = _WS.match
    with open(path, encoding="utf-8-sig") as handle:

        def read() -> str:
            try:
                return handle.read(chunk_chars)
            except UnicodeDecodeError as err:
                raise InvalidJSONError(f"{path}: not UTF-8 text ({err})") from None

        buf = read()
        eof = len(buf) < chunk_chars
        lines_before = 0  # newlines in text already dropped from buf
        col_offset = 0  # column of buf[0] on its line, minus one
        pos = ws(buf, 0).end()

        def fail(reason: str, at: int) -> InvalidJSONError:
            line, col = _position(lines_before, buf, at, col_offset)
            return InvalidJSONError(f"{path}: invalid JSON at line {line} column {col}: {reason}")

        def refill(keep_from: int) -> int:
            nonlocal buf, eof, lines_before, col_offset
            dropped = buf[:keep_from]
            nl = dropped.count("\n")
            if nl:
                lines_before += nl
                col_offset = len(dropped) - dropped.rfind("\n") - 1
            else:
                col_offset += len(dropped)
            more = read()
            eof = len(more) < chunk_chars
            buf = buf[keep_from:] + more
            if progress is not None:
                progress(len(more))
            return 0

        if progress is not None:
            progress(len(buf))
        while pos >= len(buf) and not eof:
            pos = refill(pos)  # (refill first: it replaces buf)
            pos = ws(buf, pos).end()
        if pos >= len(buf):
            return  # empty file: no records
        array_mode = buf[pos] == "["
        if array_mode:
            pos += 1
        expect_value = True
        first = True
        while True:
            pos = ws(buf, pos).end()
            if pos >= len(buf):
                if eof:
                    if array_mode:
                        raise fail("unterminated array (missing ']')", pos)
                    return
                pos = refill(pos)  # (refill first: it replaces buf)
                pos = ws(buf, pos).end()
                continue
            ch = buf[pos]
            if array_mode and ch == "]" and (first or not expect_value):
                pos = ws(buf, pos + 1).end()
                while pos >= len(buf) and not eof:
                    pos = refill(pos)  # (refill first: it replaces buf)
                    pos = ws(buf, pos).end()
                if pos < len(buf):
                    raise fail("extra data after the closing ']'", pos)
                return
            if array_mode and not expect_value:
                if ch != ",":
                    raise fail("expected ',' or ']' between records", pos)
                pos += 1
                expect_value = True
                continue
            try:
                value, end = decode(buf, pos)
            except json.JSONDecodeError as err:
                # Running off the end of the buffer fails at (or a few characters before) its end,
                # or inside a string cut in two; anything earlier is a real syntax error.
                cut = err.pos >= len(buf) - 8 or err.msg.startswith("Unterminated string")
                if eof or not cut:
                    raise fail(err.msg, err.pos) from None
                pos = refill(pos)
                continue
            if end > len(buf) - 32 and not eof:  # a number ("-0.5" of "-0.5e3") may go on in the next chunk
                pos = refill(pos)
                continue
            yield value
            pos = end
            first = False
            expect_value = not array_mode


class RecordWriter:
    """Write records to a `.json` array or `.jsonl` file through a temporary sibling.

    One compact record per line in both formats. The file appears at `path` only
    when the `with` block ends without an exception.
    """

    def __init__(self, path: str | os.PathLike, force: bool = False):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".json", ".jsonl"):
            raise ValueError(f"output {self.path} must end in .json or .jsonl")
        refuse_existing(self.path, force)
        self.array = suffix == ".json"
        self.count = 0
        self._ctx = None
        self._handle = None
        self._dumps = json.JSONEncoder(ensure_ascii=False).encode

    def __enter__(self) -> RecordWriter:
        self._ctx = atomic_file(self.path, "w")
        self._handle = self._ctx.__enter__()
        if self.array:
            self._handle.write("[")
        return self

    def write(self, record: Any) -> None:
        self.write_line(self._dumps(record))

    def write_line(self, line: str) -> None:
        """Write one already-encoded compact JSON record (no newline inside)."""
        if self.array:
            self._handle.write("\n" if self.count == 0 else ",\n")
            self._handle.write(line)
        else:
            self._handle.write(line)
            self._handle.write("\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self.array:
            self._handle.write("\n]\n")
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def index_record_lines(path: str | os.PathLike) -> tuple[array, array]:
    """Byte offsets and lengths of each record in a file written by RecordWriter.

    Raises InvalidJSONError when the file is not one record per line (e.g. a
    pretty-printed file that did not come from the converters).
    """
    path = Path(path)
    offsets, lengths = array("q"), array("q")
    array_mode = path.suffix.lower() == ".json"
    with open(path, "rb") as handle:
        pos = 0
        lineno = 0
        for raw in handle:
            lineno += 1
            n = len(raw)
            line = raw.rstrip(b"\r\n")
            if array_mode and line.endswith(b","):
                line = line[:-1]
            stripped = line.strip()
            if not stripped or (array_mode and stripped in (b"[", b"]")):
                pos += n
                continue
            if not (line.startswith(b"{") and line.endswith(b"}")):
                raise InvalidJSONError(
                    f"{path}: line {lineno} is not one whole JSON record; "
                    "the mixture reads files written by the converters (one record per line)"
                )
            offsets.append(pos)
            lengths.append(len(line))
            pos += n
    return offsets, lengths
