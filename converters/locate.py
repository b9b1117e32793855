"""Which image a box is in: the rule that places every box of a turn (the answer's and the question's).

Why its own module: the trajectory and RL sets (converters/trajectories.py), the family box formats
(converters/boxformat.py) and the converted-data preview all place boxes by this one rule, and none of
them should import another to reach it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from core.grounding import BOX_TOKENS_RE, ORDINALS, REF_END, REF_START

_NOUN = r"(?:image|picture|frame|photo)"
_ORDINAL = rf"(?P<ord>{'|'.join(ORDINALS)}|\d{{1,2}}(?:st|nd|rd|th))"
_MENTION = rf"(?:\b{_ORDINAL}\s+{_NOUN}\b|\b{_NOUN}[ \-]?(?P<num>\d{{1,3}})\b)"
MENTION_RE = re.compile(_MENTION, re.IGNORECASE)  # "the third image", "Image-2", "picture 3", "2nd frame"
_IN = r"\b(?:in|inside|within|on)\s+(?:the\s+)?"
IN_MENTION_RE = re.compile(_IN + _MENTION, re.IGNORECASE)  # "in the second image", "inside image 1"
AFTER_RE = re.compile(
    r"\s*(?:in|inside|within|on)\s+(?:the\s+)?" + _MENTION, re.IGNORECASE
)  # "<box> in the 2nd image"
HEADER_RE = re.compile(r"\bin\s+(?:the\s+)?" + _MENTION + r"\s*,", re.IGNORECASE)  # "In the first image, ..."
VERB_RE = re.compile(r"\b(?:locate|find|track|ground|give|where|detect|identify|output|provide|mark)\b", re.I)
SENTENCE_END_RE = re.compile(r"[.!?\n]")
REF_SPAN_RE = re.compile(re.escape(REF_START) + r"(.*?)" + re.escape(REF_END), re.DOTALL)
_SPECIAL = ("<|", "<bbox_id>", "</bbox_id>", "<think>", "</think>", "<answer>", "</answer>")


def _mention_image(match: re.Match) -> int:
    word, num = match.group("ord"), match.group("num")
    if num is not None:
        return int(num)
    word = word.lower()
    return ORDINALS.index(word) + 1 if word in ORDINALS else int(word[:-2])


@dataclass(frozen=True)
class BoxAt:
    """A box found in a text and the image the text puts it in (None: not said)."""

    box: tuple[int, int, int, int]
    image: int | None
    start: int  # where the box tokens start in the text
    named_at: tuple[int, int] | None  # span of the words naming its image


@dataclass(frozen=True)
class Located:
    targets: list[BoxAt]  # the answer's boxes
    context: list[BoxAt]  # the question's boxes (e.g. object tracking's marked target)


def boxes_in(text: str) -> list[BoxAt]:
    """Every box in `text` with the image its own words give it, in this order of precedence:

    1. right after it: "<box> in the second image";
    2. a header of its sentence: "In the first image, the second image: <box>; the third image: <box>"
       (MGrounding's region answers: the labels name the crops, the header the image boxed);
    3. the nearest image name before it, after the previous box: "Image-2: <box>",
       "It's in the third image. <box>".
    """
    boxes = list(BOX_TOKENS_RE.finditer(text))
    afters = [AFTER_RE.match(text, m.end()) for m in boxes]
    taken = [a.span() for a in afters if a]
    headers = [
        h for h in HEADER_RE.finditer(text) if not any(s < h.end() and h.start() < e for s, e in taken)
    ]
    found, prev_end = [], 0
    for m, after in zip(boxes, afters, strict=True):
        box = tuple(int(v) for v in m.groups())
        if after:
            image, span = _mention_image(after), after.span()
        else:
            image, span = None, None
            open_headers = [
                h
                for h in headers
                if h.end() <= m.start() and not SENTENCE_END_RE.search(text, h.end(), m.start())
            ]
            if open_headers:
                image, span = _mention_image(open_headers[-1]), open_headers[-1].span()
            else:
                before = list(MENTION_RE.finditer(text, prev_end, m.start()))
                if before:
                    image, span = _mention_image(before[-1]), before[-1].span()
        found.append(BoxAt(box, image, m.start(), span))  # type: ignore[arg-type]
        prev_end = after.end() if after else m.end()
    return found


def named_image(question: str) -> int | None:
    """The image a question asks about: the first "in the <ordinal> image" after its last locating verb
    ("Find the object shown in the first image and locate it in the second image" -> 2), else its first
    "in ... image", else the one image it names at all; None when it names none or several."""
    places = list(IN_MENTION_RE.finditer(question))
    for verb in reversed(list(VERB_RE.finditer(question))):
        after = [p for p in places if p.start() >= verb.end()]
        if after:
            return _mention_image(after[0])
    if places:
        return _mention_image(places[0])
    named = {_mention_image(m) for m in MENTION_RE.finditer(question)}
    return named.pop() if len(named) == 1 else None


def _blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    return "".join(chars)


def locate(question: str, answer: str, num_images: int) -> Located:
    """The image (1-based) of every answer box and every question box of one turn.

    An answer box takes its image from the answer's own words (see `boxes_in`); a single answer box
    the answer does not place takes the image the question asks about (`named_image`, with the
    object names and the question's own boxes and their image names blanked out), and with one
    image it is that image. Boxes still without an image keep None: the caller decides.
    """
    context = boxes_in(question)
    targets = boxes_in(answer)
    if len(targets) == 1 and targets[0].image is None:
        spans = [m.span() for m in REF_SPAN_RE.finditer(question)]
        spans += [m.span() for m in BOX_TOKENS_RE.finditer(question)]
        spans += [c.named_at for c in context if c.named_at]
        image = named_image(_blank(question, spans))
        if image is None and num_images == 1:
            image = 1
        t = targets[0]
        targets = [BoxAt(t.box, image, t.start, None)]
    return Located(targets, context)
