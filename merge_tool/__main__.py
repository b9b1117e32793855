"""python -m merge_tool --models A B [C ...] [--weights ...] [--method M --base B --param k=v] --output OUT
python -m merge_tool CONFIG.yaml --output OUT  (a mergekit config)
(also installed as the console script `migician-merge`)

Merges checkpoints tensor by tensor without loading whole models, by any
method of the table in merge_tool/methods; see merge_tool/README.md.
Exit codes are cli.py's, shared by every CLI: 0 merged, 1 a refusal (bad model, file, tensor,
parameter or an output in the way; nothing written), 2 a wrong command line,
128 + N stopped by signal N (130 for Ctrl-C; nothing written).
"""

from __future__ import annotations

import argparse
import signal
import sys

from core.atomicio import OutputExistsError
from core.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail, prog_name, signal_code

from .config import read_config
from .errors import MergeError
from .merge import DEFAULT_MAX_SHARD_SIZE, run_merge
from .methods import ALIASES, METHODS
from .plan import build_plan, plan_spec
from .spec import parse_param

SPEC_FLAGS = ("models", "weights", "base", "scale", "param", "dtype")
SCRIPT = "migician-merge"


def build_parser() -> argparse.ArgumentParser:
    methods = "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
    parser = argparse.ArgumentParser(
        prog=prog_name("merge_tool", SCRIPT),
        description="Merge same-architecture safetensors checkpoints (e.g. Migician's stage 1 and stage 2), "
        "streaming tensor by tensor. Give the merge as flags or as a mergekit YAML config. Methods: "
        + methods,
    )
    parser.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="a mergekit-format merge config")
    parser.add_argument("--models", nargs="+", metavar="DIR", help="model folders (or checkpoint-N/)")
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
        "--method",
        choices=[*METHODS, *ALIASES],
        default="linear",
        help="default: linear (weighted average)",
    )
    parser.add_argument(
        "--base",
        metavar="DIR",
        help=f"base model ({', '.join(name for name, m in METHODS.items() if m.needs_base)})",
    )
    parser.add_argument(
        "--scale", type=float, help="task vector methods' lambda: base + scale * sum_i w_i (model_i - base)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method parameter, e.g. density=0.5, t=0.3, normalize=false (per-model ones apply to every model)",
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


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so the temporary output folder is removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line itself (exit 2, as argparse's own errors), or None."""
    if args.config is not None:
        given = [f"--{f}" for f in SPEC_FLAGS if getattr(args, f) not in (None, [])]
        if args.method != "linear":
            given.append("--method")
        if given:
            return f"{' '.join(given)} cannot be combined with a config file; put them in {args.config}"
    elif not args.models:
        return "give --models A B ... or a config file"
    return None


def _plan(args: argparse.Namespace):
    if args.config is not None:
        return plan_spec(read_config(args.config))
    params = dict(parse_param(p) for p in args.param)
    return build_plan(
        args.models,
        weights=args.weights,
        method=args.method,
        base=args.base,
        scale=args.scale,
        dtype=args.dtype,
        allow_unnormalized=args.allow_unnormalized,
        params=params,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or argparse's usage error (2), already printed
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    problem = _usage_problem(args)
    if problem:
        parser.print_usage(sys.stderr)
        return fail(prog, problem, EXIT_USAGE)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # under nohup a hang-up stays ignored
            signal.signal(signum, _interrupt)
    nothing = f"nothing was written to {args.output}"
    try:
        plan = _plan(args)
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
        return fail(prog, err, EXIT_BAD_INPUT)
    except OSError as err:  # e.g. disk full while writing: the temporary folder is already gone
        return fail(prog, f"{err}; {nothing}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, f"interrupted (SIGINT); {nothing}", EXIT_INTERRUPTED)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        return fail(prog, f"stopped by {name}; {nothing}", signal_code(stop.signum))
    for note in summary["notes"]:
        print(f"{prog}: note: {note}", file=sys.stderr)
    print(
        f"merged {len(plan.models)} models ({plan.method_name}) into "
        f"{summary['output']}: {summary['tensors']} tensors, {summary['shards']} shard(s), "
        f"{summary['bytes_written'] / 1e9:.3f} GB in {summary['seconds']:.1f} s"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
