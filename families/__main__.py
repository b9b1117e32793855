"""`python -m families detect | train-args | check-data | show | sizes`: the families from the shell.

Why a CLI: the Makefile's training targets ask it for the family, the recipe overrides and the data
check; a user asks it (`sizes`) what image size each stage will feed before a week of training.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import families.checkpoint as checkpoint
from core.cli import EXIT_BAD_INPUT, EXIT_OK, fail, setup_logging
from core.yamlfile import loads_yaml, read_yaml
from families.budget import ImageBudget, eval_budget, training_budget
from families.provenance import DataFamilyError, check_data_family
from families.registry import FAMILIES, FAMILY_CHOICES, UnknownFamilyError, get_family, resolve_family
from families.sizes import measure

log = logging.getLogger("families")
REPO = Path(__file__).resolve().parents[1]


def read_yaml_mapping(path: Path) -> dict:
    """A recipe as a mapping (the pack's one YAML loader); ValueError naming the file."""
    return read_yaml(path, dict, "a mapping of keys (a recipe)")


def _recipe_settings(recipe: Path, overrides: list[str]) -> dict:
    """The recipe's mapping with `key=value` overrides applied as LLaMA-Factory applies them (last wins)."""
    settings = read_yaml_mapping(recipe)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        settings[key.strip()] = loads_yaml(value, f"override {item!r}") if value.strip() else value
    return settings


def _record_budget(prog: str, args) -> int:
    settings = _recipe_settings(args.recipe, args.overrides)
    out, model = settings.get("output_dir"), settings.get("model_name_or_path")
    if not isinstance(out, str) or not Path(out).is_dir():
        return fail(prog, f"{args.recipe}: output_dir {out!r} is not a trained model folder", EXIT_BAD_INPUT)
    fam = resolve_family(str(model), args.family, args.default_family)
    hi, lo = training_budget(settings)
    path = checkpoint.write_budget(out, fam.name, hi, lo, "llamafactory-cli train")  # same for every stage
    log.info("%s: %s trained with image_max_pixels %d, image_min_pixels %d", path, fam.display, hi, lo)
    return EXIT_OK


def _sizes(prog: str, args) -> int:
    fam = resolve_family(args.model, args.family)
    chosen = None if args.image_max_pixels is None else str(args.image_max_pixels)
    budget = eval_budget(chosen, fam, args.model)
    if args.image_min_pixels is not None:
        budget = ImageBudget(budget.max_pixels, args.image_min_pixels, budget.source + ", --image-min-pixels")
    python = args.eval_python if Path(args.eval_python).exists() else None
    report = measure(args.model, fam, args.image, budget, python, REPO)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    if not report.images:
        return fail(prog, "no image could be measured", EXIT_BAD_INPUT)
    if report.disagreements or report.problems:
        return fail(
            prog,
            f"{len(report.disagreements)} disagreement(s), {len(report.problems)} problem(s)",
            EXIT_BAD_INPUT,
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m families detect MODEL | train-args RECIPE --model MODEL | check-data DATA_DIR --model MODEL
    | show [FAMILY]`."""
    prog = "python -m families"
    parser = argparse.ArgumentParser(prog=prog, description="The base-model families' conventions.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("detect", "print the family of a checkpoint (config.json model_type)"),
        ("train-args", "print the overrides a recipe needs for the model's family"),
        ("check-data", "refuse data converted for another family than the model's; print the family"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "train-args":
            p.add_argument("recipe", type=Path)
        if name == "check-data":
            p.add_argument("data_dir", type=Path, help="the data folder (DATA_OUT, training's dataset_dir)")
        if name == "detect":
            p.add_argument("model")
        else:
            p.add_argument("--model", required=True)
        p.add_argument("--family", choices=FAMILY_CHOICES, help="force the family (FAMILY=)")
        p.add_argument("--default-family", choices=FAMILY_CHOICES, help="when the model has no config.json")
    p = sub.add_parser(
        "record-budget",
        help="after a LLaMA-Factory run: write OUTPUT_DIR/image_budget.json from the same recipe and overrides",
    )
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", help="the key=value overrides the run was given")
    p.add_argument("--family", choices=FAMILY_CHOICES, help="force the family (FAMILY=)")
    p.add_argument("--default-family", choices=FAMILY_CHOICES, help="when the model has no config.json")
    p = sub.add_parser(
        "sizes",
        help="the image size labels, SFT, GRPO and eval feed the model, measured by each stage's code",
    )
    p.add_argument("--model", required=True, help="a checkpoint folder")
    p.add_argument("--image", nargs="+", required=True, help="image files to measure")
    p.add_argument(
        "--image-max-pixels",
        type=int,
        help="the budget (default: the checkpoint's record, else the family's)",
    )
    p.add_argument("--image-min-pixels", type=int, help="default: the family's")
    p.add_argument("--family", choices=FAMILY_CHOICES, help="force the family")
    p.add_argument(
        "--eval-python",
        default=str(REPO / ".venv-eval" / "bin" / "python"),
        help="the evaluation environment's python (GRPO, vLLM; default .venv-eval)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("show", help="print a family's conventions as JSON")
    p.add_argument("family", nargs="?", choices=FAMILY_CHOICES)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    setup_logging("families")
    try:
        if args.command == "show":
            chosen = [get_family(args.family)] if args.family else list(FAMILIES.values())
            rows = {f.name: f.describe() for f in chosen}
            print(json.dumps(rows, indent=2))
            return EXIT_OK
        if args.command == "record-budget":
            return _record_budget(prog, args)
        if args.command == "sizes":
            return _sizes(prog, args)
        fam = resolve_family(args.model, args.family, args.default_family)
        template, thinking = fam.training_template(args.model)
        if thinking is not None:
            log.info(
                "%s: a %s Thinking checkpoint (%s: its generation prompt opens <think>): template %s",
                args.model,
                fam.display,
                thinking.name,
                template,
            )
        if args.command == "detect":
            print(fam.name)
            return EXIT_OK
        if args.command == "check-data":
            try:
                warnings = check_data_family(args.data_dir, fam, args.model, args.family)
            except DataFamilyError as err:
                return fail(prog, err, EXIT_BAD_INPUT)
            for warning in warnings:
                log.warning("%s", warning)
            print(fam.name)
            return EXIT_OK
        recipe = read_yaml_mapping(args.recipe)
        overrides = fam.recipe_overrides(recipe, template)
        log.info(
            "%s: %s base model (template %s, image_max_pixels %d)%s",
            args.model,
            fam.display,
            template,
            fam.image_max_pixels,
            f"; overrides: {' '.join(overrides)}" if overrides else "; the recipe's values",
        )
        print(" ".join(overrides))
        return EXIT_OK
    except (UnknownFamilyError, ValueError) as err:
        return fail(prog, err, EXIT_BAD_INPUT)


if __name__ == "__main__":
    raise SystemExit(main())
