"""`python -m converters trajectories`: MIRG-RL's trajectory-SFT set and its disjoint RL set.

Why: MIRG-RL (Sec. 2.2) cold-starts GRPO with ~10k reasoning trajectories in which every object the
reasoning names carries its image and box (`<bbox_id>[N-M]</bbox_id><|object_ref_start|>obj
<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`), then runs RL on ~7k other samples that
hold only the final answer. It had GPT-4o and Qwen2-VL-72B write the reasoning; here it is built
deterministically from each record's own annotations through a pluggable `TrajectoryWriter` (the
template writer is the default; a teacher model can replace it), and every trajectory is parsed back
and checked against the annotations before it is written, whoever wrote it.

Inputs are the converted MGrounding ShareGPT files of MIRG-RL's seven tasks: the six stage-1 tasks
plus `mg_free_form`, MGrounding's reasoning-style free-form part, which stands in for MIRG-RL's
"reasoning" task. Every sample has one question and one ground-truth target (image, box): a
multi-turn record gives one sample per turn, an answer with boxes in several images one sample per
(image, box), its question narrowed with " Locate it in the <ordinal> image.". Records are drawn
round-robin over the tasks (each task in its own seeded order), so both sets cover the tasks
evenly; the SFT set is filled first, then the RL set, and no source record contributes to both.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Protocol

from tqdm import tqdm

from core.atomicio import ensure_distinct_paths
from core.grounding import (
    BBOX_ID_END,
    BBOX_ID_START,
    BOX_START,
    BOX_TOKENS_RE,
    FORMAT_INSTRUCTION_RE,
    OBJECT_ID_RE,
    ORDINALS,
    REF_END,
    REF_START,
    box_tokens,
    object_id,
    on_grid,
    ref_tokens,
)
from core.streaming import InvalidJSONError, RecordWriter, decode_json_line, index_record_lines
from families import provenance

from .boxformat import rewrite_trajectory_turn, target_fields
from .locate import (  # noqa: F401 - part of this module's API
    _SPECIAL,
    REF_SPAN_RE,
    BoxAt,
    Located,
    boxes_in,
    locate,
    named_image,
)
from .records import REASONS as RECORD_REASONS
from .records import Rejected, check_record

log = logging.getLogger(__name__)

VERSION = 1  # bump when the output changes, so `converters all` rebuilds the sets
NAME = "mg_trajectories"
SFT_NAME, RL_NAME = "mg_traj_sft", "mg_rl"
DEFAULT_SIZES = {"sft": 10_000, "rl": 7_000}
# UniVG-R1's suffix, exactly.
PROMPT_SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the bounding box in "
    "<answer> </answer> tags."
)
# converted dataset -> (MIG-Bench task name written to RL records, generic name for an unnamed target)
TASKS: dict[str, tuple[str, str]] = {
    "mg_common": ("common_object", "the common object"),
    "mg_diff": ("diff", "the changed region"),
    "mg_free_form": ("reasoning", "the target object"),
    "mg_group_grounding": ("group_grounding", "the described region"),
    "mg_object_tracking": ("object_tracking", "the tracked object"),
    "mg_referring": ("refer_grounding", "the referred object"),
    "mg_region": ("region", "the cropped region"),
}
CONTEXT_NAME = "the marked object"

MAX_BAD_LINES = 100  # per task file, as `converters mix`: more means it is not a converters output

REASONS = {
    **RECORD_REASONS,
    "missing_image": "an image path that is not absolute or does not exist",
    "no_target": "no answer box in any turn",
    "no_target_image": "an answer box whose image cannot be told from the text around it",
    "image_out_of_range": "a box said to be in an image the record does not have",
    "several_targets_in_one_image": "an answer with several boxes in one image (no single target)",
    "reserved_tag": "a turn already holding <think>, <answer> or <bbox_id> tags (they are ours to write)",
    "bad_object_name": "an object name holding special tokens, or longer than 200 characters",
    "duplicate_id": "a record id already used by another record",
    "bad_trajectory": "the writer's trajectory does not match the record's annotations",
}


# --- samples and their trajectories ---------------------------------------------------------------
@dataclass(frozen=True)
class GroundedObject:
    image: int  # 1-based
    box: tuple[int, int, int, int]  # 0-1000 grid
    name: str


@dataclass(frozen=True)
class Item:
    """One single-target sample before its reasoning is written."""

    sample_id: str
    source_id: str
    dataset: str  # converted file it came from (mg_common, ...)
    type: str
    images: tuple[str, ...]
    prompt: str  # the human turn: placeholders + question (+ narrowing sentence), without the suffix
    question: str  # the question alone (no placeholders), for writers
    target: GroundedObject
    context: tuple[GroundedObject, ...]  # objects the question itself boxes, in order
    narrowed: bool  # the prompt was narrowed to one image of a multi-image answer
    # Every answer box of the turn, in the answer's order, when the item keeps them together
    # (record_items(multi_target=True), the mgthinker answer style); empty for single-target items.
    targets: tuple[GroundedObject, ...] = ()

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def all_targets(self) -> tuple[GroundedObject, ...]:
        return self.targets or (self.target,)


def image_phrase(image: int) -> str:
    return f"the {ORDINALS[image - 1]} image" if image <= len(ORDINALS) else f"image {image}"


def reference_id(item: Item) -> str:
    """The target's `[N-M]` when the question's objects are mentioned first (the template's order)."""
    return object_id(item.target.image, 1 + sum(c.image == item.target.image for c in item.context))


def full_mention(obj: GroundedObject, oid: str) -> str:
    return f"{BBOX_ID_START}{oid}{BBOX_ID_END}{ref_tokens(obj.name)}{box_tokens(obj.box)}"


class TrajectoryWriter(Protocol):
    """Writes the text inside <think></think> for one item (a teacher model can implement this)."""

    def think(self, item: Item, rng: Random) -> str: ...


class TemplateWriter:
    """One or two sentences from fixed phrasings, chosen by `rng`: the question's objects, then the target."""

    CONTEXT = (
        "The question marks {obj} in {img}.",
        "The reference is {obj} in {img}.",
        "{Img} shows the given object {obj}.",
    )
    LINKED = (
        "Matching {ctx}, {img} holds {obj}.",
        "Following {ctx} into {img}, I find {obj}.",
        "The counterpart of {ctx} in {img} is {obj}.",
    )
    PLAIN = (
        "The question points to {img}, where I find {obj}.",
        "Looking at {img}, the target is {obj}.",
        "In {img}, {obj} matches the question.",
        "Searching {img}, I locate {obj}.",
    )
    CLOSING = ("", " So the answer is {oid}.", " The answer is {oid} in {img}.")

    def think(self, item: Item, rng: Random) -> str:
        counts: Counter = Counter()
        ids = []
        for obj in (*item.context, item.target):
            counts[obj.image] += 1
            ids.append(object_id(obj.image, counts[obj.image]))
        parts = []
        if item.context:
            mentions = [
                rng.choice(self.CONTEXT).format(
                    obj=full_mention(c, oid), img=image_phrase(c.image), Img=_cap(image_phrase(c.image))
                )
                for c, oid in zip(item.context, ids, strict=False)
            ]
            parts.append(" ".join(mentions))
        t, tid = item.target, ids[-1]
        img = image_phrase(t.image)
        if item.context:
            parts.append(rng.choice(self.LINKED).format(ctx=ids[0], img=img, obj=full_mention(t, tid)))
        else:
            sentence = rng.choice(self.PLAIN).format(img=img, obj=full_mention(t, tid))
            parts.append(sentence + rng.choice(self.CLOSING).format(oid=tid, img=img))
        return " ".join(parts)


class CompactWriter(TemplateWriter):
    """One fixed phrasing per case: what a 2-layer demo model learns in a minute (`make demo` uses it)."""

    CONTEXT = ("The reference is {obj} in {img}.",)
    LINKED = ("Matching {ctx}, {img} holds {obj}.",)
    PLAIN = ("Looking at {img}, the target is {obj}.",)
    CLOSING = ("",)


# Reasoning writers by name (`--writer`); a teacher-model writer is one more entry.
WRITERS: dict[str, type] = {"template": TemplateWriter, "compact": CompactWriter}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


_FULL_RE = re.compile(
    re.escape(BBOX_ID_START)
    + r"\s*(?P<id>"
    + OBJECT_ID_RE.pattern
    + r")\s*"
    + re.escape(BBOX_ID_END)
    + re.escape(REF_START)
    + r"(?P<name>(?:(?!<\|).)*?)"
    + re.escape(REF_END)
    + r"\s*(?P<box>"
    + BOX_TOKENS_RE.pattern
    + ")",
    re.DOTALL,
)


def check_trajectory(think: str, item: Item) -> str:
    """Parse a trajectory back; return the target's `[N-M]` or raise Rejected("bad_trajectory").

    Every object is written in full once, at its first mention, with an annotated box of that image;
    later mentions are its bare `[N-M]`; objects are numbered 1, 2, ... per image in order of first
    mention; no other box, `<bbox_id>` or think/answer tag; the target is among them.
    """

    def bad(detail: str) -> Rejected:
        return Rejected("bad_trajectory", f"{item.sample_id}: {detail}")

    if not think.strip():
        raise bad("empty reasoning")
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if tag in think:
            raise bad(f"{tag} inside the reasoning")
    fulls = list(_FULL_RE.finditer(think))
    if think.count(BOX_START) != len(fulls) or think.count(BBOX_ID_START) != len(fulls):
        raise bad("a box or <bbox_id> outside a full object mention")
    annotated = {(o.image, o.box): o for o in (*item.context, item.target)}
    full_at = {}
    for m in fulls:
        n, k = int(m.group(2)), int(m.group(3))
        box = tuple(int(v) for v in m.groups()[5:9])
        if (n, k) in full_at:
            raise bad(f"[{n}-{k}] written in full twice")
        if not 1 <= n <= item.num_images:
            raise bad(f"[{n}-{k}] names image {n} of {item.num_images}")
        if (n, box) not in annotated:
            raise bad(f"[{n}-{k}] has box {box}, not an annotated box of image {n}")
        if not m.group("name").strip():
            raise bad(f"[{n}-{k}] has an empty name")
        full_at[(n, k)] = (m.start("id"), box)
    seen: dict[int, list[int]] = {}
    boxes_of: dict[tuple[int, int], tuple] = {}
    for m in OBJECT_ID_RE.finditer(think):
        n, k = int(m.group(1)), int(m.group(2))
        if (n, k) in boxes_of:
            continue
        if (n, k) not in full_at or full_at[(n, k)][0] != m.start():
            raise bad(f"first mention of [{n}-{k}] is not its full form")
        seen.setdefault(n, []).append(k)
        boxes_of[(n, k)] = full_at[(n, k)][1]
    for n, ks in seen.items():
        if ks != list(range(1, len(ks) + 1)):
            raise bad(f"objects of image {n} numbered {ks}, not 1, 2, ... in order of first mention")
    if len(set(boxes_of.values())) != len(boxes_of):
        raise bad("one annotated box under two ids")
    target = [key for key, box in boxes_of.items() if key[0] == item.target.image and box == item.target.box]
    if not target:
        raise bad("the target is not mentioned")
    return object_id(*target[0])


def answer_text(oid: str, box) -> str:
    return f"<answer>{BBOX_ID_START}{oid}{BBOX_ID_END}{box_tokens(box)}</answer>"


# --- records -> items -----------------------------------------------------------------------------
def _object_name(text: str, before: int | None, fallback: str) -> str:
    """The last object name in `text` before position `before` (None: the first anywhere), else fallback."""
    refs = list(REF_SPAN_RE.finditer(text))
    if before is not None:
        refs = [r for r in refs if r.end() <= before]
        ref = refs[-1] if refs else None
    else:
        ref = refs[0] if refs else None
    name = ref.group(1).strip() if ref else ""
    if not name:
        return fallback
    if len(name) > 200 or any(s in name for s in _SPECIAL) or OBJECT_ID_RE.search(name):
        raise Rejected("bad_object_name", f"object name {name[:60]!r}")
    return name


def _prompt(question: str, n: int) -> tuple[str, str]:
    """(human turn with exactly n placeholders, the question without them); format instructions removed."""
    question = FORMAT_INSTRUCTION_RE.sub("", question).strip()
    bare = re.sub(r"<image>\n?", "", question).strip()
    if question.count("<image>") == n:
        return question, bare
    return "<image>\n" * n + bare, bare


def record_items(record: Any, dataset: str, multi_target: bool = False) -> list[Item]:
    """All single-target items of one converted record, or raise Rejected (the record gives none).

    `multi_target`: one item per turn holding all the turn's answer boxes (`Item.targets`), its question
    not narrowed, several boxes in one image allowed (MG-Thinker's JSON answers list them all)."""
    clean, _ = check_record(record, require_images=True)
    rid, images = clean["id"], tuple(clean["images"])
    for j, path in enumerate(images):
        if not os.path.isabs(path) or not os.path.isfile(path):
            raise Rejected("missing_image", f"image {j + 1} {path!r} is not an existing absolute path")
    n = len(images)
    generic = TASKS[dataset][1]
    turns = clean["conversations"]
    items: list[Item] = []
    for k in range(0, len(turns), 2):
        q_text, a_text = turns[k]["value"], turns[k + 1]["value"]
        turn = k // 2 + 1
        for role, text in (("question", q_text), ("answer", a_text)):
            tag = next((t for t in _SPECIAL[1:] if t in text), None)
            if tag:
                raise Rejected("reserved_tag", f"turn {turn}: the {role} holds {tag}")
        found = locate(q_text, a_text, n)
        for b in (*found.targets, *found.context):
            if not on_grid(b.box):
                raise Rejected("bad_box", f"turn {turn}: box {b.box} is off the 0-1000 grid")
            if b.image is not None and not 1 <= b.image <= n:
                raise Rejected("image_out_of_range", f"turn {turn}: a box in image {b.image} of {n}")
        unplaced = [b for b in found.targets if b.image is None]
        if unplaced:
            raise Rejected(
                "no_target_image", f"turn {turn}: box {unplaced[0].box} is in no image the text names"
            )
        per_image = Counter(b.image for b in found.targets)
        if not multi_target and any(c > 1 for c in per_image.values()):
            image = next(i for i, c in per_image.items() if c > 1)
            raise Rejected(
                "several_targets_in_one_image", f"turn {turn}: {per_image[image]} boxes in image {image}"
            )
        context = tuple(
            GroundedObject(c.image, c.box, _object_name(q_text, c.start, CONTEXT_NAME))
            for c in found.context
            if c.image is not None
        )
        prompt, bare = _prompt(q_text, n)
        objects = tuple(
            GroundedObject(
                t.image, t.box, _object_name(a_text, t.start, "") or _object_name(q_text, None, generic)
            )  # type: ignore[arg-type]
            for t in found.targets
        )

        if multi_target and objects:  # one item holding every answer box of the turn
            specs = [(objects[0], False, objects)]
        else:  # one item per box, narrowed to its image when the answer has several
            specs = [(obj, len(objects) > 1, ()) for obj in objects]
        for target, narrowed, targets in specs:
            where = f" Locate it in {image_phrase(target.image)}." if narrowed else ""
            items.append(
                Item(
                    sample_id=f"{rid}#{len(items) + 1}",
                    source_id=rid,
                    dataset=dataset,
                    type=clean["type"],
                    images=images,
                    prompt=prompt + where,
                    question=bare + where,
                    target=target,
                    context=context,
                    narrowed=narrowed,
                    targets=targets,
                )
            )
    if not items:
        raise Rejected("no_target", "no answer box in any turn")
    return items


def _record(item: Item, answer: str) -> dict:
    """The ShareGPT fields both sets share: the item's images, prompt + suffix, and the gpt turn."""
    return {
        "id": item.sample_id,
        "type": item.type,
        "images": list(item.images),
        "conversations": [
            {"from": "human", "value": item.prompt + PROMPT_SUFFIX},
            {"from": "gpt", "value": answer},
        ],
    }


def _in_family(record: dict, item: Item, box_format) -> dict:
    """The record's turns in the --box-format family's form (boxformat.py); unchanged for qwen2-vl.

    Each box's image is known here: the `[N-M]` before it in the answer, the question's own words
    (boxes_in, as record_items placed them) for the question's boxes.
    """
    if box_format is None or box_format.is_default:
        return record

    human, gpt = record["conversations"]
    context = [b.image for b in boxes_in(human["value"])]
    turns = [
        {**human, "value": rewrite_trajectory_turn(human["value"], box_format, item.images, context)},
        {**gpt, "value": rewrite_trajectory_turn(gpt["value"], box_format, item.images)},
    ]
    return {**record, "conversations": turns}


def sft_record(item: Item, writer: TrajectoryWriter, seed: int, box_format=None) -> dict:
    think = writer.think(item, Random(f"{seed}|{item.sample_id}"))
    oid = check_trajectory(think, item)
    record = _record(item, f"<think>{think}</think>{answer_text(oid, item.target.box)}")
    return _in_family(record, item, box_format)


def rl_record(item: Item, box_format=None) -> dict:
    """`box` stays on the 0-1000 grid (the convention-free truth); another family adds `box_format`,
    `family_box` (the target in its numbers) and, for Qwen2.5-VL, every image's `resized_sizes`."""
    record = {
        **_in_family(_record(item, answer_text(reference_id(item), item.target.box)), item, box_format),
        "task": TASKS[item.dataset][0],
        "image_index": item.target.image,
        "box": list(item.target.box),
        "num_images": item.num_images,
    }
    if box_format is not None and not box_format.is_default:
        record.update(target_fields(item.target.box, item.target.image, item.images, box_format))
    return record


@dataclass(frozen=True)
class AnswerStyle:
    """How the two sets' answers are written (`--answer-style`): one entry of converters.answer_styles.

    `sft_record(item, writer, seed, box_format)` and `rl_record(item, box_format)` make the records;
    `multi_target` keeps a turn's boxes together (record_items); `writers` are its `--writer` choices.
    """

    name: str
    sft_record: Any
    rl_record: Any
    multi_target: bool
    writers: dict[str, type]


MIRG = AnswerStyle("mirg", sft_record, rl_record, multi_target=False, writers=WRITERS)


# --- the build ------------------------------------------------------------------------------------
@dataclass
class TrajectoryReport:
    name: str
    outputs: dict[str, str]
    rejects: str
    seed: int
    requested: dict[str, int]
    inputs: dict[str, str] = field(default_factory=dict)
    records_available: dict[str, int] = field(default_factory=dict)
    read: int = 0
    written: dict[str, int] = field(default_factory=lambda: {"sft": 0, "rl": 0})
    records_used: dict[str, int] = field(default_factory=lambda: {"sft": 0, "rl": 0})
    per_task: dict[str, Counter] = field(default_factory=lambda: {"sft": Counter(), "rl": Counter()})
    reasons: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    box_format: dict[str, Any] | None = None
    answer_style: str = "mirg"

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            provenance.REPORT_KEY: provenance.report_entry(self.box_format),
            "answer_style": self.answer_style,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "rejects": self.rejects,
            "seed": self.seed,
            "requested": self.requested,
            "written": self.written,
            "records_available": self.records_available,
            "records_read": self.read,
            "records_used": self.records_used,
            "rejected": self.rejected,
            "reasons": dict(sorted(self.reasons.items())),
            "per_task": {k: dict(sorted(v.items())) for k, v in self.per_task.items()},
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [
            f"{self.name}: {self.read} records read, {self.rejected} rejected; wrote "
            f"{self.written['sft']} trajectory-SFT samples ({self.records_used['sft']} records) and "
            f"{self.written['rl']} RL samples ({self.records_used['rl']} records) in {self.seconds:.1f} s"
        ]
        for reason, count in sorted(self.reasons.items()):
            lines.append(f"  {reason:<28} {count:>7}   {REASONS.get(reason, '')}")
        for part in ("sft", "rl"):
            tasks = ", ".join(f"{t} {c}" for t, c in sorted(self.per_task[part].items()))
            lines.append(f"  {part}: {tasks or 'nothing'}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.append(f"  wrote {self.outputs['sft']} and {self.outputs['rl']}")
        if self.rejected:
            lines.append(f"  rejects: {self.rejects}")
        return "\n".join(lines)


class _NothingWritten(ValueError):
    pass


class _Source:
    """One converted file read record by record in its seeded order."""

    def __init__(self, dataset: str, path: Path, seed: int):
        self.dataset, self.path = dataset, path
        self.bad_lines: list[tuple[int, str]] = []  # (line number, why): skipped, as `converters mix` does
        self.offsets, self.lengths = index_record_lines(path, self.bad_lines)
        if len(self.bad_lines) > MAX_BAD_LINES:
            first = self.bad_lines[0][0]
            raise InvalidJSONError(
                f"{path}: {len(self.bad_lines)} lines are not one whole JSON record (first: line {first}); "
                "trajectories read the files the converters write (one record per line)"
            )
        self.order = list(range(len(self.offsets)))
        Random(f"{seed}|{dataset}").shuffle(self.order)
        self.next = 0
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by close())

    def take(self) -> tuple[int, Any] | None:
        if self.next >= len(self.order):
            return None
        index = self.order[self.next]
        self.next += 1
        self.handle.seek(self.offsets[index])
        raw = self.handle.read(self.lengths[index])
        try:
            return index, decode_json_line(raw)
        except InvalidJSONError as err:
            return index, Rejected("bad_record", f"line {err}")

    def close(self) -> None:
        self.handle.close()


def output_paths(output_dir: Path) -> dict[str, Path]:
    return {"sft": output_dir / f"{SFT_NAME}.json", "rl": output_dir / f"{RL_NAME}.json"}


def build_trajectories(
    sharegpt_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    sft_size: int = DEFAULT_SIZES["sft"],
    rl_size: int = DEFAULT_SIZES["rl"],
    seed: int = 0,
    rejects: str | os.PathLike | None = None,
    extra_outputs: Iterable[str | os.PathLike] = (),
    writer: TrajectoryWriter | None = None,
    force: bool = False,
    box_format=None,
    style: AnswerStyle = MIRG,
) -> TrajectoryReport:
    """Write `mg_traj_sft.json` and `mg_rl.json` (and the rejects) from the converted task files.

    Missing task files are skipped with a note; sizes are capped by what the files give (noted).
    Refuses existing outputs without `force` (OutputExistsError), and any output that is also an
    input or another output, `extra_outputs` (e.g. the caller's report path) included (SamePathError).
    Raises ValueError when no task file exists or no record gives a sample (then only the rejects
    are written). The inputs are always the Qwen2-VL-form conversions (box tokens on the grid); a
    `box_format` (boxformat.BoxFormat) of another family writes the outputs in that family's form;
    `style` (an AnswerStyle) how the answers are written (default MIRG-RL's `[N-M]` trajectories).
    """
    start = time.perf_counter()
    sharegpt_dir = Path(sharegpt_dir)
    output_dir = Path(output_dir) if output_dir is not None else sharegpt_dir
    if sft_size < 0 or rl_size < 0:
        raise ValueError(f"sizes must be >= 0 (got --sft-size {sft_size}, --rl-size {rl_size})")
    outs = output_paths(output_dir)
    rejects = Path(rejects) if rejects is not None else output_dir / f"{NAME}.rejects.jsonl"
    writer = writer or style.writers["template"]()
    report = TrajectoryReport(
        NAME, {k: str(p) for k, p in outs.items()}, str(rejects), seed, {"sft": sft_size, "rl": rl_size}
    )
    report.answer_style = style.name
    if box_format is not None:
        report.box_format = box_format.describe()
    present = {}
    for dataset in TASKS:
        path = sharegpt_dir / f"{dataset}.json"
        if path.is_file():
            present[dataset] = path
        else:
            report.notes.append(f"skipped {dataset}: {path} not found")
            log.info("skipped %s: %s not found", dataset, path)
    if not present:
        raise ValueError(f"no converted MGrounding task file ({', '.join(TASKS)}) in {sharegpt_dir}")
    ensure_distinct_paths(
        {
            "input": list(present.values()),
            f"output {SFT_NAME}": outs["sft"],
            f"output {RL_NAME}": outs["rl"],
            "--rejects": rejects,
            **{f"output {p}": p for p in extra_outputs},
        }
    )
    report.inputs = {d: str(p) for d, p in present.items()}

    targets = {"sft": sft_size, "rl": rl_size}
    empty = None
    sources: list[_Source] = []
    try:
        for dataset, path in present.items():  # index first: a malformed input writes nothing
            sources.append(_Source(dataset, path, seed))
            report.records_available[dataset] = len(sources[-1].order)
        with RecordWriter(rejects, force=force) as rej_out:
            for src in sources:
                for line, why in src.bad_lines:  # a torn line: skipped and named, the rest goes on
                    report.reasons["bad_record"] += 1
                    rej_out.write(
                        {
                            "dataset": src.dataset,
                            "line": line,
                            "id": None,
                            "reason": "bad_record",
                            "detail": why,
                        }
                    )
                    report.notes.append(f"skipped {src.path} line {line}: {why}")
                    log.warning("skipped %s line %d: %s", src.path, line, why)
            try:
                with ExitStack() as stack:
                    outputs = {k: stack.enter_context(RecordWriter(p, force=force)) for k, p in outs.items()}
                    bar = stack.enter_context(
                        tqdm(total=sft_size + rl_size, unit="sample", desc=NAME, disable=None)
                    )
                    _fill(sources, outputs, rej_out, targets, report, writer, seed, bar, box_format, style)
                    for key in ("sft", "rl"):
                        if report.written[key] < targets[key]:
                            report.notes.append(
                                f"{key}: {report.written[key]} of {targets[key]} samples "
                                "(capped: the inputs give no more)"
                            )
                    report.seconds = time.perf_counter() - start
                    if sft_size + rl_size and not report.written["sft"] + report.written["rl"]:
                        # Leaving the stack with an exception discards the temporary outputs.
                        hint = (
                            "the inputs must be the qwen2-vl (box-token) conversions"
                            if report.read
                            else f"the task files ({', '.join(report.inputs)}) hold no readable records"
                        )
                        raise _NothingWritten(
                            f"{NAME}: no record gave a sample ({report.rejected} rejected, see {rejects}); {hint}"
                        )
            except _NothingWritten as err:
                empty = err  # the rejects are still written: they say what went wrong
    finally:
        for src in sources:
            src.close()
    if empty is not None:
        raise empty
    return report


def _round_robin(sources: list[_Source]) -> Iterator[tuple[_Source, int, Any]]:
    """One record from each task in turn (each in its seeded order) until every task is used up."""
    active = list(sources)
    while active:
        for src in list(active):
            taken = src.take()
            if taken is None:
                active.remove(src)
            else:
                yield src, *taken


def _fill(
    sources,
    outputs,
    rej_out,
    targets,
    report: TrajectoryReport,
    writer,
    seed: int,
    bar,
    box_format=None,
    style: AnswerStyle = MIRG,
) -> None:
    """Fill the SFT set, then the RL set; a record goes whole to one set (cut at the set's size)."""
    parts = [k for k in ("sft", "rl") if targets[k] > 0]
    used_ids: set[str] = set()
    for src, index, raw in _round_robin(sources):
        while parts and report.written[parts[0]] >= targets[parts[0]]:
            parts.pop(0)
        if not parts:
            return
        part = parts[0]
        report.read += 1
        try:
            if isinstance(raw, Rejected):
                raise raw
            items = record_items(raw, src.dataset, style.multi_target)
            rid = items[0].source_id
            if rid in used_ids:
                raise Rejected("duplicate_id", f"id {rid!r} is already used by another record")
            room = targets[part] - report.written[part]
            if part == "sft":
                make = lambda i: style.sft_record(i, writer, seed, box_format)  # noqa: E731
            else:
                make = lambda i: style.rl_record(i, box_format)  # noqa: E731
            records = [make(i) for i in items[:room]]
        except Rejected as bad:
            rid = raw.get("id") if isinstance(raw, dict) else None
            report.reasons[bad.reason] += 1
            rej_out.write(
                {
                    "dataset": src.dataset,
                    "index": index,
                    "id": rid if isinstance(rid, (str, int)) else None,
                    "reason": bad.reason,
                    "detail": bad.detail,
                }
            )
            continue
        used_ids.add(rid)
        for record in records:
            outputs[part].write(record)
        report.written[part] += len(records)
        report.records_used[part] += 1
        report.per_task[part][TASKS[src.dataset][0]] += len(records)
        bar.update(len(records))
