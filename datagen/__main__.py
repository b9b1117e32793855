"""`python -m datagen freeform|trajectories`: teacher-model data synthesis from the command line.

Exit codes are cli.py's: 0 done; 1 bad input (a file, option value or output in the way without
--force; also a run where no record survived validation: rejects and report are written); 2 usage;
3 partial: the teacher failed for good (4xx, or retries used up) and every finished request is in
the cache, so rerunning the same command resumes; 130 Ctrl-C, 128+N on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from core.atomicio import Interrupted, OutputExistsError, SamePathError, exit_on_signals
from core.cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    fail,
    prog_name,
    setup_logging,
)

from .cache import CacheError
from .client import ChatClient, TeacherError
from .detections import DetectionsError
from .grouping import DEFAULT_EXCLUDED


def _number(kind, least, name: str):
    """An argparse type: a finite `kind` >= `least` (> 0 for `least` 0.0), refused at parse time (exit 2)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        strict = kind is float
        if not math.isfinite(value) or value < least or (strict and value <= least):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {least:g} (got {text})")
        return value

    parse.__name__ = name  # argparse names the type in its messages
    return parse


POSITIVE_SECONDS = _number(float, 0.0, "seconds")
AT_LEAST_ONE = _number(int, 1, "count")
AT_LEAST_ZERO = _number(int, 0, "count")


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-base",
        action="append",
        required=True,
        help="OpenAI-compatible base URL (repeat or comma-separate)",
    )
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key (optional)"
    )
    p.add_argument("--concurrency", type=AT_LEAST_ONE, default=8, help="requests in flight")
    p.add_argument(
        "--retries", type=AT_LEAST_ZERO, default=5, help="retries on 429/5xx/timeouts/unfinished replies"
    )
    p.add_argument(
        "--timeout",
        type=POSITIVE_SECONDS,
        default=300.0,
        help="seconds per request (a deadline, not a read timeout)",
    )
    p.add_argument("--output", required=True, help="output folder (also holds the request cache)")
    p.add_argument("--max-tokens", type=int, default=1024, help="new tokens per teacher answer")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--prompt-dir", help="folder of prompt templates (default: datagen/prompts)")
    p.add_argument("--force", action="store_true", help="replace earlier outputs (the cache is kept)")
    p.add_argument("--quiet", action="store_true")


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ff = sub.add_parser("freeform", help="Migician's free-form QA from a COCO/Objects365 detection file")
    ff.add_argument("--detections", required=True, help="annotation JSON in the COCO layout")
    ff.add_argument("--image-dir", required=True, help="folder the annotation file_names are relative to")
    ff.add_argument("--caption-model", required=True)
    ff.add_argument("--refine-model", required=True)
    ff.add_argument("--qa-model", required=True)
    ff.add_argument("--grouping", choices=("random", "common", "clip"), default="random")
    ff.add_argument("--clip-model", help="local CLIP checkpoint folder (for --grouping clip)")
    ff.add_argument("--seed", type=int, default=0)
    ff.add_argument("--max-images", type=AT_LEAST_ONE, help="use at most this many images")
    ff.add_argument(
        "--max-objects", type=AT_LEAST_ONE, default=20, help="boxes per image given to the refiner"
    )
    ff.add_argument(
        "--min-area", type=float, default=0.05, help="shared-class grouping: least box share of the image"
    )
    ff.add_argument(
        "--exclude-classes", default=",".join(DEFAULT_EXCLUDED), help="shared-class grouping: never these"
    )
    ff.add_argument(
        "--cooccur-share",
        type=float,
        default=0.5,
        help="shared-class grouping: also exclude classes seen with this share of all other classes (>1: none)",
    )
    ff.add_argument("--templates", default="1,2", help="QA templates to draw from (1, 2 or 1,2)")
    ff.add_argument("--match-iou", type=float, default=0.9, help="IoU an answer box needs with a refined box")
    _client_options(ff)
    tr = sub.add_parser("trajectories", help="MIRG-RL's CoT -> mapping -> reassembly trajectories")
    tr.add_argument("--input", required=True, help="RL records (mg_rl.json's format)")
    tr.add_argument("--cot-model", required=True)
    tr.add_argument("--mapping-model", required=True)
    tr.add_argument("--reassembly-model", required=True)
    tr.add_argument("--limit", type=AT_LEAST_ONE, help="use at most this many records")
    tr.add_argument("--answer-iou", type=float, default=0.5, help="IoU the CoT answer needs with the truth")
    tr.add_argument(
        "--filter-against",
        metavar="PREDICTIONS.jsonl",
        help="keep a CoT trace only where reasoning helps over this `eval run` of the direct model on a "
        "bench of the same records, in order (correct +0.10 IoU, wrong fixed, or wrong +0.20 IoU)",
    )
    _client_options(tr)
    return parser


def make_client(args) -> ChatClient:
    bases = [b for arg in args.api_base for b in arg.split(",") if b]
    return ChatClient(
        bases,
        api_key=os.environ.get(args.api_key_env) or None,
        timeout=args.timeout,
        retries=args.retries,
        concurrency=args.concurrency,
    )


def sampling(args) -> dict:
    """Sampling parameters (part of every cache key: other settings ask the teacher again)."""
    if args.max_tokens < 1 or not 0 <= args.temperature <= 2:
        raise ValueError(
            f"--max-tokens must be >= 1 and --temperature in [0, 2] (got {args.max_tokens}, {args.temperature})"
        )
    return {"temperature": args.temperature, "max_tokens": args.max_tokens}


def run(args) -> str:
    """Run one subcommand and return its summary (errors propagate to main)."""
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ValueError(
            f"--output {args.output} is a file; give a folder (it holds the outputs and the cache)"
        )
    client = make_client(args)
    if args.command == "freeform":
        from .freeform import FreeformConfig, run_freeform

        templates = tuple(int(t) for t in args.templates.split(",") if t.strip().isdigit())
        cfg = FreeformConfig(
            detections=args.detections,
            image_dir=args.image_dir,
            output=args.output,
            caption_model=args.caption_model,
            refine_model=args.refine_model,
            qa_model=args.qa_model,
            grouping=args.grouping,
            clip_model=args.clip_model,
            seed=args.seed,
            max_images=args.max_images,
            max_objects=args.max_objects,
            min_area=args.min_area,
            exclude_classes=tuple(c.strip() for c in args.exclude_classes.split(",") if c.strip()),
            cooccur_share=args.cooccur_share,
            templates=templates,
            match_iou=args.match_iou,
            prompt_dir=args.prompt_dir,
            sampling=sampling(args),
            force=args.force,
        )
        with client:
            return run_freeform(cfg, client).summary()
    from .trajectories import TrajectoryConfig, run_trajectories

    cfg = TrajectoryConfig(
        input=args.input,
        output=args.output,
        cot_model=args.cot_model,
        mapping_model=args.mapping_model,
        reassembly_model=args.reassembly_model,
        limit=args.limit,
        answer_iou=args.answer_iou,
        filter_against=args.filter_against,
        prompt_dir=args.prompt_dir,
        sampling=sampling(args),
        force=args.force,
    )
    with client:
        return run_trajectories(cfg, client).summary()


def main(argv: list[str] | None = None) -> int:
    prog = prog_name("datagen", "migician-datagen")
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:  # --help (0) or argparse's usage error (2), already printed
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    setup_logging(prog, logging.WARNING if args.quiet else logging.INFO)
    exit_on_signals()
    from .freeform import NothingWritten as FreeformEmpty
    from .trajectories import NothingWritten as TrajEmpty

    try:
        print(run(args))
    except (FreeformEmpty, TrajEmpty) as err:
        return fail(prog, err)
    except TeacherError as err:
        return fail(
            prog, f"{err} (finished requests are cached: rerun the same command to resume)", EXIT_PARTIAL
        )
    except (
        OutputExistsError,
        SamePathError,
        CacheError,
        DetectionsError,
        OSError,
        ValueError,
    ) as err:
        return fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, "interrupted (finished requests are cached)", EXIT_INTERRUPTED)
    except Interrupted as err:
        return fail(prog, f"{err} (finished requests are cached)", err.code)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
