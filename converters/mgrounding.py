"""MGrounding-630k per-task JSON files -> LLaMA-Factory ShareGPT with absolute image paths.

Why: the published records are already ShareGPT-shaped, but their image
paths are relative to the download folder and nothing guarantees the
placeholders, roles and boxes are right; this streams each file through the
shared checks without ever holding it in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.streaming import iter_json_records

from .convert import convert_file
from .records import make_resolver
from .report import ConversionReport

# dataset name -> per-task file under DATA_ROOT/MGrounding-630k (the first six are the stage-1 part)
TASK_FILES = {
    "mg_common": "Common_Object/common_train_70k.json",
    "mg_diff": "Difference/diff_train_70k.json",
    "mg_group_grounding": "Group_Grounding/gg_train_120k.json",
    "mg_object_tracking": "Object_Tracking/ot_train_130k.json",
    "mg_referring": "Referring_Grounding/refer_train_70k.json",
    "mg_region": "Region_Locating/region_train_70k.json",
    "mg_free_form": "Free-Form/free_form_grounding_130k.json",
}


def convert_mgrounding(
    input_path: str | os.PathLike,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    rejects: str | os.PathLike,
    name: str | None = None,
    require_images: bool = True,
    **options,
) -> ConversionReport:
    """Convert one MGrounding JSON file; image paths are taken relative to `image_root`
    (the folder holding `MGrounding-630k/`)."""
    input_path = Path(input_path)
    return convert_file(
        input_path,
        "MGrounding input",
        lambda path, progress: iter_json_records(path, progress=progress, skip_bad=True),
        output,
        rejects,
        name=name or input_path.stem,
        require_images=require_images,
        resolve=make_resolver(image_root),
        default_type=input_path.stem,
        **options,
    )
