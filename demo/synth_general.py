"""The demo's small 'general' data, in the published layouts the converters read.

Why: Migician mixes single-image understanding (LLaVA-OneVision), single-image grounding (RefCOCO)
and multi-image understanding (M4-Instruct) into both stages. The demo needs the same sources so the
whole converter + mixture path runs, with the same shapes-on-a-grid world as the grounding data:
- `refcoco/instances.json` + `refcoco/refs(unc).p` + `coco/train2014/*.jpg` (refer's layout),
- `LLaVA-OneVision-Data/<subset>/*.parquet` with the images embedded as bytes,
- `M4-Instruct-Data/m4_instruct_annotations.json` + images.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from random import Random

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from demo.synth_draw import CELL_NAMES, COLORS, N_CELLS, SHAPES, TARGET, Obj, jpeg_bytes, png_bytes, render
from demo.synth_tasks import NUMBERS, ORDINALS

COLOR_NAMES = tuple(COLORS)
LLAVA_SUBSET = "demo_shapes"
LLAVA_SHARDS = 2
M4_SUBDIR = "synthetic"


def _rng(seed: int, source: str, i: int) -> Random:
    return Random(f"{seed}|general|{source}|{i}")


def _objects(rng: Random, n: int, unique: Obj | None = None) -> list[Obj]:
    """n objects in distinct cells; if `unique` is given it is one of them and the only one of its colour."""
    cells = rng.sample(range(N_CELLS), n)
    if unique is None:
        return [Obj(rng.choice(COLOR_NAMES), rng.choice(SHAPES), c) for c in cells]
    others = [c for c in COLOR_NAMES if c != unique.color]
    objs = [Obj(unique.color, unique.shape, cells[0])]
    objs += [Obj(rng.choice(others), rng.choice(SHAPES), c) for c in cells[1:]]
    rng.shuffle(objs)
    return objs


def write_refcoco(root: Path, seed: int, n: int, size: int, progress: bool = True) -> dict:
    """RefCOCO in refer's layout: one referring expression target per image, boxes [x, y, w, h] pixels.

    Images are 5:4 (not square) so the pixel -> 0-1000 conversion is exercised on both axes.
    Every tenth ref is in split "val" (the converters must drop it: only "train" trains).
    """
    width, height = size * 5 // 4, size
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, refs = [], [], []
    image_dir = root / "coco" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    sent_id = 0
    for i in tqdm(range(n), desc="refcoco", disable=not progress):
        rng = _rng(seed, "refcoco", i)
        image_id = 100000 + i
        target = Obj(TARGET, rng.choice(SHAPES), -1)  # grounding targets are red (see synth_draw)
        objs = _objects(rng, rng.randint(2, 4), target)
        image, boxes = render(rng, objs, width, height)
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        (image_dir / file_name).write_bytes(jpeg_bytes(image))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        target_ann = None
        for k, (obj, (left, top, right, bottom)) in enumerate(zip(objs, boxes, strict=True)):
            ann_id = image_id * 10 + k
            w, h = float(right - left), float(bottom - top)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": cat_id[obj.shape],
                    "bbox": [float(left), float(top), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[left, top, right, top, right, bottom, left, bottom]],
                }
            )
            if obj.color == target.color:
                target_ann, target_obj = ann_id, obj
        phrases = [
            f"{target_obj.color} {target_obj.shape}",
            f"the {target_obj.color} {target_obj.shape}",
            f"{target_obj.color} {target_obj.shape} at the {CELL_NAMES[target_obj.cell]}",
        ]
        sentences = []
        for phrase in rng.sample(phrases, rng.randint(1, 2)):
            sentences.append(
                {"tokens": phrase.split(), "raw": phrase.capitalize(), "sent_id": sent_id, "sent": phrase}
            )
            sent_id += 1
        refs.append(
            {
                "sent_ids": [s["sent_id"] for s in sentences],
                "file_name": f"COCO_train2014_{image_id:012d}_{target_ann}.jpg",
                "ann_id": target_ann,
                "ref_id": i,
                "image_id": image_id,
                "split": "val" if i % 10 == 9 else "train",
                "sentences": sentences,
                "category_id": cat_id[target_obj.shape],
            }
        )
    instances = {
        "info": {"description": "demo.synth RefCOCO-layout shapes", "version": "1.0"},
        "images": images,
        "licenses": [],
        "annotations": annotations,
        "categories": categories,
    }
    ref_dir = root / "refcoco"
    ref_dir.mkdir(parents=True, exist_ok=True)
    (ref_dir / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    (ref_dir / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=4))
    return {"refcoco/refs(unc).p": len(refs), "coco/train2014": len(images)}


def _single_image_qa(rng: Random, objs: list[Obj]) -> list[tuple[str, str]]:
    """Short questions about one image (the LLaVA-OneVision part)."""
    if len(objs) == 1:
        obj = objs[0]
        turns = [
            ("What color is the shape?", f"{obj.color.capitalize()}."),
            ("What shape is this?", f"A {obj.shape}."),
        ]
        rng.shuffle(turns)
        return turns[: rng.randint(1, 2)]
    color, shape = rng.choice(COLOR_NAMES), rng.choice(SHAPES)
    present = any(o.color == color and o.shape == shape for o in objs)
    turns = [
        ("How many shapes are in the image?", f"{NUMBERS[len(objs)]}."),
        (f"Is there a {color} {shape} in the image? Answer yes or no.", "Yes." if present else "No."),
    ]
    rng.shuffle(turns)
    return turns[: rng.randint(1, 2)]


def _conversation(turns: list[tuple[str, str]], n_images: int) -> list[dict]:
    conv = []
    for k, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": ("<image>\n" * n_images if k == 0 else "") + q})
        conv.append({"from": "gpt", "value": a})
    return conv


def write_llava_onevision(root: Path, seed: int, n: int, size: int, progress: bool = True) -> dict:
    """LLaVA-OneVision parquet shards: columns id, image {bytes, path}, conversations, data_source."""
    rows = []
    for i in tqdm(range(n), desc="llava_onevision", disable=not progress):
        rng = _rng(seed, "llava_onevision", i)
        objs = _objects(rng, rng.choice((1, 1, 2, 3)))
        image, _ = render(rng, objs, size, size)
        rid = f"{LLAVA_SUBSET}_{i:06d}"
        rows.append(
            {
                "id": rid,
                "image": {"bytes": png_bytes(image), "path": f"{rid}.png"},
                "conversations": _conversation(_single_image_qa(rng, objs), 1),
                "data_source": LLAVA_SUBSET,
            }
        )
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            ("data_source", pa.string()),
        ]
    )
    out = root / "LLaVA-OneVision-Data" / LLAVA_SUBSET
    out.mkdir(parents=True, exist_ok=True)
    shards = max(1, min(LLAVA_SHARDS, len(rows)))
    per = -(-len(rows) // shards) if rows else 0
    for s in range(shards):
        table = pa.Table.from_pylist(rows[s * per : (s + 1) * per], schema=schema)
        pq.write_table(table, out / f"train-{s:05d}-of-{shards:05d}.parquet", compression="snappy")
    return {f"LLaVA-OneVision-Data/{LLAVA_SUBSET}": len(rows)}


def _multi_image_qa(rng: Random, scenes: list[list[Obj]]) -> list[tuple[str, str]]:
    """Short questions across images (the M4-Instruct part)."""
    n = len(scenes)
    shape = rng.choice(SHAPES)
    with_shape = sum(any(o.shape == shape for o in s) for s in scenes)
    turns = [(f"How many images show a {shape}?", f"{NUMBERS[with_shape]}.")]
    owners = {c: [i for i, s in enumerate(scenes) if any(o.color == c for o in s)] for c in COLOR_NAMES}
    single = [c for c, own in owners.items() if len(own) == 1]
    if single:
        color = rng.choice(single)
        turns.append((f"Which image contains a {color} shape?", f"The {ORDINALS[owners[color][0]]} image."))
    every = all(any(o.shape == shape for o in s) for s in scenes)
    turns.append((f"Do all {n} images contain a {shape}? Answer yes or no.", "Yes." if every else "No."))
    rng.shuffle(turns)
    return turns[: rng.randint(1, 2)]


def write_m4_instruct(root: Path, seed: int, n: int, size: int, progress: bool = True) -> dict:
    """M4-Instruct: one JSON list of {id, image: [paths relative to M4-Instruct-Data/], conversations}."""
    base = root / "M4-Instruct-Data"
    (base / M4_SUBDIR).mkdir(parents=True, exist_ok=True)
    records = []
    for i in tqdm(range(n), desc="m4_instruct", disable=not progress):
        rng = _rng(seed, "m4_instruct", i)
        scenes = [_objects(rng, rng.randint(1, 2)) for _ in range(rng.randint(2, 4))]
        paths = []
        for k, scene in enumerate(scenes):
            image, _ = render(rng, scene, size, size)
            rel = f"{M4_SUBDIR}/m4_{i:06d}_{k + 1}.png"
            (base / rel).write_bytes(png_bytes(image))
            paths.append(rel)
        records.append(
            {
                "id": f"m4_{i:06d}",
                "image": paths,
                "conversations": _conversation(_multi_image_qa(rng, scenes), len(paths)),
            }
        )
    (base / "m4_instruct_annotations.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    return {"M4-Instruct-Data/m4_instruct_annotations.json": len(records)}
