"""Answer formats: which part of a response holds the answer, and per-task answer statistics.

Why its own module: a reasoning model's `<think>` names decoy boxes and images, so with
`--answer-format think` only the first `<answer>...</answer>` span is read (grounding.answer_span, the
same function as the RL rewards). `official` keeps the paper's first-box-anywhere parse of the whole
response, which the published scores depend on. `well_formed` and `image_acc` are diagnostics added
beside the paper's metrics, never mixed into them.
"""

from __future__ import annotations

from collections.abc import Iterable

import grounding
from eval.parsing import parse_box

ANSWER_FORMATS = {
    "official": "the whole response, parsed like the paper's script (first box anywhere)",
    "think": "only the first <answer>...</answer> span (nothing if there is none)",
}
DEFAULT_ANSWER_FORMAT = "official"


def check_format(answer_format: str) -> str:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r}; choose from {', '.join(ANSWER_FORMATS)}")
    return answer_format


def answer_text(response, answer_format: str = DEFAULT_ANSWER_FORMAT) -> str | None:
    """The part of a response that is read as the answer (None: no answer at all)."""
    if not isinstance(response, str):
        return None
    if check_format(answer_format) == "official":
        return response
    return grounding.answer_span(response)


def parse_answer(response, answer_format: str = DEFAULT_ANSWER_FORMAT):
    """The paper's box parse (eval.parsing) of the answer part; official is exactly parse_box(response)."""
    if check_format(answer_format) == "official":
        return parse_box(response)
    return parse_box(answer_text(response, answer_format))


def well_formed(response, answer_format: str, n_images: int) -> bool:
    """official: a box parses; think: MIRG-RL's format rule (grounding.mirg_well_formed)."""
    if check_format(answer_format) == "think":
        return grounding.mirg_well_formed(response, n_images)
    return parse_box(response) is not None


def named_image(response, answer_format: str) -> int | None:
    """The 1-based image the answer names ([N-M], else Image N / Picture N), or None."""
    text = answer_text(response, answer_format)
    return grounding.first_image_index(text) if text else None


def _n_images(rec: dict) -> int | None:
    n = rec.get("n_images")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    images = rec.get("images")
    return len(images) if isinstance(images, list) and images else None


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 4) if whole else None


def answer_stats(records: Iterable[dict], answer_format: str) -> tuple[dict[str, dict], list[str]]:
    """Per task: `well_formed` (% of all instances, skipped ones count as not well-formed), `image_acc`
    (% of the answers naming an image that name the target, None when none names one) and
    `image_named` (how many answers name an image and have a known target). Returns (stats, notes).

    The target is each record's `target_image` (0-based, from eval.tasks.target_image at generation:
    MIG-Bench has no target-image field); records without one are left out of image_acc.
    """
    check_format(answer_format)
    counts: dict[str, list[int]] = {}
    unknown_images = 0
    for rec in records:
        c = counts.setdefault(rec.get("task"), [0, 0, 0, 0])  # n, well formed, named (known target), right
        c[0] += 1
        if rec.get("skipped"):
            continue
        response = rec.get("response")
        n_images = _n_images(rec)
        if n_images is None and answer_format == "think":
            unknown_images += 1
        c[1] += well_formed(response, answer_format, n_images or 1)
        target = rec.get("target_image")
        named = named_image(response, answer_format)
        if named is not None and isinstance(target, int) and not isinstance(target, bool):
            c[2] += 1
            c[3] += named == target + 1
    stats = {
        task: {"well_formed": _pct(c[1], c[0]), "image_acc": _pct(c[3], c[2]), "image_named": c[2]}
        for task, c in counts.items()
    }
    notes = []
    if unknown_images:
        notes.append(
            f"{unknown_images} prediction(s) record no image count; well_formed assumed one image for them"
        )
    return stats, notes
