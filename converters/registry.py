"""The repository's `dataset_info.json`: one LLaMA-Factory entry per produced file.

Why: recipes name datasets (`migician_stage1`, ...) that LLaMA-Factory looks
up in `dataset_dir: .`; the entries are generated from the same names the
converters write, so the registry and the files cannot drift apart (a test
compares the committed file with `dataset_info()`).
"""

from __future__ import annotations

import json
from typing import Any

from stages import mixture_stages

from .mgrounding import TASK_FILES
from .refcoco import DATASETS as REFCOCO_DATASETS
from .trajectories import RL_NAME, SFT_NAME

SOURCES = (*TASK_FILES, "llava_onevision", "m4_instruct", *REFCOCO_DATASETS, "groma_instruct")
# Built from the converted MGrounding files (trajectories.py): MIRG-RL's trajectory-SFT and RL sets.
DERIVED = (SFT_NAME, RL_NAME)
SHAREGPT_DIR = "data/sharegpt"
# One mixture per stage of the stage table that trains on one (the demo writes its own registry).
MIXTURES = {f"migician_{name}": f"data/mixtures/migician_{name}.json" for name in mixture_stages()}


def entry(file_name: str) -> dict[str, Any]:
    """ShareGPT with a multi-image `images` column and human/gpt role tags."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def dataset_info() -> dict[str, Any]:
    info = {name: entry(f"{SHAREGPT_DIR}/{name}.json") for name in (*SOURCES, *DERIVED)}
    info.update({name: entry(path) for name, path in MIXTURES.items()})
    return info


def dataset_info_text() -> str:
    return json.dumps(dataset_info(), indent=2) + "\n"
