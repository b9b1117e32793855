"""Benchmark the MGrounding converter against the naive loop, and --check-images throughput.

Part 1 (conversion): a generated MGrounding-shaped file (N records, 2-6 images,
1-2 QA turns with boxes) is converted twice, each in its own process, measured
in the same run: the naive loop (json.load, make image paths absolute,
json.dump) and `python -m converters mgrounding` (every record validated,
streamed). Wall time and peak RSS (wait4 ru_maxrss) of each, then the ratios
(validated / naive; goal: both <= 1). Both outputs are compared record by record.

Part 2 (images): K generated 640x480 JPEGs are checked by
`python -m converters mgrounding --check-images --workers 2` (both cores busy)
and, as the baseline, by a one-process loop opening each with PIL and
converting it to RGB (what LLaMA-Factory does when it loads an image).

    .venv/bin/python benchmarks/bench_converters.py                 # 630,000 records, 2,000 images
    .venv/bin/python benchmarks/bench_converters.py --records 20000 --images 200   # quick
"""

from __future__ import annotations

import argparse
import json
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

from core.streaming import iter_json_records  # noqa: E402

QUESTIONS = (
    "Give the bounding box of the region this sentence refers to: <|object_ref_start|>{}<|object_ref_end|>.",
    "Find the object shared by all images and locate it in the image where it is largest.",
    "Which image shows {}? Locate it.",
    "The first image marks the target at <|box_start|>(100,200),(300,400)<|box_end|>. Track it in the last image.",
)
PHRASES = (
    "a statue of a man",
    "the red car on the left",
    "a woman wearing an orange shirt",
    "the striped cat",
)
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
TASKS = ("common_train", "diff_train", "gg_train", "ot_train", "refer_train", "region_train")


def box(rng: random.Random) -> str:
    x1, y1 = rng.randrange(0, 900), rng.randrange(0, 900)
    return (
        f"<|box_start|>({x1},{y1}),({rng.randrange(x1 + 1, 1001)},{rng.randrange(y1 + 1, 1001)})<|box_end|>"
    )


def generate_records(path: Path, n: int, seed: int = 0, image_pool: int = 200_000) -> None:
    """Write n MGrounding-shaped records (pretty-printed like the published files)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n")
        for i in range(n):
            k = rng.randint(2, 6)
            images = [
                f"./MGrounding-630k/Group_Grounding/SA-1B/sa_{rng.randrange(image_pool)}.jpg"
                for _ in range(k)
            ]
            turns = []
            for t in range(rng.randint(1, 2)):
                question = rng.choice(QUESTIONS).format(rng.choice(PHRASES))
                if t == 0:
                    question = "<image>\n" * k + question
                answer = f"It's in the {ORDINALS[rng.randrange(k)]} image. {box(rng)}"
                turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
            record = {"id": f"{i}_{rng.randrange(10**7)}", "images": images, "conversations": turns}
            record["type"] = TASKS[i % len(TASKS)]
            text = json.dumps(record, indent=4, ensure_ascii=False)
            out.write(("    " + text.replace("\n", "\n    ")) + (",\n" if i < n - 1 else "\n"))
        out.write("]\n")


def naive(inp: str, out: str, root: str) -> None:
    """The loop the benchmark compares against: load all, rewrite paths, dump all."""
    with open(inp, encoding="utf-8") as handle:
        data = json.load(handle)
    for record in data:
        record["images"] = [os.path.normpath(os.path.join(root, p)) for p in record["images"]]
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)


def decode_all(paths_file: str) -> None:
    """Baseline image check: open and convert every image in one process."""
    from PIL import Image

    for path in Path(paths_file).read_text(encoding="utf-8").splitlines():
        with Image.open(path) as im:
            im.convert("RGB")


def measure(cmd: list[str]) -> tuple[float, float]:
    """Run cmd; return (wall seconds, peak RSS in GB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024**2


def compare_outputs(naive_out: Path, ours: Path) -> int:
    n = 0
    for a, b in zip(iter_json_records(naive_out), iter_json_records(ours), strict=True):
        if a != b:
            raise SystemExit(f"outputs differ at record {n}: {a.get('id')} vs {b.get('id')}")
        n += 1
    return n


def bench_conversion(work: Path, records: int, seed: int) -> None:
    src = work / "MGrounding-630k" / "bench.json"
    src.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    generate_records(src, records, seed)
    size_mb = src.stat().st_size / 1e6
    print(f"generated {records:,} records ({size_mb:,.0f} MB) in {time.perf_counter() - t:.1f} s")
    py = sys.executable
    naive_out, ours_out = work / "naive.json", work / "ours.json"
    naive_t, naive_rss = measure([py, __file__, "_naive", str(src), str(naive_out), str(work)])
    ours_t, ours_rss = measure(
        [py, "-m", "converters", "mgrounding", "--input", str(src), "--image-root", str(work)]
        + ["--output", str(ours_out), "--rejects", str(work / "rejects.jsonl"), "--force"]
    )
    n = compare_outputs(naive_out, ours_out)
    print(f"naive json.load/rewrite/json.dump : {naive_t:7.1f} s  peak RSS {naive_rss:6.2f} GB")
    print(
        f"validated streaming conversion    : {ours_t:7.1f} s  peak RSS {ours_rss:6.2f} GB  ({n:,} records equal)"
    )
    print(f"ratio validated/naive: time {ours_t / naive_t:.2f}x, peak RSS {ours_rss / naive_rss:.2f}x")


def bench_images(work: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder = work / "MGrounding-630k" / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = Image.effect_noise((640, 480), 48).convert("RGB")
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        base.rotate(rng.randrange(360)).save(path, quality=90)
        paths.append(path)
    records = []
    for i in range(0, count, 4):
        group = paths[i : i + 4]
        records.append(
            {
                "id": str(i),
                "type": "bench",
                "images": [f"./MGrounding-630k/imgs/{p.name}" for p in group],
                "conversations": [
                    {"from": "human", "value": "<image>\n" * len(group) + "Locate it."},
                    {"from": "gpt", "value": "<|box_start|>(1,2),(3,4)<|box_end|>"},
                ],
            }
        )
    src = work / "images.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    listing = work / "images.txt"
    listing.write_text("\n".join(map(str, paths)), encoding="utf-8")
    for p in paths:  # warm the page cache equally for both
        p.read_bytes()
    base_t, _ = measure([sys.executable, __file__, "_decode", str(listing)])
    report = work / "images_report.json"
    ours_t, _ = measure(
        [sys.executable, "-m", "converters", "mgrounding", "--input", str(src), "--image-root", str(work)]
        + ["--output", str(work / "images_out.json"), "--check-images", "--workers", "2"]
        + ["--report", str(report), "--force"]
    )
    check = json.loads(report.read_text(encoding="utf-8"))["image_check"]
    assert check["decoded"] == count, check
    print(f"{count} JPEGs 640x480, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"baseline PIL open+convert, 1 process : {count / base_t:8.1f} images/s ({base_t:.1f} s incl. start-up)"
    )
    print(
        f"--check-images --workers 2            : {count / check['seconds']:8.1f} images/s "
        f"({check['seconds']:.1f} s checking, {ours_t:.1f} s whole command)"
    )
    print(f"ratio check-images/baseline: {(count / check['seconds']) / (count / base_t):.2f}x images/s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_naive":
        return naive(*sys.argv[2:5])
    if len(sys.argv) > 1 and sys.argv[1] == "_decode":
        return decode_all(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=630_000)
    parser.add_argument("--images", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder under .cache/bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    (REPO / ".cache" / "bench").mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_converters.", dir=REPO / ".cache" / "bench"))
    try:
        if args.records:
            bench_conversion(work, args.records, args.seed)
        if args.images:
            bench_images(work, args.images, args.seed)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return None


if __name__ == "__main__":
    main()
