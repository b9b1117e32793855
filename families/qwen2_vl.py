"""Qwen2-VL: the paper's base. 0-1000 grid, `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` answers.

Sources: Qwen2-VL report Sec. 2.2.1 (grid "normalized within [0, 1000)", box tokens); MIG-Bench's
released suffix; LLaMA-Factory 0.9.5 `model/model_utils/visual.py` (tower and projector keys);
Qwen/Qwen2-VL-7B-Instruct's preprocessor_config.json (3136..12845056).
"""

from __future__ import annotations

from core import grounding
from families.base import BOX_TOKENS, GRID1000, Family

BUDGET_28 = (
    "401408 = 512 x 28 x 28: about 512 visual tokens per image (at most 540 after smart_resize's "
    "rounding for aspect ratios up to 8:1), so MIG-Bench's six images take about 3,100-3,240 tokens, "
    "inside stage 1's 6,000-token cutoff with room for the text (the paper states no budget)."
)


class Qwen2VL(Family):
    name = "qwen2-vl"
    display = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    model_class = "Qwen2VLForConditionalGeneration"
    template = "qwen2_vl"
    vision_tower_keys = ("visual.patch_embed", "visual.blocks")
    projector_keys = ("visual.merger",)
    patch_size, merge_size = 14, 2
    box_convention = GRID1000
    answer_form = BOX_TOKENS
    processor_min_pixels, processor_max_pixels = 3136, 12845056
    image_max_pixels, image_min_pixels = 401408, 3136
    budget_note = BUDGET_28
    # MIG-Bench's released suffix (eval.prompts FORMAT_SUFFIXES["released"]), MGrounding's own form.
    grounding_suffix = "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words."
    refer_template = (
        "Please provide the bounding box coordinate of the region this sentence describes: "
        f"{grounding.REF_START}{{ref}}{grounding.REF_END}"
    )
    instruction_source = (
        "Qwen2-VL report Sec. 2.2.1 (0-1000 grid, box tokens); MIG-Bench's released suffix; "
        "converters/refcoco.py's first referring prompt"
    )
    tiny_builder = "demo.tiny_model:build_tiny_qwen2vl"
