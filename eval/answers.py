"""Answer formats: which part of a response holds the answer, and per-task answer statistics.

Why its own module: a reasoning model's `<think>` names decoy boxes and images, so with
`--answer-format think` only the first `<answer>...</answer>` span is read (grounding.answer_span, the
same function as the RL rewards). `official` keeps the paper's first-box-anywhere parse of the whole
response, which the published scores depend on. `well_formed` and `image_acc` are diagnostics added
beside the paper's metrics, never mixed into them.

`json` and `think-json` read Qwen2.5-VL / Qwen3-VL answers (`bbox_2d` JSON, also in a ```json fence;
eval.parsing.parse_json_box) from the whole response or the answer span; which numbers they are (grid
or resized pixels) is the run's `--coords`, chosen by its model family (eval.runner.resolve_family).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import families
from core import grounding
from eval import json_ids
from eval.parsing import parse_box, parse_json_box

ANSWER_FORMATS = {
    "official": "the whole response, parsed like the paper's script (first box anywhere)",
    "think": "only the first <answer>...</answer> span (nothing if there is none)",
    "json": "the whole response as Qwen2.5-VL / Qwen3-VL JSON (first bbox_2d, also ```json fenced)",
    "think-json": "the first <answer>...</answer> span as bbox_2d JSON (RL models of the JSON families)",
    "json-after-think": "Thinking checkpoints: bbox_2d JSON after the first </think> only (their prompt opens "
    "<think>, so reasoning cut off before </think> is no answer)",
    json_ids.NAME: "MG-Thinker's JSON image-id list in <answer> (not inside <think>): the target image's box",
}
# The formats a family picks by default (families.Family.answer_format / thinking_answer_format): `eval score`
# reads a run recorded with one of them the same way without being told.
FAMILY_DEFAULT_FORMATS = ("json", "json-after-think")
_SPAN_FORMATS = ("think", "think-json", json_ids.NAME)
_JSON_FORMATS = ("json", "think-json", "json-after-think")
DEFAULT_ANSWER_FORMAT = "official"


def check_format(answer_format: str) -> str:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r}; choose from {', '.join(ANSWER_FORMATS)}")
    return answer_format


def answer_text(response, answer_format: str = DEFAULT_ANSWER_FORMAT) -> str | None:
    """The part of a response that is read as the answer (None: no answer at all)."""
    if not isinstance(response, str):
        return None
    fmt = check_format(answer_format)
    if fmt == "json-after-think":
        return families.after_think(families.answers.opened_think(response))
    if fmt not in _SPAN_FORMATS:
        return response
    if answer_format == json_ids.NAME:
        return json_ids.answer_text(response)
    return grounding.answer_span(response)


def parse_answer(response, answer_format: str = DEFAULT_ANSWER_FORMAT, target_image: int | None = None):
    """The paper's box parse (eval.parsing) of the answer part; official is exactly parse_box(response).

    The JSON formats read only `bbox_2d` JSON: a box-token or bracket answer is no answer there.
    think-json-ids reads the box the answer gives for target_image (0-based; eval.json_ids)."""
    if check_format(answer_format) == "official":
        return parse_box(response)
    if answer_format == "json-after-think":
        return parse_json_box(response, opened_think=True)
    if answer_format == json_ids.NAME:
        return json_ids.parse_answer(response, target_image)
    text = answer_text(response, answer_format)
    return parse_json_box(text) if answer_format in _JSON_FORMATS else parse_box(text)


def _scored_box(answer: str):
    """The box values the think format's score reads from an answer (the paper's parse), or None."""
    parsed = parse_box(answer)
    return None if parsed is None else parsed.values


def well_formed(response, answer_format: str, n_images: int) -> bool:
    """official / json: a box parses; think: MIRG-RL's format rule (grounding.mirg_well_formed) on the box
    the score reads (box tokens, InternVL's brackets);
    think-json: the same rule with a JSON box (its range is scoring's business: IoU 0 when off the image)."""
    fmt = check_format(answer_format)
    if fmt == "think":
        return grounding.mirg_well_formed(response, n_images, _scored_box)
    if fmt == json_ids.NAME:
        return json_ids.well_formed(response, n_images)
    if fmt == "think-json":
        parts = grounding.think_then_answer(response)
        if parts is None or not parts[0].strip() or parse_json_box(parts[1]) is None:
            return False
        return grounding.names_an_image(parts[1], n_images)
    return parse_answer(response, fmt) is not None


def named_image(response, answer_format: str) -> int | None:
    """The 1-based image the answer names ([N-M], else Image N / Picture N; the JSON formats first read
    an `"image_id"` key, json_image_id), or None."""
    if check_format(answer_format) == json_ids.NAME:
        return json_ids.named_image(response)
    text = answer_text(response, answer_format)
    if not text:
        return None
    named = json_image_id(text) if answer_format in _JSON_FORMATS else None
    return named if named is not None else grounding.first_image_index(text)


# `"image_id": 2` (or "2"): how a JSON answer names its image, 1-based like `[N-M]` and "Image N".
_IMAGE_ID_RE = re.compile(r'"image_id"\s*:\s*"?(\d{1,3})\b')


def json_image_id(text) -> int | None:
    """The first `"image_id"` value of a JSON answer (after a think block), or None; bounded like
    families.parse_answer (at most families.MAX_ANSWER_CHARS characters are read)."""
    if not isinstance(text, str) or len(text) > families.MAX_ANSWER_CHARS:
        return None
    text = families.after_think(text)
    match = _IMAGE_ID_RE.search(text) if text else None
    return int(match.group(1)) if match else None


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
        if n_images is None and answer_format in _SPAN_FORMATS:
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
