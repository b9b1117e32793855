"""python -m merge_tool --models A B [C ...] [--weights wA wB ...] --output OUT [--force]

Averages checkpoints (or applies task arithmetic against --base) tensor by
tensor without loading whole models; see merge_tool/__init__.py.
"""

from __future__ import annotations

import argparse
import signal
import sys

from atomicio import OutputExistsError

from .errors import MergeError
from .merge import DEFAULT_MAX_SHARD_SIZE, run_merge
from .methods import METHODS
from .plan import build_plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m merge_tool",
        description="Merge same-architecture safetensors checkpoints (e.g. Migician's stage 1 and stage 2) "
        "by weighted averaging or task arithmetic, streaming tensor by tensor.",
    )
    parser.add_argument(
        "--models", nargs="+", required=True, metavar="DIR", help="model folders (or checkpoint-N/)"
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one weight per model (default: uniform); must sum to 1",
    )
    parser.add_argument("--output", required=True, metavar="OUT", help="folder to write the merged model to")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    parser.add_argument(
        "--method", choices=METHODS, default="linear", help="default: linear (weighted average)"
    )
    parser.add_argument("--base", metavar="DIR", help="base model for task arithmetic")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="task arithmetic: base + scale * sum_i w_i (model_i - base)"
    )
    parser.add_argument(
        "--dtype",
        help="output dtype of floating tensors (bfloat16, float16, float32); default: as stored. "
        "Also allows combining checkpoints saved in different floating dtypes.",
    )
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"e.g. 500MB, 2GiB (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument(
        "--allow-unnormalized", action="store_true", help="accept weights that do not sum to 1"
    )
    parser.add_argument("--threads", type=int, help="worker threads (default: CPUs available, at most 4)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _terminate(signum, frame):  # SIGTERM -> SystemExit, so the temporary folder is removed
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        plan = build_plan(
            args.models,
            weights=args.weights,
            method=args.method,
            base=args.base,
            scale=args.scale,
            dtype=args.dtype,
            allow_unnormalized=args.allow_unnormalized,
        )
        try:
            summary = run_merge(
                plan,
                args.output,
                force=args.force,
                max_shard_size=args.max_shard_size,
                progress=not args.no_progress,
                threads=args.threads,
            )
        finally:
            plan.close()
    except (MergeError, OutputExistsError) as err:
        print(f"merge_tool: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. disk full while writing: the temporary folder is already gone
        print(f"merge_tool: error: {err}; nothing was written to {args.output}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"merge_tool: interrupted; nothing was written to {args.output}", file=sys.stderr)
        return 130
    for note in summary["notes"]:
        print(f"merge_tool: note: {note}", file=sys.stderr)
    print(
        f"merged {len(args.models)} models ({plan.method.name}, weights {list(plan.method.weights)}) into "
        f"{summary['output']}: {summary['tensors']} tensors, {summary['shards']} shard(s), "
        f"{summary['bytes_written'] / 1e9:.3f} GB in {summary['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
