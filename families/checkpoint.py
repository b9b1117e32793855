"""What a checkpoint folder says about itself: its config, its processor's pixel range, its chat
templates (Thinking or Instruct), and the image budget this pack trained it with.

Why its own module: all of it is read from files a user hands in, so every read is bounded and a bad
file gives one error naming it; the families decide what the values mean.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from core.atomicio import atomic_write_text
from core.jsonfile import JSONFileError, read_json, read_limited

log = logging.getLogger(__name__)

_MAX_CONFIG_BYTES = 16 * 1024 * 1024
_MAX_BUDGET_BYTES = 64 * 1024
_DEFAULT_MIN_PIXELS, _DEFAULT_MAX_PIXELS = 56 * 56, 28 * 28 * 1280  # Qwen2VLImageProcessor.size's defaults
# Written beside the weights by every stage of this pack that saves a checkpoint (LLaMA-Factory stages through
# the Makefile, GRPO, merge): the per-image budget it was trained with, which eval uses by default.
BUDGET_FILE = "image_budget.json"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or holds no usable value; the message names the file."""


def read_config(model_dir: str | Path) -> dict:
    """config.json of a checkpoint folder as a dict (bounded read); CheckpointError naming the file."""
    try:
        return read_json(Path(model_dir) / "config.json", dict, "a model config object", _MAX_CONFIG_BYTES)
    except JSONFileError as err:
        raise CheckpointError(str(err)) from None


def write_budget(
    model_dir: str | Path, family: str, image_max_pixels: int, image_min_pixels: int, by: str
) -> Path:
    """Record the per-image budget a checkpoint was trained with (atomic; overwrites only this file)."""
    path = Path(model_dir) / BUDGET_FILE
    record = {
        "family": family,
        "image_max_pixels": int(image_max_pixels),
        "image_min_pixels": int(image_min_pixels),
        "written_by": by,
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_budget(model_dir: str | Path) -> tuple[int, int] | None:
    """(image_max_pixels, image_min_pixels) recorded with a checkpoint, or None when it records none.
    A record that is present but unreadable is an error: a silent default would change what eval feeds."""
    path = Path(model_dir) / BUDGET_FILE
    if not path.exists():  # present but not a regular file (a directory, /dev/zero): an error below
        return None
    try:
        record = read_json(path, dict, "an image budget record", _MAX_BUDGET_BYTES)
        hi, lo = record["image_max_pixels"], record["image_min_pixels"]
    except JSONFileError as err:
        raise CheckpointError(str(err)) from None
    except KeyError as err:
        raise CheckpointError(f"{path}: not an image budget record (no {err})") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (hi, lo)) or lo > hi:
        raise CheckpointError(f"{path}: image budget {lo!r}..{hi!r} is not two positive integers")
    return hi, lo


def processor_pixel_range(model_dir: str | Path) -> tuple[int, int]:
    """(min_pixels, max_pixels) of a checkpoint's image processor, as smart_resize will use them.

    Reads `preprocessor_config.json` (the released layout) or transformers 5's `processor_config.json`
    (`image_processor` inside it) with Qwen2VLImageProcessor.__init__'s precedence: legacy
    `min_pixels`/`max_pixels` override `size.shortest_edge/longest_edge`, and what neither gives is
    the class default (56 x 56 and 28 x 28 x 1280).
    """
    folder = Path(model_dir)
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if not path.exists():
            continue
        try:
            config = read_json(path, max_bytes=_MAX_CONFIG_BYTES, what="image processor settings")
        except JSONFileError as err:
            raise CheckpointError(f"cannot read the image processor settings: {err}") from None
        if isinstance(config, dict) and name == "processor_config.json":
            config = config.get("image_processor")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path} holds no image processor settings (a JSON object)")
        size = config.get("size") if isinstance(config.get("size"), dict) else {}
        lo = config.get("min_pixels", size.get("shortest_edge", _DEFAULT_MIN_PIXELS))
        hi = config.get("max_pixels", size.get("longest_edge", _DEFAULT_MAX_PIXELS))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (lo, hi)) or lo > hi:
            raise CheckpointError(
                f"{path}: image processor pixel range {lo!r}..{hi!r} is not two positive integers"
            )
        return lo, hi
    raise CheckpointError(
        f"{folder} has no image processor settings (preprocessor_config.json or processor_config.json)"
    )


# ---------------------------------------------------------------- Thinking or Instruct

_MAX_TEMPLATE_BYTES = 1024 * 1024  # released chat templates are 2-10 kB
# A generation prompt that opens a think block: `'<|im_start|>assistant\n<think>` in the template's source
# (`\n` written as the two characters, as Jinja string literals hold it, or as a newline).
_THINK_PROMPT_RE = re.compile(r"<\|im_start\|>assistant(?:\\n|\n)<think>")


def chat_templates(model_dir: str | Path) -> list[tuple[Path, str]]:
    """The chat templates a checkpoint ships: chat_template.jinja (transformers 5), tokenizer_config.json's
    `chat_template` (a string, or a list of {name, template}), chat_template.json's (the processor's).
    Unreadable or oversized files are skipped with a warning: a template decides a default, not the data."""
    folder = Path(model_dir)
    found: list[tuple[Path, str]] = []
    for name in ("chat_template.jinja", "tokenizer_config.json", "chat_template.json"):
        path = folder / name
        try:
            if not path.exists():
                continue
            text = read_limited(path, _MAX_TEMPLATE_BYTES * 16, "a file holding a chat template").decode(
                "utf-8"
            )
            if name.endswith(".jinja"):
                found.append((path, text))
                continue
            value = json.loads(text).get("chat_template") if text.lstrip().startswith("{") else None
        except (OSError, ValueError, RecursionError, AttributeError) as err:
            log.warning("%s: cannot read its chat template: %s", path, err)
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            template = item.get("template") if isinstance(item, dict) else item
            if isinstance(template, str) and len(template) <= _MAX_TEMPLATE_BYTES:
                found.append((path, template))
    return found


def is_thinking_checkpoint(model_dir: str | Path) -> Path | None:
    """The file whose chat template makes this a Thinking checkpoint (generation prompt opening `<think>`,
    as Qwen3-VL-*-Thinking ship), or None (Instruct, or no template). Both variants have model_type
    qwen3_vl, so only what the checkpoint ships tells them apart."""
    for path, template in chat_templates(model_dir):
        if _THINK_PROMPT_RE.search(template):
            return path
    return None
