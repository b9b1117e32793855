"""Check one ShareGPT record the way LLaMA-Factory and Qwen2-VL will read it.

Why: LLaMA-Factory silently drops a record whose roles do not alternate and
crashes mid-epoch on a placeholder/image count mismatch or an unreadable
image; a malformed box teaches the model garbage coordinates. Every record is
checked here once, before training, and a bad one gets exactly one reason code
(the first problem found, in the order of REASONS) so reports can be counted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from core.grounding import (
    BOX_END,
    BOX_SPAN_RE,
    BOX_START,
    BOX_TOKENS_RE,
    FORMAT_TEMPLATE_RE,
    PAIR_RE,
    REF_END,
    REF_START,
    on_grid,
)

IMAGE = "<image>"
USER, ASSISTANT = "human", "gpt"

# Reason codes, in the order the checks run. Image checks run last (see images.py).
REASONS = {
    "bad_record": "not an object or undecodable, no id, a field of the wrong type, or text that is not Unicode",
    "empty_conversation": "no conversation turns",
    "unknown_role": "a turn whose role is neither 'human' nor 'gpt'",
    "first_turn_not_human": "the first turn is not from 'human'",
    "roles_not_alternating": "roles do not alternate human/gpt",
    "last_turn_not_answer": "the last turn is not a 'gpt' answer",
    "empty_text": "a turn with empty text",
    "no_images": "no images list (or an empty one)",
    "placeholder_mismatch": "number of <image> placeholders differs from the number of images",
    "bad_box": "a box that is not <|box_start|>(x1,y1),(x2,y2)<|box_end|> with 0<=x1<x2<=1000, 0<=y1<y2<=1000",
    "bad_ref": "unbalanced or nested <|object_ref_start|>/<|object_ref_end|>",
    "image_outside_root": "an absolute or '..' image path that leaves the image root",
    "missing_image": "an image file that does not exist",
    "undecodable_image": "an image file that cannot be decoded",
}

# The answer-format instruction MIG-Bench appends to questions is a template with placeholder
# names, not a box, so it is taken out (FORMAT_TEMPLATE_RE) before the boxes are checked.


class Rejected(Exception):
    """A record failed a check: `reason` is a key of REASONS, `detail` says where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_boxes(text: str) -> str | None:
    """Return why the text's box tokens are malformed, or None when they are all fine."""
    text = FORMAT_TEMPLATE_RE.sub("", text)
    if text.count(BOX_START) != text.count(BOX_END):
        return "unbalanced <|box_start|>/<|box_end|>"
    for match in BOX_SPAN_RE.finditer(text):
        body = match.group(1)
        parsed = PAIR_RE.fullmatch(body.strip())
        if parsed is None:
            return f"box {body[:60]!r} is not two points (x1,y1),(x2,y2)"
        x1, y1, x2, y2 = (int(v) for v in parsed.groups())
        if not on_grid((x1, y1, x2, y2)):
            return f"box ({x1},{y1}),({x2},{y2}) is outside 0-1000 or has x1>=x2 / y1>=y2"
    # A box_end before its box_start leaves the counts equal but the spans wrong.
    if len(BOX_SPAN_RE.findall(text)) != text.count(BOX_START):
        return "misordered <|box_start|>/<|box_end|>"
    return None


def check_refs(text: str) -> str | None:
    depth = 0
    for token in re.findall(r"<\|object_ref_(?:start|end)\|>", text):
        depth += 1 if token == REF_START else -1
        if depth not in (0, 1):
            return "unbalanced or nested <|object_ref_start|>/<|object_ref_end|>"
    return None if depth == 0 else "unclosed <|object_ref_start|>"


def make_resolver(image_root: str | os.PathLike) -> Callable[[str], str]:
    """Map a dataset-relative image path (e.g. './MGrounding-630k/x.jpg') to an absolute one.

    Absolute paths are what LLaMA-Factory resolves from any dataset_dir/media_dir. A path
    that is absolute or climbs out of `image_root` with '..' raises Rejected
    (image_outside_root): a dataset must not point training at arbitrary files.
    """
    prefix = os.path.abspath(image_root).rstrip("/") + "/"
    normpath = os.path.normpath

    def outside(path: str) -> Rejected:
        return Rejected("image_outside_root", f"image path {path[:200]!r} leaves the image root {prefix}")

    def resolve(path: str) -> str:
        if path.startswith("./"):
            path = path[2:]
        if path.startswith("/"):
            raise outside(path)
        full = prefix + path
        if not path.startswith(".") and "/." not in path and "//" not in path:
            return full
        full = normpath(full)
        if not full.startswith(prefix):
            raise outside(path)
        return full

    return resolve


def _unicode_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate from an escaped '\\ud800'), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"holds {text[err.start]!r} at position {err.start}, a lone surrogate that is not valid Unicode"
        )
    return None


def _check_text_fields(rid: str, rtype: str, texts: list[str], images: list[str]) -> None:
    """Reject text that cannot be written out (lone surrogates) and image paths with a NUL byte."""
    for j, path in enumerate(images):
        if "\x00" in path:
            raise Rejected("bad_record", f"image {j} path contains a NUL byte")
        problem = _unicode_problem(path)
        if problem:
            raise Rejected("bad_record", f"image {j} path {problem}")
    for what, text in (("id", rid), ("type", rtype), *((f"turn {i} text", t) for i, t in enumerate(texts))):
        problem = _unicode_problem(text)
        if problem:
            raise Rejected("bad_record", f"{what} {problem}")


def _identity(path: str) -> str:
    return path


def _boxes_ok(text: str) -> bool:
    """Fast check: every box token pair in `text` holds one valid box."""
    if "(x1," in text:
        text = FORMAT_TEMPLATE_RE.sub("", text)
    found = BOX_TOKENS_RE.findall(text)
    if len(found) != text.count(BOX_START) or len(found) != text.count(BOX_END):
        return False
    return all(on_grid((int(x1), int(y1), int(x2), int(y2))) for x1, y1, x2, y2 in found)


def _refs_ok(text: str) -> bool:
    n = text.count(REF_START)
    if n != text.count(REF_END):
        return False
    if n == 1:
        return text.index(REF_START) < text.index(REF_END)
    return n == 0 or check_refs(text) is None


def _diagnose_turns(turns: list) -> None:
    """Slow path: raise the first problem of the turns, in check order (called only when there is one)."""
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise Rejected("bad_record", f"turn {i} is not an object with 'from' and 'value'")
        role, text = turn["from"], turn["value"]
        if role != USER and role != ASSISTANT:
            raise Rejected("unknown_role", f"turn {i} has role {role!r}")
        if role != (USER if i % 2 == 0 else ASSISTANT):
            if i == 0:
                raise Rejected("first_turn_not_human", f"turn 0 is from {role!r}")
            raise Rejected(
                "roles_not_alternating", f"turn {i} is from {role!r} after {turns[i - 1]['from']!r}"
            )
        if not isinstance(text, str):
            raise Rejected("bad_record", f"turn {i} value is not a string")
        if not text.strip():
            raise Rejected("empty_text", f"turn {i} has empty text")
    raise AssertionError("_diagnose_turns found nothing wrong")  # pragma: no cover


def check_record(
    record: Any,
    *,
    require_images: bool = True,
    resolve: Callable[[str], str] = _identity,
    default_type: str | None = None,
) -> tuple[dict, bool]:
    """Validate one record; return (clean record, fixed?) or raise Rejected.

    The clean record has exactly the keys id (str), type (str), images (absolute
    paths, possibly empty when `require_images` is False) and conversations
    (from/value turns). A record with images and no placeholder at all gets one
    `<image>` per image at the start of its first human turn (fixed=True).
    Written for speed (it runs 630k times per file): a straight pass that bails
    to a slow, precise diagnosis only when something is wrong.
    """
    if record.__class__ is not dict:
        raise Rejected("bad_record", f"record is a JSON {type(record).__name__}, not an object")
    rid = record.get("id")
    if rid.__class__ is not str:
        if rid is None or isinstance(rid, (bool, list, dict, float)):
            raise Rejected("bad_record", "missing or non-string id")
        rid = str(rid)
    elif not rid:
        raise Rejected("bad_record", "missing or non-string id")
    rtype = record.get("type")
    if rtype is None:
        rtype = default_type or ""
    elif rtype.__class__ is not str:
        raise Rejected("bad_record", "type is not a string")

    turns = record.get("conversations")
    if turns is None or turns == []:
        raise Rejected("empty_conversation", "conversations is missing or empty")
    if turns.__class__ is not list:
        raise Rejected("bad_record", "conversations is not a list")
    expected = USER
    plain = True
    texts = []
    for turn in turns:
        try:
            role = turn["from"]
            text = turn["value"]
        except (TypeError, KeyError, IndexError):
            _diagnose_turns(turns)
        if role != expected or text.__class__ is not str or not text or text.isspace():
            _diagnose_turns(turns)
        expected = ASSISTANT if expected == USER else USER
        if len(turn) != 2:
            plain = False
        texts.append(text)
    if expected != USER:
        raise Rejected("last_turn_not_answer", f"last turn ({len(turns) - 1}) is from {turns[-1]['from']!r}")
    clean_turns = turns if plain else [{"from": t["from"], "value": t["value"]} for t in turns]

    images = record.get("images")
    if images is None or images == []:
        if require_images:
            raise Rejected("no_images", "images is missing or empty")
        images = []
    if images.__class__ is not list:
        raise Rejected("bad_record", "images is not a list")
    for j, path in enumerate(images):
        if path.__class__ is not str or not path:
            raise Rejected("bad_record", f"image {j} is not a non-empty path string")
    _check_text_fields(rid, rtype, texts, images)

    joined = "\x00".join(texts)  # no valid box or placeholder can span the separator
    placeholders = joined.count(IMAGE)
    fixed = False
    if placeholders != len(images):
        if placeholders == 0:
            first = clean_turns[0]
            prefix = f"{IMAGE}\n" * len(images)
            clean_turns = [{"from": first["from"], "value": prefix + first["value"]}, *clean_turns[1:]]
            fixed = True
        else:
            raise Rejected(
                "placeholder_mismatch", f"{placeholders} <image> placeholder(s) for {len(images)} image(s)"
            )
    if "<|box_" in joined and not _boxes_ok(joined):
        for i, text in enumerate(texts):
            problem = check_boxes(text)
            if problem:
                raise Rejected("bad_box", f"turn {i}: {problem}")
        raise Rejected("bad_box", "malformed <|box_start|>/<|box_end|> tokens")
    if "<|object_ref_" in joined:
        for i, text in enumerate(texts):
            if not _refs_ok(text):
                raise Rejected("bad_ref", f"turn {i}: {check_refs(text) or 'misplaced object_ref tokens'}")
    if "<video>" in joined or "<audio>" in joined:
        raise Rejected("placeholder_mismatch", "a <video>/<audio> placeholder (only images are supported)")

    return {
        "id": rid,
        "type": rtype,
        "images": [resolve(p) for p in images],
        "conversations": clean_turns,
    }, fixed
