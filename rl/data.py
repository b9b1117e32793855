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

from converters.streaming import InvalidJSONError, iter_json_records
from grounding import on_grid

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


def to_example(record: Any, family: str = "qwen2-vl") -> dict[str, Any]:
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
    # TRL puts the images before the text of the first user turn, as the converters do.
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
    converted_for = record.get("box_format", "qwen2-vl")
    if converted_for != family:
        raise ValueError(
            f"converted for {converted_for!r} (box_format) but the run's family is {family!r}: "
            f"convert with --box-format {family}"
        )
    extra = {}
    if family == "qwen2.5-vl":
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
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise ValueError(f"image {missing[0]} not found")
    return {
        "id": str(record.get("id", "")),
        "task": str(record.get("task") or record.get("type") or ""),
        "prompt": [{"role": "user", "content": text}],
        "images": images,
        "image_index": index,
        "box": box,
        "num_images": n,
        **extra,
    }


def load_examples(
    path: Path, max_samples: int | None = None, family: str = "qwen2-vl"
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


def build_dataset(examples: list[dict]):
    """A datasets.Dataset whose `images` decode to PIL images on access (never all in memory)."""
    from datasets import Dataset, Image, Sequence

    dataset = Dataset.from_list(examples)
    return dataset.cast_column("images", Sequence(Image()))
