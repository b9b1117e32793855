"""The one resize path: the image size a Qwen-style model is trained on, and the PIL image that gives it.

Why one module: a box in Qwen2.5-VL's convention is a pixel of the image *as the model sees it*, so
SFT (LLaMA-Factory's mm_plugin), GRPO and eval must hand the processor the same image. LLaMA-Factory
0.9.5 first shrinks by area with int() truncation (`Qwen2VLPlugin._preprocess_image`), then the
processor's own smart_resize runs with the checkpoint's range; a processor told the budget directly
(`max_pixels=401408`) gives another size (1024x768: 728x532 instead of 728x560). So every stage calls
`preprocess_image` below (the same PIL calls as LLaMA-Factory) and leaves the processor's range alone;
`llamafactory_preprocessed_size` and `smart_resize` are the same steps as arithmetic, for the labels.
"""

from __future__ import annotations

import math

# LLaMA-Factory 0.9.5's Qwen2VLPlugin._preprocess_image (data/mm_plugin.py), inherited by its Qwen3VLPlugin:
# after the area pre-shrink / pre-grow, a side under 28 pixels is stretched to 28 and an aspect ratio
# over 200 is cut to 180 (the same 28 and 180 for every Qwen family).
LF_MIN_SIDE, LF_MAX_RATIO, LF_CUT_RATIO = 28, 200, 180


def llamafactory_base_size(width: int, height: int, image_max_pixels: int, image_min_pixels: int):
    """(w, h) after LLaMA-Factory's BasePlugin._preprocess_image (every plugin's first step): an area
    pre-shrink to image_max_pixels with int() truncation, then an area pre-grow to image_min_pixels (int()
    again). A side that truncates to 0 pixels is refused: PIL's resize raises there too."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"image {name} must be a positive integer, got {value!r}")
    w, h = width, height
    if w * h > image_max_pixels:
        factor = math.sqrt(image_max_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
        if w <= 0 or h <= 0:
            raise ValueError(
                f"a {width}x{height} image shrinks to {w}x{h} under image_max_pixels={image_max_pixels}: "
                "LLaMA-Factory cannot resize it (aspect ratio too extreme)"
            )
    if w * h < image_min_pixels:
        factor = math.sqrt(image_min_pixels / (w * h))
        w, h = int(w * factor), int(h * factor)
    return w, h


def llamafactory_preprocessed_size(width: int, height: int, image_max_pixels: int, image_min_pixels: int):
    """(w, h) of the PIL image LLaMA-Factory 0.9.5 hands a Qwen processor (Qwen2VLPlugin._preprocess_image):
    BasePlugin's pre-shrink / pre-grow, then a side under 28 stretched to 28 and an aspect ratio over 200
    cut to 180."""
    w, h = llamafactory_base_size(width, height, image_max_pixels, image_min_pixels)
    if min(w, h) < LF_MIN_SIDE:
        w, h = max(w, LF_MIN_SIDE), max(h, LF_MIN_SIDE)
    if w / h > LF_MAX_RATIO:
        w, h = h * LF_CUT_RATIO, h
    if h / w > LF_MAX_RATIO:
        w, h = w, w * LF_CUT_RATIO
    return w, h


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) exactly as transformers' qwen2_vl smart_resize (5.6 and 5.19 agree): sides to multiples of
    `factor`, area into [min_pixels, max_pixels]; its aspect-ratio refusal is kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def preprocess_image_base(image, image_max_pixels: int, image_min_pixels: int):
    """LLaMA-Factory's BasePlugin._preprocess_image, the same PIL calls: area pre-shrink / pre-grow, RGB."""
    if image.width * image.height > image_max_pixels:
        factor = math.sqrt(image_max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.width * image.height < image_min_pixels:
        factor = math.sqrt(image_min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def preprocess_image(image, image_max_pixels: int, image_min_pixels: int):
    """The PIL image LLaMA-Factory 0.9.5's Qwen2VLPlugin hands the processor: the same PIL calls in the
    same order (BasePlugin's, then the 28-pixel side and the 200:1 ratio rules), so GRPO and eval see
    training's pixels. Why not a processor budget: see the module docstring. `llamafactory_preprocessed_size`
    gives the same size without decoding the image (checked against this function in tests)."""
    image = preprocess_image_base(image, image_max_pixels, image_min_pixels)
    if min(image.width, image.height) < LF_MIN_SIDE:
        image = image.resize((max(image.width, LF_MIN_SIDE), max(image.height, LF_MIN_SIDE)))
    if image.width / image.height > LF_MAX_RATIO:
        image = image.resize((image.height * LF_CUT_RATIO, image.height))
    if image.height / image.width > LF_MAX_RATIO:
        image = image.resize((image.width, image.width * LF_CUT_RATIO))
    return image
