"""The training stages, in one table: what each trains on, with which engine, from which weights.

Why one table: the stage names used to be literals in the mixture builder, the
pipeline, the converters CLI, the registry, the Makefile and the demo. Adding a
stage is now one recipe plus one entry here; the mixture shares (paper Table 12),
the registry's mixture entries, the converters' `--<stage>-total` flags and the
demo's training loop all read this table (`python stages.py` prints it for the
Makefile).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    name: str  # `make <target>` (underscores become hyphens) and saves/<name>
    recipe: str  # the YAML recipe under recipes/
    engine: str  # "llamafactory" (llamafactory-cli train) or "trl" (python -m rl train)
    data: str  # the dataset it trains on: a mixture (mixture_of set) or a converted set's name
    starts_from: str | None = None  # the stage whose weights it starts from; None: BASE_MODEL
    # Table 12 category shares in percent, for stages trained on a mixture built by `converters mix`.
    mixture: dict[str, int] = field(default_factory=dict)
    default_total: int = 0  # the mixture's size (examples), when it has one

    @property
    def target(self) -> str:
        return self.name.replace("_", "-")

    def dataset_name(self, prefix: str = "migician") -> str:
        """The dataset_info.json name the recipe trains on (mixtures carry the mixture prefix)."""
        return f"{prefix}_{self.name}" if self.mixture else self.data


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "stage1",
            "stage1.yaml",
            "llamafactory",
            "mixture",
            mixture={
                "s_understanding": 17,
                "s_grounding": 13,
                "m_understanding": 16,
                "m_grounding_stage1": 54,
            },
            default_total=1_000_000,
        ),
        Stage(
            "stage2",
            "stage2.yaml",
            "llamafactory",
            "mixture",
            starts_from="stage1",
            mixture={
                "s_understanding": 9,
                "s_grounding": 7,
                "m_understanding": 8,
                "m_grounding_stage1": 27,
                "m_grounding_free_form": 49,
            },
            default_total=200_000,
        ),
        # MIRG-RL: trajectory SFT (from the base model, or e.g. saves/merged), then GRPO from it.
        Stage("traj_sft", "traj_sft.yaml", "llamafactory", "mg_traj_sft"),
        Stage("grpo", "grpo.yaml", "trl", "mg_rl", starts_from="traj_sft"),
    )
}


def mixture_stages() -> dict[str, Stage]:
    """The stages trained on a Table 12 mixture, in training order."""
    return {name: s for name, s in STAGES.items() if s.mixture}


if __name__ == "__main__":
    for s in STAGES.values():
        print(s.name, s.target, s.recipe, s.engine, s.starts_from or "-")
