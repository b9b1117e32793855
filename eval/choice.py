"""Multiple-choice scoring (MIBench, MMIU): which option a response names, and accuracy per task.

Why one deterministic rule for both: MMIU's own evaluate.py takes a lone letter as the choice and asks
gpt-4o-mini to map any other answer to an option (or to "Z", none); MIBench's paper scores against
the option list; Migician's eval script counts a Qwen2-VL answer right when it *is* the answer text.
No judge model is reachable here, and a score that depends on one is not reproducible, so a response
is read in three steps that each need the answer to say one option and only one:

1. the answer is one option letter (`b`, `(B)`, `B.`), or opens with a capital one marked as a
   label (`B: ...`, `(B) ...`), or says it (`Answer: B`, `The answer is B`); letter benchmarks only
   (MMIU's options are lettered, MIBench's are not), so "a red car" or "I think" names no option;
2. the answer equals one option's text (case, spaces and a final period aside), which is Migician's
   own rule;
3. the answer contains exactly one option's text (an option that is part of a longer one that is also
   there does not count twice).

Anything else is unanswered and scores as a miss, as MMIU's "Z" does. A response is untrusted text:
it is read only up to MAX_RESPONSE_CHARS and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_RESPONSE_CHARS = 4096  # multiple-choice answers are a letter or an option; more is not read
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# a capital letter marked as a label: "(B)", "B.", "B:", "B)"; not "A dog" or "I think"
_LETTER_FIRST = re.compile(r"^(?:\(([A-Z])\)|([A-Z])[.:)\]])")
# the words in any case, the letter a capital: "the answer is a cat" names no option
_LETTER_SAID = re.compile(r"\b(?i:answer|choice|option)\s*(?i:is)?\s*:?\s*\(?([A-Z])\)?(?:$|[.:)\s,])")
_EDGE_PUNCT = re.compile(r"^[\s.,()\"'*`]+|[\s.,()\"'*`]+$")
# "A: text" / "(A) text" / "A. text" lines of an options string (MMIU's `options`)
OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\)?\s*[:.)]\s*(.*?)\s*$")


def normalize(text: str) -> str:
    """Case, inner whitespace and edge punctuation aside: the form option texts are compared in."""
    return _EDGE_PUNCT.sub("", " ".join(text.split())).casefold()


def parse_options(text: str) -> list[str] | None:
    """MMIU's `options` string ("A: x\\nB: y") -> ["x", "y"]; None unless the letters run A, B, C..."""
    if not isinstance(text, str):
        return None
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = OPTION_LINE.match(line)
        if m is None or len(out) >= len(LETTERS) or m.group(1) != LETTERS[len(out)]:
            return None
        out.append(m.group(2))
    return out or None


def pick(response, options: Sequence[str], letters: bool) -> int | None:
    """The 0-based option the response names (module docstring's three steps); None: it names none."""
    if not isinstance(response, str) or not options:
        return None
    text = response[:MAX_RESPONSE_CHARS].strip()
    if letters:
        bare = _EDGE_PUNCT.sub("", text)
        # a lone letter in any case ("b."), else a capital that opens the answer or is said to be it
        m = _LETTER_FIRST.match(text) or _LETTER_SAID.search(text)
        letter = bare.upper() if len(bare) == 1 and bare.upper() in LETTERS else None
        letter = letter or (next(g for g in m.groups() if g) if m else None)
        if letter is not None and LETTERS.index(letter) < len(options):
            return LETTERS.index(letter)
    said = normalize(text)
    if not said:
        return None
    forms = [normalize(o) for o in options]
    exact = [k for k, f in enumerate(forms) if f and f == said]
    if len(exact) == 1:
        return exact[0]
    inside = [k for k, f in enumerate(forms) if f and f in said]
    # an option inside a longer option that is also present is that longer option's text, not a second answer
    inside = [k for k in inside if not any(k != j and forms[k] in forms[j] for j in inside)]
    return inside[0] if len(inside) == 1 else None


def score(response, options: Sequence[str], correct: int, letters: bool) -> dict:
    """The per-instance fields a choice record carries: the picked option and whether it is right."""
    picked = pick(response, options, letters)
    return {"picked": picked, "hit": picked is not None and picked == correct}


def accuracy(records: Iterable[dict], task_order: Sequence[str], open_tasks: bool = False) -> dict:
    """metrics.json of a choice benchmark: accuracy (%) per task and on average, with unanswered counts.

    `average.accuracy` is the unweighted mean over the tasks present (Migician's eval script averages
    MIBench's and MMIU's sub-tasks this way); `average.micro` is over all questions. A skipped record
    counts as a miss and as unanswered. Tasks outside `task_order` are refused unless `open_tasks`
    (MMIU: the task list is the data's), then they follow in sorted order.
    """
    per: dict[str, list[tuple[bool, bool]]] = {}
    for rec in records:
        per.setdefault(rec["task"], []).append((bool(rec.get("hit")), rec.get("picked") is None))
    unknown = sorted(set(per) - set(task_order), key=str)
    if unknown and not open_tasks:
        raise ValueError(f"records name tasks that are not this benchmark's: {unknown}")
    order = [t for t in task_order if t in per] + unknown
    tasks = {t: _acc(per[t]) for t in order}
    everything = [x for t in order for x in per[t]]
    macro = round(sum(m["accuracy"] for m in tasks.values()) / len(tasks), 4) if tasks else None
    return {
        "tasks": tasks,
        "average": dict(_acc(everything), accuracy=macro, micro=_acc(everything)["accuracy"]),
    }


def _acc(marks: list[tuple[bool, bool]]) -> dict:
    n = len(marks)
    return {
        "n": n,
        "accuracy": round(100.0 * sum(h for h, _ in marks) / n, 4) if n else None,
        "unanswered": sum(u for _, u in marks),
    }
