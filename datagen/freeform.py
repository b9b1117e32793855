"""`python -m datagen freeform`: Migician's free-form pipeline (Appendix D.2), in the paper's order.

Why: stage 2 trains on free-form multi-image grounding QA that a teacher wrote from single-image
annotations. Detections -> groups -> a caption per image -> box refinement per image (parsed back
into (caption, box) pairs on the 0-1000 grid; an image whose refinement is unusable keeps its
original boxes) -> QA per group (Template 1 or 2) -> validation (each answer box must match a box of
the image it names). The output is MGrounding-630k's free-form layout, so `python -m converters
mgrounding` (or `converters all` with this folder as DATA_ROOT) converts it. Rejects go, with
their reasons, to a report; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from converters.records import Rejected, check_record
from converters.trajectories import locate
from core.atomicio import atomic_write_text, ensure_distinct_paths, refuse_existing
from core.grounding import box_iou, box_tokens
from core.streaming import RecordWriter

from . import grouping as groupers
from .cache import RequestCache
from .detections import DetImage, load_detections
from .parsing import Pair, Reject, parse_caption, parse_qa_block, parse_refinement, split_qa, tokenize_answer
from .prompts import fill, load_prompts
from .steps import Job, StepStats, Teacher

log = logging.getLogger(__name__)

FOLDER = "MGrounding-630k/Free-Form"
DATA_FILE = f"{FOLDER}/free_form_grounding_130k.json"  # the published name: `converters all` finds it
IMAGE_FOLDER = f"{FOLDER}/images"
REJECTS, REPORT, CACHE = "datagen_freeform.rejects.jsonl", "datagen_freeform.report.json", "requests.jsonl"
RECORD_TYPE = "free_form"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class NothingWritten(ValueError):
    """No group gave a valid QA pair (the rejects and the report are still written)."""


@dataclass
class FreeformConfig:
    detections: str
    image_dir: str
    output: str
    caption_model: str
    refine_model: str
    qa_model: str
    grouping: str = "random"  # random | common | clip
    clip_model: str | None = None
    seed: int = 0
    max_images: int | None = None
    max_objects: int = 20
    min_size: int = groupers.MIN_SIZE
    max_size: int = groupers.MAX_SIZE
    min_area: float = 0.05
    exclude_classes: tuple[str, ...] = groupers.DEFAULT_EXCLUDED
    cooccur_share: float = 0.5
    templates: tuple[int, ...] = (1, 2)
    match_iou: float = 0.9
    prompt_dir: str | None = None
    sampling: dict = field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 1024})
    force: bool = False


@dataclass
class FreeformReport:
    outputs: dict = field(default_factory=dict)
    images: int = 0
    groups: int = 0
    leftover_images: int = 0
    records: int = 0
    qa_pairs: int = 0
    detection_rejects: Counter = field(default_factory=Counter)
    steps: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "outputs": self.outputs,
            "images": self.images,
            "groups": self.groups,
            "leftover_images": self.leftover_images,
            "records": self.records,
            "qa_pairs": self.qa_pairs,
            "detection_rejects": dict(sorted(self.detection_rejects.items())),
            "steps": {k: v.to_dict() for k, v in self.steps.items()},
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [
            f"freeform: {self.images} images, {self.groups} groups ({self.leftover_images} images left over), "
            f"{self.records} records with {self.qa_pairs} QA pairs"
        ]
        if self.detection_rejects:
            lines.append(
                "  detections skipped: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.detection_rejects.items()))
            )
        lines += ["  " + s.line() for s in self.steps.values()]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {k}: {v}" for k, v in self.outputs.items()]
        return "\n".join(lines)


def output_paths(output: str | os.PathLike) -> dict[str, Path]:
    out = Path(output)
    return {"data": out / DATA_FILE, "rejects": out / REJECTS, "report": out / REPORT, "cache": out / CACHE}


def make_groups(cfg: FreeformConfig, images: list[DetImage]) -> tuple[list[list[int]], list[int]]:
    if cfg.grouping == "random":
        return groupers.random_groups(len(images), cfg.seed, cfg.min_size, cfg.max_size)
    if cfg.grouping == "common":
        groups, left, _ = groupers.common_object_groups(
            images,
            cfg.seed,
            cfg.min_area,
            cfg.exclude_classes,
            cfg.cooccur_share,
            min_size=cfg.min_size,
            max_size=cfg.max_size,
        )
        return groups, left
    if cfg.grouping == "clip":
        if not cfg.clip_model:
            raise ValueError("--grouping clip needs --clip-model (a local CLIP checkpoint folder)")
        feats = groupers.clip_features([img.path for img in images], cfg.clip_model)
        return groupers.clip_adaptive_groups(feats, cfg.seed, cfg.min_size, cfg.max_size)
    raise ValueError(f"unknown --grouping {cfg.grouping!r} (random, common, clip)")


def annotation_lines(pairs) -> str:
    return "\n".join(f"{p.caption} {box_tokens(p.box)}" for p in pairs)


def images_block(captions: list[str], annotations: list[list[Pair]]) -> str:
    parts = []
    for k, (caption, pairs) in enumerate(zip(captions, annotations, strict=True), start=1):
        objects = "\n".join(f"- {p.caption} ({p.box[0]},{p.box[1]}),({p.box[2]},{p.box[3]})" for p in pairs)
        parts.append(f"Image-{k}:\nCaption: {caption or '(none)'}\nObjects:\n{objects}")
    return "\n\n".join(parts)


def validate_qa(qa, annotations: list[list[Pair]], match_iou: float) -> tuple[str, str]:
    """(question, tokenized answer) when every answer box matches a box of the image it names; else Reject."""
    n = len(annotations)
    rough = tokenize_answer(qa.answer)
    found = locate(qa.question, rough, n).targets
    if len(found) != len(qa.objects):
        raise Reject("unreferenced_box", "answer boxes and object names do not pair up")
    snapped = {}
    for (name, box, start), at in zip(qa.objects, found, strict=True):
        if at.image is None:
            raise Reject("no_image_named", f"{name[:60]!r} {box}")
        if not 1 <= at.image <= n:
            raise Reject("image_out_of_range", f"{name[:60]!r} in image {at.image} of {n}")
        best = max(annotations[at.image - 1], key=lambda p: box_iou(p.box, box), default=None)
        if best is None or box_iou(best.box, box) < match_iou:
            elsewhere = [
                k + 1
                for k, pairs in enumerate(annotations)
                if k + 1 != at.image and any(box_iou(p.box, box) >= match_iou for p in pairs)
            ]
            if elsewhere:
                raise Reject(
                    "wrong_image", f"{box} is said to be in image {at.image}, matches image {elsewhere[0]}"
                )
            raise Reject("unmatched_box", f"{box} matches no box of image {at.image}")
        snapped[start] = best.box
    return qa.question, tokenize_answer(qa.answer, snapped)


def _link_name(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:20] + (
        ext if ext in _IMAGE_EXTS else ".img"
    )


def run_freeform(cfg: FreeformConfig, client) -> FreeformReport:
    """The whole pipeline; raises NothingWritten when no record survives validation."""
    paths = output_paths(cfg.output)
    ensure_distinct_paths({"--detections": cfg.detections, **{f"output {k}": v for k, v in paths.items()}})
    for key in ("data", "rejects", "report"):
        refuse_existing(paths[key], cfg.force)
    if not 0 < cfg.match_iou <= 1:
        raise ValueError(f"--match-iou must be in (0, 1] (got {cfg.match_iou})")
    if not cfg.templates or any(t not in (1, 2) for t in cfg.templates):
        raise ValueError(f"--templates must be 1 and/or 2 (got {cfg.templates})")
    prompts = load_prompts(cfg.prompt_dir)
    report = FreeformReport(outputs={k: str(v) for k, v in paths.items()})
    images = load_detections(cfg.detections, cfg.image_dir, report.detection_rejects, cfg.max_images)
    report.images = len(images)
    if not images:
        raise ValueError(f"--detections {cfg.detections}: no usable image ({dict(report.detection_rejects)})")
    groups, leftovers = make_groups(cfg, images)
    report.groups, report.leftover_images = len(groups), len(leftovers)
    if not groups:
        raise ValueError(f"{len(images)} usable images make no group of {cfg.min_size}-{cfg.max_size}")
    used = sorted({i for g in groups for i in g})
    rejects: list[dict] = []

    def reject(step: str, ident: str, bad: Reject) -> None:
        report.steps[step].rejects[bad.reason] += 1
        rejects.append({"step": step, "id": ident, "reason": bad.reason, "detail": bad.detail})

    stats = {
        "caption": StepStats("caption", cfg.caption_model),
        "refine": StepStats("refine", cfg.refine_model),
        "qa": StepStats("qa", cfg.qa_model),
    }
    report.steps = stats
    paths["cache"].parent.mkdir(parents=True, exist_ok=True)
    with RequestCache(paths["cache"]) as cache:
        teacher = Teacher(client, cache, cfg.sampling)
        # 3. captions
        jobs = [Job(str(i), [{"image": images[i].path}, {"text": prompts["caption"]}]) for i in used]
        replies = teacher.run(stats["caption"], jobs)
        captions: dict[int, str] = {}
        for i in used:
            try:
                captions[i] = parse_caption(replies[str(i)])
                stats["caption"].accepted += 1
            except Reject as bad:
                captions[i] = ""
                reject("caption", images[i].key, bad)
        # 4. box refinement (an unusable answer keeps the original boxes, named by class)
        originals = {i: [Pair(o.name, o.box) for o in images[i].objects[: cfg.max_objects]] for i in used}
        jobs = [
            Job(
                str(i),
                [
                    {"image": images[i].path},
                    {"text": fill(prompts["refine"], annotations=annotation_lines(originals[i]))},
                ],
            )
            for i in used
        ]
        replies = teacher.run(stats["refine"], jobs)
        refined: dict[int, list[Pair]] = {}
        for i in used:
            try:
                pairs, bad_pairs = parse_refinement(replies[str(i)])
                for bad in bad_pairs:
                    reject("refine", images[i].key, bad)
                refined[i] = pairs[: 4 * cfg.max_objects]
                stats["refine"].accepted += 1
            except Reject as bad:
                refined[i] = originals[i]
                reject("refine", images[i].key, bad)
        # 5. QA per group
        qa_jobs, group_templates = [], {}
        for g, members in enumerate(groups):
            template = Random(f"{cfg.seed}|template|{g}").choice(cfg.templates)
            group_templates[g] = template
            block = images_block([captions[i] for i in members], [refined[i] for i in members])
            qa_jobs.append(Job(str(g), [{"text": fill(prompts[f"qa_template{template}"], images=block)}]))
        replies = teacher.run(stats["qa"], qa_jobs)
    # 6. validation and output
    records = []
    for g, members in enumerate(groups):
        gid = f"datagen_ff_{cfg.seed}_{g:06d}"
        annotations = [refined[i] for i in members]
        try:
            blocks, _ = split_qa(replies[str(g)])
        except Reject as bad:
            reject("qa", gid, bad)
            continue
        turns, seen = [], set()
        for q_index, block in enumerate(blocks, start=1):
            try:
                question, answer = validate_qa(parse_qa_block(block), annotations, cfg.match_iou)
            except Reject as bad:
                reject("qa", f"{gid}#q{q_index}", bad)
                continue
            if question in seen:
                continue
            seen.add(question)
            turns.append((question, answer))
        if not turns:
            continue
        links = [f"./{IMAGE_FOLDER}/{_link_name(images[i].path)}" for i in members]
        conversations = []
        for k, (question, answer) in enumerate(turns):
            prefix = "<image>\n" * len(members) if k == 0 else ""
            conversations += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
        record = {"id": gid, "images": links, "conversations": conversations, "type": RECORD_TYPE}
        try:
            check_record(record, require_images=True)
        except Rejected as bad:
            reject("qa", gid, Reject("bad_record", f"{bad.reason}: {bad.detail}"))
            continue
        stats["qa"].accepted += len(turns)
        report.qa_pairs += len(turns)
        records.append((record, [images[i].path for i in members]))
    report.records = len(records)
    _write(paths, records, rejects, report, cfg.force)
    if not records:
        raise NothingWritten(
            f"no group gave a valid QA pair ({len(rejects)} rejects, see {paths['rejects']})"
        )
    return report


def _write(paths, records, rejects, report: FreeformReport, force: bool) -> None:
    """Image links, then the data file, the rejects and the report (each atomically)."""
    out_root = paths["data"].parent.parent.parent
    image_dir = out_root / IMAGE_FOLDER
    for _, sources in records:
        image_dir.mkdir(parents=True, exist_ok=True)
        for src in sources:
            link = image_dir / _link_name(src)
            if link.is_symlink() and os.readlink(link) == src:
                continue
            tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(src, tmp)
            os.replace(tmp, link)
    if records:
        with RecordWriter(paths["data"], force=force) as out:
            for record, _ in records:
                out.write(record)
    elif force:
        paths["data"].unlink(missing_ok=True)  # an earlier run's records must not pass for this run's
    with RecordWriter(paths["rejects"], force=force) as out:
        for line in rejects:
            out.write(line)
    atomic_write_text(paths["report"], json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
