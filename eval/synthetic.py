"""A synthetic bench in MIG-Bench's exact layout, for the evaluator's tests and benchmark.

Why: the real MIG-Bench cannot be downloaded here, but the loader, the prompts,
the engines and the scorer must be exercised on files shaped exactly like it:
`MIG-Bench/MIG_data.json` plus `MIG-Bench/images/<task>/...`, paths written as
"./MIG-Bench/images/...", each task's question wording, 2 to 6 images, and a
red box drawn where the answer is in the target image. The demo writes its
own, learnable bench (demo/synth.py) in the same layout.

    python -m eval synth OUT_ROOT [--per-task N | --mig-shaped] [--seed S] [--thousand]
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from core.atomicio import atomic_dir
from eval import tasks

# MIG-Bench's number of images per instance (4,295 instances in all).
MIG_IMAGE_COUNTS = {2: 1040, 3: 529, 4: 1637, 5: 534, 6: 555}
TWO_IMAGE_TASKS = ("diff", "view_diff", "refer_grounding", "reasoning", "correspondence")
MULTI_IMAGE_TASKS = ("common_object", "object_tracking", "multi_view", "region", "group_grounding")
# Two-image instances of the MIG-shaped bench, per task (the rest of the 1,040 spread over the others).
_TWO_IMAGE_SHARE = {
    "diff": 264,
    "view_diff": 94,
    "refer_grounding": 99,
    "reasoning": 101,
    "correspondence": 117,
}
_SIZES = ((64, 48), (56, 56), (96, 64), (48, 80), (120, 90), (140, 100))


def _th(n: int) -> str:
    return f"{n}th"  # MIG-Bench writes "1th", "2th", ...


def _question(task: str, n_images: int, target: int, box1000) -> tuple[str, str, bool]:
    """(question, additional_info, need_format) in the bench's own wording; target is 0-based."""
    if task == "common_object":
        return (
            f"These images share one object in common. Recognize and locate this object in the {_th(target + 1)} image. ",
            "",
            True,
        )
    if task == "diff":
        return (
            "Compare these two images carefully and give me the coordinates of their difference in the second image. ",
            "",
            True,
        )
    if task == "view_diff":
        return (
            (
                "Compare these two images carefully and give me the coordinates of their real difference in the "
                "second image.  Find it and locate it in the second image. "
            ),
            "",
            True,
        )
    if task == "object_tracking":
        return (
            (
                "The object marked with red bounding box in the first image is moving across these frames. "
                f"Track it and locate it in the {_th(target + 1)} image. "
            ),
            "",
            True,
        )
    if task == "multi_view":
        a, b, c, d = box1000
        return (
            (
                "These images share one object in common(the object marked with red bounding box in the first "
                f"image(<|box_start|>({a},{b}),({c},{d})<|box_end|>). Recognize and locate this object in the "
                f"{_th(target + 1)} image. "
            ),
            "",
            True,
        )
    if task == "region":
        k = random.randint(1, n_images - 1)
        return (
            (
                "You are given a source image followed by its several regions. Please locate the "
                f"{_th(k)} region picture in the source image. "
            ),
            "",
            True,
        )
    if task == "refer_grounding":
        return "Find and locate where does the object in image-1 locate in the image-2.", "", True
    if task == "group_grounding":
        a, b, c, d = box1000
        info = f"It is in the {tasks.ORDINALS[target]} image. <|box_start|>({a},{b}),({c},{d})<|box_end|>. "
        return (
            (
                "Give the bounding box of the region this sentence refers to: "
                "<|object_ref_start|>a red square<|object_ref_end|>."
            ),
            info,
            False,
        )
    if task == "reasoning":
        return (
            "Which item in Image-2 share the similar feature of Image-1? Find it and locate it in the second image. ",
            "",
            True,
        )
    if task == "correspondence":
        return (
            (
                "You are now presented with two objects. For the area marked by the red bounding box in the first "
                "image, identify and locate the corresponding area in the second image that serves a similar "
                "function or shares a similar meaning. "
            ),
            "",
            True,
        )
    raise ValueError(task)


def _target(task: str, n_images: int) -> int:
    fixed = {
        "diff": 1,
        "view_diff": 1,
        "refer_grounding": 1,
        "reasoning": 1,
        "correspondence": 1,
        "region": 0,
    }
    if task in fixed:
        return fixed[task]
    if task in ("object_tracking", "multi_view"):
        return random.randint(1, n_images - 1)
    return random.randint(0, n_images - 1)


def _plan_per_task(per_task: int) -> list[tuple[str, int]]:
    plan = []
    for t in tasks.TASK_NAMES:
        for k in range(per_task):
            plan.append((t, 2 if t in TWO_IMAGE_TASKS else 2 + (k + tasks.TASK_NAMES.index(t)) % 5))
    return plan


def _plan_mig_shaped() -> list[tuple[str, int]]:
    plan = [(t, 2) for t, n in _TWO_IMAGE_SHARE.items() for _ in range(n)]
    rest2 = MIG_IMAGE_COUNTS[2] - len(plan)
    plan += [(MULTI_IMAGE_TASKS[i % len(MULTI_IMAGE_TASKS)], 2) for i in range(rest2)]
    i = 0
    for n_images in (3, 4, 5, 6):
        for _ in range(MIG_IMAGE_COUNTS[n_images]):
            plan.append((MULTI_IMAGE_TASKS[i % len(MULTI_IMAGE_TASKS)], n_images))
            i += 1
    order = {t: k for k, t in enumerate(tasks.TASK_NAMES)}
    return sorted(plan, key=lambda p: order[p[0]])  # grouped by task, like MIG_data.json


def _draw(path: Path, size, box=None, seed: int = 0) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(rng.randint(120, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(2):  # distractors
        x, y = rng.randint(0, w - 8), rng.randint(0, h - 8)
        draw.ellipse([x, y, x + 8, y + 8], fill=(rng.randint(0, 90), rng.randint(0, 90), 255))
    if box is not None:
        draw.rectangle([box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1], fill=(220, 20, 20))
    img.save(path)


def make_synthetic_bench(
    out_root,
    per_task: int | None = 2,
    mig_shaped: bool = False,
    seed: int = 0,
    thousand: bool = False,
    force: bool = False,
) -> Path:
    """Write OUT_ROOT/MIG-Bench/{MIG_data.json, images/...}; return the json path."""
    random.seed(seed)
    plan = _plan_mig_shaped() if mig_shaped else _plan_per_task(per_task or 1)
    out_root = Path(out_root)
    with atomic_dir(out_root / "MIG-Bench", force=force) as tmp:
        records = []
        for idx, (task, n_images) in enumerate(plan):
            folder = tmp / "images" / task
            folder.mkdir(parents=True, exist_ok=True)
            target = _target(task, n_images)
            x1, y1 = random.uniform(0.05, 0.55), random.uniform(0.05, 0.55)
            box = [
                round(x1, 3),
                round(y1, 3),
                round(x1 + random.uniform(0.2, 0.4), 3),
                round(y1 + random.uniform(0.2, 0.4), 3),
            ]
            box1000 = [int(v * 1000) for v in box]
            question, info, need_format = _question(task, n_images, target, box1000)
            images = []
            for k in range(n_images):
                name = f"case{idx:05d}_{k + 1}.png"
                _draw(
                    folder / name,
                    random.choice(_SIZES),
                    box if k == target else None,
                    seed=seed * 100003 + idx * 7 + k,
                )
                images.append(f"./MIG-Bench/images/{task}/{name}")
            records.append(
                {
                    "task": task,
                    "images": images,
                    "question": question,
                    "answer": box1000 if thousand else box,
                    "additional_info": info,
                    "need_format": need_format,
                }
            )
        (tmp / "MIG_data.json").write_text(json.dumps(records, indent=4), encoding="utf-8")
    return out_root / "MIG-Bench" / "MIG_data.json"


# The share of each outcome a synthetic run's answers are written to get (eval.outcomes.OUTCOMES).
RUN_MIX = (("hit", 0.45), ("miss", 0.25), ("wrong_image", 0.15), ("unparsed", 0.15))


def _box_text(box, dx: float = 0.0) -> str:
    x1, y1, x2, y2 = (
        min(1000, max(0, round(1000 * (v + (dx if k % 2 == 0 else 0))))) for k, v in enumerate(box)
    )
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def make_synthetic_run(bench_path, out_dir, instances: int | None = None, seed: int = 0) -> Path:
    """An `eval run` folder (run.json, predictions.jsonl) of scripted answers to a synthetic bench:
    per instance a hit, a miss (the box moved aside), a wrong image (`[N-M]` naming another image) or an
    unparsed answer, in RUN_MIX shares. `instances`: a seeded sample of that many. Score it with
    `python -m eval score --predictions OUT/predictions.jsonl --output-dir OUT`; view it with `eval view`."""
    from eval.benchmarks import get_benchmark

    benchmark = get_benchmark()
    bench = benchmark.load(str(bench_path), None, None, None, "auto")
    rng = random.Random(seed)
    insts = bench.instances
    if instances is not None and instances < len(insts):
        insts = sorted(rng.sample(insts, instances), key=lambda i: i.index)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for inst in insts:
        target = benchmark.target_image(inst)
        kind = rng.choices([k for k, _ in RUN_MIX], [w for _, w in RUN_MIX])[0]
        n = len(inst.images)
        other = rng.choice([k for k in range(n) if k != target]) if n > 1 else target
        aside = 0.45 if inst.answer[0] + inst.answer[2] < 1 else -0.45  # to the other half: no overlap
        response = {
            "hit": f"[{(target or 0) + 1}-1]{_box_text(inst.answer, rng.uniform(-0.02, 0.02))}",
            "miss": f"[{(target or 0) + 1}-1]{_box_text(inst.answer, aside)}",
            "wrong_image": f"[{other + 1}-1]{_box_text(inst.answer, aside)}",
            "unparsed": "I cannot tell where it is.",
        }[kind]
        lines.append(
            {
                "index": inst.index,
                "task": inst.task,
                "images": inst.images,
                "prompt": inst.question,
                "response": response,
                "answer": inst.answer,
                "n_images": n,
                "target_image": target,
            }
        )
    protocol = {"model": {"name": f"synthetic-{seed}"}, "backend": "scripted", "mode": "direct"}
    info = {"bench": str(Path(bench_path).resolve()), "image_root": str(bench.image_root), "label": out.name}
    (out / "run.json").write_text(
        json.dumps({"protocol": protocol, "info": info}, indent=2) + "\n", encoding="utf-8"
    )
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return out
