"""Reading model answers: bounded, never raising, the same for every family that writes JSON.

Why its own module: model text is untrusted. Every reader here bounds the text it reads (16 kB), the
numbers it accepts (24 characters, 0..999999) and the JSON it decodes (a few start positions, recursion
caught), and returns None on anything malformed. The families (families/*.py) choose which of these
readers their answers need; eval and the RL rewards ask the family, never these helpers directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_ANSWER_CHARS = 16_384  # model answers are 128-256 tokens; anything longer is not an answer
MAX_COORD = 999_999  # the same bound as grounding's 6-digit regexes
_MAX_NUMBER_CHARS = 24
_MAX_JSON_STARTS = 4  # bracket positions tried: keeps hostile "[[[[..." text linear


@dataclass(frozen=True)
class ParsedAnswer:
    box: tuple  # the first box, in the family's numbers (grid or resized pixels)
    label: str | None
    n_boxes: int  # well-formed boxes in the answer (the paper's rule reads a single box differently)


THINK_START, THINK_END = "<think>", "</think>"


def after_think(text: str) -> str | None:
    """The text after the first `</think>` (vLLM's Qwen3 reasoning parser's rule; a Thinking checkpoint's
    prompt already holds the opening `<think>`, so only the closing one is looked for). None when a think
    block opens and never closes (the reasoning was cut off: it holds no answer); the text itself when
    there is no think block (an Instruct answer)."""
    _, closed, answer = text.partition(THINK_END)
    if closed:
        return answer
    return None if THINK_START in text else text


def _reject_constant(name):
    raise ValueError(f"{name} is not a coordinate")


def _bounded_int(text):
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return int(text)


def _bounded_float(text):
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return float(text)


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_bounded_int, parse_float=_bounded_float
)


def _fenced_body(text: str) -> str:
    """The inside of the first ``` fence (an unclosed one runs to the end), or the whole text."""
    start = text.find("```")
    if start < 0:
        return text
    start += 3
    if text[start : start + 4].lower() == "json":
        start += 4
    end = text.find("```", start)
    return text[start:] if end < 0 else text[start:end]


def _json_values(text: str):
    """Decoded JSON values found from the first few `[` / `{` of the (fenced) text."""
    body = _fenced_body(text)
    pos, tries = 0, 0
    while tries < _MAX_JSON_STARTS:
        starts = [i for i in (body.find("[", pos), body.find("{", pos)) if i >= 0]
        if not starts:
            return
        start = min(starts)
        tries += 1
        try:
            value, end = _DECODER.raw_decode(body, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        yield value
        pos = end


def _parsed_json(value) -> ParsedAnswer | None:
    """None when the value holds no bbox_2d object (look further); n_boxes 0 when the first is malformed."""
    objects = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
    candidates = [o for o in objects if isinstance(o, dict) and "bbox_2d" in o]
    if not candidates:
        return None
    boxes = [b for b in (_json_box(o.get("bbox_2d")) for o in candidates) if b is not None]
    first = _json_box(candidates[0].get("bbox_2d"))
    if first is None:
        return ParsedAnswer(box=(), label=None, n_boxes=0)
    label = candidates[0].get("label")
    return ParsedAnswer(box=first, label=label if isinstance(label, str) else None, n_boxes=len(boxes))


def _json_box(values) -> tuple | None:
    if not isinstance(values, list) or len(values) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    if not all(math.isfinite(v) and 0 <= v <= MAX_COORD for v in values):
        return None
    return tuple(values)


def opened_think(text: str) -> str:
    """A completion of a Thinking checkpoint, whose prompt already opened `<think>`, with the tag put back
    (only when the text holds no `<think>` of its own), so one reader serves both kinds of checkpoint."""
    return text if THINK_START in text else THINK_START + text
