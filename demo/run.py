"""`make demo`: the whole Migician pipeline on this CPU machine with a tiny model.

Why: it proves every link of the chain with the real tools (converters ->
LLaMA-Factory stage 1 -> stage 2 -> merge_tool -> the vLLM evaluator) and shows
that the recipes teach a model multi-image grounding: the untrained model,
both stages and their merge are scored on a held-out synthetic bench.

The training steps run the real recipes (recipes/stage*.yaml) with command-line
overrides only (model, data, device, schedule). Every step is skipped when its
output already exists, so a re-run reuses what is built; `make clean` removes it.
A tree built with other settings (profile, seed) is refused rather than reused:
its checkpoints would be scored as if they came from these.

    python -m demo.run [--workdir DIR] [--profile full|smoke] [--eval-python PY]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from atomicio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
MODELS = ("untrained", "stage1", "stage2", "merged")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and schedule of one demo run (data counts, epochs, eval limit)."""

    stage1_records: int  # MGrounding-style stage-1 records generated
    free_form_records: int  # free-form (stage-2) records generated
    general_records: int  # per general source (RefCOCO, LLaVA-OV, M4)
    bench_records: int  # held-out demo bench instances
    stage1_total: int  # stage-1 mixture size
    stage2_total: int  # stage-2 mixture size
    stage1_epochs: float
    stage2_epochs: float
    learning_rate: float = 3e-4  # 1e-3 learned the format but not the images (13.6% vs 80% on stage 1)
    batch_size: int = 8


PROFILES = {
    "full": Profile(3000, 1200, 300, 300, 3000, 1200, 3.0, 2.0),
    "smoke": Profile(120, 60, 20, 40, 120, 60, 1.0, 1.0),
}


class DemoError(Exception):
    """A demo tree that cannot be used as asked; the message says what to do."""


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    subprocess.run([str(c) for c in cmd], check=True, cwd=cwd, env=full_env)


class Demo:
    """Paths of one demo working tree and the steps that fill it."""

    def __init__(self, workdir: Path, profile: Profile, eval_python: str, seed: int = 0):
        self.workdir = workdir.resolve()
        self.profile = profile
        self.eval_python = eval_python
        self.seed = seed
        self.raw = self.workdir / "data/demo/raw"
        self.data = self.workdir / "data/demo"
        self.saves = self.workdir / "saves/demo"
        self.outputs = self.workdir / "outputs/demo"
        self.bench = self.raw / "MIG-Bench/MIG_data.json"

    def checkpoint(self, name: str) -> Path:
        return self.saves / ("base" if name == "untrained" else name)

    def settings(self) -> dict:
        return {"seed": self.seed, **dataclasses.asdict(self.profile)}

    def claim(self) -> None:
        """Record this run's settings in saves/demo, or refuse a tree built with other ones."""
        path = self.saves / "demo_settings.json"
        want = self.settings()
        if path.exists():
            have = json.loads(path.read_text(encoding="utf-8"))
            changed = [f"{k} {have.get(k)} -> {want.get(k)}" for k in want if have.get(k) != want[k]]
            if changed:
                raise DemoError(
                    f"{self.saves} was built with other settings ({', '.join(changed)}); its checkpoints "
                    f"would be reused as if they were these. Run `make clean` (or remove {self.workdir / 'data/demo'}, "
                    f"{self.saves} and {self.outputs}) or pass another --workdir."
                )
            return
        self.saves.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(want, indent=2) + "\n")

    # -- steps ------------------------------------------------------------------------
    def build_model(self) -> None:
        from demo.tiny_model import build_tiny_qwen2vl

        base = self.checkpoint("untrained")
        if (base / "config.json").exists():
            return log(f"tiny model: reusing {base}")
        log(f"tiny model -> {base}")
        build_tiny_qwen2vl(base, seed=self.seed)

    def make_data(self) -> None:
        from demo.synth import generate

        p = self.profile
        log(f"synthetic data -> {self.raw} (kept when up to date)")
        generate(
            self.raw,
            seed=self.seed,
            stage1=p.stage1_records,
            free_form=p.free_form_records,
            general=p.general_records,
            bench=p.bench_records,
        )
        run(
            [sys.executable, "-m", "converters", "all", "--data-root", self.raw, "--output-dir", self.data]
            + ["--mixture-prefix", "demo", "--stage1-total", p.stage1_total, "--stage2-total", p.stage2_total]
            + ["--seed", self.seed]
        )
        if self.workdir != REPO:  # LLaMA-Factory reads the registry from dataset_dir
            shutil.copyfile(REPO / "dataset_info.json", self.workdir / "dataset_info.json")

    def train(self, stage: int) -> None:
        out = self.checkpoint(f"stage{stage}")
        if (out / "all_results.json").exists():
            return log(f"stage {stage}: reusing {out}")
        p = self.profile
        start = self.checkpoint("untrained" if stage == 1 else "stage1")
        overrides = {
            # model and data
            "model_name_or_path": start,
            "dataset_dir": self.workdir,
            "dataset": f"demo_stage{stage}",
            "output_dir": out,
            "tokenized_path": self.saves / f"cache/stage{stage}_tokenized",
            "image_max_pixels": 50176,
            "cutoff_len": 1024,
            # device: this CPU machine, no DeepSpeed, fp32
            "use_cpu": "true",
            "bf16": "false",
            "deepspeed": "null",
            "preprocessing_num_workers": 2,
            "dataloader_num_workers": 0,
            # schedule: a random tiny model learns from scratch, vision tower included
            "freeze_vision_tower": "false",
            "learning_rate": p.learning_rate,
            "num_train_epochs": p.stage1_epochs if stage == 1 else p.stage2_epochs,
            "warmup_ratio": 0.05,
            "per_device_train_batch_size": p.batch_size,
            "gradient_accumulation_steps": 1,
            "logging_steps": 5,
            "save_steps": 200,
            "save_total_limit": 1,
        }
        cli = shutil.which("llamafactory-cli", path=str(Path(sys.executable).parent))
        run([cli, "train", REPO / f"recipes/stage{stage}.yaml"] + [f"{k}={v}" for k, v in overrides.items()])
        self.outputs.mkdir(parents=True, exist_ok=True)
        plot = out / "training_loss.png"
        if plot.exists():
            shutil.copyfile(plot, self.outputs / f"loss_stage{stage}.png")

    def merge(self) -> None:
        out = self.checkpoint("merged")
        if (out / "config.json").exists():
            return log(f"merge: reusing {out}")
        models = [self.checkpoint("stage1"), self.checkpoint("stage2")]
        run([sys.executable, "-m", "merge_tool", "--models", *models, "--output", out])

    def evaluate(self, name: str) -> None:
        """Score one checkpoint on the demo bench; reuse a finished run of the same weights."""
        out, checkpoint = self.outputs / name, self.checkpoint(name)
        weights_time = max(p.stat().st_mtime for p in checkpoint.glob("*.safetensors"))
        stale = out.exists() and all(p.stat().st_mtime < weights_time for p in out.iterdir())
        if (out / "metrics.json").exists() and not stale:
            return log(f"eval {name}: reusing {out}")
        run(
            [self.eval_python, "-m", "eval", "run", "--model", checkpoint, "--bench", self.bench]
            + ["--output-dir", out, "--dtype", "float32", "--label", name]
            + (["--force"] if stale else [])  # the checkpoint was retrained since that run
        )

    def report(self) -> dict:
        runs = [self.outputs / name for name in MODELS]
        run([self.eval_python, "-m", "eval", "compare", *runs])
        summary = {}
        for name, path in zip(MODELS, runs, strict=True):
            metrics = json.loads((path / "metrics.json").read_text())
            summary[name] = metrics["average"]
        for stage in (1, 2):
            summary[f"loss_stage{stage}"] = loss_endpoints(
                self.checkpoint(f"stage{stage}") / "trainer_log.jsonl"
            )
        (self.outputs / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        gain = summary["merged"]["acc@0.5"] - summary["untrained"]["acc@0.5"]
        log(f"merged vs untrained Acc@0.5: {gain:+.1f} points; summary in {self.outputs / 'summary.json'}")
        return summary


def loss_endpoints(trainer_log: Path) -> dict:
    """First and last logged training loss of a LLaMA-Factory run."""
    losses = [json.loads(line).get("loss") for line in trainer_log.read_text().splitlines() if line.strip()]
    losses = [x for x in losses if x is not None]
    return {"first": losses[0], "last": losses[-1], "logged": len(losses)} if losses else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO, help="where data/, saves/, outputs/ go")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--eval-python", default=str(REPO / ".venv-eval/bin/python"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.time()
    demo = Demo(args.workdir, PROFILES[args.profile], args.eval_python, args.seed)
    try:
        demo.claim()
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    demo.build_model()
    demo.make_data()
    demo.train(1)
    demo.train(2)
    demo.merge()
    for name in MODELS:
        demo.evaluate(name)
    demo.report()
    log(f"done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
