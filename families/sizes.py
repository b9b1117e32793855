"""`python -m families sizes`: the image size each stage feeds the model, measured by each stage's own code.

Why: a Qwen2.5-VL box is a pixel of the image as the model saw it, so labels, SFT, GRPO and eval must
agree on that canvas for every image; a user runs this on their own images before a week of training.
Each column comes from the stage's real code path, never from the pack's formula:
- labels: what the converters write (Family.canvas with the checkpoint's processor range: the formula
  whose agreement with the stages this command checks);
- sft: LLaMA-Factory's own mm_plugin (the template's plugin, `_get_mm_inputs`) and the checkpoint's
  processor, with the budget set on the processor as LLaMA-Factory's patcher sets it;
- grpo, eval-hf, eval-vllm: `python -m eval.sizes` in the evaluation environment (TRL, vLLM).
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import families.checkpoint as checkpoint
from families.base import Family
from families.budget import ImageBudget

log = logging.getLogger(__name__)

STAGES = ("labels", "sft", "grpo", "eval-vllm", "eval-hf")
_EVAL_PROBE_TIMEOUT = 900


@dataclass
class SizesReport:
    model: str
    family: str
    budget: ImageBudget
    images: list[dict] = field(default_factory=list)  # {"path", "original", stage: [w, h], ...}
    problems: list[str] = field(default_factory=list)  # images that could not be measured, and why

    @property
    def disagreements(self) -> list[str]:
        """One line per image whose stages do not all give the same view (the labels' canvas is compared with
        the start of each stage's view: InternVL's stages also report the tiles their processor made)."""
        lines = []
        for row in self.images:
            views = {stage: tuple(row[stage]) for stage in STAGES if row.get(stage) is not None}
            labels = views.get("labels", ())
            measured = {v for stage, v in views.items() if stage != "labels"}
            if len(measured) > 1 or any(v[: len(labels)] != labels for v in measured):
                shown = ", ".join(f"{stage} {'x'.join(map(str, v))}" for stage, v in views.items())
                lines.append(f"{row['path']}: {shown}")
        return lines

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "family": self.family,
            "budget": {
                "image_max_pixels": self.budget.max_pixels,
                "image_min_pixels": self.budget.min_pixels,
            },
            "images": self.images,
            "problems": self.problems,
        }

    def table(self) -> str:
        head = ["image", "original", *STAGES]
        rows = [head]
        for row in self.images:
            cells = [Path(row["path"]).name, "x".join(map(str, row["original"]))]
            cells += ["x".join(map(str, row[s])) if row.get(s) is not None else "-" for s in STAGES]
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        bad = self.disagreements
        lines.append(
            f"{len(bad)} image(s) where the stages disagree" + (":\n  " + "\n  ".join(bad) if bad else "")
            if bad
            else f"every stage feeds the same canvas ({self.budget.describe()})"
        )
        lines += [f"not measured: {p}" for p in self.problems]
        return "\n".join(lines)


def sft_sizes(model: str, family: Family, paths: list[str], budget: ImageBudget) -> list:
    """LLaMA-Factory 0.9.5's own preprocessing: its template's mm_plugin with the checkpoint's processor."""
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoProcessor

    template = TEMPLATES[family.training_template(model)[0]]
    processor = AutoProcessor.from_pretrained(model)
    processor.image_max_pixels = budget.max_pixels  # as llamafactory.model.patcher sets them
    processor.image_min_pixels = budget.min_pixels
    out = []
    for (
        path
    ) in paths:  # the plugin's own reading and pre-processing (what _get_mm_inputs hands the processor)
        image = template.mm_plugin._regularize_images(
            [path], image_max_pixels=processor.image_max_pixels, image_min_pixels=processor.image_min_pixels
        )["images"][0]
        out.append(list(family.view(image, processor.image_processor)))
    return out


def eval_env_sizes(
    eval_python: str, model: str, family: Family, paths: list[str], budget: ImageBudget, cwd: Path
) -> dict:
    """The grpo / eval-hf / eval-vllm columns from `python -m eval.sizes` in the evaluation environment."""
    cmd = [
        eval_python,
        "-m",
        "eval.sizes",
        "--model",
        model,
        "--family",
        family.name,
        "--image-max-pixels",
        str(budget.max_pixels),
        "--image-min-pixels",
        str(budget.min_pixels),
        *paths,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_EVAL_PROBE_TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}: {tail[:400]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    model: str,
    family: Family,
    paths: list[str],
    budget: ImageBudget,
    eval_python: str | None,
    repo: Path,
) -> SizesReport:
    """Every stage's canvas for each readable image; unreadable images are named in `problems`."""
    from PIL import Image

    report = SizesReport(model, family.name, budget)
    lo, hi = checkpoint.processor_pixel_range(model)
    readable = []
    for path in paths:
        try:
            with Image.open(path) as img:
                size = img.size
        except OSError as err:
            report.problems.append(f"{path}: cannot read the image ({err})")
            continue
        try:
            labels = family.canvas(size[0], size[1], budget.max_pixels, budget.min_pixels, (lo, hi))
        except ValueError as err:
            report.problems.append(f"{path}: {err}")
            continue
        report.images.append({"path": path, "original": list(size), "labels": list(labels)})
        readable.append(path)
    if not readable:
        return report
    for row, sft in zip(report.images, sft_sizes(model, family, readable, budget), strict=True):
        row["sft"] = sft
    if eval_python is None:
        report.problems.append("grpo, eval-vllm, eval-hf: no evaluation environment (--eval-python)")
        return report
    measured = eval_env_sizes(eval_python, model, family, readable, budget, repo)
    for i, row in enumerate(report.images):
        for stage in ("grpo", "eval-vllm", "eval-hf"):
            row[stage] = measured[stage][i]
    return report
