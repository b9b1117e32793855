"""`--answer-style mgthinker`: the trajectory-SFT and RL sets in MG-Thinker's answer form.

Why: MG-Thinker (76.71 on MIG-Bench, issue 22) answers every question, one target or several, with
`<think>reasoning</think><answer>[{"image_id": k, "bbox_2d": [x1, y1, x2, y2], "label": ...}]</answer>`:
image ids 1-based, boxes in the base model's own numbers (Qwen2-VL / Qwen3-VL: the 0-1000 grid,
Qwen2.5-VL: pixels of the image as training resizes it, families.box_to_family), and its reasoning
never holds a box (its teacher wrote the reasoning with the answer only as a check). The multi-target
MGrounding turns (a common object boxed in three images, a group's several regions) stay one sample
with all their boxes, which `rl rewards --profile mgthinker` aligns one-to-one. MIRG-RL's style
(trajectories.py) instead narrows such a turn into one single-target sample per box.

The reasoning here is written from the record's own annotations (which image, which object, and the
question's marked object), in words only; a teacher-model writer can replace it (`datagen
trajectories`) and is checked the same way: no box, no tag, no special token inside `<think>`.
"""

from __future__ import annotations

import json
import re
from random import Random

from core.grounding import BOX_TOKENS_RE, OBJECT_ID_RE

from .boxformat import BoxFormat, _family_box, _Sizes, rewrite_trajectory_turn
from .records import Rejected
from .trajectories import (
    TASKS,
    AnswerStyle,
    GroundedObject,
    Item,
    _cap,
    boxes_in,
    image_phrase,
)

# The think prompt with MG-Thinker's answer form spelled out (the eval's think-json prompt reads the same).
PROMPT_SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the answer in "
    '<answer> </answer> tags as a JSON list of objects {"image_id": the number of the image counting '
    'from 1, "bbox_2d": [x1, y1, x2, y2], "label": the object\'s name}.'
)
MAX_THINK_CHARS = 2000
_FORBIDDEN = ("<think>", "</think>", "<answer>", "</answer>", "<|", "<bbox_id>", "bbox_2d")
_NUMBER_RUN = re.compile(r"\d+(?:\.\d+)?(?:\s*[,;]\s*\d+(?:\.\d+)?){3}")  # four numbers in a row: a box
_PAIR = re.compile(r"\(\s*\d+\s*,\s*\d+\s*\)")  # (x,y), half of a Qwen2-VL box


def _images_phrase(images: list[int]) -> str:
    names = [image_phrase(i) for i in images]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class PlainWriter:
    """The reasoning in words, chosen by `rng` from fixed phrasings: the question's marked objects, then
    where the targets are (no box: MG-Thinker keeps boxes out of `<think>`)."""

    CONTEXT = (
        "The question marks {name} in {img}.",
        "The reference is {name} in {img}.",
        "{Img} shows the given object, {name}.",
    )
    ONE = (
        "The question points to {img}, where I find {name}.",
        "Looking at {img}, the target is {name}.",
        "In {img}, {name} matches the question.",
        "Searching {img}, I locate {name}.",
    )
    SEVERAL = (
        "{Name} appears in {imgs}.",
        "I find {name} in {imgs}.",
        "Looking through the images, {name} is in {imgs}.",
    )
    COUNT = ("", " That makes {n} boxes.", " So the answer lists {n} boxes.")

    def think(self, item: Item, rng: Random) -> str:
        parts = [
            rng.choice(self.CONTEXT).format(
                name=c.name, img=image_phrase(c.image), Img=_cap(image_phrase(c.image))
            )
            for c in item.context
        ]
        targets = item.all_targets
        by_name: dict[str, list[int]] = {}
        for t in targets:
            by_name.setdefault(t.name, [])
            if t.image not in by_name[t.name]:
                by_name[t.name].append(t.image)
        for name, images in by_name.items():
            if len(images) == 1:
                parts.append(rng.choice(self.ONE).format(name=name, img=image_phrase(images[0])))
            else:
                parts.append(
                    rng.choice(self.SEVERAL).format(name=name, Name=_cap(name), imgs=_images_phrase(images))
                )
        if len(targets) > 1:
            parts[-1] += rng.choice(self.COUNT).format(n=len(targets))
        return " ".join(parts)


class CompactPlainWriter(PlainWriter):
    """One phrasing per case (what `make demo`'s 2-layer model learns quickly)."""

    CONTEXT = ("The reference is {name} in {img}.",)
    ONE = ("Looking at {img}, the target is {name}.",)
    SEVERAL = ("{Name} appears in {imgs}.",)
    COUNT = ("",)


WRITERS: dict[str, type] = {"template": PlainWriter, "compact": CompactPlainWriter}


def check_think(think: str, item: Item) -> str:
    """The reasoning, or Rejected("bad_trajectory"): non-empty, bounded, no tag, token, box or id."""

    def bad(detail: str) -> Rejected:
        return Rejected("bad_trajectory", f"{item.sample_id}: {detail}")

    if not isinstance(think, str) or not think.strip():
        raise bad("empty reasoning")
    if len(think) > MAX_THINK_CHARS:
        raise bad(f"reasoning of {len(think)} characters (at most {MAX_THINK_CHARS})")
    for tag in _FORBIDDEN:
        if tag in think:
            raise bad(f"{tag} inside the reasoning")
    if BOX_TOKENS_RE.search(think) or _NUMBER_RUN.search(think) or _PAIR.search(think):
        raise bad("a box inside the reasoning (MG-Thinker keeps boxes in the answer)")
    if OBJECT_ID_RE.search(think):
        raise bad("an [N-M] object id inside the reasoning")
    return think


def answer_objects(item: Item, box_format: BoxFormat | None) -> list[dict]:
    """Every target as {"image_id", "bbox_2d" (the family's numbers), "label"}, in the answer's order."""
    sizes = None
    if box_format is not None and box_format.needs_sizes:
        sizes = _Sizes(box_format, item.images).sizes
    out = []
    for k, t in enumerate(item.all_targets, start=1):
        box = list(t.box)
        if box_format is not None and not box_format.is_default:
            size = sizes[t.image - 1] if sizes is not None else None
            box = list(_family_box(box_format, t.box, size, f"{item.sample_id} target {k}"))
        out.append({"image_id": t.image, "bbox_2d": box, "label": t.name})
    return out


def answer_text(item: Item, box_format: BoxFormat | None) -> str:
    return "<answer>" + json.dumps(answer_objects(item, box_format), ensure_ascii=False) + "</answer>"


def _human(item: Item, box_format: BoxFormat | None) -> dict:
    """The question (its own boxes in the family's form) with the JSON think prompt."""
    value = item.prompt
    if box_format is not None and not box_format.is_default:
        context = [b.image for b in boxes_in(value)]
        value = rewrite_trajectory_turn(value, box_format, item.images, context)
    return {"from": "human", "value": value + PROMPT_SUFFIX}


def _record(item: Item, box_format: BoxFormat | None, answer: str) -> dict:
    return {
        "id": item.sample_id,
        "type": item.type,
        "images": list(item.images),
        "conversations": [_human(item, box_format), {"from": "gpt", "value": answer}],
    }


def sft_record(item: Item, writer, seed: int, box_format: BoxFormat | None = None) -> dict:
    think = check_think(writer.think(item, Random(f"{seed}|{item.sample_id}")), item)
    return _record(item, box_format, f"<think>{think}</think>{answer_text(item, box_format)}")


def _target(obj: GroundedObject) -> dict:
    return {"image_index": obj.image, "box": list(obj.box)}


def rl_record(item: Item, box_format: BoxFormat | None = None) -> dict:
    """`targets` on the 0-1000 grid (the convention-free truth `rl rewards --profile mgthinker` reads),
    the first of them also as `image_index` + `box` (what single-target readers take); another family
    adds `box_format`, each target's `family_box` and, for Qwen2.5-VL, every image's `resized_sizes`."""
    objects = answer_objects(item, box_format)
    targets = [_target(t) for t in item.all_targets]
    if box_format is not None and not box_format.is_default:
        for target, obj in zip(targets, objects, strict=True):
            target["family_box"] = obj["bbox_2d"]
    record = {
        **_record(item, box_format, answer_text(item, box_format)),
        "task": TASKS[item.dataset][0],
        "answer_style": STYLE.name,
        "targets": targets,
        "image_index": item.target.image,
        "box": list(item.target.box),
        "num_images": item.num_images,
    }
    if box_format is not None and not box_format.is_default:
        record["box_format"] = box_format.family.name
        record["family_box"] = objects[0]["bbox_2d"]
        if box_format.needs_sizes:
            record["resized_sizes"] = [list(s) for s in _Sizes(box_format, item.images).sizes]
    return record


STYLE = AnswerStyle("mgthinker", sft_record, rl_record, multi_target=True, writers=WRITERS)
