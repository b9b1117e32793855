"""Table 12 as data: the stage mixtures' categories, shares and default sizes, from a YAML file.

Why: the composition used to be Python constants beside the stage table; now a user changing a
share or a stage's size edits `recipes/mixtures.yaml`, and the mixture builder, the converters'
`--<stage>-total` defaults and the pipeline's up-to-date stamps all read the same checked values.
The file names categories, never sources: which category a source feeds is its entry in the
sources table (converters/sources.py). Every problem is named with the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.stages import mixture_stages
from core.yamlfile import YAMLFileError, read_yaml

from . import sources as source_table

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "recipes" / "mixtures.yaml"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_BYTES = 1 << 20  # a composition is a few hundred bytes; anything this big is not one


class CompositionError(ValueError):
    """The mixtures file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class StageMix:
    total: int  # the default number of examples
    shares: dict[str, int]  # category -> whole percent of the total, in file order


@dataclass(frozen=True)
class Composition:
    path: Path
    categories: dict[str, str]  # name -> description
    stages: dict[str, StageMix]  # in stages.py's training order

    def sources(self, category: str) -> tuple[str, ...]:
        """The sources (of the sources table) that feed `category`."""
        return source_table.sources_by_category().get(category, ())

    @property
    def totals(self) -> dict[str, int]:
        return {stage: mix.total for stage, mix in self.stages.items()}

    def stamp(self) -> dict[str, Any]:
        """What a built mixture depends on (the pipeline's up-to-date check)."""
        return {
            stage: {c: [pct, list(self.sources(c))] for c, pct in mix.shares.items()}
            for stage, mix in self.stages.items()
        }


def _mapping(value: Any, where: str, path: Path) -> dict:
    if not isinstance(value, dict):
        kind = "nothing" if value is None else f"a {type(value).__name__}"
        raise CompositionError(f"{path}: {where}: expected a mapping, found {kind}")
    return value


def _only_keys(value: dict, allowed: tuple[str, ...], where: str, path: Path) -> None:
    for key in value:
        if key not in allowed:
            raise CompositionError(f"{path}: {where}{key!s:.60}: unknown key (expected {', '.join(allowed)})")


def _whole(value: Any, where: str, path: Path, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CompositionError(f"{path}: {where}: {value!r:.60} is not a whole number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise CompositionError(f"{path}: {where}: {value} is not {bound}")
    return value


def parse_composition(data: Any, path: Path) -> Composition:
    """Check a loaded mixtures file against stages.py and the sources table."""
    top = _mapping(data, "the file", path)
    _only_keys(top, ("categories", "stages"), "", path)
    categories: dict[str, str] = {}
    for name, description in _mapping(top.get("categories"), "categories", path).items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CompositionError(f"{path}: categories: {name!r:.60} is not a category name ([a-z0-9_])")
        if description is not None and not isinstance(description, str):
            raise CompositionError(f"{path}: categories.{name}: the description must be text")
        categories[name] = description or ""

    wanted = list(mixture_stages())
    raw_stages = _mapping(top.get("stages"), "stages", path)
    for stage in raw_stages:
        if stage not in wanted:
            raise CompositionError(
                f"{path}: stages.{stage!s:.60}: not a stage that stages.py trains on a mixture "
                f"(those are: {', '.join(wanted)})"
            )
    by_category = source_table.sources_by_category()
    stages: dict[str, StageMix] = {}
    for stage in wanted:
        if stage not in raw_stages:
            raise CompositionError(
                f"{path}: stages: no entry for {stage}, which stages.py trains on a mixture"
            )
        where = f"stages.{stage}"
        body = _mapping(raw_stages[stage], where, path)
        _only_keys(body, ("total", "shares"), f"{where}.", path)
        total = _whole(body.get("total"), f"{where}.total", path, 1)
        shares: dict[str, int] = {}
        for category, pct in _mapping(body.get("shares"), f"{where}.shares", path).items():
            key = f"{where}.shares.{category!s:.60}"
            if category not in categories:
                raise CompositionError(
                    f"{path}: {key}: unknown category (declared: {', '.join(categories) or 'none'})"
                )
            if not by_category.get(category):
                raise CompositionError(
                    f"{path}: {key}: no source in the sources table (converters/sources.py) feeds it"
                )
            shares[category] = _whole(pct, key, path, 1, 100)
        if sum(shares.values()) != 100:
            raise CompositionError(
                f"{path}: {where}.shares: sum to {sum(shares.values())}, not 100 (percent)"
            )
        stages[stage] = StageMix(total, shares)

    for category, names in by_category.items():
        if category not in categories:
            raise CompositionError(
                f"{path}: categories: no {category!r}, which source {names[0]!r} "
                "(converters/sources.py) feeds; declare it or change that source's category"
            )
    return Composition(path, categories, stages)


def load_composition(path: str | Path | None = None) -> Composition:
    """Read and check a mixtures file (default: recipes/mixtures.yaml); CompositionError if unusable."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = read_yaml(path, max_bytes=MAX_BYTES)
    except YAMLFileError as err:
        raise CompositionError(str(err)) from None
    return parse_composition(data, path)
