"""Image loading exactly as the paper's script does it, plus the size the model sees.

Why: Qwen2-VL's grounding is relative to the image it was shown, so every
backend must get the same pixels. By default a run feeds the budget the model
was trained with (families.budget: the checkpoint's image_budget.json, else the
family's default), pre-shrunk by the same PIL calls as LLaMA-Factory's training;
`--pixel-budget paper` keeps the paper script's qwen_vl_utils `fetch_image`
(RGB, a multiple of 28 within its default range). Either way the same PIL images
go to vLLM, transformers or a server. The processor may
resize again (its own budget); `view_size` predicts that final size, which is
what Qwen2.5-VL's absolute-pixel answers refer to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoadedImage:
    image: object  # PIL.Image.Image, RGB, resized by qwen_vl_utils
    original_size: tuple[int, int]  # (width, height) of the file


def load_image(path: str, budget=None, family=None) -> LoadedImage:
    """Open one image file and resize it as the run's protocol says.

    budget (families.budget.ImageBudget) with a pixel budget: the family's own pre-shrink, the PIL calls
    LLaMA-Factory makes in training (families.resize), so the processor then gives the canvas the model
    was trained on. No budget, or the paper's protocol: qwen_vl_utils.process_vision_info's fetch_image,
    as the paper's script does (its default range, up to 12.8M pixels).
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        size = img.size
        if budget is not None and not budget.is_paper:
            resized = family.preprocess_image(img, budget.max_pixels, budget.min_pixels)
        else:
            from qwen_vl_utils import fetch_image

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
