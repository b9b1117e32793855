"""RefCOCO / RefCOCO+ / RefCOCOg (original `refer` layout) -> single-image grounding ShareGPT.

Why: the paper's S-Grounding data teaches Qwen2-VL's own grounding format on
one image. Each train-split referring expression becomes one record: a
prompt naming the expression, answered with the expression and its box on
Qwen2-VL's 0-1000 grid (pixels / image size * 1000, rounded, clamped).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .convert import SourceReject, convert
from .records import BOX_END, BOX_START, REF_END, REF_START
from .report import ConversionReport

# dataset name -> (folder under DATA_ROOT, refs file, record type)
DATASETS = {
    "refcoco": ("refcoco", "refs(unc).p"),
    "refcoco_plus": ("refcoco+", "refs(unc).p"),
    "refcocog": ("refcocog", "refs(umd).p"),
}

PROMPTS = (
    "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: {ref}",
    "<image>\nLocate {ref} in the image and give its bounding box.",
    "<image>\nFind the bounding box of {ref}.",
    "<image>\nWhere is {ref} in the image? Answer with its bounding box.",
)


class _PlainUnpickler(pickle.Unpickler):
    """Refuse everything but plain containers: a refs file must not run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"refs file refers to {module}.{name}; only lists/dicts/strings are accepted"
        )


def _text(value: Any) -> Any:
    """Python 2 pickles (the published refs files) store str as bytes; decode them, recursively."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def load_refs(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            refs = _text(_PlainUnpickler(handle, encoding="bytes").load())
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable refs pickle: {err}") from None
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, found {type(refs).__name__}")
    return refs


def to_qwen_box(bbox: list, width: float, height: float) -> tuple[int, int, int, int]:
    """COCO [x, y, w, h] in pixels -> Qwen2-VL (x1, y1, x2, y2) on the 0-1000 grid."""
    x, y, w, h = (float(v) for v in bbox)

    def grid(v: float, size: float) -> int:
        return min(1000, max(0, math.floor(v / size * 1000 + 0.5)))  # half up, not banker's rounding

    return grid(x, width), grid(y, height), grid(x + w, width), grid(y + h, height)


def box_text(box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return f"{BOX_START}({x1},{y1}),({x2},{y2}){BOX_END}"


def iter_refcoco(refs: list, instances: dict, image_dir: Path, name: str, split: str = "train"):
    images = {img["id"]: img for img in instances.get("images", [])}
    anns = {ann["id"]: ann for ann in instances.get("annotations", [])}
    image_dir = Path(os.path.abspath(image_dir))
    for ref in refs:
        if not isinstance(ref, dict):
            yield SourceReject(None, "bad_record", f"ref is a {type(ref).__name__}, not a dict")
            continue
        if ref.get("split") != split:
            continue
        ref_id = ref.get("ref_id")
        ann = anns.get(ref.get("ann_id"))
        img = images.get(ref.get("image_id"))
        if ann is None or img is None:
            what = "ann_id" if ann is None else "image_id"
            yield SourceReject(
                f"{name}-{ref_id}", "bad_record", f"{what} {ref.get(what)} not in instances.json"
            )
            continue
        try:
            box = to_qwen_box(ann["bbox"], img["width"], img["height"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            yield SourceReject(
                f"{name}-{ref_id}", "bad_box", f"cannot convert bbox of ann {ann.get('id')}: {err}"
            )
            continue
        seen = set()
        for k, sentence in enumerate(ref.get("sentences") or []):
            text = (sentence.get("sent") or sentence.get("raw") or "") if isinstance(sentence, dict) else ""
            text = " ".join(str(text).split())
            rid = f"{name}-{ref_id}-{k}"
            if not text:
                yield SourceReject(rid, "empty_text", f"sentence {k} of ref {ref_id} is empty")
                continue
            if text in seen:
                continue
            seen.add(text)
            ref_tag = f"{REF_START}{text}{REF_END}"
            prompt = PROMPTS[zlib.crc32(rid.encode()) % len(PROMPTS)].format(ref=ref_tag)
            yield {
                "id": rid,
                "type": name,
                "images": [str(image_dir / img["file_name"])],
                "conversations": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": ref_tag + box_text(box)},
                ],
            }


def convert_refcoco(
    refs_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    output: str | os.PathLike,
    rejects: str | os.PathLike,
    name: str = "refcoco",
    split: str = "train",
    **options,
) -> ConversionReport:
    refs = load_refs(refs_path)
    try:
        with open(instances_path, encoding="utf-8") as handle:
            instances = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{instances_path}: invalid JSON: {err}") from None
    n_split = sum(1 for r in refs if isinstance(r, dict) and r.get("split") == split)
    records = tqdm(
        iter_refcoco(refs, instances, Path(image_dir), name, split), desc=name, unit="rec", disable=None
    )
    report = convert(
        records, output, rejects, name=name, inputs=[refs_path, instances_path], default_type=name, **options
    )
    report.notes.append(
        f"{n_split} of {len(refs)} refs are in split {split!r}; one record per distinct sentence"
    )
    return report
