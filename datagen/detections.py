"""Images and boxes from a detection dataset in the COCO / Objects365 annotation layout.

Why: the free-form pipeline starts from single-image annotations (Migician used Objects365). The
layout is one JSON with `images` (id, file_name, width, height), `annotations` (image_id,
category_id, bbox [x, y, w, h] in pixels) and `categories` (id, name). Each box goes onto the
0-1000 grid once, here; an image or box that cannot be used is skipped with its reason, and an image
path that leaves --image-dir is refused for that image (the annotation file is untrusted too).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass

from core.grounding import on_grid, pixel_box_to_grid
from core.jsonfile import JSONFileError, read_json

log = logging.getLogger(__name__)

MAX_NAME = 200


class DetectionsError(ValueError):
    """The annotation file as a whole cannot be read."""


@dataclass(frozen=True)
class Obj:
    name: str
    box: tuple[int, int, int, int]  # 0-1000 grid
    area: float  # share of the image (0-1)


@dataclass(frozen=True)
class DetImage:
    key: str  # the annotation file's image id, as text
    path: str  # absolute, inside --image-dir
    objects: tuple[Obj, ...]

    @property
    def classes(self) -> set[str]:
        return {o.name for o in self.objects}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _clean_name(name) -> str | None:
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name) or "<" in name or ">" in name:
        return None
    return name


def load_detections(
    annotations: str | os.PathLike, image_dir: str | os.PathLike, rejects: Counter, limit: int | None = None
) -> list[DetImage]:
    """Usable images (with at least one usable box), in the file's order; `rejects` counts the rest."""
    try:
        data = read_json(annotations)
    except JSONFileError as err:
        raise DetectionsError(f"--detections: {err}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise DetectionsError(f"--detections {annotations}: not the COCO layout (images, annotations lists)")
    names = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and isinstance(cat.get("id"), (int, str)) and _clean_name(cat.get("name")):
            names[cat["id"]] = _clean_name(cat["name"])
    root = os.path.realpath(image_dir)
    images: dict = {}
    order = []
    for img in data["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), (int, str)):
            rejects["bad_image_entry"] += 1
            continue
        w, h, rel = _number(img.get("width")), _number(img.get("height")), img.get("file_name")
        if not w or not h or w <= 0 or h <= 0 or not isinstance(rel, str) or not rel or "\x00" in rel:
            rejects["bad_image_entry"] += 1
            continue
        path = os.path.realpath(os.path.join(root, rel))
        if os.path.isabs(rel) or not path.startswith(root + os.sep):
            rejects["image_outside_root"] += 1
            log.warning("image %r: %r leaves --image-dir %s; skipped", img["id"], rel[:200], root)
            continue
        if not os.path.isfile(path):
            rejects["missing_image"] += 1
            continue
        if img["id"] in images:
            rejects["duplicate_image_id"] += 1
            continue
        images[img["id"]] = (path, w, h, [])
        order.append(img["id"])
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            rejects["box_without_image"] += 1
            continue
        path, w, h, objs = images[ann["image_id"]]
        name = names.get(ann.get("category_id")) if isinstance(ann.get("category_id"), (int, str)) else None
        bbox = ann.get("bbox")
        nums = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
        if name is None:
            rejects["unknown_category"] += 1
            continue
        if not nums or any(v is None for v in nums) or nums[2] <= 0 or nums[3] <= 0:
            rejects["bad_box"] += 1
            continue
        x, y, bw, bh = nums
        if x < 0 or y < 0 or x + bw > w * 1.01 or y + bh > h * 1.01 or ann.get("iscrowd") in (1, True):
            rejects["bad_box" if not ann.get("iscrowd") else "crowd_box"] += 1
            continue
        box = pixel_box_to_grid((x, y, min(x + bw, w), min(y + bh, h)), w, h)
        if not on_grid(box):
            rejects["bad_box"] += 1  # collapsed to a line on the grid
            continue
        objs.append(Obj(name, box, (bw * bh) / (w * h)))
    out = []
    for key in order:
        path, _, _, objs = images[key]
        if not objs:
            rejects["no_boxes"] += 1
            continue
        out.append(DetImage(str(key), path, tuple(objs)))
        if limit is not None and len(out) >= limit:
            break
    return out
