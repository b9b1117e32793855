"""Benchmark `python -m rl train` against a plain TRL GRPOTrainer script with the same settings, in one run.

Why: the pack's GRPO adds a family layer (pre-shrunk images, freeze keys), rewards scored once per batch
and shared by the components, a final-weights callback and its own config reader on top of TRL's
GRPOTrainer. Any of them could cost time per step; this prints the ratio so it shows.

Both runs train the same tiny random Qwen2-VL (demo.tiny_model) on the same RL records (112x112 images,
so no resize happens in either), on this CPU, for --steps GRPO steps each, with the same GRPOConfig
values (batch 4, 4 generations, exactly 48 completion tokens, temperature 1.0, beta 0.04, seed 42), the vision
tower frozen in both. The plain script is what a TRL user writes: PIL images in a datasets.Dataset and
three regex reward functions (format, image, IoU), each parsing the completion itself. The pack's run is
the real CLI with recipes/grpo.yaml and the `mirg` profile. Time per step is TRL's own `train_runtime`
divided by the steps (model loading, process start and the final save are outside it). The runs
alternate pack, plain, pack, plain ... (--repeats pairs); the ratio of each pair and their median are
printed. Nothing else may run on the machine meanwhile (two torch jobs on 2 cores: 7-13 s per step).

    .venv-eval/bin/python benchmarks/bench_grpo.py [--steps 40] [--repeats 3] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the bounding box in "
    "<answer> </answer> tags."
)
SETTINGS = {  # GRPOConfig values both runs use (the pack's as recipe overrides)
    "use_cpu": True,
    "bf16": False,
    "gradient_checkpointing": False,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "num_generations": 4,
    "max_completion_length": 48,
    "temperature": 1.0,
    "beta": 0.04,
    "learning_rate": 1e-5,
    "logging_steps": 1,
    "seed": 42,
    "report_to": "none",
    "generation_kwargs": {"min_new_tokens": 48},  # every completion 48 tokens: equal work in both runs
}
IMAGE_SIDE = 112  # 112 x 112 = 12544 = image_max_pixels: no resize in either run


def write_records(root: Path, n: int, seed: int = 0) -> Path:
    """An RL set in the converters' layout (ShareGPT turn plus image_index/box/num_images)."""
    from PIL import Image

    rng = random.Random(seed)
    records = []
    for i in range(n):
        count = rng.randint(2, 3)
        paths = []
        for j in range(count):
            path = root / "images" / f"{i}_{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (rng.randrange(256), 60, 60)).save(path)
            paths.append(str(path))
        target = rng.randint(1, count)
        box = [rng.randint(0, 400), rng.randint(0, 400), rng.randint(600, 999), rng.randint(600, 999)]
        question = "<image>\n" * count + f"Find the square in image {target}." + SUFFIX
        answer = f"<think>image {target}</think><answer>[{target}-1]({box[0]},{box[1]}),({box[2]},{box[3]})</answer>"
        records.append(
            {
                "id": f"bench-{i}",
                "images": paths,
                "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
                "image_index": target,
                "box": box,
                "num_images": count,
            }
        )
    path = root / "rl.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the plain TRL script (runs in a child)


def plain_run(model: str, data: str, out: str, steps: int) -> None:
    """What a TRL user writes for the same training (no pack code)."""
    import re

    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    rows = []
    for r in json.loads(Path(data).read_text(encoding="utf-8")):
        text = r["conversations"][0]["value"].replace("<image>\n", "").strip()
        rows.append(
            {
                "prompt": [
                    {
                        "role": "user",
                        # the record's layout (`<image>\n` each), as SFT saw it and the pack sends it
                        "content": [{"type": "image"}, {"type": "text", "text": "\n"}] * len(r["images"])
                        + [{"type": "text", "text": text}],
                    }
                ],
                "images": [Image.open(p).convert("RGB") for p in r["images"]],
                "image_index": r["image_index"],
                "box": r["box"],
            }
        )
    answer_re = re.compile(r"<answer>(.*?)</answer>", re.S)
    box_re = re.compile(r"\[(\d+)-\d+\]\s*\((\d+),(\d+)\),\((\d+),(\d+)\)")

    def text_of(completion):
        return completion[0]["content"] if isinstance(completion, list) else completion

    def parsed(completion):
        m = answer_re.search(text_of(completion))
        b = box_re.search(m.group(1)) if m else None
        return (int(b.group(1)), [int(x) for x in b.groups()[1:]]) if b else None

    def iou(a, b):
        w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    def format_reward(completions, **_):
        pattern = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.S)
        return [1.0 if pattern.match(text_of(c).strip()) else 0.0 for c in completions]

    def image_reward(completions, image_index, **_):
        return [
            1.0 if (p := parsed(c)) and p[0] == i else 0.0
            for c, i in zip(completions, image_index, strict=True)
        ]

    def iou_reward(completions, image_index, box, **_):
        return [
            iou(p[1], b) if (p := parsed(c)) and p[0] == i else 0.0
            for c, i, b in zip(completions, image_index, box, strict=True)
        ]

    network = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    for name, param in network.named_parameters():
        if "visual." in name and "merger" not in name:
            param.requires_grad_(False)
    processor = AutoProcessor.from_pretrained(model)
    processor.tokenizer.padding_side = "left"
    config = GRPOConfig(output_dir=out, max_steps=steps, save_strategy="no", **SETTINGS)
    trainer = GRPOTrainer(
        model=network,
        reward_funcs=[format_reward, image_reward, iou_reward],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
    )
    result = trainer.train()
    trainer.save_model(out)
    Path(out, "train_results.json").write_text(json.dumps(result.metrics), encoding="utf-8")


# ---------------------------------------------------------------- the parent


def seconds_per_step(out: Path, steps: int) -> float:
    metrics = json.loads((out / "train_results.json").read_text(encoding="utf-8"))
    return metrics["train_runtime"] / steps


def run_pack(python: str, model: Path, data: Path, out: Path, steps: int) -> float:
    overrides = [
        f"{k}={json.dumps(v)}" for k, v in SETTINGS.items()
    ]  # JSON is YAML: the recipe reader takes it
    cmd = [python, "-m", "rl", "train", "recipes/grpo.yaml", f"model_name_or_path={model}", f"dataset={data}"]
    cmd += [f"output_dir={out}", f"max_steps={steps}", f"save_steps={steps}", "deepspeed=null"]
    cmd += [f"image_max_pixels={IMAGE_SIDE * IMAGE_SIDE}", *overrides]
    _run(cmd)
    return seconds_per_step(out, steps)


def _run(cmd: list[str]) -> None:
    """Run a child quietly; on failure show the end of its stderr and stop."""
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(map(str, cmd[:4]))} ...")


def run_plain(python: str, model: Path, data: Path, out: Path, steps: int) -> float:
    _run([python, __file__, "--plain", str(model), str(data), str(out), str(steps)])
    return seconds_per_step(out, steps)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--plain"]:
        model, data, out, steps = argv[1:5]
        plain_run(model, data, out, int(steps))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="pack/plain pairs")
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from demo.tiny_model import build_tiny_qwen2vl

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = build_tiny_qwen2vl(work / "model", seed=0, force=True)
        data = write_records(work, args.records)
        pack, plain = [], []
        for r in range(args.repeats):
            pack.append(run_pack(sys.executable, model, data, work / f"pack{r}", args.steps))
            plain.append(run_plain(sys.executable, model, data, work / f"plain{r}", args.steps))
            print(
                f"pair {r + 1}: pack {pack[-1]:.3f} s/step, plain TRL {plain[-1]:.3f} s/step, "
                f"ratio {pack[-1] / plain[-1]:.2f}x",
                flush=True,
            )
        ratios = [a / b for a, b in zip(pack, plain, strict=True)]
        print(
            f"GRPO, tiny Qwen2-VL, {args.steps} steps x {args.repeats} pairs: pack best {min(pack):.3f} s/step, "
            f"plain TRL best {min(plain):.3f} s/step; best/best {min(pack) / min(plain):.2f}x, "
            f"median pair ratio {statistics.median(ratios):.2f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
