"""The base-model families as plugins: one class per family (families/<family>.py), one table
(families/registry.py), and the operations every stage asks a family for.

Why: see families/base.py. Callers hold a Family (`get_family(name)`, `detect_family(model_dir)`) and
call its methods; the module-level functions below are the same operations by family name, for callers
that hold only the name (a --family value, a record's `box_format`). Sources for every convention are
cited in each family's module; see also ../shared/BASE_MODELS.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from families.answers import MAX_ANSWER_CHARS, ParsedAnswer, after_think
from families.base import BOX_TOKENS, GRID1000, JSON_BBOX, REF_BOX, RESIZED_PIXELS, Family, JsonFamily
from families.checkpoint import chat_templates, is_thinking_checkpoint, processor_pixel_range
from families.provenance import DataFamilyError, DataFormats, check_data_family, data_box_formats
from families.registry import (
    DEFAULT_FAMILY,
    FAMILIES,
    FAMILY_CHOICES,
    UnknownFamilyError,
    detect_family,
    family_for_model_type,
    get_family,
    resolve_family,
)
from families.resize import (
    LF_CUT_RATIO,
    LF_MAX_RATIO,
    LF_MIN_SIDE,
    llamafactory_preprocessed_size,
    smart_resize,
)


def training_template(model_dir: str | Path | None, family: str | Family) -> tuple[str, Path | None]:
    """(LLaMA-Factory template, the file that made it the thinking one or None) for a checkpoint."""
    return get_family(family).training_template(model_dir)


def training_resized_size(
    width: int,
    height: int,
    image_max_pixels: int,
    image_min_pixels: int,
    family: str | Family,
    processor_min_pixels: int | None = None,
    processor_max_pixels: int | None = None,
) -> tuple[int, int]:
    """(w, h) of an image as LLaMA-Factory 0.9.5 feeds it to the model in training (Family.canvas).
    Example (issue 15): 1024x768 under 401408 -> 731x548 -> 728x560 for Qwen2.5-VL."""
    fam = get_family(family)
    lo = fam.processor_min_pixels if processor_min_pixels is None else processor_min_pixels
    hi = fam.processor_max_pixels if processor_max_pixels is None else processor_max_pixels
    return fam.canvas(width, height, image_max_pixels, image_min_pixels, (lo, hi))


def box_to_family(box, family: str | Family, resized_size=None, *, source: str = "grid"):
    """A box in the family's own numbers (Family.box_to_family)."""
    return get_family(family).box_to_family(box, resized_size, source=source)


def family_box_to_unit(values, family: str | Family, resized_size=None):
    """The family's numbers -> 0-1 fractions of the image (Family.box_to_unit)."""
    return get_family(family).box_to_unit(values, resized_size)


def format_answer(label: str | None, box, family: str | Family) -> str:
    return get_family(family).format_answer(label, box)


def format_answers(objects: Iterable[tuple[str | None, Sequence[int]]], family: str | Family) -> str:
    return get_family(family).format_answers(objects)


def parse_answer(text, family: str | Family, *, opened_think: bool = False) -> ParsedAnswer | None:
    """The first box of a model answer in the family's form, or None (Family.parse_answer)."""
    return get_family(family).parse_answer(text, opened_think=opened_think)


def recipe_overrides(recipe: dict, family: str | Family, template: str | None = None) -> list[str]:
    return get_family(family).recipe_overrides(recipe, template)


__all__ = [
    "BOX_TOKENS",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "FAMILY_CHOICES",
    "GRID1000",
    "JSON_BBOX",
    "LF_CUT_RATIO",
    "LF_MAX_RATIO",
    "LF_MIN_SIDE",
    "MAX_ANSWER_CHARS",
    "REF_BOX",
    "RESIZED_PIXELS",
    "DataFamilyError",
    "DataFormats",
    "Family",
    "JsonFamily",
    "ParsedAnswer",
    "UnknownFamilyError",
    "after_think",
    "box_to_family",
    "chat_templates",
    "check_data_family",
    "data_box_formats",
    "detect_family",
    "family_box_to_unit",
    "family_for_model_type",
    "format_answer",
    "format_answers",
    "get_family",
    "is_thinking_checkpoint",
    "llamafactory_preprocessed_size",
    "parse_answer",
    "processor_pixel_range",
    "recipe_overrides",
    "resolve_family",
    "smart_resize",
    "training_resized_size",
    "training_template",
]
