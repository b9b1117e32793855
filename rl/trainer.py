"""TRL's GRPOTrainer with the two things this pack adds: UniVG-R1's difficulty weighting and a time split.

Why a subclass and not a fork: generation, reward calling, group advantages,
the clipped loss, checkpointing and vLLM rollouts all stay TRL's own. Only
two hooks are added:
- difficulty weighting (UniVG-R1): each prompt group's advantages are
  multiplied by exp(1 - mean IoU of the group), so hard prompts weigh more.
  This scales the policy-gradient term of the loss exactly; TRL's KL term
  (beta) is added after the advantages and is not scaled (UniVG-R1 scales its
  whole per-token loss, KL included: with beta 0.04 the difference is small).
- per-step time split: `time/generation`, `time/rewards` and `time/update`
  (the rest of the optimizer step) beside TRL's own `step_time`.
"""

from __future__ import annotations

import time

import torch
from trl import GRPOTrainer

from families import Family
from rl.rewards import difficulty_weights


class PackGRPOTrainer(GRPOTrainer):
    def __init__(
        self,
        *args,
        iou_reward: str | None = None,
        difficulty_weighting: bool = False,
        family: Family | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._family = family
        self._difficulty = difficulty_weighting
        self._iou_index = self.reward_func_names.index(iou_reward) if iou_reward else None
        if self._difficulty and self._iou_index is None:
            raise ValueError("difficulty weighting needs an IoU reward component")
        self._times = {"generation": 0.0, "rewards": 0.0}
        self._step_total = 0.0
        self._last_rewards = None

    # -- time split ---------------------------------------------------------------------------
    def _generate(self, prompts):
        start = time.perf_counter()
        try:
            return super()._generate(prompts)
        finally:
            self._times["generation"] += time.perf_counter() - start

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._family is not None and self._family.answer_special_tokens:
            completions = self._answer_texts(completions, completion_ids_list)
        start = time.perf_counter()
        try:
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        finally:
            self._times["rewards"] += time.perf_counter() - start
        self._last_rewards = rewards  # every process's rows, gathered (see TRL's _calculate_rewards)
        return rewards

    def _answer_texts(self, completions, completion_ids_list):
        """The completions decoded again keeping the family's answer tags (TRL decodes with
        skip_special_tokens, which strips InternVL's <ref>/<box>); each row's form as TRL made it."""
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        texts = [self._family.decode(tokenizer, ids) for ids in completion_ids_list]
        if completions and isinstance(completions[0], list):
            return [[{"role": "assistant", "content": t}] for t in texts]
        return texts

    def training_step(self, model, inputs, num_items_in_batch):
        start = time.perf_counter()
        output = super().training_step(model, inputs, num_items_in_batch)
        self._step_total += time.perf_counter() - start
        if self._step % self.current_gradient_accumulation_steps == 0:
            metrics = self._metrics["train"]
            metrics["time/generation"].append(self._times["generation"])
            metrics["time/rewards"].append(self._times["rewards"])
            metrics["time/update"].append(
                max(0.0, self._step_total - self._times["generation"] - self._times["rewards"])
            )
            self._times = {"generation": 0.0, "rewards": 0.0}
            self._step_total = 0.0
        return output

    # -- difficulty weighting -----------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self._difficulty or self._last_rewards is None:
            return output
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        ious = torch.nan_to_num(self._last_rewards[:, self._iou_index], nan=0.0).tolist()
        weights = torch.tensor(difficulty_weights(ious, group), dtype=output["advantages"].dtype)
        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        weights = weights[start : start + local].to(output["advantages"].device)
        shape = (-1,) + (1,) * (output["advantages"].dim() - 1)
        output["advantages"] = output["advantages"] * weights.view(shape)
        self._metrics[mode]["difficulty_weight/mean"].append(float(weights.mean()))
        self._metrics[mode]["difficulty_weight/max"].append(float(weights.max()))
        return output
