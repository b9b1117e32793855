"""The per-image pixel budget a checkpoint was trained with, recorded beside its weights.

Why: the image a model sees must be the same size in SFT, GRPO and eval (families.resize), and eval
cannot know the training budget from the weights. Every stage that writes a checkpoint records it
(`image_budget.json`: LLaMA-Factory stages through `python -m families record-budget` with the same
recipe and overrides, GRPO in rl.train, merge_tool copies it from the first model); `eval run` feeds
that budget by default. `--pixel-budget paper` is the paper's protocol (the processor's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import families.checkpoint as checkpoint
from families.base import Family

# LLaMA-Factory 0.9.5's ModelArguments defaults, what a recipe without the keys trains with.
LF_DEFAULT_MAX_PIXELS, LF_DEFAULT_MIN_PIXELS = 768 * 768, 32 * 32
PAPER = "paper"


@dataclass(frozen=True)
class ImageBudget:
    """The pre-shrink an image gets before the processor (None: none, the processor's default alone)."""

    max_pixels: int | None
    min_pixels: int | None
    source: str  # where it came from, for run.json and results.md

    @property
    def is_paper(self) -> bool:
        return self.max_pixels is None

    def describe(self) -> str:
        if self.is_paper:
            return f"paper protocol: the processor's default, no pre-shrink ({self.source})"
        return f"image_max_pixels {self.max_pixels}, image_min_pixels {self.min_pixels} ({self.source})"


def training_budget(settings: dict) -> tuple[int, int]:
    """(image_max_pixels, image_min_pixels) a LLaMA-Factory run with these settings uses."""
    hi = settings.get("image_max_pixels", LF_DEFAULT_MAX_PIXELS)
    lo = settings.get("image_min_pixels", LF_DEFAULT_MIN_PIXELS)
    for key, value in (("image_max_pixels", hi), ("image_min_pixels", lo)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return hi, lo


def eval_budget(choice: str | None, family: Family, model_dir: str | Path | None) -> ImageBudget:
    """The budget `eval run` feeds (and GRPO, unless its recipe sets one): `--pixel-budget paper`,
    `--pixel-budget N`, else the checkpoint's record, else the family's training default (what the pack's
    recipes train it with)."""
    if choice == PAPER:
        return ImageBudget(None, None, "--pixel-budget paper")
    if choice is not None:
        try:
            hi = int(choice)
        except ValueError:
            raise ValueError(
                f"--pixel-budget must be 'paper' or a number of pixels, got {choice!r}"
            ) from None
        if hi <= 0:
            raise ValueError(f"--pixel-budget must be positive, got {choice!r}")
        return ImageBudget(hi, min(family.image_min_pixels, hi), f"--pixel-budget {hi}")
    if model_dir is not None and Path(model_dir).is_dir():
        recorded = checkpoint.read_budget(model_dir)
        if recorded is not None:
            # the file's name, not its path: two checkpoints trained alike state the same budget (eval diff)
            return ImageBudget(
                recorded[0], recorded[1], f"recorded in the checkpoint's {checkpoint.BUDGET_FILE}"
            )
    return ImageBudget(
        family.image_max_pixels, family.image_min_pixels, f"{family.display}'s training default (no record)"
    )
