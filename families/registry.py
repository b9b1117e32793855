"""The families table (name -> Family) and how a checkpoint finds its family.

Why one table: a new family is one module plus one line here; every --family choice, every detection
and every `families show` reads this table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import families.checkpoint as checkpoint
from families.base import Family
from families.internvl import InternVL
from families.qwen2_5_vl import Qwen25VL
from families.qwen2_vl import Qwen2VL
from families.qwen3_5 import Qwen35
from families.qwen3_vl import Qwen3VL

log = logging.getLogger(__name__)

FAMILIES: dict[str, Family] = {
    fam.name: fam for fam in (Qwen2VL(), Qwen25VL(), Qwen3VL(), Qwen35(), InternVL())
}
FAMILY_CHOICES = tuple(FAMILIES)
DEFAULT_FAMILY = "qwen2-vl"


class UnknownFamilyError(ValueError):
    """A checkpoint or a --family value that is none of the known families."""


def get_family(family: str | Family) -> Family:
    """The table entry for a --family value (or a Family, returned as is)."""
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise UnknownFamilyError(
            f"unknown model family {family!r}; choose from {', '.join(FAMILY_CHOICES)}"
        ) from None


def family_for_config(config: dict) -> Family | None:
    for fam in FAMILIES.values():
        if fam.matches(config):
            return fam
    return None


def family_for_model_type(model_type: str) -> Family | None:
    return family_for_config({"model_type": model_type})


def detect_family(model_dir: str | Path) -> Family:
    """The family of a checkpoint folder, from its config.json (a --family override is the caller's)."""
    path = Path(model_dir) / "config.json"
    try:
        config = checkpoint.read_config(model_dir)
    except checkpoint.CheckpointError as err:
        raise UnknownFamilyError(f"cannot detect the model family: {err}") from None
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UnknownFamilyError(
            f"{path} has no string `model_type`; pass --family ({', '.join(FAMILY_CHOICES)})"
        )
    fam = family_for_config(config)
    if fam is None:
        known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
        raise UnknownFamilyError(
            f"{path}: model_type {model_type!r} is not a known family (known: {known}); "
            f"pass --family ({', '.join(FAMILY_CHOICES)}) if it follows one of them"
        )
    log.debug("%s: model_type %s -> family %s", path, model_type, fam.name)
    return fam


def resolve_family(model: str | Path, forced: str | None = None, default: str | None = None) -> Family:
    """The family to train `model` as: `forced` (FAMILY=) if given, else its config.json's `model_type`.

    `model` is a checkpoint folder, or a Hub id whose config.json is in the local Hugging Face cache
    (nothing is downloaded). `default` is taken only when neither exists (the Makefile passes it for its
    own default BASE_MODEL, whose family it knows); otherwise UnknownFamilyError says to pass FAMILY=.
    """
    if forced:
        return get_family(forced)
    folder = Path(model)
    if (folder / "config.json").is_file():
        return detect_family(folder)
    cached = None
    if not folder.exists() and str(model).count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except Exception as err:  # an id huggingface_hub refuses: treated as not cached
            log.debug("%s: not looked up in the Hugging Face cache: %s", model, err)
    if isinstance(cached, str):
        return detect_family(Path(cached).parent)
    if default:
        return get_family(default)
    raise UnknownFamilyError(
        f"cannot detect the model family of {model}: no {folder / 'config.json'} (and not in the Hugging "
        f"Face cache); pass FAMILY= ({', '.join(FAMILY_CHOICES)})"
    )
