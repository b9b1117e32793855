"""The incremental JSON reader and the atomic record writer (converters/streaming.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.streaming import InvalidJSONError, RecordWriter, index_record_lines, iter_json_records

FIXTURES = Path(__file__).parent / "fixtures" / "converters"


def test_reader_matches_json_load_at_every_chunk_boundary(tmp_path):
    """Records split across buffer refills at any offset still decode exactly like json.load."""
    text = (FIXTURES / "mgrounding_cases.json").read_text(encoding="utf-8")
    # Values that are easy to cut badly: numbers, literals, escapes and non-ASCII text at the top level.
    extra = ', 12345, -0.5e3, true, null, "caf\\u00e9 \\"q\\"", "日本語", [1, [2, {}]]\n]'
    text = text.rstrip().rstrip("]") + extra
    path = tmp_path / "all.json"
    path.write_text(text, encoding="utf-8")
    expected = json.loads(text)
    for chunk in (1, 2, 3, 7, 64, 1000, len(text) + 10):
        assert list(iter_json_records(path, chunk_chars=chunk)) == expected, chunk


def test_reader_reads_json_lines_and_empty_files(tmp_path):
    lines = tmp_path / "x.jsonl"
    lines.write_text('{"a": 1}\n\n{"b": [2, 3]}\n', encoding="utf-8")
    assert list(iter_json_records(lines, chunk_chars=4)) == [{"a": 1}, {"b": [2, 3]}]
    empty = tmp_path / "empty.json"
    empty.write_text("  \n", encoding="utf-8")
    assert list(iter_json_records(empty)) == []
    array = tmp_path / "arr.json"
    array.write_text("\ufeff[ ]\n", encoding="utf-8")  # with a byte-order mark
    assert list(iter_json_records(array, chunk_chars=2)) == []


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[\n  {"id": 1},\n  {"id": 2,,}\n]', "line 3 column 12"),
        ('[\n  {"id": 1}\n  {"id": 2}\n]', "line 3 column 3"),
        ('[\n  {"id": 1},\n  {"id": 2}\n', "unterminated array"),
        ('[{"id": 1}] trailing', "extra data"),
        ('[{"id": "unterminated}]', "line 1"),
    ],
)
def test_reader_names_file_line_and_column_of_bad_json(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    for chunk in (3, 1 << 20):
        with pytest.raises(InvalidJSONError) as err:
            list(iter_json_records(path, chunk_chars=chunk))
        assert str(path) in str(err.value) and where in str(err.value), (chunk, str(err.value))


def test_reader_gives_up_on_a_syntax_error_without_reading_the_rest(tmp_path):
    """A broken record early in a big file fails at once instead of buffering the whole file."""
    path = tmp_path / "big.json"
    path.write_text(
        '[{"id": 1}, {"id": 2 "oops"},' + ' {"id": 3},' * 200_000 + ' {"id": 4}]', encoding="utf-8"
    )
    consumed = []
    with pytest.raises(InvalidJSONError, match="line 1 column 22"):
        list(iter_json_records(path, progress=consumed.append, chunk_chars=4096))
    assert sum(consumed) <= 2 * 4096


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_writer_output_loads_and_indexes(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    records = [{"id": "a", "v": "x\ny"}, {"id": "b", "v": "é, ]"}]
    with RecordWriter(path) as out:
        for r in records:
            out.write(r)
    text = path.read_text(encoding="utf-8")
    loaded = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    assert loaded == records
    offsets, lengths = index_record_lines(path)
    raw = path.read_bytes()
    assert [json.loads(raw[o : o + n]) for o, n in zip(offsets, lengths, strict=True)] == records


def test_writer_is_atomic_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "out.json"
    with pytest.raises(RuntimeError), RecordWriter(path) as out:
        out.write({"id": 1})
        raise RuntimeError("crash mid-write")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    path.write_text("user data", encoding="utf-8")
    with pytest.raises(FileExistsError, match="--force"):
        RecordWriter(path)
    assert path.read_text(encoding="utf-8") == "user data"
    with pytest.raises(ValueError, match=r"\.json or \.jsonl"):
        RecordWriter(tmp_path / "out.txt")


def test_index_refuses_pretty_printed_files(tmp_path):
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps([{"id": 1}], indent=2), encoding="utf-8")
    with pytest.raises(InvalidJSONError, match="one record per line"):
        index_record_lines(path)


def test_reader_refuses_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"id": "café"}]'.encode("latin-1"))
    with pytest.raises(InvalidJSONError, match="not UTF-8"):
        list(iter_json_records(path))


def test_raw_lines_are_bounded_and_each_bad_line_has_one_reason(tmp_path):
    """Issue #25: the JSONL reader `rl rewards` uses: a line longer than the bound is skipped without
    being held, and each hostile line decodes to one short reason (never an exception of another type)."""
    from core.streaming import InvalidJSONError, decode_json_line, iter_raw_lines

    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n' + b"x" * 5000 + b"\n\n  \n" + b'{"b": 2}')
    assert list(iter_raw_lines(path, max_line_bytes=100)) == [(1, b'{"a": 1}\n'), (2, None), (5, b'{"b": 2}')]
    with pytest.raises(IsADirectoryError):
        list(iter_raw_lines(tmp_path))
    cases = {
        b"\xff\n": "not UTF-8",
        b"{not json\n": "not JSON",
        b"[" * 100_000 + b"]" * 100_000: "nested too deeply",
        b"9" * 5000: "Exceeds the limit",
        b'"\\ud800"': "lone surrogate",
        b'{"k": ["\\udfff"]}': "lone surrogate",
    }
    for raw, reason in cases.items():
        with pytest.raises(InvalidJSONError, match=reason):
            decode_json_line(raw)
    assert decode_json_line(b'"\\ud83d\\ude00"') == "\U0001f600"  # a pair is text
