"""The RL set (`converters trajectories`) -> the dataset TRL's GRPOTrainer reads.

Why: the converters write LLaMA-Factory ShareGPT records (registered in
dataset_info.json like every other set) with the ground truth beside them
(`image_index`, `box`, `num_images`); TRL wants a conversational `prompt`, an
`images` column of PIL images and the ground truth as extra columns, which it
hands to every reward function. A record that cannot be used is skipped and
reported by id, like every converter does; none is dropped silently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.grounding import on_grid
from core.streaming import InvalidJSONError, iter_json_records
from families import DEFAULT_FAMILY, Family, get_family, provenance

log = logging.getLogger(__name__)
IMAGE = "<image>"


class RLDataError(ValueError):
    """The RL set cannot be found or read; the message names the file."""


def resolve_dataset(dataset: str, dataset_dir: str | Path) -> Path:
    """A file path as given, or a dataset_info.json name's file (relative to dataset_dir)."""
    as_path = Path(dataset)
    if as_path.suffix in (".json", ".jsonl") and as_path.is_file():
        return as_path
    info_path = Path(dataset_dir) / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RLDataError(
            f"dataset {dataset!r} is not a file and {info_path} cannot be read: {err}"
        ) from None
    except ValueError as err:
        raise RLDataError(f"{info_path} is not valid JSON: {err}") from None
    entry = info.get(dataset) if isinstance(info, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
        raise RLDataError(f"dataset {dataset!r} is not a file and has no entry in {info_path}")
    path = Path(dataset_dir) / entry["file_name"]
    if not path.is_file():
        raise RLDataError(f"{path} (dataset {dataset!r}) not found; build it with `make data`")
    return path


def to_example(record: Any, family: str | Family = DEFAULT_FAMILY) -> dict[str, Any]:
    """One ShareGPT RL record -> one TRL example; raises ValueError saying what is wrong.

    family: the run's model family (rl config `family`); a record converted for another one
    (`box_format`, converters --box-format) is refused, and Qwen2.5-VL's records must carry
    `resized_sizes` (the rewards read its pixel answers with them)."""
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not an object")
    images, turns = record.get("images"), record.get("conversations")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise ValueError("images is not a non-empty list of paths")
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], dict):
        raise ValueError("conversations has no first turn")
    question = turns[0].get("value")
    if turns[0].get("from") != "human" or not isinstance(question, str):
        raise ValueError("the first turn is not a human question")
    if question.count(IMAGE) != len(images):
        raise ValueError(f"{question.count(IMAGE)} <image> placeholders for {len(images)} images")
    # The prompt is the family's chat turn as LLaMA-Factory trained on it (families.chat): its system
    # message, each image followed by the records' newline, then the question.
    text = question.replace(IMAGE + "\n", "").replace(IMAGE, "").strip()
    index, box, n = record.get("image_index"), record.get("box"), record.get("num_images")
    if not isinstance(n, int) or isinstance(n, bool) or n != len(images):
        raise ValueError(f"num_images {n!r} is not the number of images ({len(images)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= n:
        raise ValueError(f"image_index {index!r} is not in 1..{n}")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        or not on_grid(box)
    ):
        raise ValueError(f"box {box!r} is not [x1,y1,x2,y2] on the 0-1000 grid")
    fam = get_family(family)
    converted_for = provenance.record_family(record)
    if converted_for != fam.name:
        raise ValueError(
            f"converted for {converted_for!r} (box_format) but the run's family is {fam.name!r}: "
            f"convert with --box-format {fam.name}"
        )
    extra = {}
    if fam.boxes_need_canvas:
        sizes = record.get("resized_sizes")
        if not (
            isinstance(sizes, list)
            and len(sizes) == n
            and all(
                isinstance(s, list)
                and len(s) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)
                for s in sizes
            )
        ):
            raise ValueError(
                f"resized_sizes {sizes!r:.120} is not [width, height] for each of the {n} image(s)"
            )
        extra["resized_sizes"] = sizes
    # every target (the mgthinker profile matches several one-to-one); a one-target record's is its own, so
    # every example has the column (Dataset.from_list takes its columns from the first example)
    targets = record.get("targets", [{"image_index": index, "box": box}])
    extra["targets"] = _targets(targets, n)
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise ValueError(f"image {missing[0]} not found")
    return {
        "id": str(record.get("id", "")),
        "task": str(record.get("task") or record.get("type") or ""),
        "prompt": fam.chat_messages(n, text),
        "images": images,
        "image_index": index,
        "box": box,
        "num_images": n,
        **extra,
    }


def _targets(targets: Any, n: int) -> list[dict]:
    """A record's `targets`: [{"image_index": k, "box": [x1, y1, x2, y2]}, ...] on the 0-1000 grid."""
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"targets {targets!r:.120} is not a non-empty list of {{image_index, box}}")
    out = []
    for i, t in enumerate(targets):
        index, box = (t.get("image_index"), t.get("box")) if isinstance(t, dict) else (None, None)
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= n:
            raise ValueError(f"targets[{i}]: image_index {index!r} is not in 1..{n}")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
            or not on_grid(box)
        ):
            raise ValueError(f"targets[{i}]: box {box!r} is not [x1,y1,x2,y2] on the 0-1000 grid")
        out.append({"image_index": index, "box": box})
    return out


def load_examples(
    path: Path, max_samples: int | None = None, family: str | Family = DEFAULT_FAMILY
) -> tuple[list[dict], list[dict]]:
    """(examples, skipped) from an RL set file; skipped entries carry id/position and reason."""
    examples, skipped = [], []
    try:
        for position, record in enumerate(iter_json_records(path)):
            if max_samples is not None and len(examples) >= max_samples:
                break
            try:
                examples.append(to_example(record, family))
            except ValueError as err:
                rid = record.get("id") if isinstance(record, dict) else None
                skipped.append({"record": position, "id": rid, "reason": str(err)})
                log.warning("%s: record %d (id %r) skipped: %s", path, position, rid, err)
    except InvalidJSONError as err:
        raise RLDataError(str(err)) from None
    except OSError as err:
        raise RLDataError(f"cannot read {path}: {err}") from None
    if not examples:
        raise RLDataError(f"{path}: no usable RL record ({len(skipped)} skipped)")
    return examples, skipped


def build_dataset(examples: list[dict], family: str | Family, image_max_pixels: int, image_min_pixels: int):
    """A datasets.Dataset whose `images` decode on access (never all in memory) to the PIL images SFT fed.

    Why a transform and not the processor's budget: LLaMA-Factory pre-shrinks each image by area with
    int() truncation before the processor's smart_resize (families.resize); a processor told the budget
    gives another canvas (1024x768: 728x532 instead of 728x560), so Qwen2.5-VL's pixel rewards would score
    boxes on an image the model never saw. TRL hands these PIL images to the processor and to vLLM alike.
    """
    from datasets import Dataset

    fam = get_family(family)

    def decode(batch: dict) -> dict:
        batch["images"] = [
            [_open_preshrunk(path, fam, image_max_pixels, image_min_pixels) for path in paths]
            for paths in batch["images"]
        ]
        return batch

    return Dataset.from_list(examples).with_transform(decode)


def _open_preshrunk(path: str, family: Family, image_max_pixels: int, image_min_pixels: int):
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return family.preprocess_image(img, image_max_pixels, image_min_pixels)
