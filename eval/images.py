"""Image loading exactly as the paper's script does it, plus the size the model sees.

Why: Qwen2-VL's grounding is relative to the image it was shown, so every
backend must get the same pixels. The paper's script passes paths through
qwen_vl_utils (`process_vision_info` -> `fetch_image`: RGB, resized to a
multiple of 28 within its pixel budget); we call the same function once and
hand the same PIL images to vLLM, transformers or a server. The processor may
resize again (its own budget); `view_size` predicts that final size, which is
what Qwen2.5-VL's absolute-pixel answers refer to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoadedImage:
    image: object  # PIL.Image.Image, RGB, resized by qwen_vl_utils
    original_size: tuple[int, int]  # (width, height) of the file


def load_image(path: str) -> LoadedImage:
    """Open one image file and resize it like qwen_vl_utils.process_vision_info."""
    from PIL import Image
    from qwen_vl_utils import fetch_image

    with Image.open(path) as img:
        img.load()
        size = img.size
        resized = fetch_image({"image": img})
    return LoadedImage(resized, size)


def _processor_budget(processor) -> tuple[int, int, int] | None:
    """(factor, min_pixels, max_pixels) of a Qwen2-VL-style image processor, if it has one."""
    ip = getattr(processor, "image_processor", processor)
    patch = getattr(ip, "patch_size", None)
    merge = getattr(ip, "merge_size", None)
    if not patch or not merge:
        return None
    size = getattr(ip, "size", None) or {}
    get = size.get if hasattr(size, "get") else (lambda k, d=None: getattr(size, k, d))
    min_pixels = getattr(ip, "min_pixels", None) or get("shortest_edge")
    max_pixels = getattr(ip, "max_pixels", None) or get("longest_edge")
    if not min_pixels or not max_pixels:
        return None
    return int(patch) * int(merge), int(min_pixels), int(max_pixels)


def view_size(processor, width: int, height: int) -> tuple[int, int]:
    """(width, height) the processor resizes an image of this size to; unchanged if unknown."""
    budget = _processor_budget(processor) if processor is not None else None
    if budget is None:
        return width, height
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor, min_pixels, max_pixels = budget
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return w, h
