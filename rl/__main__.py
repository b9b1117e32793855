"""`python -m rl rewards ...` / `python -m rl train ...` (console script `migician-rl`): the RL stage's CLI.

Why subcommands in a table: each subcommand is one `_add_<name>(sub)` function that registers its
arguments and its handler, so a new one (e.g. `train`) is one function plus one line in build_parser().
Exit codes are cli.py's: 0 ok, 1 bad input (a missing, empty or directory input, no line that could be
scored, bad --weights, an output in the way or the input itself as output; nothing written), 2 usage (argparse's own: unknown options or
choices), 3 partial (some lines were malformed and were written with an `error` field).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from core.atomicio import atomic_file, refuse_existing
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
from core.streaming import MAX_LINE_BYTES, InvalidJSONError, decode_json_line, iter_raw_lines
from families import DEFAULT_FAMILY, FAMILY_CHOICES

SCRIPT = "migician-rl"
SCORE_KEYS = ("format", "image", "iou", "total")
REQUIRED = ("id", "completion", "image_index", "box", "num_images")
REQUIRED_TARGETS = ("id", "completion", "targets", "num_images")  # --profile mgthinker's multi-target lines
MAX_REPORTED = 20  # malformed lines named on stderr; all of them carry their error in the output


def _score_line(
    lineno: int, raw: bytes | None, profile: str, weights, family: str = DEFAULT_FAMILY
) -> tuple[dict, str | None]:
    """One input line -> (output record, error or None). A malformed line keeps what it held."""
    from rl import mgthinker, rewards

    if raw is None:
        msg = f"line {lineno}: longer than {MAX_LINE_BYTES} bytes"
        return {"raw": None, "error": msg}, msg
    text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    try:
        rec = decode_json_line(raw)
    except InvalidJSONError as exc:
        msg = f"line {lineno}: {exc}"
        return {"raw": text, "error": msg}, msg
    if not isinstance(rec, dict):
        msg = f"line {lineno}: not a JSON object"
        return {"raw": text, "error": msg}, msg
    several = profile == mgthinker.PROFILE and "targets" in rec  # MG-Thinker: a targets list, or one target
    missing = [k for k in (REQUIRED_TARGETS if several else REQUIRED) if k not in rec]
    if missing:
        msg = f"line {lineno} (id {rec.get('id')!r}): missing {', '.join(missing)}"
        return {**rec, "error": msg}, msg
    try:
        if profile == mgthinker.PROFILE:
            scores = mgthinker.score(
                rec["completion"],
                num_images=rec["num_images"],
                targets=rec.get("targets"),
                image_index=rec.get("image_index"),
                box=rec.get("box"),
                weights=weights,
                family=family,
                resized_sizes=rec.get("resized_sizes"),
            )
        else:
            scores = rewards.score(
                rec["completion"],
                image_index=rec["image_index"],
                box=rec["box"],
                num_images=rec["num_images"],
                profile=profile,
                weights=weights,
                family=family,
                resized_sizes=rec.get("resized_sizes"),
            )
    except ValueError as exc:
        msg = f"line {lineno} (id {rec['id']!r}): {exc}"
        return {**rec, "error": msg}, msg
    out = {k: v for k, v in rec.items() if k not in SCORE_KEYS and k != "error"}
    return {**out, **scores}, None


def _json_line(rec: dict) -> str:
    """One output line; a line holding a lone surrogate (a "\\ud800" escape in the input) stays escaped,
    since UTF-8 cannot encode it and one such completion must not stop the whole file."""
    line = json.dumps(rec, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(rec)
    return line + "\n"


def score_jsonl(
    src: Path, dst: Path, profile: str, weights, force: bool, family: str = DEFAULT_FAMILY
) -> tuple[int, list[str]]:
    """Score every line of src into dst (atomically, same order); returns (lines scored, problems).

    Nothing is written when no line could be scored (ValueError naming the first problems)."""
    if src.is_dir():
        raise ValueError(f"input {src} is a directory, not a JSONL file")
    if not src.is_file():
        raise FileNotFoundError(f"input {src} does not exist")
    if dst.exists() and os.path.samefile(src, dst):
        raise ValueError(f"--output {dst} is the input file; write the scores to another file")
    refuse_existing(dst, force)
    scored, problems, seen = 0, [], 0
    with atomic_file(dst) as fout:
        for lineno, raw in iter_raw_lines(src):
            seen += 1
            rec, problem = _score_line(lineno, raw, profile, weights, family)
            if problem:
                problems.append(problem)
            else:
                scored += 1
            fout.write(_json_line(rec))
        if not seen:
            raise ValueError(f"input {src} holds no lines to score")  # atomic_file then writes nothing
        if not scored:  # atomic_file then writes nothing either
            shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
            raise ValueError(f"input {src}: none of its {seen} line(s) could be scored ({shown})")
    return scored, problems


# ---------------------------------------------------------------- subcommands


def _rewards(args, prog: str) -> int:
    from rl import rewards

    try:
        weights = rewards.resolve_weights(args.profile, args.weights)
    except ValueError as exc:
        raise ValueError(f"--weights: {exc}") from exc
    scored, problems = score_jsonl(args.input, args.output, args.profile, weights, args.force, args.family)
    for p in problems[:MAX_REPORTED]:
        print(f"{prog}: malformed: {p}", file=sys.stderr)
    if len(problems) > MAX_REPORTED:
        print(
            f"{prog}: ... {len(problems) - MAX_REPORTED} more (each has an `error` field in the output)",
            file=sys.stderr,
        )
    print(
        f"scored {scored} of {scored + len(problems)} line(s) with profile {args.profile} "
        f"(weights {','.join(f'{w:g}' for w in weights)}) -> {args.output}"
    )
    if problems:
        print(
            f"{prog}: {len(problems)} malformed line(s) were written with an `error` field", file=sys.stderr
        )
        return EXIT_PARTIAL if scored else EXIT_BAD_INPUT
    return EXIT_OK


def _add_rewards(sub) -> None:
    from rl.rewards import PROFILES

    p = sub.add_parser("rewards", help="score saved completions (JSONL) with the RL rewards")
    p.add_argument(
        "--input",
        required=True,
        type=Path,
        help='lines {"id", "completion", "image_index", "box", "num_images"} (mgthinker: or "targets": [...])',
    )
    p.add_argument("--output", required=True, type=Path, help="the same lines plus format, image, iou, total")
    p.add_argument("--profile", choices=sorted(PROFILES), default="mirg")
    p.add_argument(
        "--family",
        choices=FAMILY_CHOICES,
        default=DEFAULT_FAMILY,
        help="whose answer form to read (Qwen2.5-VL lines need resized_sizes)",
    )
    p.add_argument("--weights", help="comma-separated, in component order (default: the profile's)")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.set_defaults(handler=_rewards)


def _train(args, prog: str) -> int:
    from rl.config import ConfigError
    from rl.data import RLDataError
    from rl.train import train

    setup_logging(prog, logging.INFO)
    try:
        metrics = train(args.recipe, args.overrides)
    except (ConfigError, RLDataError) as exc:
        return fail(prog, exc, EXIT_BAD_INPUT)
    print(json.dumps(metrics, indent=2))
    return EXIT_OK


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="GRPO with TRL's GRPOTrainer: a recipe plus key=value overrides")
    p.add_argument("recipe", type=Path, help="e.g. recipes/grpo.yaml")
    p.add_argument("overrides", nargs="*", help="key=value (TRL GRPOConfig fields or this pack's keys)")
    p.set_defaults(handler=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog_name("rl", SCRIPT), description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_rewards(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or argparse's usage error (2), already printed
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    try:
        return args.handler(args, prog)
    except (ValueError, OSError) as exc:  # incl. FileNotFoundError and atomicio's OutputExistsError
        return fail(prog, exc, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, "interrupted (SIGINT)", EXIT_INTERRUPTED)  # rewards: no partial --output


if __name__ == "__main__":
    sys.exit(main())
