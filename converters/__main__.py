"""Command line: `python -m converters <source>|mix|trajectories|all|preview|registry`.

The source subcommands (mgrounding, refcoco, llava-onevision, m4-instruct, groma) come from the
sources table (sources.py). Exit codes are cli.py's: 0 done; 1 bad input or a refused output (the
message names the file), including more rejected records than --max-reject-rate allows (output
not written, rejects written); 2 usage (argparse); 3 partial: `all` kept some steps' outputs but
not every one (fix what the error names and rerun); 130 Ctrl-C, 128+N on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path

from core.atomicio import atomic_write_text, ensure_distinct_paths, exit_on_signals, refuse_existing
from core.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, fail, prog_name, setup_logging
from core.stages import mixture_stages
from core.streaming import InvalidJSONError
from families import FAMILY_CHOICES

from . import sources as source_table
from .answer_styles import ANSWER_STYLES, DEFAULT_STYLE
from .boxformat import DEFAULT as DEFAULT_BOX_FORMAT
from .boxformat import make_box_format
from .composition import DEFAULT_PATH as DEFAULT_MIXTURES
from .composition import CompositionError, load_composition
from .convert import write_report
from .mixture import MixtureError, build_mixtures, format_report
from .pipeline import RunResult, run_all
from .preview import DEFAULT_LIMIT as PREVIEW_LIMIT
from .preview import write_preview
from .registry import dataset_info_text
from .report import RejectRateExceeded
from .sources import Converter
from .trajectories import DEFAULT_SIZES as TRAJ_SIZES
from .trajectories import WRITERS as TRAJ_WRITERS
from .trajectories import build_trajectories

PROG = "python -m converters"  # the default prefix; `migician-convert` when run as that script


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", text):
        raise argparse.ArgumentTypeError("must be letters, digits, _ or - (it names files and datasets)")
    return text


def _pixels(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of pixels")
    return value


def _box_format_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--box-format",
        choices=FAMILY_CHOICES,
        default=DEFAULT_BOX_FORMAT,
        help="the base-model family the records are written for (default qwen2-vl, MGrounding's own: "
        "box tokens on 0-1000; qwen2.5-vl: JSON bbox_2d in resized pixels; qwen3-vl: JSON on 0-1000)",
    )
    p.add_argument(
        "--image-max-pixels", type=_pixels, help="training's image_max_pixels (default: the family's budget)"
    )
    p.add_argument(
        "--image-min-pixels", type=_pixels, help="training's image_min_pixels (default: the family's budget)"
    )
    p.add_argument(
        "--base-model",
        type=Path,
        help="checkpoint folder: its processor's pixel range is used, and its family must be --box-format's",
    )


def _box_format(args: argparse.Namespace):
    return make_box_format(args.box_format, args.image_max_pixels, args.image_min_pixels, args.base_model)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, type=Path, help="converted ShareGPT file (.json or .jsonl)")
    p.add_argument(
        "--rejects", type=Path, help="rejected records with id and reason (.jsonl); default OUT.rejects.jsonl"
    )
    p.add_argument(
        "--check-images", action="store_true", help="open and decode every image; reject missing/broken ones"
    )
    p.add_argument("--workers", type=int, default=None, help="image-check processes (default: all cores)")
    p.add_argument("--image-cache", type=Path, help="remember good images here so a rerun skips them")
    p.add_argument(
        "--max-reject-rate", type=_rate, default=0.01, help="refuse to write OUT above this (default 0.01)"
    )
    p.add_argument("--report", type=Path, help="also write the counts as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    _box_format_options(p)


def _mix_options(p: argparse.ArgumentParser) -> None:
    try:
        defaults = load_composition().totals
    except CompositionError:  # reported when the command runs; --help still works
        defaults = {}
    for stage in mixture_stages():  # one --<stage>-total per mixture stage of stages.py
        total = f"{defaults[stage]:,}" if stage in defaults else "its total"
        p.add_argument(f"--{stage}-total", type=_count, help=f"{stage} mixture size (default: {total})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixture-prefix", type=_prefix, default="migician", help="mixture and dataset names")
    p.add_argument(
        "--mixtures",
        type=Path,
        help=f"the mixture composition, Table 12 (default: {DEFAULT_MIXTURES.parent.name}/{DEFAULT_MIXTURES.name})",
    )
    p.add_argument(
        "--allow-missing-categories",
        action="store_true",
        help="spread a category with no source over the others instead of failing",
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.set_defaults(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)

    for converter in source_table.converters():
        p = sub.add_parser(converter.cli, help=converter.help)
        converter.add_options(p)
        _common(p)
        p.set_defaults(handler=partial(_convert, converter))

    p = sub.add_parser("mix", help="the stage mixtures from converted files (paper Table 12)")
    p.add_argument("--sharegpt-dir", required=True, type=Path, help="folder of <dataset>.json files")
    p.add_argument("--output-dir", required=True, type=Path)
    _mix_options(p)
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=_mix)

    p = sub.add_parser(
        "trajectories", help="MIRG-RL trajectory-SFT and RL sets from converted MGrounding files"
    )
    p.add_argument(
        "--sharegpt-dir", required=True, type=Path, help="folder of the converted mg_<task>.json files"
    )
    p.add_argument(
        "--output-dir", type=Path, help="where mg_traj_sft.json and mg_rl.json go (default: --sharegpt-dir)"
    )
    p.add_argument(
        "--sft-size", type=int, default=TRAJ_SIZES["sft"], help="trajectory-SFT samples (default 10000)"
    )
    p.add_argument("--rl-size", type=int, default=TRAJ_SIZES["rl"], help="RL samples (default 7000)")
    p.add_argument("--writer", choices=sorted(TRAJ_WRITERS), default="template", help="reasoning phrasings")
    p.add_argument(
        "--answer-style",
        choices=sorted(ANSWER_STYLES),
        default=DEFAULT_STYLE,
        help="mirg: [N-M] trajectories, one target per sample (default); mgthinker: <think> in words, "
        '<answer>[{"image_id", "bbox_2d", "label"}...]</answer> with every target of a turn',
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rejects", type=Path, help="default OUTPUT_DIR/mg_trajectories.rejects.jsonl")
    p.add_argument("--report", type=Path, help="default OUTPUT_DIR/mg_trajectories.report.json")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    _box_format_options(p)
    p.set_defaults(handler=_trajectories)

    p = sub.add_parser(
        "all",
        help="convert every source under DATA_ROOT, mix, register in OUT/dataset_info.json "
        "(skips up-to-date steps)",
    )
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--output-dir", required=True, type=Path)
    _mix_options(p)
    p.add_argument("--check-images", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--max-reject-rate", type=_rate, default=0.01)
    p.add_argument("--traj-sft-size", type=int, default=TRAJ_SIZES["sft"], help="trajectory-SFT samples")
    p.add_argument("--rl-size", type=int, default=TRAJ_SIZES["rl"], help="RL samples")
    p.add_argument(
        "--traj-writer", choices=sorted(TRAJ_WRITERS), default="template", help="reasoning phrasings"
    )
    p.add_argument(
        "--force", action="store_true", help="redo every step, overwrite, replace edited registry entries"
    )
    _box_format_options(p)
    p.set_defaults(handler=_all)

    p = sub.add_parser(
        "preview", help="converted records on their images, boxes drawn (HTML pages, no server)"
    )
    p.add_argument("data", type=Path, help="a converted ShareGPT file (.json or .jsonl)")
    p.add_argument(
        "--limit", type=_count, default=PREVIEW_LIMIT, help="first N records (default %(default)s)"
    )
    p.add_argument("--all", action="store_true", help="every record (no --limit)")
    p.add_argument("--output-dir", type=Path, help="default: DATA's folder, DATA_NAME.preview/")
    p.add_argument(
        "--report", type=Path, help="the converter report recording the box format (default: found)"
    )
    p.add_argument(
        "--box-format",
        choices=FAMILY_CHOICES,
        help="the family the records are written for (default: what the converter report records)",
    )
    p.add_argument("--image-max-pixels", type=_pixels, help="with --box-format qwen2.5-vl: training's budget")
    p.add_argument("--image-min-pixels", type=_pixels)
    p.add_argument("--base-model", type=Path, help="with --box-format: its processor's pixel range")
    p.add_argument("--page-size", type=_count, default=200)
    p.set_defaults(handler=_preview)

    p = sub.add_parser("registry", help="write (or --check) the repository's dataset_info.json")
    p.add_argument("--output", type=Path, default=Path("dataset_info.json"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the generated one")
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=_registry)
    return parser


def _totals(args: argparse.Namespace) -> dict[str, int]:
    """The --<stage>-total values given (the others come from the mixtures file)."""
    totals = {stage: getattr(args, f"{stage}_total") for stage in mixture_stages()}
    return {stage: total for stage, total in totals.items() if total is not None}


def _convert(converter: Converter, args: argparse.Namespace) -> int:
    rejects = args.rejects or args.output.with_name(args.output.stem + ".rejects.jsonl")
    options = {
        "output": args.output,
        "rejects": rejects,
        "check_images": args.check_images,
        "workers": args.workers,
        "image_cache": args.image_cache,
        "max_reject_rate": args.max_reject_rate,
        "force": args.force,
        "require_images": converter.needs_images,
        "box_format": _box_format(args),
    }
    # Every path this command reads or writes is a different file, checked before any work (even --force).
    flags = (*converter.input_flags, "output", "report", "image_cache")
    paths = {f"--{flag.replace('_', '-')}": getattr(args, flag, None) for flag in flags}
    ensure_distinct_paths({**paths, "--rejects": rejects})
    if args.report is not None:
        refuse_existing(args.report, args.force, "report")
    try:
        report = converter.run(args, options)
    except RejectRateExceeded as err:
        print(err.report.summary(), file=sys.stderr)
        if args.report is not None:
            write_report(err.report, args.report)
        return fail(args.prog, err, EXIT_BAD_INPUT)
    print(report.summary())
    if args.report is not None:
        write_report(report, args.report)
    return EXIT_OK


def _trajectories(args: argparse.Namespace) -> int:
    out_dir = args.output_dir or args.sharegpt_dir
    report_path = args.report or out_dir / "mg_trajectories.report.json"
    refuse_existing(report_path, args.force, "report")
    style = ANSWER_STYLES[args.answer_style]
    report = build_trajectories(
        args.sharegpt_dir,
        out_dir,
        sft_size=args.sft_size,
        rl_size=args.rl_size,
        seed=args.seed,
        rejects=args.rejects,
        extra_outputs=[report_path],
        writer=style.writers[args.writer](),
        force=args.force,
        box_format=_box_format(args),
        style=style,
    )
    print(report.summary())
    write_report(report, report_path)
    return EXIT_OK


def _mix(args: argparse.Namespace) -> int:
    composition = load_composition(args.mixtures)
    known = source_table.SOURCES
    sources = {p.stem: p for p in sorted(args.sharegpt_dir.glob("*.json")) if p.stem in known}
    reports = build_mixtures(
        sources,
        args.output_dir,
        args.mixture_prefix,
        _totals(args),
        args.seed,
        allow_missing_categories=args.allow_missing_categories,
        force=args.force,
        composition=composition,
    )
    for report in reports:
        print(format_report(report))
    return EXIT_OK


def _summary(result: RunResult) -> str:
    line = f"all: {len(result.ran)} step(s) run, {len(result.up_to_date)} already up to date"
    if result.failed:
        line += f", {len(result.failed)} failed ({', '.join(result.failed)})"
    if result.registry is not None:
        line += (
            f"; {len(result.registered)} datasets in {result.registry} "
            f"(train with dataset_dir={result.registry.parent})"
        )
    return line


def _all(args: argparse.Namespace) -> int:
    result = run_all(
        args.data_root,
        args.output_dir,
        totals=_totals(args),
        seed=args.seed,
        prefix=args.mixture_prefix,
        check_images=args.check_images,
        workers=args.workers,
        max_reject_rate=args.max_reject_rate,
        allow_missing_categories=args.allow_missing_categories,
        traj_sft_size=args.traj_sft_size,
        rl_size=args.rl_size,
        traj_writer=args.traj_writer,
        mixtures=args.mixtures,
        force=args.force,
        box_format=_box_format(args),
    )
    print(_summary(result))
    if result.error is None:
        return EXIT_OK
    return fail(args.prog, result.error, EXIT_PARTIAL if result.kept_some else EXIT_BAD_INPUT)


def _preview(args: argparse.Namespace) -> int:
    fmt = _box_format(args) if args.box_format else None
    done, used = write_preview(
        args.data, args.output_dir, None if args.all else args.limit, fmt, args.report, args.page_size
    )
    print(
        f"preview: {done.index} ({done.cards} record(s) on {done.pages} page(s); box format {used}; "
        f"{done.image_errors} unreadable image(s))"
    )
    return EXIT_OK


def _registry(args: argparse.Namespace) -> int:
    text = dataset_info_text()
    if args.check:
        if args.output.is_file() and args.output.read_text(encoding="utf-8") == text:
            print(f"{args.output} is up to date")
            return EXIT_OK
        return fail(
            args.prog, f"{args.output} is out of date; regenerate it with `{args.prog} registry --force`"
        )
    refuse_existing(args.output, args.force)
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    prog = prog_name("converters", "migician-convert")
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2), printed by argparse
        return int(done.code or 0)
    setup_logging("converters")
    exit_on_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C: no temporary files are left behind
    try:
        return args.handler(args)
    except (InvalidJSONError, OSError, MixtureError, ValueError) as err:  # OutputExistsError is an OSError
        return fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, "interrupted; finished steps are kept, rerun to go on", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
