"""Command line: `python -m converters {mgrounding,refcoco,llava-onevision,m4-instruct,groma,mix,
trajectories,all,registry}`.

Exit codes: 0 done; 1 bad input or refused output (message names the file);
3 more records rejected than --max-reject-rate allows (output not written,
rejects written); 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atomicio import atomic_write_text, ensure_distinct_paths, exit_on_signals, refuse_existing

from .convert import write_report
from .groma import convert_groma
from .llava import convert_llava_onevision, convert_m4_instruct
from .mgrounding import convert_mgrounding
from .mixture import CATEGORIES, DEFAULT_TOTALS, MixtureError, build_mixtures
from .pipeline import run_all
from .refcoco import DATASETS as REFCOCO_DATASETS
from .refcoco import convert_refcoco
from .registry import dataset_info_text
from .report import RejectRateExceeded
from .streaming import InvalidJSONError
from .trajectories import DEFAULT_SIZES as TRAJ_SIZES
from .trajectories import WRITERS as TRAJ_WRITERS
from .trajectories import build_trajectories


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converters", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("mgrounding", help="one MGrounding-630k JSON file")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", required=True, type=Path, help="folder holding MGrounding-630k/")
    _common(p)

    p = sub.add_parser("refcoco", help="RefCOCO / RefCOCO+ / RefCOCOg (refer layout), train split")
    p.add_argument("--dataset", required=True, choices=sorted(REFCOCO_DATASETS))
    p.add_argument("--refs", required=True, type=Path, help="refs(unc).p or refs(umd).p")
    p.add_argument("--instances", required=True, type=Path, help="instances.json (COCO format)")
    p.add_argument("--image-dir", required=True, type=Path, help="COCO train2014 images")
    p.add_argument("--split", default="train")
    _common(p)

    p = sub.add_parser("llava-onevision", help="LLaVA-OneVision parquet and/or JSON files")
    p.add_argument("--input", required=True, nargs="+", type=Path, help="files or folders")
    p.add_argument("--image-dir", type=Path, help="where embedded parquet images are written (once)")
    p.add_argument(
        "--image-root", type=Path, help="JSON `image` paths are relative to this (default: JSON's folder)"
    )
    _common(p)

    p = sub.add_parser("m4-instruct", help="M4-Instruct m4_instruct_annotations.json")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", type=Path, help="default: the annotation file's folder")
    _common(p)

    p = sub.add_parser("groma", help="Groma-Instruct groma_instruct.json")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", required=True, type=Path, help="Visual Genome images folder")
    _common(p)

    p = sub.add_parser("mix", help="stage-1 and stage-2 mixtures from converted files (paper Table 12)")
    p.add_argument("--sharegpt-dir", required=True, type=Path, help="folder of <dataset>.json files")
    p.add_argument("--output-dir", required=True, type=Path)
    _mix_options(p)
    p.add_argument("--force", action="store_true")

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rejects", type=Path, help="default OUTPUT_DIR/mg_trajectories.rejects.jsonl")
    p.add_argument("--report", type=Path, help="default OUTPUT_DIR/mg_trajectories.report.json")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")

    p = sub.add_parser("all", help="convert every source under DATA_ROOT, then mix (skips up-to-date steps)")
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
    p.add_argument("--force", action="store_true", help="redo every step and overwrite")

    p = sub.add_parser("registry", help="write (or --check) the repository's dataset_info.json")
    p.add_argument("--output", type=Path, default=Path("dataset_info.json"))
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the generated one")
    p.add_argument("--force", action="store_true")
    return parser


def _totals(args: argparse.Namespace) -> dict[str, int]:
    return {stage: getattr(args, f"{stage}_total") for stage in DEFAULT_TOTALS}


def _mix_options(p: argparse.ArgumentParser) -> None:
    for stage, total in DEFAULT_TOTALS.items():  # one --<stage>-total per mixture stage of stages.py
        p.add_argument(f"--{stage}-total", type=int, default=total, help=f"{stage} mixture size ({total:,})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixture-prefix", default="migician")
    p.add_argument(
        "--allow-missing-categories",
        action="store_true",
        help="spread a category with no source over the others instead of failing",
    )


def _convert(args: argparse.Namespace) -> int:
    rejects = args.rejects or args.output.with_name(args.output.stem + ".rejects.jsonl")
    options = {
        "output": args.output,
        "rejects": rejects,
        "check_images": args.check_images,
        "workers": args.workers,
        "image_cache": args.image_cache,
        "max_reject_rate": args.max_reject_rate,
        "force": args.force,
    }
    # Every path this command reads or writes is a different file, checked before any work (even --force).
    flags = ("input", "refs", "instances", "output", "report", "image_cache")
    paths = {f"--{flag.replace('_', '-')}": getattr(args, flag, None) for flag in flags}
    ensure_distinct_paths({**paths, "--rejects": rejects})
    if args.report is not None:
        refuse_existing(args.report, args.force, "report")
    try:
        if args.command == "mgrounding":
            report = convert_mgrounding(args.input, args.image_root, **options)
        elif args.command == "refcoco":
            report = convert_refcoco(
                args.refs, args.instances, args.image_dir, name=args.dataset, split=args.split, **options
            )
        elif args.command == "llava-onevision":
            report = convert_llava_onevision(
                args.input, image_dir=args.image_dir, image_root=args.image_root, **options
            )
        elif args.command == "m4-instruct":
            report = convert_m4_instruct(args.input, args.image_root or args.input.parent, **options)
        else:
            report = convert_groma(args.input, args.image_root, **options)
    except RejectRateExceeded as err:
        print(err.report.summary(), file=sys.stderr)
        if args.report is not None:
            write_report(err.report, args.report)
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(report.summary())
    if args.report is not None:
        write_report(report, args.report)
    return 0


def _trajectories(args: argparse.Namespace) -> int:
    out_dir = args.output_dir or args.sharegpt_dir
    report_path = args.report or out_dir / "mg_trajectories.report.json"
    refuse_existing(report_path, args.force, "report")
    report = build_trajectories(
        args.sharegpt_dir,
        out_dir,
        sft_size=args.sft_size,
        rl_size=args.rl_size,
        seed=args.seed,
        rejects=args.rejects,
        extra_outputs=[report_path],
        writer=TRAJ_WRITERS[args.writer](),
        force=args.force,
    )
    print(report.summary())
    write_report(report, report_path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C: no temporary files are left behind
    try:
        if args.command == "all":
            return run_all(
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
                force=args.force,
            )
        if args.command == "trajectories":
            return _trajectories(args)
        if args.command == "mix":
            known = {s for sources in CATEGORIES.values() for s in sources}
            sources = {p.stem: p for p in sorted(args.sharegpt_dir.glob("*.json")) if p.stem in known}
            build_mixtures(
                sources,
                args.output_dir,
                args.mixture_prefix,
                _totals(args),
                args.seed,
                allow_missing_categories=args.allow_missing_categories,
                force=args.force,
            )
            return 0
        if args.command == "registry":
            text = dataset_info_text()
            if args.check:
                same = args.output.is_file() and args.output.read_text(encoding="utf-8") == text
                print(f"{args.output} is {'up to date' if same else 'out of date'}")
                return 0 if same else 1
            refuse_existing(args.output, args.force)
            atomic_write_text(args.output, text)
            print(f"wrote {args.output}")
            return 0
        return _convert(args)
    except (InvalidJSONError, OSError, MixtureError, ValueError) as err:  # OutputExistsError is an OSError
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
