"""Benchmark `python -m eval view` on a full MIG-Bench-sized run (4,276 instances).

A MIG-Bench-shaped synthetic bench (`eval synth --mig-shaped`: 4,295 instances, 2-6 images each, as
MIG-Bench's counts) with its images re-drawn at --image-side pixels (default 640: MIG-Bench's photos
are of that order; the synthetic ones are tiny), a seeded sample of 4,276 instances (MIG-Bench's
count) answered by the scripted run of eval.synthetic.make_synthetic_run (hits, misses, wrong images,
unparsed answers), scored by `eval score`. Then, each as a whole CLI process:

  baseline  python -m eval score   (the report step every run already pays)
  cold      python -m eval view    (all thumbnails written, all pages)
  warm      python -m eval view    again (thumbnails reused: what a rerun with a filter costs)

It prints the wall times, the viewer's size (pages, thumbnails, the largest page) beside the images'
own size, and the ratios view/score and viewer/images.

    .venv/bin/python benchmarks/bench_view.py [--instances 4276] [--image-side 640] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.synthetic import make_synthetic_bench, make_synthetic_run  # noqa: E402


def redraw(images: Path, side: int) -> tuple[int, int]:
    """Scale every bench image up to `side` pixels on its longest side (PNG); returns (count, bytes)."""
    from PIL import Image, ImageDraw

    count = size = 0
    for path in sorted(images.rglob("*.png")):
        with Image.open(path) as im:
            scale = side / max(im.size)
            big = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.NEAREST)
        draw = ImageDraw.Draw(big)  # some texture, so the files are not trivially compressible
        rng = random.Random(count)
        for _ in range(40):
            x, y = rng.randrange(big.width), rng.randrange(big.height)
            draw.line(
                [x, y, x + rng.randint(-60, 60), y + rng.randint(-60, 60)], fill=(rng.randrange(256),) * 3
            )
        big.save(path, format="PNG", compress_level=1)
        count += 1
        size += path.stat().st_size
    return count, size


def timed(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "eval", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"eval {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=4276)
    ap.add_argument("--image-side", type=int, default=640, help="0: keep the synthetic bench's tiny images")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_view."))
    try:
        start = time.perf_counter()
        bench = make_synthetic_bench(work / "data", mig_shaped=True, seed=0, force=True)
        count, image_bytes = redraw(bench.parent / "images", args.image_side) if args.image_side else (0, 0)
        run = make_synthetic_run(bench, work / "run", instances=args.instances, seed=0)
        print(
            f"setup: {args.instances:,} of 4,295 MIG-shaped instances; {count:,} images redrawn at "
            f"{args.image_side} px ({image_bytes / 1e6:,.0f} MB) in {time.perf_counter() - start:.1f} s"
        )
        score_t, _ = timed(
            ["score", "--predictions", str(run / "predictions.jsonl"), "--output-dir", str(run)]
        )
        cold_t, cold_out = timed(["view", str(run)])
        view = run / "view"
        size, pages = folder_bytes(view), sorted(view.glob("*.html"))
        thumbs = folder_bytes(view / "thumbs")
        warm_t, _ = timed(["view", str(run)])
        used = {p for p in (run / "predictions.jsonl").read_text().split('"') if p.startswith("./MIG-Bench/")}
        shown_bytes = sum((bench.parent.parent / p).stat().st_size for p in used)
        load = os.getloadavg()[0]
        print(cold_out.strip())
        print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end")
        print(f"baseline eval score           : {score_t:7.1f} s")
        print(f"eval view, cold (thumbnails)  : {cold_t:7.1f} s   ratio {cold_t / score_t:.1f}x score")
        print(f"eval view, warm (reused)      : {warm_t:7.1f} s   ratio {warm_t / score_t:.1f}x score")
        print(
            f"viewer size: {size / 1e6:.1f} MB ({len(pages)} pages, {(size - thumbs) / 1e6:.1f} MB of HTML, "
            f"largest page {max(p.stat().st_size for p in pages) / 1e6:.2f} MB; thumbnails {thumbs / 1e6:.1f} MB)"
        )
        if shown_bytes:
            print(
                f"images shown: {len(used):,} files, {shown_bytes / 1e6:.0f} MB; ratio viewer/images {size / shown_bytes:.2f}x"
            )
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
