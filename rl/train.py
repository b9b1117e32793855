"""`python -m rl train recipes/grpo.yaml [key=value ...]`: GRPO on the RL set with TRL's GRPOTrainer.

Why here and not in LLaMA-Factory: LLaMA-Factory 0.9.5 has no GRPO stage and
pins trl<=0.24; TRL 1.16's GRPOTrainer handles multi-image prompts, extra
dataset columns for the rewards, vLLM rollouts and DeepSpeed. It lives in
.venv-eval (transformers 5.19, beside vLLM, which serves rollouts on GPUs).

The same code runs on 8 GPUs (`accelerate launch`, DeepSpeed ZeRO-3 from the
recipe, `use_vllm=true`) and on this CPU (`use_cpu=true bf16=false
deepspeed=null gradient_checkpointing=false`, transformers generation).
A run resumes from the last `checkpoint-N` in output_dir, as LLaMA-Factory does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import families
from atomicio import atomic_write_text
from rl.config import ConfigError, load_recipe, split_config
from rl.data import RLDataError, build_dataset, load_examples, resolve_dataset

log = logging.getLogger(__name__)

# LLaMA-Factory's split of Qwen2-VL's vision side (model/model_utils/visual.py): the tower and the projector.
VISION_TOWER = ("visual.patch_embed", "visual.blocks")
PROJECTOR = ("visual.merger",)


def freeze(model, tower: bool, projector: bool) -> dict[str, int]:
    """Freeze the vision tower and/or projector by parameter name; counts of frozen/trainable tensors."""
    prefixes = (VISION_TOWER if tower else ()) + (PROJECTOR if projector else ())
    frozen = 0
    for name, param in model.named_parameters():
        if any(f"{p}." in name for p in prefixes):  # visual.* or model.visual.*
            param.requires_grad_(False)
            frozen += 1
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable}


def load_processor(path: str, max_pixels: int, min_pixels: int):
    """The checkpoint's processor with this recipe's pixel budget (what vLLM rollouts read from disk too)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    for attr, value in (("max_pixels", max_pixels), ("min_pixels", min_pixels)):
        if hasattr(image_processor, attr):
            setattr(image_processor, attr, value)
    processor.tokenizer.padding_side = "left"
    return processor


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def train(recipe: str | Path, overrides: list[str]) -> dict:
    """Run (or resume) one GRPO training; returns the final metrics written to output_dir."""
    import torch
    from transformers import AutoModelForImageTextToText

    from rl.rewards import get_profile, resolve_weights, reward_functions
    from rl.trainer import PackGRPOTrainer

    rl_args, grpo_args = split_config(load_recipe(recipe, overrides))
    profile = get_profile(rl_args.reward_profile)
    weights = list(resolve_weights(profile, rl_args.reward_weights))
    grpo_args.reward_weights = weights  # TRL weighs the components; each logs its raw mean
    difficulty = (
        profile.name == "univg"
        if rl_args.difficulty_weighting == "auto"
        else rl_args.difficulty_weighting == "true"
    )
    path = resolve_dataset(rl_args.dataset, rl_args.dataset_dir)
    examples, skipped = load_examples(path, rl_args.max_samples, rl_args.family)
    log.info("%s: %d RL examples, %d skipped", path, len(examples), len(skipped))

    dtype = torch.bfloat16 if grpo_args.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(rl_args.model_name_or_path, dtype=dtype)
    counts = freeze(model, rl_args.freeze_vision_tower, rl_args.freeze_multi_modal_projector)
    log.info("frozen %(frozen)d tensors, %(trainable)d trainable", counts)
    processor = load_processor(rl_args.model_name_or_path, rl_args.image_max_pixels, rl_args.image_min_pixels)

    # raw values (TRL applies the weights), read in the family's answer form; a Thinking checkpoint's
    # prompt already opens <think>, so its completions are read with the tag put back
    thinking = families.training_template(rl_args.model_name_or_path, rl_args.family)[1]
    if thinking is not None:
        log.info("a Thinking checkpoint (%s): completions start inside <think>", thinking)
    funcs = reward_functions(
        profile.name, [1.0] * len(profile.names), family=rl_args.family, opened_think=thinking is not None
    )
    trainer = PackGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args,
        train_dataset=build_dataset(examples),
        processing_class=processor,
        iou_reward="iou" if "iou" in profile.names else None,
        difficulty_weighting=difficulty,
    )
    resume = grpo_args.resume_from_checkpoint or last_checkpoint(grpo_args.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(grpo_args.output_dir)
    processor.save_pretrained(grpo_args.output_dir)
    metrics = {
        **result.metrics,
        "examples": len(examples),
        "skipped": len(skipped),
        "reward_profile": profile.name,
        "reward_weights": weights,
        "difficulty_weighting": difficulty,
        "resumed_from": resume,
    }
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    atomic_write_text(Path(grpo_args.output_dir, "rl_skipped.json"), json.dumps(skipped, indent=2) + "\n")
    if rl_args.plot:
        from rl.plot import plot_curves

        plot_curves(Path(grpo_args.output_dir) / "trainer_state.json", Path(grpo_args.output_dir))
    return metrics


__all__ = ["ConfigError", "RLDataError", "train"]
