"""MIG-Bench's ten tasks: names, Table 1 column order, groups and the CoT prompts.

Why one table: the report's columns, the group averages, the chain-of-thought
prompts and the target-image rules must all agree on the same task list. The
CoT prompts are the appendix's "Prompt Template for Single-Image CoT" of the
Migician paper, with the Qwen2-VL special tokens the model was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str  # the `task` value in MIG_data.json
    short: str  # Table 1 column header
    group: str  # "spontaneous" or "referential"


# Table 1 column order.
TASKS: tuple[Task, ...] = (
    Task("diff", "Static", "spontaneous"),
    Task("view_diff", "Robust", "spontaneous"),
    Task("common_object", "Common", "spontaneous"),
    Task("object_tracking", "OT", "referential"),
    Task("multi_view", "MV", "referential"),
    Task("region", "Region", "referential"),
    Task("refer_grounding", "Refer", "referential"),
    Task("group_grounding", "GG", "referential"),
    Task("reasoning", "Reason", "referential"),
    Task("correspondence", "Co-Re", "referential"),
)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}
GROUPS: tuple[str, ...] = ("spontaneous", "referential")

# Tasks whose answer box lies in a fixed image (0-based).
_FIXED_TARGET = {
    "diff": 1,
    "view_diff": 1,
    "correspondence": 1,
    "reasoning": 1,
    "refer_grounding": 1,
    "region": 0,
}
# Tasks whose question names the target image ("... in the 3th image").
_NAMED_IN_QUESTION = ("multi_view", "object_tracking", "common_object")

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")

# Step 1 ("describe") and step 2 ("ground") prompts of the appendix. [RESPONSE]
# is step 1's answer; [N] a picture number; [BOX] the marked box of the question.
DESCRIBE = {
    "diff": "Compare these two images carefully and tell me where does they differ. "
    "Please answer briefly in single phrase or words.",
    "view_diff": "Compare these two images carefully and describe the prominent different object "
    "with really simple words or phrase.",
    "refer_grounding": "Watch carefully and briefly describe the object in the Image-1.",
    "common_object": "These images share one object in common. Recognize it and tell me its name "
    "in single phrase or words.",
    "region": "Describe the content of the [N]th picture with simple phrase or words.",
    "multi_view": "Describe the object in the first image marked with red bounding box[BOX] with simple "
    "phrase or word. You can refer to other images for more precise recognition and description.",
    "object_tracking": "Describe the object in the first image marked with red bounding box with simple phrase.",
    "group_grounding": "[QUESTION] Just recognize and tell me which image is it in. Answer from: [CHOICES].",
    "reasoning": "[QUESTION] Name this object in the Image-2 with simple phrase.",
    "correspondence": "For the first image, describe the semantic/functional feature of the area marked "
    "by the red bounding box[BOX].",
}
GROUND = {
    "diff": "According to the object difference/change: [RESPONSE], please ground this difference with "
    "bounding box coordinates.",
    "view_diff": 'Now ground the object difference/change : "[RESPONSE]" with bounding box coordinates.',
    "refer_grounding": "Please find and ground the object <|object_ref_start|>[RESPONSE]<|object_ref_end|> "
    "with bounding box coordinates.",
    "common_object": "Please locate and ground the target object according to the reference: "
    "<|object_ref_start|>[RESPONSE]<|object_ref_end|>",
    "region": "Please ground the object <|object_ref_start|>[RESPONSE]<|object_ref_end|> with bounding box "
    "coordinates.",
    "multi_view": "Locate and ground the object <|object_ref_start|>[RESPONSE]<|object_ref_end|> with "
    "bounding box coordinates.",
    "object_tracking": "Now ground the target moving object [RESPONSE] with bounding box coordinates.",
    "group_grounding": "[QUESTION]",
    "reasoning": "Please locate and ground the object <|object_ref_start|>[RESPONSE]<|object_ref_end|> with "
    "bounding box coordinates.",
    "correspondence": "Ground the area that shares the same semantic or functional meaning of: [RESPONSE].",
}

_BOX_IN_TEXT = re.compile(
    r"<\|box_start\|>\s*\(\s*\d+\s*,\s*\d+\s*\)\s*,\s*\(\s*\d+\s*,\s*\d+\s*\)\s*<\|box_end\|>"
)
# The reasoning questions end with this sentence; step 1 asks to name the object instead.
_REASONING_TAIL = "Find it and locate it in the second image."


def image_index_named(text: str) -> int | None:
    """0-based index of the first image `text` names ("second", "Image-2", "Image 2", "2th"), else None.

    Same keyword families and the same precedence (lowest index first) as the
    paper's `get_image_index`, matched case-insensitively on word boundaries.
    """
    for idx, word in enumerate(ORDINALS):
        n = idx + 1
        pattern = rf"\b(?:{word}|image[-\s]?{n}|{n}(?:th|st|nd|rd))\b"
        if re.search(pattern, text, flags=re.IGNORECASE):
            return idx
    return None


def target_image(task: str, question: str, n_images: int, hint: str = "") -> int | None:
    """0-based index of the image the answer box refers to, or None if it cannot be told.

    `hint` is text naming the image for group grounding: the bench's
    additional_info when scoring, step 1's answer in the chain of thought.
    """
    if task in _FIXED_TARGET:
        idx = _FIXED_TARGET[task]
    elif task in _NAMED_IN_QUESTION:
        # "the object marked ... in the first image": drop "first" as the paper's script does.
        idx = image_index_named(re.sub(r"\bfirst\b", "", question, flags=re.IGNORECASE))
    elif task == "group_grounding":
        idx = image_index_named(hint) if hint else None
    else:
        return None
    if idx is None or idx >= n_images:
        return None
    return idx


def describe_prompt(task: str, question: str, n_images: int) -> str:
    """CoT step 1: the task's describe prompt (asked over all images)."""
    text = DESCRIBE[task]
    box = _BOX_IN_TEXT.search(question)
    text = text.replace("[BOX]", f"({box.group(0)})" if box else "")
    if task == "region":
        # "locate the 2th region picture": the 2nd region is the 3rd picture.
        named = image_index_named(question)
        text = text.replace("[N]", str((named if named is not None else 0) + 2))
    if task == "reasoning":
        text = text.replace("[QUESTION]", question.replace(_REASONING_TAIL, "").strip())
    if task == "group_grounding":
        choices = " | ".join(f"Image{i + 1}" for i in range(n_images))
        text = text.replace("[QUESTION]", question.strip()).replace("[CHOICES]", choices)
    return text


def ground_prompt(task: str, question: str, step1: str) -> str:
    """CoT step 2: ground step 1's answer (the format suffix is added by the caller)."""
    answer = step1.strip().strip(".").strip()
    return GROUND[task].replace("[RESPONSE]", answer).replace("[QUESTION]", question.strip())


def cot_target(task: str, question: str, n_images: int, step1: str) -> int:
    """Image grounded in CoT step 2; for group grounding the one step 1 names, else the first."""
    idx = target_image(task, question, n_images, hint=step1)
    return 0 if idx is None else idx
