"""Box extraction from raw model text, in the paper's order of patterns.

Why exact order and "first match wins": the published scores depend on it.
A response like "(0.1,0.2),(0.3,0.4) or [12, 34, 56, 78]" scores differently
under a different order. Parsing never raises: garbage gives None (IoU 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import families

_INT = r"(\d+)"
_DEC = r"(\d+\.\d+)"

# (name, regex) tried in this order; the first pattern with any match is used.
PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("paren_pairs_int", re.compile(rf"\({_INT},\s*{_INT}\),\s*\({_INT},\s*{_INT}\)")),
    ("brackets_dec", re.compile(rf"\[{_DEC},\s*{_DEC},\s*{_DEC},\s*{_DEC}\]")),
    ("paren_pairs_dec", re.compile(rf"\({_DEC},{_DEC}\),\({_DEC},{_DEC}\)")),
    ("paren_four_dec", re.compile(rf"\({_DEC},\s*{_DEC},\s*{_DEC},\s*{_DEC}\)")),
    ("brackets_int", re.compile(rf"\[{_INT},\s*{_INT},\s*{_INT},\s*{_INT}\]")),
    ("box_tag_int", re.compile(rf"<box>{_INT}\s+{_INT}\s+{_INT}\s+{_INT}</box>")),
)


@dataclass(frozen=True)
class ParsedBox:
    """The first box found, as written by the model (not yet normalised)."""

    values: tuple[float, float, float, float]
    pattern: str
    n_matches: int  # boxes the winning pattern found; the paper's normalisation depends on it


def parse_box(text) -> ParsedBox | None:
    """Return the first box of the first matching pattern, or None when there is none."""
    if not isinstance(text, str) or not text:
        return None
    for name, regex in PATTERNS:
        matches = regex.findall(text)
        if matches:
            values = tuple(float(v) for v in matches[0])
            return ParsedBox(values, name, len(matches))  # type: ignore[arg-type]
    return None


# Qwen2.5-VL / Qwen3-VL answer in JSON (`{"bbox_2d": [x1, y1, x2, y2], "label": ...}`, a list of them, bare or
# in a ```json fence): not one of the paper's six patterns, so it is read only when asked for
# (eval.answers' `json` and `think-json` formats), never in the official parse.
JSON_PATTERN = "json_bbox_2d"


def parse_json_box(text, opened_think: bool = False) -> ParsedBox | None:
    """The first `bbox_2d` box of a JSON answer (families.parse_answer: bounded, never raises), or None.

    The values are the model's own numbers (0-1000 grid or resized pixels); n_matches counts its boxes.
    """
    parsed = families.parse_answer(text, _JSON_FAMILY, opened_think=opened_think)
    if parsed is None:
        return None
    return ParsedBox(tuple(float(v) for v in parsed.box), JSON_PATTERN, parsed.n_boxes)  # type: ignore[arg-type]


# Any family whose answer form is JSON bbox_2d: the parse is the same for all of them.
_JSON_FAMILY = "qwen3-vl"
