"""Groma-Instruct (grounded GPT-4V conversations on Visual Genome) -> Qwen2-VL grounding ShareGPT.

Why: the paper's S-Grounding mix includes Groma-Instruct, whose answers mark
phrases as `<p>phrase</p> <roi><ground_box></roi>` and keep the boxes apart
(`boxes`, COCO xywh pixels; each answer's `box_inds` names them in order).
Qwen2-VL reads `<|object_ref_start|>phrase<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`
on a 0-1000 grid, so each box is substituted in place.

Layout (FoundationVision/groma_instruct on the Hub, as Groma's own loader reads it):
    DATA_ROOT/Groma-Instruct/groma_instruct.json   list of
        {"file_name", "width", "height", "boxes": [[x, y, w, h], ...],
         "conversation": [{"from": "human", "value"}, {"from": "gpt", "value", "box_inds": [...]}, ...]}
    DATA_ROOT/visual_genome/images/<file_name>     (Groma's `dataset/visual_genome/images/`)
Roles missing from a turn are taken from its position (even: human, odd: gpt), as Groma does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.grounding import box_tokens
from core.streaming import iter_json_records

from .convert import SourceReject, convert_file
from .records import REF_END, REF_START, Rejected, make_resolver
from .refcoco import to_qwen_box
from .report import ConversionReport

GROUND_BOX = "<ground_box>"


class _GromaTokenLeft(Exception):
    """A Groma markup token this converter does not translate (e.g. a visual prompt)."""


_LEFTOVER = re.compile(r"<(?:/?p|/?roi|ground_box|refer_box|refer_feat|region|r\d+|sep)>|\[grounding\]")


def _answer(text: str, boxes: list, box_inds: list, width: float, height: float) -> str:
    if len(box_inds) != text.count(GROUND_BOX):
        raise ValueError(f"{text.count(GROUND_BOX)} {GROUND_BOX} token(s) but {len(box_inds)} box_inds")
    text = text.replace("<p>", REF_START).replace("</p>", REF_END)
    text = text.replace("<roi>", "").replace("</roi>", "")
    for ind in box_inds:
        if not isinstance(ind, int) or not 0 <= ind < len(boxes):
            raise ValueError(f"box index {ind!r} out of range for {len(boxes)} boxes")
        text = text.replace(GROUND_BOX, box_tokens(to_qwen_box(boxes[ind], width, height)), 1)
    text = re.sub(r"<\|object_ref_end\|>\s+<\|box_start\|>", "<|object_ref_end|><|box_start|>", text)
    return re.sub(r"<\|box_end\|>\s+<\|box_start\|>", "<|box_end|><|box_start|>", text)


def iter_groma(path: Path, image_root: Path, progress=None) -> Iterator[Any]:
    resolve = make_resolver(image_root)
    for index, raw in enumerate(iter_json_records(path, progress=progress, skip_bad=True)):
        if isinstance(raw, SourceReject):
            yield raw
            continue
        rid = raw.get("id", f"groma-{index}") if isinstance(raw, dict) else f"groma-{index}"
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            rid = f"groma-{index}"
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"record is a {type(raw).__name__}")
            boxes, turns = raw.get("boxes") or [], raw.get("conversation")
            width, height = raw["width"], raw["height"]
            if not isinstance(boxes, list):
                raise TypeError("'boxes' is not a list")
            if not isinstance(turns, list):
                raise TypeError("'conversation' is not a list")
            file_name = raw.get("file_name")
            if file_name is not None and (not isinstance(file_name, str) or not file_name):
                raise TypeError(f"'file_name' {file_name!r:.60} is not a non-empty string")
            images = [resolve(file_name)] if file_name else []
            conversations = []
            for i, turn in enumerate(turns):
                role = turn.get("from") or ("human" if i % 2 == 0 else "gpt")
                value = turn.get("value")
                if isinstance(value, str):
                    if role == "gpt":
                        value = _answer(value, boxes, turn.get("box_inds") or [], width, height)
                    else:
                        value = value.replace("[grounding]", "").strip()
                    if i == 0:
                        value = "<image>\n" + value
                    leftover = _LEFTOVER.search(value)
                    if leftover:
                        raise _GromaTokenLeft(f"turn {i} keeps Groma token {leftover.group(0)!r}")
                conversations.append({"from": role, "value": value})
        except Rejected as err:
            yield SourceReject(rid, err.reason, f"record {index}: {err.detail}")
            continue
        except (KeyError, TypeError, AttributeError, _GromaTokenLeft) as err:
            yield SourceReject(rid, "bad_record", f"record {index}: {type(err).__name__}: {err}")
            continue
        except (ValueError, ArithmeticError) as err:  # ZeroDivisionError, OverflowError (1e308 * 1000)
            yield SourceReject(rid, "bad_box", f"record {index}: {err}")
            continue
        yield {
            "id": str(rid),
            "type": "groma_instruct",
            "images": images,
            "conversations": conversations,
        }


def convert_groma(
    input_path: str | os.PathLike,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    rejects: str | os.PathLike,
    name: str = "groma_instruct",
    **options,
) -> ConversionReport:
    return convert_file(
        input_path,
        "Groma-Instruct file",
        lambda path, progress: iter_groma(path, Path(image_root), progress=progress),
        output,
        rejects,
        name=name,
        **options,
    )
