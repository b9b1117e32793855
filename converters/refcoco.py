"""RefCOCO / RefCOCO+ / RefCOCOg (original `refer` layout) -> single-image grounding ShareGPT.

Why: the paper's S-Grounding data teaches Qwen2-VL's own grounding format on
one image. Each train-split referring expression becomes one record: a
prompt naming the expression, answered with the expression and its box on
Qwen2-VL's 0-1000 grid (pixels / image size * 1000, rounded, clamped).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.grounding import REF_END, REF_START, box_tokens, pixel_box_to_grid
from core.jsonfile import read_json

from .convert import SourceReject, convert
from .records import Rejected, make_resolver
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


MAX_REFS_DEPTH = 32  # a real refs file nests 4 deep (list > ref > sentences > sentence)
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    RecursionError,
)


class _PlainUnpickler(pickle.Unpickler):
    """Refuse everything but plain containers: a refs file must not run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"refs file refers to {module}.{name}; only lists/dicts/strings are accepted"
        )


def _text(value: Any, budget: int) -> Any:
    """Python 2 pickles (the published refs files) store str as bytes; decode them, recursively.

    Why bounded: a refs file is untrusted, and a pickle can reference one container many
    times, so a 258-byte file can stand for 2**24 nested lists. At most `budget` objects are
    visited (the loader passes the file size: without shared containers every object costs at
    least one byte), at most MAX_REFS_DEPTH levels deep, and a container inside itself is
    refused; so the work is linear in the file's size.
    """
    visited = 0
    open_ids: set[int] = set()

    def convert(v: Any, depth: int) -> Any:
        nonlocal visited
        visited += 1
        if visited > budget:
            raise ValueError(
                f"it stands for more than {budget} objects (one container referenced many times)"
            )
        if isinstance(v, bytes):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return v.decode("latin-1")
        if not isinstance(v, (list, tuple, dict)):
            return v
        if depth >= MAX_REFS_DEPTH:
            raise ValueError(f"it is nested more than {MAX_REFS_DEPTH} levels deep")
        if id(v) in open_ids:
            raise ValueError(f"a {type(v).__name__} contains itself")
        open_ids.add(id(v))
        try:
            if isinstance(v, dict):
                return {convert(k, depth + 1): convert(x, depth + 1) for k, x in v.items()}
            items = [convert(x, depth + 1) for x in v]
            return items if isinstance(v, list) else tuple(items)
        finally:
            open_ids.discard(id(v))

    return convert(value, 0)


def load_refs(path: str | os.PathLike) -> list[dict]:
    """The refs list of a refer-layout pickle; ValueError naming the file for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()  # from memory, a declared length can only run into the end of the data
        raw = _PlainUnpickler(io.BytesIO(data), encoding="bytes").load()
        refs = _text(raw, budget=len(data) + 16)
    except _UNPICKLE_ERRORS as err:
        raise ValueError(f"{path}: not a readable refs pickle: {type(err).__name__}: {err}") from None
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, found {type(refs).__name__}")
    return refs


def to_qwen_box(bbox: list, width: float, height: float) -> tuple[int, int, int, int]:
    """COCO [x, y, w, h] in pixels -> Qwen2-VL (x1, y1, x2, y2) on the 0-1000 grid."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, x + w, y + h)):
        raise ValueError(f"box {bbox!r:.80} is not finite")
    return pixel_box_to_grid((x, y, x + w, y + h), width, height)


def load_instances(path: str | os.PathLike) -> dict:
    """instances.json as a COCO object; ValueError naming the file for anything else.

    Why here: the converter and the RefCOCO benchmark (eval/benchmarks/refcoco.py) read one layout.
    """
    return read_json(path, dict, "a COCO object with `images` and `annotations`")


def images_and_annotations(instances: dict, notes: list[str] | None = None) -> tuple[dict, dict]:
    """instances.json's `images` and `annotations` by id (ValueError when either is not a list)."""
    return _by_id(instances, "images", notes), _by_id(instances, "annotations", notes)


def _by_id(instances: Any, key: str, notes: list[str] | None) -> dict:
    """instances.json's `images` or `annotations` by id; entries without a usable id are noted, not fatal."""
    items = instances.get(key, [])
    if not isinstance(items, list):
        raise ValueError(f"instances.json `{key}` is a {type(items).__name__}, not a list")
    out, unusable = {}, 0
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), (int, str)):
            out[item["id"]] = item
        else:
            unusable += 1
    if unusable and notes is not None:
        notes.append(f"{unusable} of {len(items)} instances.json {key} have no usable id and were ignored")
    return out


def _key(value: Any) -> int | str | None:
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def iter_refcoco(
    refs: list,
    instances: dict,
    image_dir: Path,
    name: str,
    split: str = "train",
    notes: list[str] | None = None,
) -> Iterator[Any]:
    """Candidate records of the split; instances.json's structure is checked now (ValueError), records lazily."""
    if not isinstance(instances, dict):
        raise ValueError(f"instances.json holds a JSON {type(instances).__name__}, not an object")
    images, anns = images_and_annotations(instances, notes)
    return _refcoco_records(refs, images, anns, make_resolver(image_dir), name, split)


def _refcoco_records(refs: list, images: dict, anns: dict, resolve, name: str, split: str) -> Iterator[Any]:
    for ref in refs:
        if not isinstance(ref, dict):
            yield SourceReject(None, "bad_record", f"ref is a {type(ref).__name__}, not a dict")
            continue
        if ref.get("split") != split:
            continue
        ref_id = ref.get("ref_id")
        if not isinstance(ref_id, (int, str)):
            ref_id = repr(ref_id)[:40]
        bad = next((k for k in ("ann_id", "image_id") if _key(ref.get(k)) is None), None)
        if bad is not None:
            yield SourceReject(f"{name}-{ref_id}", "bad_record", f"{bad} {ref.get(bad)!r:.60} is not an id")
            continue
        ann = anns.get(ref["ann_id"])
        img = images.get(ref["image_id"])
        if ann is None or img is None:
            what = "ann_id" if ann is None else "image_id"
            yield SourceReject(
                f"{name}-{ref_id}", "bad_record", f"{what} {ref.get(what)} not in instances.json"
            )
            continue
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            yield SourceReject(
                f"{name}-{ref_id}",
                "bad_record",
                f"image {ref['image_id']}: file_name {file_name!r:.60} is not a non-empty string",
            )
            continue
        try:
            image_path = resolve(file_name)
        except Rejected as err:
            yield SourceReject(f"{name}-{ref_id}", err.reason, err.detail)
            continue
        try:
            box = to_qwen_box(ann["bbox"], img["width"], img["height"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as err:
            yield SourceReject(
                f"{name}-{ref_id}", "bad_box", f"cannot convert bbox of ann {ann.get('id')}: {err}"
            )
            continue
        sentences = ref.get("sentences") or []
        if not isinstance(sentences, list):
            yield SourceReject(f"{name}-{ref_id}", "bad_record", "sentences is not a list")
            continue
        seen = set()
        for k, sentence in enumerate(sentences):
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
            prompt = PROMPTS[zlib.crc32(rid.encode("utf-8", "surrogatepass")) % len(PROMPTS)].format(
                ref=ref_tag
            )
            yield {
                "id": rid,
                "type": name,
                "images": [image_path],
                "conversations": [
                    {"from": "human", "value": prompt},
                    {"from": "gpt", "value": ref_tag + box_tokens(box)},
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
    instances = load_instances(instances_path)
    n_split = sum(1 for r in refs if isinstance(r, dict) and r.get("split") == split)
    notes: list[str] = []
    try:
        records = iter_refcoco(refs, instances, Path(image_dir), name, split, notes)
    except ValueError as err:
        raise ValueError(f"{instances_path}: {err}") from None
    records = tqdm(records, desc=name, unit="rec", disable=None)
    report = convert(
        records, output, rejects, name=name, inputs=[refs_path, instances_path], default_type=name, **options
    )
    report.notes.append(
        f"{n_split} of {len(refs)} refs are in split {split!r}; one record per distinct sentence"
    )
    report.notes.extend(notes)
    return report
