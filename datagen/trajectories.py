"""`python -m datagen trajectories`: MIRG-RL's three-stage trajectory pipeline (Sec. 2.2) with a teacher.

Why: `converters trajectories` writes trajectories from templates; MIRG-RL had teachers write them.
Stage 1 (CoT): question, ground-truth image and box, task -> `<think>...</think><answer>...</answer>`;
a trajectory whose final answer disagrees with the ground truth (image or box) is rejected. Stage 2
(image-object mapping): a vision teacher boxes every object the reasoning names, with its image.
Stage 3 (reassembly): the teacher rewrites the reasoning with `<bbox_id>[N-M]</bbox_id>` full mentions
and bare `[N-M]` later; the result is parsed back with converters.trajectories' own checker and
written in the trajectory-SFT format of `mg_traj_sft.json`. Input: RL records (`mg_rl.json`'s format:
images, the human prompt, image_index, box, task).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from converters.records import Rejected
from converters.registry import REGISTRY, entries_for, merged, update_registry
from converters.trajectories import (
    PROMPT_SUFFIX,
    GroundedObject,
    Item,
    answer_text,
    check_trajectory,
    full_mention,
)
from core.atomicio import atomic_write_text, ensure_distinct_paths, refuse_existing
from core.grounding import (
    IMAGE_NAME_RE,
    LOOSE_PAIR_RE,
    OBJECT_ID_RE,
    box_iou,
    first_image_index,
    on_grid,
    think_then_answer,
)
from core.streaming import InvalidJSONError, RecordWriter, iter_json_records

from . import cot_filter
from .cache import RequestCache
from .parsing import MAX_OBJECT_CAPTION, Reject, bad_text, check_reply
from .prompts import fill, load_prompts
from .steps import Job, StepStats, Teacher

log = logging.getLogger(__name__)

OUTPUT, REJECTS, REPORT, CACHE = (
    "datagen_traj_sft.json",
    "datagen_traj.rejects.jsonl",
    "datagen_traj.report.json",
    "requests.jsonl",
)
DATASET = "datagen_traj_sft"  # its name in OUT/dataset_info.json
MAX_THINK = 6000
TARGET_NAME = "the target object"
REASONS = {
    "bad_input": "an input record without images, prompt, image_index in range or a box on the grid",
    "duplicate_id": "an input record whose id an earlier record already has (the first one is used)",
    "bad_format": "not one <think>...</think> then one <answer>...</answer>",
    "answer_disagrees": "the final answer names another image or box than the ground truth",
    "no_objects": "the mapping names no usable object",
    "bad_trajectory": "the reassembled reasoning does not match the mapped objects",
}
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class NothingWritten(ValueError):
    """No input record gave a trajectory (the rejects and the report are still written)."""


@dataclass
class TrajectoryConfig:
    input: str
    output: str
    cot_model: str
    mapping_model: str
    reassembly_model: str
    limit: int | None = None
    answer_iou: float = 0.5
    prompt_dir: str | None = None
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 1024})
    force: bool = False
    filter_against: str | None = None  # the direct model's eval predictions.jsonl (cot_filter.py)


@dataclass
class TrajectoryReport:
    outputs: dict = field(default_factory=dict)
    read: int = 0
    written: int = 0
    steps: dict = field(default_factory=dict)
    filter: dict | None = None  # --filter-against: {"predictions", "kept": {reason: n}, "dropped": {...}}

    def to_dict(self) -> dict:
        out = {
            "outputs": self.outputs,
            "read": self.read,
            "written": self.written,
            "steps": {k: v.to_dict() for k, v in self.steps.items()},
        }
        return out | ({"filter": self.filter} if self.filter is not None else {})

    def summary(self) -> str:
        lines = [f"trajectories: {self.read} records read, {self.written} trajectories written"]
        lines += ["  " + s.line() for s in self.steps.values()]
        if self.filter is not None:
            for part in ("kept", "dropped"):
                counts = ", ".join(f"{r} {c}" for r, c in sorted(self.filter[part].items())) or "none"
                lines.append(f"  filter {part} {sum(self.filter[part].values())}: {counts}")
        lines += [f"  {k}: {v}" for k, v in self.outputs.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class Sample:
    id: str
    images: tuple[str, ...]
    prompt: str  # the human turn as given (placeholders + question + suffix)
    question: str
    task: str
    image: int
    box: tuple[int, int, int, int]
    index: int = -1  # position in --input (the key of the direct model's predictions)


def read_sample(raw, index: int) -> Sample:
    """One RL record -> Sample, or Reject("bad_input")."""
    if not isinstance(raw, dict):
        raise Reject("bad_input", f"record {index} is not an object")
    rid, images, conv = raw.get("id"), raw.get("images"), raw.get("conversations")
    rid = rid if isinstance(rid, str) and rid and len(rid) <= 200 else f"record{index}"
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise Reject("bad_input", f"{rid}: no images list")
    for p in images:
        if "\x00" in p or not os.path.isabs(p) or not os.path.isfile(p):
            raise Reject("bad_input", f"{rid}: image {p[:200]!r} is not an existing absolute path")
    if not isinstance(conv, list) or not conv or not isinstance(conv[0], dict):
        raise Reject("bad_input", f"{rid}: no conversation")
    prompt = conv[0].get("value")
    image, box = raw.get("image_index"), raw.get("box")
    if not isinstance(prompt, str) or not prompt.strip() or _CONTROL_RE.search(prompt):
        raise Reject("bad_input", f"{rid}: no usable human prompt")
    if isinstance(image, bool) or not isinstance(image, int) or not 1 <= image <= len(images):
        raise Reject("bad_input", f"{rid}: image_index {image!r} of {len(images)} images")
    if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box) and on_grid(box)):
        raise Reject("bad_input", f"{rid}: box {str(box)[:60]} is not on the 0-1000 grid")
    question = prompt.replace(PROMPT_SUFFIX, "").replace("<image>", "").strip()
    task = raw.get("task") if isinstance(raw.get("task"), str) else "multi-image grounding"
    return Sample(rid, tuple(images), prompt, question, task[:100], image, tuple(box), index)


def parse_cot(entry: dict, sample: Sample, answer_iou: float) -> str:
    """The think text of a CoT reply whose answer agrees with the ground truth, else Reject."""
    return cot_answer(entry, sample, answer_iou)[0]


def cot_answer(entry: dict, sample: Sample, answer_iou: float) -> tuple[str, float]:
    """(think, IoU of its answer with the truth) of a CoT reply that agrees with it, else Reject."""
    text = check_reply(entry, MAX_THINK + 2000)
    if _CONTROL_RE.search(text):
        raise Reject("bad_text", "a control character (NUL, ...)")
    parts = think_then_answer(text)
    if parts is None or not parts[0].strip() or not parts[1].strip():
        raise Reject("bad_format", f"{text[:80]!r}")
    think, answer = parts[0].strip(), parts[1]
    why = bad_text(think)
    if why:
        raise Reject("bad_text", why)
    pair = LOOSE_PAIR_RE.search(answer)
    image = first_image_index(answer) if len(sample.images) > 1 else 1
    box = tuple(int(v) for v in pair.groups()) if pair else None
    if box is None or image != sample.image or box_iou(box, sample.box) < answer_iou:
        raise Reject("answer_disagrees", f"answer {answer[:80]!r}, truth image {sample.image} {sample.box}")
    return think, box_iou(box, sample.box)


def parse_mapping(entry: dict, sample: Sample) -> list[GroundedObject]:
    """`Image-N: name (x1,y1),(x2,y2)` lines -> objects; the target is always among them (truth box)."""
    text = check_reply(entry, 20000)
    objects: list[GroundedObject] = []
    seen = set()
    for line in text.split("\n"):
        pair = LOOSE_PAIR_RE.search(line)
        named = IMAGE_NAME_RE.search(line, 0, pair.start()) if pair else None
        if not pair or not named:
            continue
        image, box = int(named.group(1)), tuple(int(v) for v in pair.groups())
        name = line[named.end() : pair.start()].strip(" \t:,;.-*")
        name = re.sub(r"\s*\bat$", "", name).strip()
        if not 1 <= image <= len(sample.images) or not on_grid(box):
            continue
        if not name or len(name) > MAX_OBJECT_CAPTION or bad_text(name) or OBJECT_ID_RE.search(name):
            continue
        if (image, box) in seen:
            continue
        seen.add((image, box))
        objects.append(GroundedObject(image, box, name))
    hit = next(
        (k for k, o in enumerate(objects) if o.image == sample.image and box_iou(o.box, sample.box) >= 0.5),
        None,
    )
    if hit is not None:
        objects[hit] = GroundedObject(sample.image, sample.box, objects[hit].name)
    else:
        objects.append(GroundedObject(sample.image, sample.box, TARGET_NAME))
    return objects


def numbered(objects: list[GroundedObject]) -> list[tuple[str, GroundedObject]]:
    counts: dict[int, int] = {}
    out = []
    for o in objects:
        counts[o.image] = counts.get(o.image, 0) + 1
        out.append((f"[{o.image}-{counts[o.image]}]", o))
    return out


def renumber(think: str) -> str:
    """Relabel `[N-M]` so each image's objects count 1, 2, ... in order of first mention (a pure rename)."""
    new: dict[tuple[int, int], str] = {}
    counts: dict[int, int] = {}
    for m in OBJECT_ID_RE.finditer(think):
        key = (int(m.group(1)), int(m.group(2)))
        if key not in new:
            counts[key[0]] = counts.get(key[0], 0) + 1
            new[key] = f"[{key[0]}-{counts[key[0]]}]"
    return OBJECT_ID_RE.sub(lambda m: new[(int(m.group(1)), int(m.group(2)))], think)


def parse_reassembly(entry: dict, sample: Sample, objects: list[GroundedObject]) -> tuple[str, str]:
    """(think, target id) checked by converters.trajectories.check_trajectory, else Reject."""
    text = check_reply(entry, MAX_THINK)
    if _CONTROL_RE.search(text):
        raise Reject("bad_text", "a control character (NUL, ...)")
    think = renumber(text.strip())
    target = next(o for o in objects if o.image == sample.image and o.box == sample.box)
    item = Item(
        sample_id=sample.id,
        source_id=sample.id,
        dataset="datagen",
        type="traj_sft",
        images=sample.images,
        prompt=sample.prompt,
        question=sample.question,
        target=target,
        context=tuple(o for o in objects if o is not target),
        narrowed=False,
    )
    try:
        return think, check_trajectory(think, item)
    except Rejected as bad:
        raise Reject("bad_trajectory", bad.detail) from None


def _filter(live, direct, cot_ious, report: TrajectoryReport, source: str, reject) -> list:
    """The CoT traces where reasoning helps over the direct model (cot_filter.verdict); counts by reason."""
    kept: Counter = Counter()
    dropped: Counter = Counter()
    out = []
    for j, s in live:
        pred = cot_filter.direct_for(direct, s.index, s.images, s.id)
        if pred is None:
            ok, why, detail = False, "no_direct_prediction", f"no prediction with index {s.index}"
        else:
            ok, why = cot_filter.verdict(pred.iou, cot_ious[j])
            detail = f"direct IoU {pred.iou:.3f}, with reasoning {cot_ious[j]:.3f}"
        if ok:
            kept[why] += 1
            report.steps["filter"].accepted += 1
            out.append((j, s))
        else:
            dropped[why] += 1
            reject("filter", s.id, Reject(why, detail))
    report.filter = {"predictions": str(source), "kept": dict(kept), "dropped": dict(dropped)}
    log.info("filter against %s: kept %s, dropped %s", source, dict(kept), dict(dropped))
    return out


def output_paths(output: str | os.PathLike) -> dict[str, Path]:
    out = Path(output)
    return {"data": out / OUTPUT, "rejects": out / REJECTS, "report": out / REPORT, "cache": out / CACHE}


def run_trajectories(cfg: TrajectoryConfig, client) -> TrajectoryReport:
    paths = output_paths(cfg.output)
    ensure_distinct_paths({"--input": cfg.input, **{f"output {k}": v for k, v in paths.items()}})
    for key in ("data", "rejects", "report"):
        refuse_existing(paths[key], cfg.force)
    prompts = load_prompts(cfg.prompt_dir)
    direct = cot_filter.load_predictions(cfg.filter_against) if cfg.filter_against else None
    report = TrajectoryReport(outputs={k: str(v) for k, v in paths.items()})
    stats = {
        "input": StepStats("input", "-"),
        "cot": StepStats("cot", cfg.cot_model),
        **({"filter": StepStats("filter", str(cfg.filter_against))} if direct is not None else {}),
        "mapping": StepStats("mapping", cfg.mapping_model),
        "reassembly": StepStats("reassembly", cfg.reassembly_model),
    }
    report.steps = stats
    rejects: list[dict] = []

    def reject(step: str, ident: str, bad: Reject) -> None:
        stats[step].rejects[bad.reason] += 1
        rejects.append({"step": step, "id": ident, "reason": bad.reason, "detail": bad.detail})

    samples: list[Sample] = []
    seen_ids: set[str] = set()
    try:
        for index, raw in enumerate(iter_json_records(cfg.input, skip_bad=True)):
            if cfg.limit is not None and len(samples) >= cfg.limit:
                break
            report.read += 1
            try:
                sample = read_sample(raw, index)
                if sample.id in seen_ids:  # as `converters trajectories` does: ids name training records
                    raise Reject("duplicate_id", f"{sample.id}: already the id of an earlier record")
                seen_ids.add(sample.id)
                samples.append(sample)
                stats["input"].accepted += 1
            except Reject as bad:
                reject("input", f"record{index}", bad)
    except (OSError, InvalidJSONError) as err:
        raise ValueError(f"--input {cfg.input}: {err}") from None
    ids = [f"{k}:{s.id}" for k, s in enumerate(samples)]
    paths["cache"].parent.mkdir(parents=True, exist_ok=True)
    with RequestCache(paths["cache"]) as cache:
        teacher = Teacher(client, cache, cfg.sampling)
        img = lambda s: [{"image": p} for p in s.images]  # noqa: E731
        jobs = []
        for jid, s in zip(ids, samples, strict=True):
            text = fill(
                prompts["cot"],
                num_images=len(s.images),
                image=s.image,
                box="({},{}),({},{})".format(*s.box),
                task=s.task,
                question=s.question,
            )
            jobs.append(Job(jid, [*img(s), {"text": text}]))
        replies = teacher.run(stats["cot"], jobs)
        thinks, cot_ious = {}, {}
        for jid, s in zip(ids, samples, strict=True):
            try:
                thinks[jid], cot_ious[jid] = cot_answer(replies[jid], s, cfg.answer_iou)
                stats["cot"].accepted += 1
            except Reject as bad:
                reject("cot", s.id, bad)
        live = [(j, s) for j, s in zip(ids, samples, strict=True) if j in thinks]
        if direct is not None:  # before the mapping: a dropped trace costs no further request
            live = _filter(live, direct, cot_ious, report, cfg.filter_against, reject)
        jobs = [
            Job(j, [*img(s), {"text": fill(prompts["mapping"], num_images=len(s.images), think=thinks[j])}])
            for j, s in live
        ]
        replies = teacher.run(stats["mapping"], jobs)
        mapped = {}
        for j, s in live:
            try:
                mapped[j] = parse_mapping(replies[j], s)
                stats["mapping"].accepted += 1
            except Reject as bad:
                reject("mapping", s.id, bad)
        live = [(j, s) for j, s in live if j in mapped]
        jobs = []
        for j, _s in live:
            listing = "\n".join(full_mention(o, oid) for oid, o in numbered(mapped[j]))
            jobs.append(Job(j, [{"text": fill(prompts["reassembly"], objects=listing, think=thinks[j])}]))
        replies = teacher.run(stats["reassembly"], jobs)
        records = []
        for j, s in live:
            try:
                think, oid = parse_reassembly(replies[j], s, mapped[j])
            except Reject as bad:
                reject("reassembly", s.id, bad)
                continue
            stats["reassembly"].accepted += 1
            prompt = s.prompt if s.prompt.endswith(PROMPT_SUFFIX) else s.prompt + PROMPT_SUFFIX
            answer = f"<think>{think}</think>{answer_text(oid, s.box)}"
            records.append(
                {
                    "id": s.id,
                    "type": "traj_sft",
                    "images": list(s.images),
                    "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}],
                }
            )
    report.written = len(records)
    if records:
        # Registered beside the data, as `converters all` registers its sets: LLaMA-Factory trains on it
        # with dataset_dir=OUT dataset=datagen_traj_sft (an existing registry is merged, never clobbered).
        # The registry is checked first: a bad one stops the run before anything is written.
        out_dir = paths["data"].parent
        registry, wanted = out_dir / REGISTRY, entries_for({DATASET: paths["data"]}, out_dir)
        merged(registry, wanted, force=cfg.force)
        with RecordWriter(paths["data"], force=cfg.force) as out:
            for r in records:
                out.write(r)
        update_registry(registry, wanted, force=cfg.force)
    elif cfg.force:
        paths["data"].unlink(missing_ok=True)  # an earlier run's records must not pass for this run's
    with RecordWriter(paths["rejects"], force=cfg.force) as out:
        for line in rejects:
            out.write(line)
    atomic_write_text(paths["report"], json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if not records:
        raise NothingWritten(f"no record gave a trajectory ({len(rejects)} rejects, see {paths['rejects']})")
    return report
