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
from core.atomicio import atomic_write_text
from families.budget import eval_budget
from families.checkpoint import write_budget
from rl.config import ConfigError, load_recipe, split_config
from rl.data import RLDataError, build_dataset, load_examples, resolve_dataset

log = logging.getLogger(__name__)


def freeze(model, keys: tuple[str, ...]) -> dict[str, int]:
    """Freeze parameters by the family's name prefixes (Family.freeze_keys: the same tower and projector
    LLaMA-Factory freezes in SFT); counts of frozen/trainable tensors. A name matches when it holds
    `prefix.` (`visual.*` or `model.visual.*`, as transformers 5 saves them)."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(f"{p}." in name for p in keys):
            param.requires_grad_(False)
            frozen += 1
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable}


def load_processor(path: str):
    """The checkpoint's processor as saved (its own smart_resize range, as LLaMA-Factory used in SFT): the
    budget is applied to the images before it (rl.data.build_dataset), never by changing its range."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    return processor


def resolve_budget(rl_args, family: families.Family) -> tuple[int, int]:
    """(image_max_pixels, image_min_pixels): the recipe's, else what eval would feed the checkpoint (its
    record, else the family's default: families.budget.eval_budget, the one rule for both)."""
    checkpoint = eval_budget(None, family, rl_args.model_name_or_path)
    return (
        rl_args.image_max_pixels or checkpoint.max_pixels,
        rl_args.image_min_pixels or checkpoint.min_pixels,
    )


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    return get_last_checkpoint(str(out)) if out.is_dir() else None


def train(recipe: str | Path, overrides: list[str]) -> dict:
    """Run (or resume) one GRPO training; returns the final metrics written to output_dir."""
    import torch
    from transformers import AutoModelForImageTextToText

    from rl import mgthinker
    from rl.final_weights import FinalWeights
    from rl.gated import GatedGRPOTrainer
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
    family = families.get_family(rl_args.family)
    max_pixels, min_pixels = resolve_budget(rl_args, family)
    log.info(
        "%s: images pre-shrunk to image_max_pixels %d, image_min_pixels %d",
        family.display,
        max_pixels,
        min_pixels,
    )
    path = resolve_dataset(rl_args.dataset, rl_args.dataset_dir)
    examples, skipped = load_examples(path, rl_args.max_samples, family)
    log.info("%s: %d RL examples, %d skipped", path, len(examples), len(skipped))

    dtype = torch.bfloat16 if grpo_args.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(rl_args.model_name_or_path, dtype=dtype)
    counts = freeze(
        model, family.freeze_keys(rl_args.freeze_vision_tower, rl_args.freeze_multi_modal_projector)
    )
    log.info("frozen %(frozen)d tensors, %(trainable)d trainable", counts)
    processor = load_processor(rl_args.model_name_or_path)

    # raw values (TRL applies the weights), read in the family's answer form; a Thinking checkpoint's
    # prompt already opens <think>, so its completions are read with the tag put back
    thinking = family.training_template(rl_args.model_name_or_path)[1]
    if thinking is not None:
        log.info("a Thinking checkpoint (%s): completions start inside <think>", thinking)
    raw = [1.0] * len(profile.names)
    if profile.name == mgthinker.PROFILE:  # several targets per record: scored by rl/mgthinker.py
        funcs = mgthinker.reward_functions(raw, family=rl_args.family, opened_think=thinking is not None)
    else:
        funcs = reward_functions(profile.name, raw, family=rl_args.family, opened_think=thinking is not None)
    gate = {}
    if rl_args.group_gate:  # MG-Thinker's pool, variance gate and curriculum (rl/gated.py)
        gate = {
            "pool_factor": rl_args.pool_factor,
            "alpha": rl_args.gate_alpha,
            "phases": rl_args.gate_phases,
        }
    trainer = (GatedGRPOTrainer if gate else PackGRPOTrainer)(
        model=model,
        reward_funcs=funcs,
        args=grpo_args,
        train_dataset=build_dataset(examples, family, max_pixels, min_pixels),
        processing_class=processor,
        iou_reward="iou" if "iou" in profile.names else None,
        difficulty_weighting=difficulty,
        family=family,
        **gate,
    )
    resume = grpo_args.resume_from_checkpoint or last_checkpoint(grpo_args.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    final = FinalWeights(resume)
    trainer.add_callback(final)
    result = trainer.train(resume_from_checkpoint=resume)
    final_checkpoint = final.publish(trainer, grpo_args.output_dir)  # the last checkpoint, or one save_model
    processor.save_pretrained(grpo_args.output_dir)
    write_budget(grpo_args.output_dir, family.name, max_pixels, min_pixels, "rl train (GRPO)")
    metrics = {
        **result.metrics,
        "examples": len(examples),
        "skipped": len(skipped),
        "reward_profile": profile.name,
        "reward_weights": weights,
        "difficulty_weighting": difficulty,
        "group_gate": gate or None,
        "resumed_from": resume,
        "final_weights_from": final_checkpoint,
    }
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    atomic_write_text(Path(grpo_args.output_dir, "rl_skipped.json"), json.dumps(skipped, indent=2) + "\n")
    if rl_args.plot:
        from rl.plot import plot_curves

        plot_curves(Path(grpo_args.output_dir) / "trainer_state.json", Path(grpo_args.output_dir))
    return metrics


__all__ = ["ConfigError", "RLDataError", "train"]
