"""Prompt construction: the images in order, then the question with a format suffix.

Why named suffixes: the published numbers came from the paper repository's
script, whose suffix repeats `<|box_start|>` and misspells "addtional"; later
released outputs show `<|box_end|>`. Which one is used changes what the model
sees, so it is an explicit, recorded option rather than a silent choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import families
from eval import tasks

FORMAT_SUFFIXES: dict[str, str] = {
    # MIG_bench_eval.py in the paper's repository (default: what produced Table 1).
    "script": "Format:<|box_start|>(x1,y1),(x2,y2)<|box_start|>. Don't generate addtional words.",
    # The same with the closing token, as in later released outputs.
    "released": "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words.",
    # The paper appendix's "Format Prompt".
    "paper": " Format: <|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate additional words.",
    # UniVG-R1's question template for reasoning (RL) models: think, then the box in <answer> tags.
    # Score such runs with --answer-format think and give them --max-new-tokens 256, as UniVG-R1 does.
    "think": " First output the thinking process in <think> </think> tags and then output the bounding box "
    "in <answer> </answer> tags.",
    "none": "",
}
# Each JSON family's native grounding request (families/: Qwen2.5-VL's cookbook, Qwen3-VL's report
# App. B.5), named after the family: the default suffix of a run whose model is of that family.
# Qwen2-VL has none here: its runs keep the benchmark's own default (MIG-Bench: "script") byte for byte.
for _fam in families.FAMILIES.values():
    if _fam.default_suffix is not None:
        FORMAT_SUFFIXES[_fam.default_suffix] = _fam.grounding_suffix
DEFAULT_SUFFIX = "script"
FORMAT_WHEN = ("always", "need_format")


@dataclass
class Prompt:
    """One generation request: image files (in order) and the user text after them."""

    images: list[str]
    text: str
    meta: dict = field(default_factory=dict)


def family_suffix(family) -> str | None:
    """The FORMAT_SUFFIXES name a family's runs use by default (None: the benchmark's own default)."""
    fam = families.get_family(family)
    return fam.default_suffix


def suffix_text(name: str) -> str:
    if name not in FORMAT_SUFFIXES:
        raise ValueError(f"unknown format suffix {name!r}; choose from {sorted(FORMAT_SUFFIXES)}")
    return FORMAT_SUFFIXES[name]


def with_suffix(question: str, suffix: str, need_format: bool = True, when: str = "always") -> str:
    """Append the suffix directly (no separator), as the paper's script does.

    A suffix that brings its own leading space (paper, think) replaces the question's trailing
    whitespace, so "...image. " + " First output..." has one space, as the trajectory and RL sets
    are written (converters/trajectories.py): the prompt a model is scored on is the one it learnt.
    """
    if when == "need_format" and not need_format:
        return question
    if suffix[:1].isspace():
        question = question.rstrip()
    return question + suffix


def direct_prompt(inst, suffix: str, when: str = "always") -> Prompt:
    """The paper's direct protocol: all images, question + suffix."""
    return Prompt(list(inst.image_paths), with_suffix(inst.question, suffix, inst.need_format, when))


def cot_step1_prompt(inst) -> Prompt:
    """CoT step 1: the task's describe prompt over all images."""
    return Prompt(
        list(inst.image_paths), tasks.describe_prompt(inst.task, inst.question, len(inst.image_paths))
    )


def cot_step2_prompt(inst, step1: str, suffix: str, mode: str) -> Prompt:
    """CoT step 2: the target image alone (cot) or all images with a pointer to it (mcot)."""
    target = tasks.cot_target(inst.task, inst.question, len(inst.image_paths), step1)
    text = tasks.ground_prompt(inst.task, inst.question, step1) + suffix
    if mode == "cot":
        return Prompt([inst.image_paths[target]], text, {"target_image": target})
    if mode == "mcot":
        lead = f"Now only look at the {tasks.ORDINALS[target]} image. "
        return Prompt(list(inst.image_paths), lead + text, {"target_image": target})
    raise ValueError(f"unknown CoT mode {mode!r}")
