"""`python -m demo.synth`: the demo's synthetic raw data, in the published layouts under one DATA_ROOT.

Why: `make demo` must show, on a 2-core CPU in minutes, that the pipeline (converters -> two-stage
LLaMA-Factory SFT -> weight averaging -> MIG-Bench eval) teaches a tiny random Qwen2-VL multi-image
grounding. No real data can be downloaded, so this writes look-alikes of every raw source:

- `MGrounding-630k/<Task>/synthetic/*.png` and the six stage-1 task files, the free-form file and
  the combined `MGrounding-630k.json`, records exactly as on the dataset card;
- `refcoco/`, `coco/train2014/`, `LLaVA-OneVision-Data/`, `M4-Instruct-Data/` (see `synth_general`);
- a held-out `MIG-Bench/MIG_data.json` + `MIG-Bench/images/<task>/` with seven of the ten real
  task names (diff, common_object, object_tracking, region, refer_grounding, group_grounding,
  reasoning), 2-4 images per instance, scenes never seen in training (own seeds, and any layout that
  also occurs in training is redrawn).

The world (see `synth_draw`): 84 px images (one merged visual token per grid cell), shapes in a 3x3
grid of tinted cells, every grounding target red and nothing else in its image red, answer box = the
target's cell. Each task keeps its real logic and question (the difference, the common object, the
tracked object, the cropped region, the referred object, the named object, the shared feature).

Measured (stage 1 only: the 3,000-record demo mixture from `python -m converters all`, 3 epochs,
batch 8, LLaMA-Factory on this 2-core CPU; 140-instance bench scored with the eval script's prompt):
lr 3e-4 -> 80.0% Acc@0.5 (diff, region, refer_grounding, group_grounding, reasoning 100%;
common_object, object_tracking 30%); the same run at lr 1e-3 -> 13.6%; untrained -> 0%.

Chance level. Each object is drawn inside one cell of a 3x3 grid and its answer box is that cell, so
there are 9 possible answers per image, boxes of different cells do not overlap (IoU 0) and the right
cell scores IoU 1: Acc@0.5 is cell accuracy. Bench targets are spread evenly over the 9 cells, so a
model that emits a well-formed box but ignores the pixels (always the same cell, or any fixed rule)
scores 1/9 = 11%; an untrained model scores 0% (it emits no box at all). Anything above 11% is
grounding learned from the images.

Training questions mirror what the evaluator sends: for the bench tasks, 80% of the records ask the
bench's own question followed by a format suffix and answer with the bare box
(`<|box_start|>(x1,y1),(x2,y2)<|box_end|>`), named after its image where the question leaves the image
open (group grounding: "It's in the second image. <|box_start|>..."; without it `converters
trajectories` cannot place the box, and GRPO never saw the bench's group-grounding question); the rest
use dataset-card-style questions and answers ("It's in the third image. <|box_start|>...<|box_end|>"). The suffix is the paper script's
(`--format-suffix script`) or, by default, the same words without its two box tokens (`plain`), which
today's converters accept. Same seed -> byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from random import Random

from tqdm import tqdm

from core.atomicio import OutputExistsError, atomic_dir
from core.cli import EXIT_BAD_INPUT, EXIT_OK, fail
from demo.synth_draw import N_CELLS, png_bytes, to_unit
from demo.synth_general import write_llava_onevision, write_m4_instruct, write_refcoco
from demo.synth_tasks import BENCH_TASKS, Sample
from demo.synth_tasks import free_form as free_form_sample

# Part of the parameters an existing DATA_ROOT is checked against: bump it whenever the generated
# world changes, so `make demo` regenerates instead of keeping stale data as "up to date".
# 3: group grounding's bench-style answers name the image (2 answered with the bare box).
FORMAT_VERSION = 3
MANIFEST = "synth_manifest.json"
# Format suffixes appended to the bench-style training questions. "script" is what the paper's
# MIG_bench_eval.py (and our evaluator by default) appends, typos included; "released" closes the box
# token; "plain" is "script" without the two box tokens, for converters that reject a box token whose
# body is not numeric (it is an instruction there, not a coordinate).
FORMAT_SUFFIXES = {
    "script": "Format:<|box_start|>(x1,y1),(x2,y2)<|box_start|>. Don't generate addtional words.",
    "released": "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words.",
    "plain": "Format:(x1,y1),(x2,y2). Don't generate addtional words.",
}
# Default "plain": the converters (converters/records.py) reject any human turn whose box tokens do
# not hold numbers, which the script's instruction is; switch to "script" once they accept it.
DEFAULT_SUFFIX = "plain"
BENCH_STYLE_SHARE = 0.8

# MGrounding-630k: bench task -> (task folder, per-task file, record type)
MGROUNDING = {
    "common_object": ("Common_Object", "common_train_70k.json", "common_train"),
    "diff": ("Difference", "diff_train_70k.json", "diff_train"),
    "group_grounding": ("Group_Grounding", "gg_train_120k.json", "gg_train"),
    "object_tracking": ("Object_Tracking", "ot_train_130k.json", "ot_train"),
    "refer_grounding": ("Referring_Grounding", "refer_train_70k.json", "refer_train"),
    "region": ("Region_Locating", "region_train_70k.json", "region_train"),
}
FREE_FORM = ("Free-Form", "free_form_grounding_130k.json", "free_form")
# MIG-Bench image folders: the card shows `images/common` for common_object.
BENCH_DIRS = {"common_object": "common"}

DEFAULTS = {"stage1": 2400, "free_form": 800, "general": 600, "bench": 280, "image_size": 84}


def _rng(seed: int, *parts) -> Random:
    # str seeds are hashed with SHA-512 by `random`: stable across runs and PYTHONHASHSEED.
    return Random("|".join(str(p) for p in (seed, *parts)))


def _conversation(turns: list[tuple[str, str]], n_images: int) -> list[dict]:
    conv = []
    for k, (human, gpt) in enumerate(turns):
        conv.append({"from": "human", "value": ("<image>\n" * n_images if k == 0 else "") + human})
        conv.append({"from": "gpt", "value": gpt})
    return conv


def _training_turns(sample: Sample, rng: Random, suffix: str) -> list[tuple[str, str]]:
    if sample.question is not None and rng.random() < BENCH_STYLE_SHARE:
        return [(sample.question + suffix, sample.bench_answer())]
    return sample.card


def _write_images(root: Path, rel_dir: str, stem: str, sample: Sample) -> list[str]:
    paths = []
    for k, image in enumerate(sample.images):
        rel = f"{rel_dir}/{stem}_{k + 1}.png"
        (root / rel).write_bytes(png_bytes(image))
        paths.append(f"./{rel}")
    return paths


def _mgrounding_task(
    root: Path, seed: int, task: str, n: int, size: int, progress: bool, seen: set, suffix: str
) -> list:
    """Write one MGrounding-630k task (images + per-task JSON); return its records."""
    folder, file_name, rtype = FREE_FORM if task == "free_form" else MGROUNDING[task]
    gen = free_form_sample if task == "free_form" else BENCH_TASKS[task]
    rel_dir = f"MGrounding-630k/{folder}/synthetic"
    (root / rel_dir).mkdir(parents=True, exist_ok=True)
    prefix = rtype.split("_train")[0]
    records = []
    for i in tqdm(range(n), desc=f"MGrounding {task}", disable=not progress):
        rng = _rng(seed, "train", task, i)
        sample = gen(rng, size, None)
        seen.add((sample.task, sample.signature))
        stem = f"{prefix}_{i:06d}"
        images = _write_images(root, rel_dir, stem, sample)
        conv = _conversation(_training_turns(sample, rng, suffix), len(images))
        records.append({"id": stem, "images": images, "conversations": conv, "type": rtype})
    _dump(root / "MGrounding-630k" / folder / file_name, records)
    return records


def _bench(root: Path, seed: int, total: int, size: int, progress: bool, seen: set) -> list[dict]:
    """MIG-Bench look-alike: `total` instances split evenly over the tasks, targets even over cells."""
    tasks = list(BENCH_TASKS)
    per_task = [total // len(tasks) + (1 if k < total % len(tasks) else 0) for k in range(len(tasks))]
    instances = []
    bar = tqdm(total=total, desc="MIG-Bench", disable=not progress)
    for task, n in zip(tasks, per_task, strict=True):
        cells = list(range(N_CELLS))
        _rng(seed, "bench-cells", task).shuffle(cells)
        rel_dir = f"MIG-Bench/images/{BENCH_DIRS.get(task, task)}"
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            for attempt in range(100):
                sample = BENCH_TASKS[task](_rng(seed, "bench", task, i, attempt), size, cells[i % N_CELLS])
                if (sample.task, sample.signature) not in seen:
                    break
            else:
                raise RuntimeError(f"bench {task} #{i}: no layout unseen in training after 100 draws")
            seen.add((sample.task, sample.signature))
            target = sample.images[sample.target]
            instances.append(
                {
                    "task": task,
                    "images": _write_images(root, rel_dir, f"case{i:03d}", sample),
                    "question": sample.question,
                    "answer": to_unit(sample.box, *target.size),
                    "additional_info": sample.info,
                    "need_format": True,
                }
            )
            bar.update()
    bar.close()
    _dump(root / "MIG-Bench" / "MIG_data.json", instances)
    return instances


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _params(seed, stage1, free_form, general, bench, image_size, format_suffix) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "stage1": stage1,
        "free_form": free_form,
        "general": general,
        "bench": bench,
        "image_size": image_size,
        "format_suffix": format_suffix,
    }


def _check(
    stage1: int, free_form: int, general: int, bench: int, image_size: int, format_suffix: str
) -> None:
    if format_suffix not in FORMAT_SUFFIXES:
        raise ValueError(f"--format-suffix must be one of {sorted(FORMAT_SUFFIXES)}, got {format_suffix!r}")
    for name, value in (("stage1", stage1), ("free_form", free_form), ("general", general), ("bench", bench)):
        if value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if not 56 <= image_size <= 1024:
        raise ValueError(f"--image-size must be in 56..1024 (3x3 grid cells of >= 18 px), got {image_size}")


def generate(
    out: str | Path,
    seed: int = 0,
    stage1: int = DEFAULTS["stage1"],
    free_form: int = DEFAULTS["free_form"],
    general: int = DEFAULTS["general"],
    bench: int = DEFAULTS["bench"],
    image_size: int = DEFAULTS["image_size"],
    format_suffix: str = DEFAULT_SUFFIX,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the whole synthetic DATA_ROOT at `out` atomically; return the manifest.

    `stage1` records are split evenly over the six MGrounding stage-1 tasks, `free_form` go to the
    free-form file, `general` records to each general source, `bench` instances to MIG-Bench.
    An existing `out` made with the same parameters is left alone (up to date); any other non-empty
    `out` is refused unless `force`.
    """
    _check(stage1, free_form, general, bench, image_size, format_suffix)
    out = Path(out)
    params = _params(seed, stage1, free_form, general, bench, image_size, format_suffix)
    suffix = FORMAT_SUFFIXES[format_suffix]
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and not force:
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("params") == params:
            old["up_to_date"] = True
            return old
        raise OutputExistsError(
            f"{out} holds synthetic data made with {old.get('params')}; pass --force to replace it"
        )
    started = time.perf_counter()
    counts: dict[str, int] = {}
    with atomic_dir(out, force=force) as root:
        seen: set = set()
        tasks = list(MGROUNDING)
        per_task = [stage1 // len(tasks) + (1 if k < stage1 % len(tasks) else 0) for k in range(len(tasks))]
        combined = []
        for task, n in zip(tasks, per_task, strict=True):
            records = _mgrounding_task(root, seed, task, n, image_size, progress, seen, suffix)
            counts["MGrounding-630k/" + "/".join(MGROUNDING[task][:2])] = len(records)
            combined += records
        records = _mgrounding_task(root, seed, "free_form", free_form, image_size, progress, seen, suffix)
        counts["MGrounding-630k/" + "/".join(FREE_FORM[:2])] = len(records)
        combined += records
        _dump(root / "MGrounding-630k" / "MGrounding-630k.json", combined)
        counts["MGrounding-630k/MGrounding-630k.json"] = len(combined)
        counts.update(write_refcoco(root, seed, general, image_size, progress))
        counts.update(write_llava_onevision(root, seed, general, image_size, progress))
        counts.update(write_m4_instruct(root, seed, general, image_size, progress))
        counts["MIG-Bench/MIG_data.json"] = len(_bench(root, seed, bench, image_size, progress, seen))
        manifest = {
            "generator": "demo.synth",
            "params": params,
            "counts": counts,
            "bench_tasks": list(BENCH_TASKS),
            "chance_acc_at_0.5": round(1 / N_CELLS, 4),
            "format_suffix": suffix,
        }
        _dump(root / MANIFEST, manifest)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.synth",
        description="Write the demo's synthetic MGrounding-630k / general data / MIG-Bench under DATA_ROOT.",
    )
    parser.add_argument("--out", required=True, help="DATA_ROOT to create (atomically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1", type=int, default=DEFAULTS["stage1"], help="stage-1 records, all 6 tasks")
    parser.add_argument("--free-form", type=int, default=DEFAULTS["free_form"], help="free-form records")
    parser.add_argument("--general", type=int, default=DEFAULTS["general"], help="records per general source")
    parser.add_argument("--bench", type=int, default=DEFAULTS["bench"], help="MIG-Bench instances, all tasks")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"], help="image side in pixels")
    parser.add_argument(
        "--format-suffix",
        choices=sorted(FORMAT_SUFFIXES),
        default=DEFAULT_SUFFIX,
        help="format instruction after bench-style training questions (default: plain)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing DATA_ROOT")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        manifest = generate(
            args.out,
            seed=args.seed,
            stage1=args.stage1,
            free_form=args.free_form,
            general=args.general,
            bench=args.bench,
            image_size=args.image_size,
            format_suffix=args.format_suffix,
            force=args.force,
            progress=not args.quiet,
        )
    except (OutputExistsError, ValueError) as err:  # an output in the way, or a count/size it cannot use
        return fail(parser.prog, err, EXIT_BAD_INPUT)
    if manifest.get("up_to_date"):
        print(f"{parser.prog}: {args.out} is up to date (same parameters); nothing to do")
        return EXIT_OK
    for name, count in manifest["counts"].items():
        print(f"  {count:6d}  {name}")
    print(
        f"{parser.prog}: wrote {args.out} in {manifest['seconds']} s (chance Acc@0.5 ~ {manifest['chance_acc_at_0.5']:.0%})"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
