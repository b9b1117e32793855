"""Teacher answers -> captions, (caption, box) pairs and question-answer pairs, or a reject reason.

Why: teacher text is untrusted. Nothing in it is executed or used as a path; every number goes
through grounding's bounded regexes (at most 6 digits), every box must be on the 0-1000 grid, and
text carrying control characters or the model's special tokens is refused, because it would
corrupt the training data downstream. Each parser returns what it could use plus reasons for what it
could not, so the rejects report says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.grounding import (
    BOX_END,
    BOX_START,
    LOOSE_PAIR_RE,
    REF_END,
    REF_START,
    box_tokens,
    on_grid,
    ref_tokens,
)

MAX_CAPTION = 4000
MAX_OBJECT_CAPTION = 200
MAX_QUESTION = 2000
MAX_ANSWER = 4000
REASONS = {
    "truncated": "the answer stopped at the token limit (finish_reason 'length')",
    "empty": "an empty answer",
    "too_long": "longer than the step allows",
    "bad_text": "control characters (NUL, ...) or special tokens (<|...|>, <image>, <think>, ...) in the text",
    "no_boxes": "no usable (caption, box) pair in a refinement",
    "no_qa": "no 'Q: ... A: ...' pair in the answer",
    "no_answer": "a question without an answer (cut off?)",
    "empty_question": "a pair whose question is empty",
    "leaked_box": "the question gives away coordinates",
    "no_answer_box": "an answer without a <ref>object</ref>(x1,y1),(x2,y2)",
    "unreferenced_box": "an answer box without its <ref>object</ref>",
    "bad_box": "a box off the 0-1000 grid or with x1 >= x2 / y1 >= y2",
    "bad_object_name": "an empty, over-long or tag-holding object name",
    "no_image_named": "an answer box whose image the answer does not name",
    "image_out_of_range": "an answer box in an image the group does not have",
    "wrong_image": "an answer box that matches a box of another image, not the one it names",
    "unmatched_box": "an answer box that matches no refined box of its image",
    "bad_record": "the assembled record fails the converters' record check",
}

_FORBIDDEN = (
    "<|",
    "|>",
    "<image>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<bbox_id>",
    "</bbox_id>",
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")  # a lone surrogate from a JSON escape: no UTF-8 file holds it
_BOX_TOKEN_RE = re.compile(re.escape(BOX_START) + r"|" + re.escape(BOX_END))
_REF_TAG_RE = re.compile(r"</?ref>|" + re.escape(REF_START) + "|" + re.escape(REF_END))
_LIST_MARK_RE = re.compile(r"^\s*(?:[-*•]+|\d{1,3}[.)])\s*")
# "Q:" / "Q1:" / "**Q:**" / "Question:" at a line start; likewise "A:".
_Q_RE = re.compile(r"(?:^|\n)[ \t>*#]*(?:Q|Question)\s*\d{0,3}\s*\**\s*[:：]\s*\**", re.IGNORECASE)
_A_RE = re.compile(r"(?:^|\n|\s)[ \t>*#]*(?:A|Answer)\s*\d{0,3}\s*\**\s*[:：]\s*\**", re.IGNORECASE)
_REF_BOX_RE = re.compile(
    r"<ref>(?P<name>[^<>]{0,400}?)</ref>\s*(?:(?:is\s+)?(?:at|located at|:)\s*)?(?P<pair>"
    + LOOSE_PAIR_RE.pattern
    + ")"
)


class Reject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def bad_text(text: str) -> str | None:
    """Why a teacher text must not reach training data, or None."""
    if _CONTROL_RE.search(text):
        return "a control character (NUL, ...)"
    if _SURROGATE_RE.search(text):
        return "a lone surrogate (not text a UTF-8 file can hold)"
    for tag in _FORBIDDEN:
        if tag in text:
            return f"the reserved token {tag!r}"
    return None


def check_reply(entry: dict, max_len: int) -> str:
    """The reply's text, or Reject for a truncated, empty, over-long or unsafe one."""
    text = entry.get("text") or ""
    if entry.get("finish_reason") == "length":
        raise Reject("truncated", f"{len(text)} characters then the token limit")
    text = text.strip()
    if not text:
        raise Reject("empty")
    if _SURROGATE_RE.search(text):
        raise Reject("bad_text", "a lone surrogate (not text a UTF-8 file can hold)")
    if len(text) > max_len:
        raise Reject("too_long", f"{len(text)} characters (at most {max_len})")
    return text


def parse_caption(entry: dict) -> str:
    text = check_reply(entry, MAX_CAPTION)
    why = bad_text(text)
    if why:
        raise Reject("bad_text", why)
    return " ".join(text.split())


@dataclass(frozen=True)
class Pair:
    caption: str
    box: tuple[int, int, int, int]


def parse_refinement(entry: dict) -> tuple[list[Pair], list[Reject]]:
    """(caption, box) pairs from "caption <|box_start|>(x1,y1),(x2,y2)<|box_end|>" lines (tokens optional).

    The caption of a box is the text between the previous box (or line start) and it. Unusable pairs
    come back as rejects; no usable pair at all raises Reject("no_boxes").
    """
    text = check_reply(entry, 20 * MAX_CAPTION)
    if _CONTROL_RE.search(text):
        raise Reject("bad_text", "a control character (NUL, ...)")
    pairs, rejects, seen = [], [], set()
    prev = 0
    clean = _BOX_TOKEN_RE.sub(" ", text)
    for m in LOOSE_PAIR_RE.finditer(clean):
        before = clean[prev : m.start()]
        prev = m.end()
        line = before.rsplit("\n", 1)[-1]
        caption = _LIST_MARK_RE.sub("", _REF_TAG_RE.sub("", line)).strip(" \t:,;.-*")
        box = tuple(int(v) for v in m.groups())
        if not on_grid(box):
            rejects.append(Reject("bad_box", f"{box}"))
            continue
        if not caption or len(caption) > MAX_OBJECT_CAPTION or bad_text(caption) or "(" in caption[-1:]:
            rejects.append(Reject("bad_object_name", f"{caption[:60]!r}"))
            continue
        if (caption, box) not in seen:
            seen.add((caption, box))
            pairs.append(Pair(caption, box))
    if not pairs:
        raise Reject(
            "no_boxes", f"{len(rejects)} unusable pairs" if rejects else "no (x1,y1),(x2,y2) in the text"
        )
    return pairs, rejects


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # teacher text, <ref> and boxes not yet converted
    objects: list  # [(name, box, start of the box in `answer`)]


def split_qa(entry: dict) -> tuple[list[str], list[Reject]]:
    """Raw "Q: ... A: ..." blocks of a QA answer (text after each Q marker up to the next)."""
    text = check_reply(entry, 10 * MAX_ANSWER)
    marks = list(_Q_RE.finditer(text))
    if not marks:
        raise Reject("no_qa", "no line starting with 'Q:'")
    blocks = [
        text[m.end() : (marks[k + 1].start() if k + 1 < len(marks) else len(text))]
        for k, m in enumerate(marks)
    ]
    return blocks, []


def parse_qa_block(block: str) -> QA:
    """One "question A: answer" block -> QA, or Reject with the first problem found."""
    a = _A_RE.search(block)
    if a is None:
        raise Reject("no_answer", f"{block.strip()[:60]!r}")
    question, answer = block[: a.start()].strip(), block[a.end() :].strip()
    if not question:
        raise Reject("empty_question")
    if not answer:
        raise Reject("no_answer", f"{question[:60]!r}")
    if len(question) > MAX_QUESTION or len(answer) > MAX_ANSWER:
        raise Reject("too_long", f"question {len(question)}, answer {len(answer)} characters")
    for part in (question, answer):
        why = bad_text(part)
        if why:
            raise Reject("bad_text", why)
    if LOOSE_PAIR_RE.search(question) or re.search(r"\(\s*\d{1,6}\s*,\s*\d{1,6}\s*\)", question):
        raise Reject("leaked_box", f"{question[:80]!r}")
    objects = []
    for m in _REF_BOX_RE.finditer(answer):
        name = " ".join(m.group("name").split())
        if not name or len(name) > MAX_OBJECT_CAPTION:
            raise Reject("bad_object_name", f"{name[:60]!r}")
        box = tuple(int(v) for v in LOOSE_PAIR_RE.fullmatch(m.group("pair")).groups())
        if not on_grid(box):
            raise Reject("bad_box", f"{box}")
        objects.append((name, box, m.start()))
    if not objects:
        raise Reject("no_answer_box", f"{answer[:60]!r}")
    if len(LOOSE_PAIR_RE.findall(answer)) != len(objects) or answer.count("<ref>") != answer.count("</ref>"):
        raise Reject("unreferenced_box", f"{answer[:80]!r}")
    return QA(question, answer, objects)


def tokenize_answer(answer: str, boxes: dict[int, tuple[int, int, int, int]] | None = None) -> str:
    """`<ref>obj</ref> at (x1,y1)(x2,y2)` -> `<|object_ref_start|>obj<|object_ref_end|> at <|box_start|>...`.

    `boxes` maps a match's start to the box to write there (the refined box it matched).
    """

    def sub(m: re.Match) -> str:
        box = (boxes or {}).get(m.start()) or tuple(
            int(v) for v in LOOSE_PAIR_RE.fullmatch(m.group("pair")).groups()
        )
        name = " ".join(m.group("name").split())
        glue = m.group(0)[m.end("name") - m.start() + len("</ref>") : m.start("pair") - m.start()]
        return ref_tokens(name) + glue + box_tokens(box)

    return _REF_BOX_RE.sub(sub, answer)
