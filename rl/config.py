"""`recipes/grpo.yaml` plus `key=value` overrides -> this pack's RL arguments and TRL's GRPOConfig.

Why: the user interface is LLaMA-Factory's (a YAML recipe, overrides on the
command line), while the engine is TRL's. Every key is either one of TRL's
own GRPOConfig fields or one of ours (`RLArguments`); any other key is refused
by name, so a typo never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from core.yamlfile import YAMLFileError, loads_yaml, read_yaml
from families import DEFAULT_FAMILY, FAMILY_CHOICES


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key or file."""


@dataclasses.dataclass
class RLArguments:
    """This pack's keys in recipes/grpo.yaml (everything else is TRL's GRPOConfig)."""

    model_name_or_path: str = "saves/traj_sft"
    dataset: str = "mg_rl"  # a dataset_info.json name under dataset_dir, or a .json/.jsonl path
    dataset_dir: str = "."
    max_samples: int | None = None  # use only the first N RL records (after skipping bad ones)
    freeze_vision_tower: bool = True  # LLaMA-Factory's meaning: the family's tower keys (Family.freeze_keys)
    freeze_multi_modal_projector: bool = False  # the family's projector keys (visual.merger)
    # The per-image budget images are pre-shrunk to, as in the SFT stages (families.resize); None: the
    # checkpoint's record (image_budget.json), else the family's training default.
    image_max_pixels: int | None = None
    image_min_pixels: int | None = None
    # The model family whose answer form the rewards read (families.FAMILY_CHOICES); not detected from the
    # checkpoint: the RL records' answers and resized_sizes were written for one family (rl/README.md).
    family: str = DEFAULT_FAMILY
    reward_profile: str = "mirg"  # a name in rl.rewards.PROFILES
    reward_weights: list[float] | None = None  # one per component; default: the profile's
    difficulty_weighting: str = "auto"  # auto (the profile's choice), true or false
    plot: bool = True  # write loss/reward curves into output_dir
    # MG-Thinker's group gate and curriculum (rl/gated.py); off unless group_gate is true
    group_gate: bool = False
    pool_factor: int = 3  # the candidate pool: pool_factor x the step's prompt groups
    gate_alpha: float = 0.05  # keep a group when its reward std > alpha; alpha halves at each phase
    gate_phases: int = 4  # equal phases of max_steps


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str) -> Any:
    """A command-line value as YAML reads it, except that `1e-5` is a number (YAML 1.1 says string)."""
    if _FLOAT.match(text.strip()):
        return int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else float(text)
    try:
        return loads_yaml(text, "override")
    except YAMLFileError:
        return text


def load_recipe(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """The recipe's mapping with `key=value` overrides applied (later ones win)."""
    path = Path(path)
    try:
        data = read_yaml(path, dict, "a mapping of keys to values")
    except YAMLFileError as err:
        raise ConfigError(f"recipe {err}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        data[key.strip()] = parse_value(value)
    for key, value in list(data.items()):
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            data[key] = parse_value(value)  # `learning_rate: 1e-5` in a recipe
    return data


def _coerce(args: RLArguments) -> RLArguments:
    weights = args.reward_weights
    if isinstance(weights, str):
        try:
            weights = [float(w) for w in weights.strip("[]").split(",") if w.strip()]
        except ValueError:
            raise ConfigError(f"reward_weights {args.reward_weights!r} is not a list of numbers") from None
    elif isinstance(weights, (int, float)):
        weights = [float(weights)]
    if weights is not None:
        if not all(isinstance(w, (int, float)) for w in weights):
            raise ConfigError(f"reward_weights {weights!r} is not a list of numbers")
        weights = [float(w) for w in weights]
    if not isinstance(args.family, str) or args.family not in FAMILY_CHOICES:
        raise ConfigError(f"family must be one of {', '.join(FAMILY_CHOICES)}, not {args.family!r}")
    for key in ("image_max_pixels", "image_min_pixels"):
        value = getattr(args, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{key} must be a positive integer, not {value!r}")
    difficulty = str(args.difficulty_weighting).lower()
    if difficulty not in ("auto", "true", "false"):
        raise ConfigError(
            f"difficulty_weighting must be auto, true or false, not {args.difficulty_weighting!r}"
        )
    for key, low in (("pool_factor", 1), ("gate_phases", 1)):
        value = getattr(args, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, not {value!r}")
    alpha = args.gate_alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < float("inf"):
        raise ConfigError(f"gate_alpha must be a number >= 0, not {alpha!r}")
    if not isinstance(args.group_gate, bool):
        raise ConfigError(f"group_gate must be true or false, not {args.group_gate!r}")
    return dataclasses.replace(args, reward_weights=weights, difficulty_weighting=difficulty)


def split_config(data: dict[str, Any]):
    """(RLArguments, GRPOConfig) from one mapping; refuses keys that belong to neither."""
    from transformers import HfArgumentParser
    from trl import GRPOConfig

    ours = {f.name for f in dataclasses.fields(RLArguments)}
    theirs = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = sorted(set(data) - ours - theirs)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}: neither TRL's GRPOConfig nor this pack's RLArguments "
            f"({', '.join(sorted(ours))})"
        )
    if "output_dir" not in data:
        raise ConfigError("output_dir is required")
    rl_args = _coerce(RLArguments(**{k: v for k, v in data.items() if k in ours}))
    grpo_data = {k: v for k, v in data.items() if k in theirs}
    try:
        (grpo_args,) = HfArgumentParser(GRPOConfig).parse_dict(grpo_data, allow_extra_keys=False)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"GRPOConfig refused the recipe: {err}") from None
    local = grpo_args.per_device_train_batch_size * grpo_args.steps_per_generation
    if rl_args.group_gate and local % grpo_args.num_generations:
        raise ConfigError(
            f"group_gate selects whole groups on each process: per_device_train_batch_size x steps_per_generation "
            f"({local}) must be a multiple of num_generations ({grpo_args.num_generations})"
        )
    return rl_args, grpo_args
