"""Split a fixed global batch over a number of GPUs: prints `PER_DEVICE ACCUMULATION`.

Why: the paper's global batch is 48 (2 per device x 3 accumulation x 8 GPUs).
When the GPU count changes, the per-device batch and the accumulation steps are
re-chosen so that their product with the world size stays 48; a world size that
does not divide 48 is refused rather than silently changing the recipe.
"""

from __future__ import annotations

import argparse
import sys


def split_global_batch(global_batch: int, world_size: int, max_per_device: int = 2) -> tuple[int, int]:
    """Largest per-device batch <= max_per_device such that the accumulation is whole."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    for per_device in range(max_per_device, 0, -1):
        if global_batch % (per_device * world_size) == 0:
            return per_device, global_batch // (per_device * world_size)
    raise ValueError(
        f"a global batch of {global_batch} cannot be split evenly over {world_size} devices; "
        f"use a device count that divides {global_batch} (1, 2, 3, 4, 6, 8, 12, 16, 24, 48 for 48)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--global-batch", type=int, default=48)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--max-per-device", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        per_device, accumulation = split_global_batch(args.global_batch, args.world_size, args.max_per_device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(per_device, accumulation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
