"""Loss and reward curves of a GRPO run, from TRL's trainer_state.json.

Why: a reward curve is the first thing to look at in RL (a format reward that
falls to 0 means the model broke its answer form); LLaMA-Factory plots the SFT
loss the same way (`plot_loss: true`).
"""

from __future__ import annotations

import json
from pathlib import Path

REWARD_PREFIX = "rewards/"


def curves(state_path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} for the loss, the total reward and each reward component."""
    history = json.loads(Path(state_path).read_text(encoding="utf-8")).get("log_history", [])
    out: dict[str, list[tuple[int, float]]] = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            wanted = key in ("loss", "reward") or (key.startswith(REWARD_PREFIX) and key.endswith("/mean"))
            if wanted and isinstance(value, (int, float)) and step is not None:
                out.setdefault(key, []).append((step, float(value)))
    return out


def plot_curves(state_path: Path, out_dir: Path) -> list[Path]:
    """training_loss.png and training_rewards.png in out_dir; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(state_path)
    written = []
    for name, keys in (
        ("training_loss.png", ["loss"]),
        ("training_rewards.png", sorted(k for k in data if k != "loss")),
    ):
        keys = [k for k in keys if data.get(k)]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            steps, values = zip(*data[key], strict=True)
            ax.plot(steps, values, label=key.removeprefix(REWARD_PREFIX).removesuffix("/mean"))
        ax.set_xlabel("step")
        ax.set_title(name.removesuffix(".png").replace("_", " "))
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written
