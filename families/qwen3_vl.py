"""Qwen3-VL: JSON `bbox_2d` answers on the 0-1000 grid again; patch 16; Instruct and Thinking checkpoints.

Sources: Qwen3-VL report Sec. 3.2.4 (0-1000 relative) and App. B.5 (its RefCOCO grounding prompt);
`evaluation/ODinW-13/run_odinw.py` divides by 1000; LLaMA-Factory 0.9.5 templates `qwen3_vl_nothink`
(Instruct) and `qwen3_vl` (a ReasoningTemplate, Thinking), `visual.py` freezes `visual.pos_embed` and
`visual.deepstack_merger_list` with the tower; Qwen/Qwen3-VL-*-Instruct preprocessor_config.json `size`.
"""

from __future__ import annotations

from families.base import GRID1000, JsonFamily

QWEN3_TOWER = ("visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list")
BUDGET_32 = (
    "524288 = 512 x 32 x 32: patch 16 x merge 2 makes a token cover 32 x 32 pixels, so this keeps "
    "Qwen2-VL's ~512 tokens per image (at most 540 after rounding for aspect ratios up to 8:1) and "
    "the six-image prompt at about 3,100-3,240 tokens, inside the 6,000-token cutoff; 401408 would "
    "give only ~392 tokens. The released processor's own minimum (65536 px, 64 tokens) still applies."
)


class Qwen3VL(JsonFamily):
    name = "qwen3-vl"
    display = "Qwen3-VL"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    model_class = "Qwen3VLForConditionalGeneration"
    template = "qwen3_vl_nothink"  # Instruct; a Thinking checkpoint gets thinking_template
    thinking_template = "qwen3_vl"
    system_message = ""  # both templates send none, as Qwen3-VL's chat template
    vision_tower_keys = QWEN3_TOWER
    projector_keys = ("visual.merger",)
    patch_size, merge_size = 16, 2
    box_convention = GRID1000
    processor_min_pixels, processor_max_pixels = 65536, 16777216
    image_max_pixels, image_min_pixels = 524288, 4096
    budget_note = BUDGET_32
    grounding_suffix = " Report bbox coordinates in JSON format."
    refer_template = (
        'Locate every object that matches the description "{ref}" in the image. '
        "Report bbox coordinates in JSON format."
    )
    instruction_source = "Qwen3-VL report App. B.5 (its RefCOCO grounding prompt); 0-1000 grid: Sec. 3.2.4"
    tiny_builder = "demo.tiny_families:build_tiny_qwen3vl"
