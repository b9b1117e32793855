"""Qwen2.5-VL: JSON `bbox_2d` answers in pixels of the image *as the model sees it* (after resizing).

Sources: the Qwen2.5-VL cookbook (spatial understanding): "Locate the top right brown cake, output its
bbox coordinates using JSON format."; QwenLM/Qwen3-VL `qwen-vl-finetune/tools/process_bbox.ipynb`
("Qwen2.5-VL using the absolute coordinated for the resized image"); LLaMA-Factory registers the
Qwen2.5-VL group with template="qwen2_vl". Because the box is a pixel of the resized image, the budget
is part of the label: SFT, GRPO and eval must feed the same canvas (families.resize).
"""

from __future__ import annotations

from families.base import RESIZED_PIXELS, JsonFamily
from families.qwen2_vl import BUDGET_28, Qwen2VL


class Qwen25VL(JsonFamily, Qwen2VL):
    name = "qwen2.5-vl"
    display = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    box_convention = RESIZED_PIXELS
    budget_note = BUDGET_28 + " Boxes are pixels of this resized image, so the budget is part of the label."
    grounding_suffix = " Output its bbox coordinates using JSON format."
    refer_template = "Locate {ref}, output its bbox coordinates using JSON format."
    instruction_source = (
        "Qwen2.5-VL cookbook (spatial understanding): 'Locate the top right brown cake, output its bbox "
        "coordinates using JSON format.'; the suffix is that sentence's second half"
    )
    tiny_builder = "demo.tiny_families:build_tiny_qwen25vl"
