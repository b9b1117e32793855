"""`python -m eval.sizes` (run by `python -m families sizes` in .venv-eval): the canvas GRPO and eval give.

Why a probe in the eval environment: GRPO (TRL) and eval (vLLM, transformers 5.19) run there, and the
sizes must come from their real code paths, never from the pack's own formula: GRPO's data path
(rl.data.build_dataset, then the checkpoint's processor as TRL calls it), eval's image loading
(eval.images.load_image) through the HF processor, and vLLM's own multi-modal processor (the one its
engine runs, built from the checkpoint without starting an engine). Each canvas is read from the
processor's output grid (Family.canvas_from_grid). Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import families
from core.cli import EXIT_BAD_INPUT, EXIT_OK, fail, setup_logging
from families.budget import ImageBudget

log = logging.getLogger("eval.sizes")


def grpo_sizes(model: str, family: families.Family, paths: list[str], budget: ImageBudget) -> list:
    """GRPO: TRL gets the dataset's PIL images (rl.data) and hands them to the checkpoint's processor."""
    from rl.data import build_dataset
    from rl.train import load_processor

    processor = load_processor(model)
    examples = [{"id": str(i), "images": [p]} for i, p in enumerate(paths)]
    dataset = build_dataset(examples, family, budget.max_pixels, budget.min_pixels)
    out = []
    for row in dataset:
        out.append(list(family.view(row["images"][0], processor.image_processor)))
    return out


def hf_sizes(model: str, family: families.Family, images: list) -> list:
    """eval's HF backend: the loaded images through the checkpoint's own processor (transformers)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model)
    out = []
    for image in images:
        out.append(list(family.view(image, processor.image_processor)))
    return out


def vllm_sizes(model: str, family: families.Family, images: list) -> list:
    """eval's vLLM backend: vLLM's multi-modal processor for the checkpoint, as its engine builds it."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    config = ModelConfig(model=model, tokenizer=model, limit_mm_per_prompt={"image": 1}, enforce_eager=True)
    processor = MULTIMODAL_REGISTRY.create_processor(config)
    out = []
    for image in images:
        items = processor.info.parse_mm_data({"image": [image]})
        result = processor(family.image_placeholder, items, hf_processor_mm_kwargs=family.processor_kwargs())
        out.append(list(family.vllm_view(result["mm_kwargs"]["image"][0], image)))
    return out


def main(argv: list[str] | None = None) -> int:
    prog = "python -m eval.sizes"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--family", required=True, choices=families.FAMILY_CHOICES)
    parser.add_argument("--image-max-pixels", type=int, required=True)
    parser.add_argument("--image-min-pixels", type=int, required=True)
    parser.add_argument("images", nargs="+")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    setup_logging("eval.sizes")
    from eval.images import load_image

    fam = families.get_family(args.family)
    budget = ImageBudget(args.image_max_pixels, args.image_min_pixels, "families sizes")
    try:
        loaded = [load_image(p, budget, fam).image for p in args.images]
    except OSError as err:
        return fail(prog, f"cannot read image: {err}", EXIT_BAD_INPUT)
    result = {
        "grpo": grpo_sizes(args.model, fam, args.images, budget),
        "eval-hf": hf_sizes(args.model, fam, loaded),
        "eval-vllm": vllm_sizes(args.model, fam, loaded),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
