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
import sys
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from core.atomicio import atomic_file, refuse_existing

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRUCTURE = re.compile(r'[\[\]{}"]')
_SCALAR = re.compile(r"[^,\]}\s]*")
CHUNK_CHARS = 1 << 20


class InvalidJSONError(ValueError):
    """The input file is not a JSON array / JSON lines file; names file, line and column."""


class SourceReject(NamedTuple):
    """A record the source layer could not even turn into ShareGPT (yielded instead of a dict)."""

    id: Any
    reason: str
    detail: str


def _value_end(buf: str, pos: int) -> int | None:
    """End of the JSON value starting at buf[pos], found without decoding it; None if buf ends first.

    Why: a value the decoder refuses (nested deeper than the recursion limit, an integer
    longer than Python's digit limit) must be stepped over so the records after it are read.
    Iterative, so any depth costs only time linear in its length.
    """
    ch = buf[pos]
    if ch == '"':
        match = _STRING.match(buf, pos)
        return match.end() if match else None
    if ch not in "[{":
        end = _SCALAR.match(buf, pos).end()
        return end if end < len(buf) else None
    depth, i = 0, pos
    while True:
        match = _STRUCTURE.search(buf, i)
        if match is None:
            return None
        if match.group() == '"':
            string = _STRING.match(buf, match.start())
            if string is None:
                return None
            i = string.end()
            continue
        depth += 1 if match.group() in "[{" else -1
        i = match.end()
        if depth == 0:
            return i


def _undecodable(err: BaseException) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply to decode"
    return str(err).split("; use sys.set_int_max_str_digits")[0]


def _position(consumed_lines: int, buf: str, pos: int, line_start_col: int) -> tuple[int, int]:
    head = buf[:pos]
    nl = head.count("\n")
    line = consumed_lines + nl + 1
    col = pos - head.rfind("\n") if nl else pos + 1 + line_start_col
    return line, col


def iter_json_records(
    path: str | os.PathLike,
    progress: Callable[[int], Any] | None = None,
    chunk_chars: int = CHUNK_CHARS,
    skip_bad: bool = False,
) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array, or the values of a JSON-lines file, one by one.

    `progress(n)` is called with the number of characters consumed since the last call
    (close to bytes for ASCII-heavy JSON), for a tqdm bar over the file size.
    Raises InvalidJSONError (file, line, column, reason) on malformed input, and when a
    `.json` file holds one value that is not an array (e.g. an object where a list of
    records is expected). A well-formed element the decoder cannot hold (nested deeper than
    the recursion limit, an integer of more than 4,300 digits) is an InvalidJSONError too,
    unless `skip_bad`: then a SourceReject naming its line and column is yielded in its place
    and reading goes on.
    """
    path = Path(path)
    decoder = json.JSONDecoder()
    decode = decoder.raw_decode
    ws = _WS.match
    with open(path, encoding="utf-8-sig") as handle:

        def read(n: int = chunk_chars) -> str:
            try:
                return handle.read(n)
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

        def refill(keep_from: int, grow: bool = False) -> int:
            """Drop buf[:keep_from] and read on; `grow` (a value longer than the buffer) doubles the
            read so that re-decoding one long value from its start stays linear overall."""
            nonlocal buf, eof, lines_before, col_offset
            dropped = buf[:keep_from]
            nl = dropped.count("\n")
            if nl:
                lines_before += nl
                col_offset = len(dropped) - dropped.rfind("\n") - 1
            else:
                col_offset += len(dropped)
            n = max(chunk_chars, len(buf) - keep_from) if grow else chunk_chars
            more = read(n)
            eof = len(more) < n
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
        # A `.json` file that is not an array must hold JSON lines: one lone value is refused at the end.
        hold_first = not array_mode and path.suffix.lower() == ".json"
        held: list = []
        expect_value = True
        first = True
        while True:
            pos = ws(buf, pos).end()
            if pos >= len(buf):
                if eof:
                    if array_mode:
                        raise fail("unterminated array (missing ']')", pos)
                    if held:
                        raise InvalidJSONError(
                            f"{path}: holds one JSON {_json_type(held[0])} where a list of records "
                            "(a JSON array, or one object per line) is expected"
                        )
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
                pos = refill(pos, grow=True)
                continue
            except (RecursionError, ValueError) as err:  # too deep, or an integer over the digit limit
                end = _value_end(buf, pos)
                if end is None:
                    if eof:
                        raise fail(f"unterminated value ({_undecodable(err)})", pos) from None
                    pos = refill(pos, grow=True)
                    continue
                line, col = _position(lines_before, buf, pos, col_offset)
                if not skip_bad:
                    raise fail(f"record cannot be decoded: {_undecodable(err)}", pos) from None
                value = SourceReject(
                    None, "bad_record", f"{path} line {line} column {col}: {_undecodable(err)}"
                )
            if end > len(buf) - 32 and not eof:  # a number ("-0.5" of "-0.5e3") may go on in the next chunk
                pos = refill(pos)
                continue
            if held:
                yield held.pop()
            if hold_first and first and not isinstance(value, SourceReject):
                held.append(value)
            else:
                yield value
            pos = end
            first = False
            expect_value = not array_mode


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


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
        try:
            if self.array:
                self._handle.write("[")
        except BaseException:  # a signal here, before `with` has our __exit__: remove the temporary file
            self._ctx.__exit__(*sys.exc_info())
            raise
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


def index_record_lines(path: str | os.PathLike, bad: list | None = None) -> tuple[array, array]:
    """Byte offsets and lengths of each record in a file written by RecordWriter.

    Raises InvalidJSONError when the file is not one record per line (e.g. a
    pretty-printed file that did not come from the converters). With a `bad` list,
    a line that is not one whole record is appended to it as (line number, reason)
    and skipped instead, so the caller decides how many it tolerates.
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
                if bad is not None:
                    bad.append((lineno, "not one whole JSON record on its line"))
                    pos += n
                    continue
                raise InvalidJSONError(
                    f"{path}: line {lineno} is not one whole JSON record; "
                    "this command reads files written by the converters (one record per line)"
                )
            offsets.append(pos)
            lengths.append(len(line))
            pos += n
    return offsets, lengths


MAX_LINE_BYTES = 256 * 1024 * 1024  # one JSON line; longer is not a record but a broken file


def decode_json_line(raw: bytes) -> Any:
    """One JSON line -> its value, or InvalidJSONError with a short reason (no file, no line).

    Why: every JSONL reader of the pack meets the same hostile lines (not UTF-8, not JSON, nested
    deeper than the recursion limit, an integer over the digit limit, a lone surrogate escape that
    no UTF-8 file can hold); each is one reason here, so a caller skips and names the line.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidJSONError(f"not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidJSONError(f"not JSON ({err.msg} at column {err.colno})") from None
    except (RecursionError, ValueError) as err:  # too deep, or an integer over the digit limit
        raise InvalidJSONError(f"cannot be decoded: {_undecodable(err)}") from None
    if "\\u" in text and re.search(r"\\u[dD][89a-fA-F]", text):  # a surrogate escape: paired or lone?
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidJSONError(f"holds a lone surrogate escape ({err.reason}), not text") from None
        except RecursionError:  # (decoded, so it fits the decoder's depth; dumps nests deeper)
            raise InvalidJSONError("cannot be decoded: nested too deeply to decode") from None
    return value


def iter_raw_lines(
    path: str | os.PathLike, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each non-blank line of a file; None for a line longer than
    `max_line_bytes`, whose rest is skipped without being held. OSError (a directory, a missing or
    unreadable file) comes before the first line."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a JSON-lines file")
    with open(path, "rb") as handle:
        lineno = 0
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while True:
                    more = handle.readline(1 << 20)
                    if not more or more.endswith(b"\n"):
                        break
                yield lineno, None
            elif raw.strip():
                yield lineno, raw
