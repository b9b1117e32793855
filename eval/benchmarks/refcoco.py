"""RefCOCO, RefCOCO+ and RefCOCOg REC (Migician Table 8): Acc@0.5 per standard split.

Why our own loader and not lmms-eval's `refcoco_bbox_rec_*`: measured for this project, their
parser reads only four bracketed [0,1] floats (a Qwen2-VL answer scores 0) and their val splits are
not the UNC/UMD ones. This reads the original `refer` layout that `converters refcoco` reads
(`ROOT/refcoco/refs(unc).p`, `ROOT/refcoco/instances.json`, `ROOT/coco/train2014/`), keeps the
standard splits (RefCOCO/+: val, testA, testB; RefCOCOg umd: val, test) and makes one instance per
referring sentence, as the REC protocol counts them. The prompt is the one the S-Grounding data
taught (converters/refcoco.py's first), asking for Qwen2-VL's box tokens on the 0-1000 grid.
"""

from __future__ import annotations

import os
from pathlib import Path

from converters.refcoco import PROMPTS, images_and_annotations, load_instances, load_refs
from core.grounding import REF_END, REF_START
from eval.benchmark import (
    Bench,
    BenchError,
    Benchmark,
    Instance,
    Problem,
    Reference,
    Task,
    is_number,
    sha256_of,
    text_problem,
)

# The converter's prompts start with LLaMA-Factory's image placeholder; the evaluator places images itself.
PROMPT = PROMPTS[0].removeprefix("<image>\n")

# Migician paper, Table 8 (Acc@0.5, %). The paper lists InternVL2-8B twice with the same values; once here.
_TABLE8_COLUMNS = (
    "refcoco/val",
    "refcoco/testA",
    "refcoco/testB",
    "refcoco+/val",
    "refcoco+/testA",
    "refcoco+/testB",
    "refcocog/val",
    "refcocog/test",
    "AVE",
)
_TABLE8 = (
    ("VisionLLM v2", (79.20, 82.30, 77.00, 68.90, 75.80, 61.80, 73.30, 74.80, 74.14)),
    ("Shikra", (87.00, 90.60, 80.20, 81.60, 87.40, 72.10, 82.30, 82.20, 82.97)),
    ("InternVL2-8B", (87.10, 91.10, 80.70, 79.80, 87.90, 71.40, 82.70, 82.70, 82.94)),
    ("GroundingGPT", (88.02, 91.55, 82.47, 81.61, 87.18, 73.18, 81.67, 81.99, 83.57)),
    ("Griffon v2", (89.60, 91.80, 86.50, 81.90, 85.50, 76.20, 85.00, 86.00, 85.30)),
    ("Qwen2-VL-7B", (91.70, 93.60, 87.30, 85.80, 90.50, 79.50, 87.30, 87.80, 87.96)),
    ("Migician", (91.62, 93.49, 87.22, 86.13, 91.06, 79.93, 88.06, 87.80, 88.16)),
)
TABLE8: tuple[Reference, ...] = tuple(
    Reference(name, "the paper's Table 8", dict(zip(_TABLE8_COLUMNS, values, strict=True)))
    for name, values in _TABLE8
)


def _references(bench: str) -> tuple[Reference, ...]:
    """Table 8's rows restricted to one benchmark's splits (no AVE: the paper's is over all eight)."""
    prefix = f"{bench}/"
    return tuple(
        Reference(
            r.name,
            r.section,
            {k.removeprefix(prefix): v for k, v in r.values.items() if k.startswith(prefix)},
        )
        for r in TABLE8
    )


def _read_instances(path: Path) -> tuple[dict, dict]:
    """instances.json's images and annotations by id, read as the converter reads them; BenchError
    naming the file when unusable."""
    try:
        return images_and_annotations(load_instances(path))
    except ValueError as err:  # its message names the file
        raise BenchError(str(err)) from None


def _by_key(table: dict, key):
    """table[key] for an id (an int or a string); None for anything else (a list, an object: unhashable)."""
    return table.get(key) if isinstance(key, (int, str)) and not isinstance(key, bool) else None


def _unit_box(ann: dict, img: dict) -> list[float]:
    """COCO [x, y, w, h] pixels -> [x1, y1, x2, y2] relative to the image (ValueError when unusable)."""
    bbox, width, height = ann.get("bbox"), img.get("width"), img.get("height")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        raise ValueError(f"annotation {ann.get('id')}: bbox {bbox!r:.80} is not 4 numbers")
    if not (is_number(width) and is_number(height) and width > 0 and height > 0):
        raise ValueError(f"image {img.get('id')}: size {width!r}x{height!r} is not positive")
    x, y, w, h = (float(v) for v in bbox)
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    if w <= 0 or h <= 0 or min(box) < 0 or max(box) > 1.0 + 1e-6:
        raise ValueError(
            f"annotation {ann.get('id')}: bbox {bbox} does not lie on its {width}x{height} image"
        )
    return [min(v, 1.0) for v in box]


def make_loader(folder: str, refs_file: str, splits: tuple[str, ...]):
    def load(source, image_root=None, task_names=None, limit=None, answer_scale="auto", check_images=True):
        """Instances of `splits` (all by default) from ROOT=source in the refer layout.

        An instance's index counts every sentence of every standard split in file order, whatever
        is selected, so a run limited to one split resumes into the same predictions as a full one.
        """
        root = Path(source)
        refs_path, inst_path = root / folder / refs_file, root / folder / "instances.json"
        for path in (refs_path, inst_path):
            if not path.is_file():
                raise BenchError(
                    f"{path} not found: --data-root must hold {folder}/{refs_file} and {folder}/instances.json "
                    "(the refer layout `python -m converters refcoco` reads)"
                )
        if limit is not None and limit < 1:
            raise BenchError(f"--limit must be at least 1, got {limit}")
        wanted = set(task_names) if task_names else set(splits)
        bad = sorted(wanted - set(splits))
        if bad:
            raise BenchError(
                f"unknown split(s) {bad} of {folder}; its standard splits are {', '.join(splits)}"
            )
        try:
            refs = load_refs(refs_path)
        except ValueError as err:
            raise BenchError(str(err)) from None
        images, anns = _read_instances(inst_path)
        img_root = Path(image_root) if image_root else root / "coco" / "train2014"
        bench = Bench(
            path=refs_path,
            image_root=img_root,
            sha256=sha256_of([refs_path, inst_path]),
            answer_scale="unit",
            total=0,
        )
        index, per_split = 0, dict.fromkeys(splits, 0)
        for k, ref in enumerate(refs):
            split = ref.get("split") if isinstance(ref, dict) else None
            if split not in splits:
                continue
            sentences = ref.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                bench.warnings.append(
                    f"ref {k} (ref_id {ref.get('ref_id')!r:.40}) has no sentence list; skipped"
                )
                continue
            first, index = index, index + len(sentences)
            bench.total += len(sentences)
            if split not in wanted:
                continue
            reason, box, path = None, None, None
            ann, img = _by_key(anns, ref.get("ann_id")), _by_key(images, ref.get("image_id"))
            if ann is None or img is None:
                what = "ann_id" if ann is None else "image_id"
                reason = (
                    f"ref {ref.get('ref_id')!r:.40}: {what} {ref.get(what)!r:.40} is not in instances.json"
                )
            else:
                try:
                    box = _unit_box(ann, img)
                except ValueError as err:
                    reason = str(err)
                name = img.get("file_name")
                if reason is None and not (isinstance(name, str) and name and not text_problem(name)):
                    reason = f"image {img.get('id')}: file_name {name!r:.60} is not a usable path"
                if reason is None:
                    path = str(Path(name) if Path(name).is_absolute() else (img_root / name).resolve())
                    if check_images and not os.path.isfile(path):
                        reason = f"image not found: {path}"
            for j, sentence in enumerate(sentences):
                idx = first + j
                if limit is not None and per_split[split] >= limit:
                    break
                per_split[split] += 1
                text = (
                    (sentence.get("sent") or sentence.get("raw") or "") if isinstance(sentence, dict) else ""
                )
                text = " ".join(str(text).split())
                why = reason or (None if text else f"sentence {j} of ref {ref.get('ref_id')!r:.40} is empty")
                why = why or (f"sentence {text_problem(text)}" if text_problem(text) else None)
                if why:
                    bench.problems.append(Problem(idx, split, why))
                    continue
                bench.instances.append(
                    Instance(
                        index=idx,
                        task=split,
                        images=[name],
                        image_paths=[path],
                        question=PROMPT.format(ref=f"{REF_START}{text}{REF_END}"),
                        answer=box,
                    )
                )
        if not bench.instances and not bench.problems:
            raise BenchError(f"{refs_path} holds no sentence of split(s) {', '.join(sorted(wanted))}")
        return bench

    return load


def _make(name: str, title: str, folder: str, refs_file: str, splits: tuple[str, ...]) -> Benchmark:
    return Benchmark(
        name=name,
        title=title,
        tasks=tuple(Task(s, s, name) for s in splits),
        groups=(),
        load=make_loader(folder, refs_file, splits),
        target_image=lambda inst: 0,
        references=_references(name),
        reference_table="the paper's Table 8",
        default_suffix="none",
        data_kind="root",
        notes=(
            f"REC protocol: one instance per referring sentence of the {refs_file.split('(')[1][:-3].upper()} "
            "splits, Acc@0.5 on the box as the model answers it (0-1000 grid by default)",
        ),
    )


REFCOCO = _make("refcoco", "RefCOCO", "refcoco", "refs(unc).p", ("val", "testA", "testB"))
REFCOCO_PLUS = _make("refcoco+", "RefCOCO+", "refcoco+", "refs(unc).p", ("val", "testA", "testB"))
REFCOCOG = _make("refcocog", "RefCOCOg", "refcocog", "refs(umd).p", ("val", "test"))
