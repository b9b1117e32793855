"""The training stages, in one table: what each trains on, with which engine, from which weights.

Why one table: the stage names used to be literals in the mixture builder, the
pipeline, the converters CLI, the registry, the Makefile and the demo. Adding a
stage is now one recipe plus one entry here; the registry's entries, the
converters' `--<stage>-total` flags and the demo's training loop all read this
table (`python stages.py` prints it for the Makefile). What a mixture stage's
mixture holds (paper Table 12: categories, shares, default size) is data, not
code: recipes/mixtures.yaml, checked against this table when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

MIXTURE = "mixture"  # Stage.data of a stage trained on a Table 12 mixture (recipes/mixtures.yaml)


@dataclass(frozen=True)
class Stage:
    name: str  # `make <target>` (underscores become hyphens) and saves/<name>
    recipe: str  # the YAML recipe under recipes/
    engine: str  # "llamafactory" (llamafactory-cli train) or "trl" (python -m rl train)
    data: str  # the dataset it trains on: MIXTURE (built by `converters mix`) or a converted set's name
    starts_from: str | None = None  # the stage whose weights it starts from; None: BASE_MODEL

    @property
    def target(self) -> str:
        return self.name.replace("_", "-")

    def dataset_name(self, prefix: str = "migician") -> str:
        """The dataset_info.json name the recipe trains on (mixtures carry the mixture prefix)."""
        return f"{prefix}_{self.name}" if self.data == MIXTURE else self.data


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("stage1", "stage1.yaml", "llamafactory", MIXTURE),
        Stage("stage2", "stage2.yaml", "llamafactory", MIXTURE, starts_from="stage1"),
        # MIRG-RL: trajectory SFT (from the base model, or e.g. saves/merged), then GRPO from it.
        Stage("traj_sft", "traj_sft.yaml", "llamafactory", "mg_traj_sft"),
        Stage("grpo", "grpo.yaml", "trl", "mg_rl", starts_from="traj_sft"),
    )
}


def mixture_stages() -> dict[str, Stage]:
    """The stages trained on a Table 12 mixture, in training order."""
    return {name: s for name, s in STAGES.items() if s.data == MIXTURE}


if __name__ == "__main__":
    for s in STAGES.values():
        print(s.name, s.target, s.recipe, s.engine, s.starts_from or "-")
