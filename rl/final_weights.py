"""The final weights of `python -m rl train` in output_dir, written once.

Why: with `save_strategy: steps` transformers saves `checkpoint-N` when max_steps is reached, with the
same `save_model` a final `save_model(output_dir)` would call (under ZeRO-3 the same full gather), so
saving again writes the whole model a second time. Instead output_dir's weight files become hard links
to those of the checkpoint that holds the final weights (no bytes written; the checkpoint keeps its
optimizer state, so a larger max_steps still resumes from it). Only when training did not end on a save
(`save_strategy: "no"`, a last step between saves, `load_best_model_at_end`, ZeRO-3 without 16-bit
weights in its checkpoints) is `save_model(output_dir)` called, once.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "generation_config.json", "training_args.bin")  # beside the weights


def weight_files(folder: Path) -> list[str]:
    """The files save_model writes for the model (weights, their index, config), as found in `folder`."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if p.is_file()]
    weights = [n for n in names if n.endswith((".safetensors", ".safetensors.index.json"))]
    return sorted(weights + [n for n in MODEL_FILES if n in names]) if weights else []


class FinalWeights(TrainerCallback):
    """Tracks which checkpoint holds the model's current weights; `publish` puts them in output_dir."""

    def __init__(self, resumed_from: str | None):
        self.source = resumed_from if isinstance(resumed_from, str) else None  # loaded from it, unchanged yet

    def on_step_end(self, args, state, control, **kwargs):
        self.source = None  # an optimizer step since the last save: no checkpoint holds these weights

    def on_save(self, args, state, control, **kwargs):
        self.source = str(Path(args.output_dir, f"checkpoint-{state.global_step}"))

    def publish(self, trainer, output_dir: str) -> str | None:
        """Link the final checkpoint's model files into output_dir, or save the model there; returns the
        checkpoint linked (None when saved). Every process decides alike (save_model is collective)."""
        out = Path(output_dir)
        source = None if trainer.args.load_best_model_at_end else self.source
        names = weight_files(Path(source)) if source else []
        if names:
            if trainer.args.should_save:
                link_into(Path(source), names, out)
            log.info("final weights: %s (hard links to %s, nothing written again)", out, source)
            return source
        if trainer.args.should_save:
            unshare(out)
        trainer.save_model(output_dir)
        return None


def link_into(source: Path, names: list[str], out: Path) -> None:
    """out/name -> source/name for each name, each replaced atomically; stale shards of an earlier save go."""
    out.mkdir(parents=True, exist_ok=True)
    for old in weight_files(out):
        if old not in names and old not in MODEL_FILES:
            (out / old).unlink()
    for name in names:
        tmp = out / f".{name}.link"
        tmp.unlink(missing_ok=True)
        try:
            os.link(source / name, tmp)
        except OSError:  # a file system without hard links: copy (still no second gather)
            shutil.copy2(source / name, tmp)
        os.replace(tmp, out / name)


def unshare(out: Path) -> None:
    """Remove output_dir's model files that are hard links, so that save_model's in-place writes cannot
    reach the checkpoint they are linked to."""
    for name in weight_files(out):
        if (out / name).stat().st_nlink > 1:
            (out / name).unlink()
