"""One reader for the JSON files users hand over (benchmarks, COCO annotations, detections).

Why: each reader wrapped json.load in its own try with its own wording; a user file that is
unreadable, not JSON, nested too deep or of the wrong shape now gets one message everywhere,
naming the file.
"""

from __future__ import annotations

import json
import os
from typing import Any


class JSONFileError(ValueError):
    """A JSON file that cannot be used; the message names the file and why."""


def read_limited(path: str | os.PathLike, max_bytes: int, what: str = "") -> bytes:
    """The bytes of `path`, at most `max_bytes`: JSONFileError when there are more (the read itself is
    bounded: a size looked up first says 0 for a symlink to /dev/zero or a FIFO); OSError passes."""
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JSONFileError(f"{path} is over {max_bytes} bytes" + (f", not {what}" if what else ""))
    return raw


def read_json(
    path: str | os.PathLike, expect: type | None = None, what: str = "", max_bytes: int | None = None
) -> Any:
    """The parsed content of `path`; JSONFileError when it cannot be read, parsed or is not `expect`.

    `what` describes the expected content for the message ("a list of records"). `max_bytes` bounds
    the read itself, not a size looked up first: a symlink to /dev/zero or a FIFO reports size 0.
    """
    try:
        if max_bytes is None:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            data = json.loads(read_limited(path, max_bytes, what))
    except OSError as err:
        raise JSONFileError(f"cannot read {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise JSONFileError(f"{path}: invalid JSON: {err}") from None
    except (ValueError, RecursionError) as err:  # not UTF-8, too deep, an integer over the digit limit
        raise JSONFileError(f"{path}: cannot be read as JSON: {type(err).__name__}: {err}") from None
    if expect is not None and not isinstance(data, expect):
        expected = what or f"a JSON {expect.__name__}"
        raise JSONFileError(f"{path} holds a JSON {type(data).__name__}; expected {expected}")
    return data
