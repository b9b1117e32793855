"""MG-Thinker's group gate and curriculum on TRL's GRPOTrainer: over-generate a pool, keep the groups whose
reward std exceeds alpha, fill the step from them by mean reward, high to low.

Why a subclass of the pack's trainer and not a rewrite: generation, reward calling, group advantages, the
reference/old log-probs and the loss all stay TRL's (and PackGRPOTrainer's time split and difficulty
weighting). Only TRL's buffering hook `_prepare_inputs` is replaced in training, with the same cadence
(a new generation batch every `steps_per_generation * num_iterations` micro-steps):
1. the pool: the step's own prompt groups (TRL's dataloader) plus (pool_factor - 1) times as many drawn
   from the training set by this process (seeded by seed, process and step, so a resume draws the same);
2. TRL's `_generate_and_score_completions` on the whole pool (rollouts, rewards, advantages per group);
3. the gate: a group is kept when the sample std of its weighted total reward (TRL's nanstd, the std its
   advantages use) exceeds alpha; alpha = gate_alpha / 2**phase, phase = the quarter (gate_phases equal
   phases) of max_steps the step is in: 0.05, 0.025, 0.0125, 0.00625 for MG-Thinker;
4. the curriculum: the kept groups of highest mean reward fill the step (as many groups as TRL's own
   generation batch holds); if fewer survive, the dropped groups with the highest std top it up (their
   advantages are ~0, so they add little but the KL term; the count is logged as gate/topped_up); the
   step's groups are then ordered by mean reward, high to low;
5. TRL's split into `steps_per_generation` micro-batches, in that order (TRL shuffles; the order is the
   point here). The order matters across optimizer steps when steps_per_generation >
   gradient_accumulation_steps (VeRL's PPO mini-batches); within one optimizer step the micro-batches sum.

Each process selects from its own pool (groups never cross processes), so its share of the generation
batch must hold whole groups. TRL logs its reward statistics over the whole pool (before the gate);
`gate/*` metrics and `output_dir/gate_steps.jsonl` (one record per generation, main process) describe the
selection: pool size, kept, dropped, topped up, alpha, mean std of the kept groups, the trained groups'
mean reward, and per group its id, mean, std and whether it was kept and trained (in order).
The reference model's log-probs (beta > 0) are computed for the whole pool, as TRL computes them with the
rewards; with rollouts dominating the step's time this costs little.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import torch
from accelerate.utils import gather_object
from trl.trainer.utils import (
    nanstd,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from rl.gate import Selection, gate_alpha, select_groups
from rl.trainer import PackGRPOTrainer

log = logging.getLogger(__name__)
GATE_LOG = "gate_steps.jsonl"


def take_rows(batch: dict, rows: list[int]) -> dict:
    """The batch's rows in this order (tensors with a batch dimension and per-row lists; scalars kept):
    shuffle_sequence_dict's rule with a chosen order instead of a random one."""
    index = torch.tensor(rows, dtype=torch.long)

    def pick(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[index.to(value.device)]
        return [value[i] for i in rows]

    return {key: pick(value) for key, value in batch.items()}


class GatedGRPOTrainer(PackGRPOTrainer):
    def __init__(self, *args, pool_factor: int = 3, alpha: float = 0.05, phases: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        if pool_factor < 1 or phases < 1 or not alpha >= 0:
            raise ValueError(
                f"pool_factor {pool_factor} and phases {phases} must be >= 1, alpha {alpha} >= 0"
            )
        local = self.args.per_device_train_batch_size * self.args.steps_per_generation
        if local % self.num_generations:
            raise ValueError(
                f"the group gate needs whole groups per process: per_device_train_batch_size x "
                f"steps_per_generation ({local}) is not a multiple of num_generations ({self.num_generations})"
            )
        self._pool_factor, self._alpha0, self._phases = pool_factor, alpha, phases

    # -- the pool -----------------------------------------------------------------------------------
    def _extra_rows(self, n_groups: int) -> list[dict]:
        """n_groups prompts of the training set (distinct when it is large enough), each num_generations times."""
        size = len(self.train_dataset)
        rng = random.Random(f"{self.args.seed}-{self.accelerator.process_index}-{self.state.global_step}")
        picks = (
            rng.sample(range(size), n_groups) if n_groups <= size else rng.choices(range(size), k=n_groups)
        )
        rows = []
        for i in picks:
            example = self.train_dataset[i]
            rows += [dict(example) for _ in range(self.num_generations)]
        return rows

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._gated_batch(list(generation_batch))
            chunks = split_tensor_dict(batch, self.args.steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(chunk) for chunk in chunks]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _gated_batch(self, rows: list[dict]) -> dict:
        group = self.num_generations
        needed = len(rows) // group
        pool = rows + self._extra_rows((self._pool_factor - 1) * needed)
        output = self._generate_and_score_completions(pool)

        # every process's weighted totals (TRL gathers the rewards), one row of groups per process
        weights = self.reward_weights.to(self._last_rewards.device)
        totals = (
            (self._last_rewards * weights.unsqueeze(0))
            .nansum(dim=1)
            .view(self.accelerator.num_processes, -1, group)
        )
        means, stds = torch.nanmean(totals, dim=2), nanstd(totals, dim=2)
        stds = torch.nan_to_num(stds, nan=0.0)
        alpha = gate_alpha(self.state.global_step, self.state.max_steps, self._alpha0, self._phases)
        selections = [
            select_groups(means[p].tolist(), stds[p].tolist(), needed, alpha)
            for p in range(self.accelerator.num_processes)
        ]
        mine = selections[self.accelerator.process_index]
        output = split_pixel_values_by_grid(output)
        output = take_rows(output, [g * group + k for g in mine.order for k in range(group)])
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]
        output["num_items_in_batch"] = self.accelerator.gather(
            mask.sum()
        ).sum()  # the step's tokens, not the pool's
        self._log_gate(selections, means, stds, alpha, pool[::group])
        return output

    # -- logging ------------------------------------------------------------------------------------
    def _log_gate(self, selections: list[Selection], means, stds, alpha: float, heads: list[dict]) -> None:
        pool = means.numel()
        kept = sum(len(s.kept) for s in selections)
        kept_stds = [float(stds[p, g]) for p, s in enumerate(selections) for g in s.kept]
        trained = [float(means[p, g]) for p, s in enumerate(selections) for g in s.order]
        topped_up = sum(len(s.topped_up) for s in selections)
        metrics = self._metrics["train"]
        metrics["gate/pool_groups"].append(float(pool))
        metrics["gate/kept"].append(float(kept))
        metrics["gate/dropped"].append(float(pool - kept))
        metrics["gate/topped_up"].append(float(topped_up))
        metrics["gate/alpha"].append(alpha)
        metrics["gate/kept_std_mean"].append(sum(kept_stds) / len(kept_stds) if kept_stds else 0.0)
        metrics["gate/trained_reward_mean"].append(sum(trained) / len(trained))
        if topped_up:
            log.info(
                "step %d: %d of %d groups passed the gate (alpha %.4g); %d topped up with the highest-std dropped",
                self.state.global_step,
                kept,
                pool,
                alpha,
                topped_up,
            )
        ids = gather_object([str(row.get("id", "")) for row in heads])  # every process's group heads
        if not self.accelerator.is_main_process:
            return
        per_process = means.shape[1]
        record = {
            "step": self.state.global_step,
            "max_steps": self.state.max_steps,
            "alpha": alpha,
            "pool_groups": pool,
            "kept": kept,
            "dropped": pool - kept,
            "topped_up": topped_up,
            "processes": [
                {
                    "groups": [
                        {
                            "id": ids[p * per_process + g],
                            "mean": _finite(means[p, g]),
                            "std": _finite(stds[p, g]),
                            "kept": g in s.kept,
                        }
                        for g in range(per_process)
                    ],
                    "trained": s.order,
                    "topped_up": s.topped_up,
                }
                for p, s in enumerate(selections)
            ],
        }
        path = Path(self.args.output_dir, GATE_LOG)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(
            path, "a", encoding="utf-8"
        ) as out:  # a log: a resumed run appends (records carry the step)
            out.write(json.dumps(record) + "\n")


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
