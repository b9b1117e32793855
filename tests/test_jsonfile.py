"""jsonfile.read_json: every way a user's JSON file can be unusable gets one error naming the file."""

from __future__ import annotations

import pytest

from core.jsonfile import JSONFileError, read_json


@pytest.mark.parametrize(
    "raw, expect, message",
    [
        (b"[1, 2", None, "invalid JSON"),
        (b"\xff\xfe[]", None, "cannot be read as JSON: UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, None, "cannot be read as JSON: RecursionError"),
        (b"[" + b"9" * 5000 + b"]", None, "cannot be read as JSON: ValueError"),  # over the digit limit
        (b'{"a": 1}', list, "holds a JSON dict; expected a list of records"),
        (b"[]", dict, "holds a JSON list; expected a JSON dict"),
    ],
)
def test_unusable_files_are_named_with_the_reason(tmp_path, raw, expect, message):
    path = tmp_path / "user.json"
    path.write_bytes(raw)
    what = "a list of records" if expect is list else ""
    with pytest.raises(JSONFileError, match=message) as err:
        read_json(path, expect, what)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


def test_a_missing_file_and_a_good_one(tmp_path):
    with pytest.raises(JSONFileError, match=f"cannot read {tmp_path / 'none.json'}"):
        read_json(tmp_path / "none.json")
    (tmp_path / "ok.json").write_text('[{"id": 1}]', encoding="utf-8")
    assert read_json(tmp_path / "ok.json", list) == [{"id": 1}]
