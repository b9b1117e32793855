"""Benchmark merge_tool against the naive merge and against the disk itself, in one run.

Generates two bf16 checkpoints (>= 2 GB each, ~500 MB shards, LLM-shaped
tensors), then times three ways of producing their average, each in its own
subprocess so its peak RSS (ru_maxrss from wait4) is its own:

  copy        the disk floor: `cp` one input's shards to the output folder and
              `cat` the other's to /dev/null (read both inputs, write one output)
  naive       load both state dicts with torch (safetensors.torch.load_file),
              average in fp32, save_file in shards
  merge_tool  python -m merge_tool --models A B --output OUT
  ties        python -m merge_tool --method ties --base A --models B --param density=0.5:
              a whole-tensor method (an exact per-tensor top-k, streamed in
              several passes), whose peak RSS must also stay below one shard
  breadcrumbs the same with --method breadcrumbs --param density=0.5 --param gamma=0.01
              (two exact top-k selects per tensor: the kept band of magnitudes)

Also shown: `python -c "import torch"`, the start-up the naive way pays
(merge_tool does not import torch). Goals (issue 5): merge_tool peak RSS <=
1/3 of naive and about one shard plus a little; wall time <= naive and <=
1.5x copy. Before each timed run dirty pages are flushed (sync) and the
inputs are evicted from the page cache (cold: every run reads the disk, so
copy is "the disk itself" the goal compares with) or read once (warm: equally
warm page cache, so "the disk" is RAM and the merge's arithmetic is all that
shows). --cache both (default) measures both. Each repeat runs the methods
back to back, so a ratio is also taken per repeat and its median shown next to
the ratio of best times. CPU seconds (user + system) are shown too, as they
depend less on what else the machine is running. Merged outputs of naive and
merge_tool are checked to be tensor-for-tensor identical. Everything is
deleted at the end unless --keep.

    python benchmarks/bench_merge.py [--layers 5] [--shard-size 500MB] [--repeats 3] [--cache both|cold|warm]
        [--whole-tensor ties,breadcrumbs] [--no-ties]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHOLE_TENSOR = {  # task-vector methods timed against the uniform average: name -> their --param values
    "ties": ("density=0.5",),
    "dare_ties": ("density=0.5",),
    "dare_linear": ("density=0.5",),
    "breadcrumbs": ("density=0.5", "gamma=0.01"),
    "task_arithmetic": (),
}
GOAL = 2.0  # issue 24: each of them within 2x the wall time of the linear merge of the same checkpoints
MERGEKIT = "mergekit"  # pip requirement of the throwaway venv (`--mergekit-spec` to pin another)
MERGEKIT_CONFIGS = {  # merge_tool's command -> the same merge as a mergekit config (A, B filled in)
    "merge_tool": "merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n"
    "  - model: {b}\n    parameters: {{weight: 0.5}}\ndtype: bfloat16\n",
    "ties": "merge_method: ties\nbase_model: {a}\nmodels:\n  - model: {b}\n    parameters: {{weight: 1.0, density: 0.5}}\n"
    "dtype: bfloat16\n",
}
HIDDEN, INTERMEDIATE, VOCAB = 4096, 11008, 32000


def _layout(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """Llama-7B-like tensor shapes: embeddings, `layers` decoder blocks, norm, lm_head."""
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + f"self_attn.{x}_proj.weight", (HIDDEN, HIDDEN)) for x in "qkvo"]
        shapes += [
            (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
        ]
        shapes += [(p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))]
        shapes += [
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    return shapes + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def _shard_groups(items: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for name, nbytes in items:
        if groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    return groups


def _save_sharded(tensors_for, names_sizes, out: Path, max_bytes: int) -> None:
    """save_pretrained-style shards + index, producing each shard's tensors only when it is written."""
    from safetensors.torch import save_file

    groups = _shard_groups(names_sizes, max_bytes)
    weight_map = {}
    for i, group in enumerate(groups, 1):
        filename = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(tensors_for(group), out / filename, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, filename))
    index = {"metadata": {"total_size": sum(n for _, n in names_sizes)}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def generate(out: Path, seed: int, layers: int, shard_bytes: int) -> None:
    import torch

    out.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    shapes = dict(_layout(layers))

    def tensors_for(names):
        return {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16) for n in names}

    _save_sharded(tensors_for, [(n, 2 * _numel(s)) for n, s in shapes.items()], out, shard_bytes)
    config = {  # complete enough for mergekit's architecture templates
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "dtype": "bfloat16",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": VOCAB,
        "tie_word_embeddings": False,
    }
    (out / "config.json").write_text(json.dumps(config))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def naive(a: Path, b: Path, out: Path, shard_bytes: int) -> None:
    """What one writes without a tool: load both state dicts, average, save."""
    from safetensors.torch import load_file

    def load(folder):
        state = {}
        for path in sorted(folder.glob("*.safetensors")):
            state.update(load_file(path))
        return state

    sa, sb = load(a), load(b)
    merged = {k: (v.float() * 0.5 + sb[k].float() * 0.5).to(v.dtype) for k, v in sa.items()}
    del sa, sb
    out.mkdir(parents=True)
    sizes = [(k, v.numel() * v.element_size()) for k, v in merged.items()]
    _save_sharded(lambda names: {n: merged[n] for n in names}, sizes, out, shard_bytes)
    shutil.copy(a / "config.json", out / "config.json")


def verify(x: Path, y: Path) -> None:
    """Exit 1 unless both folders hold the same tensors with the same values (read one at a time)."""
    import torch
    from safetensors import safe_open

    def where(folder):
        return {
            k: folder / v
            for k, v in json.loads((folder / "model.safetensors.index.json").read_text())[
                "weight_map"
            ].items()
        }

    wx, wy = where(x), where(y)
    if set(wx) != set(wy):
        sys.exit(f"tensor names differ: {sorted(set(wx) ^ set(wy))[:5]}")
    for name in wx:
        with safe_open(wx[name], "pt") as fx, safe_open(wy[name], "pt") as fy:
            if not torch.equal(fx.get_tensor(name), fy.get_tensor(name)):
                sys.exit(f"tensor {name} differs between {x} and {y}")


# ------------------------------------------------------------------ orchestration (no torch here)


def _timed(cmd: list[str] | str, shell: bool = False) -> tuple[float, float, float]:
    """Run a command; return (wall seconds, its own peak RSS in MB, its CPU seconds user + system)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, shell=shell)  # noqa: S602 - our own fixed commands
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {cmd}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def _prepare_cache(cache: str, *folders: Path) -> None:
    """warm: read the inputs once so they sit in the page cache. cold: evict them (our files only,
    posix_fadvise DONTNEED; no root, other users' cache untouched) so every run reads the disk."""
    os.sync()
    for folder in folders:
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb") as handle:
                if cache == "cold":
                    os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                else:
                    while handle.read(1 << 24):
                        pass


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _measure(mode: str, commands: dict, outputs: dict, a: Path, b: Path, repeats: int) -> dict:
    """Run every command `repeats` times with the page cache in `mode`; (wall, rss, cpu) per run."""
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for repeat in range(repeats):
        for name, (cmd, shell) in commands.items():
            if name in outputs:
                shutil.rmtree(outputs[name], ignore_errors=True)
            _prepare_cache(mode, a, b)
            wall, rss, cpu = _timed(cmd, shell)
            results[name].append((wall, rss, cpu))
            print(
                f"  {mode} run {repeat + 1} {name:<13} {wall:7.2f} s  cpu {cpu:6.2f} s  peak RSS {rss:8.0f} MB",
                flush=True,
            )
    return results


def _report(mode: str, results: dict, shard_bytes: int) -> None:
    """The table and the goal ratios for one cache mode."""
    best = {name: min(w for w, _, _ in runs) for name, runs in results.items()}
    peak = {name: max(r for _, r, _ in runs) for name, runs in results.items()}
    cpu = {name: min(c for _, _, c in runs) for name, runs in results.items()}

    def paired(x: str, y: str) -> float:
        return statistics.median(rx[0] / ry[0] for rx, ry in zip(results[x], results[y], strict=True))

    load = os.getloadavg()[0]
    print(
        f"\n{'method':<14}{'best wall s':>12}{'cpu s':>8}{'peak RSS MB':>13}   ({mode} cache, load {load:.1f})"
    )
    for name in results:
        print(f"{name:<14}{best[name]:>12.2f}{cpu[name]:>8.2f}{peak[name]:>13.0f}")
    shard_mb = shard_bytes / 2**20
    print(f"\nratios, {mode} cache (best/best, median per repeat; goal in brackets):")
    if "naive" in results:
        print(f"  peak RSS  merge_tool / naive  {peak['merge_tool'] / peak['naive']:.3f}  [<= 0.333]")
    print(
        f"  peak RSS  merge_tool / shard  {peak['merge_tool'] / shard_mb:.3f}  "
        f"({peak['merge_tool']:.0f} MB vs a {shard_mb:.0f} MB shard)  [about 1 plus a little]"
    )
    for name in (n for n in WHOLE_TENSOR if n in results):
        width = max(20, len(name) + 15)
        print(
            f"  peak RSS  {name + ' / shard':<{width}}{peak[name] / shard_mb:.3f}  "
            f"({peak[name]:.0f} MB vs a {shard_mb:.0f} MB shard)  [< 1: whole-tensor, still streaming]"
        )
        print(
            f"  wall      {name + ' / linear':<{width}}{best[name] / best['merge_tool']:.3f}, "
            f"median {paired(name, 'merge_tool'):.3f}  [<= {GOAL:g}]"
        )
    for base, goal in (
        (("naive", "<= 1.0"), ("copy", "<= 1.5 cold; warm has no disk")) if "naive" in results else ()
    ):
        print(
            f"  wall      merge_tool / {base:<6}{best['merge_tool'] / best[base]:.3f}, "
            f"median {paired('merge_tool', base):.3f}  [{goal}]"
        )
    for name in (n for n in MERGEKIT_CONFIGS if "mergekit_" + n in results):
        other = "mergekit_" + name
        print(
            f"  wall      {name} / mergekit {best[name] / best[other]:.3f}, median {paired(name, other):.3f}; "
            f"peak RSS {peak[name] / peak[other]:.3f}  (the same merge, mergekit in its own venv)"
        )
    if "naive" in results:
        print(f"  cpu       merge_tool / naive  {cpu['merge_tool'] / cpu['naive']:.3f}")
    print(f"  cpu       merge_tool / copy   {cpu['merge_tool'] / cpu['copy']:.3f}")


def mergekit_venv(work: Path, spec: str) -> Path | None:
    """A throwaway venv with mergekit (torch and the rest reused from this interpreter's site-packages
    through a .pth file, so only what is missing is installed); None, with the reason printed, if not."""
    venv = work / "mergekit-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        here = [p for p in sys.path if p.endswith("site-packages")]
        (site / "_bench_parent.pth").write_text("\n".join(here) + "\n")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, spec], check=True, capture_output=True, text=True, timeout=1800)
        version = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('mergekit'))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration, OSError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        print(
            f"mergekit comparison skipped: cannot install {spec!r}: {str(detail).strip().splitlines()[-1:]}"
        )
        return None
    print(f"mergekit {version} installed in a throwaway venv ({venv})")
    return venv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layers", type=int, default=5, help="decoder blocks per model (5 -> 2.55 GB in bf16)"
    )
    parser.add_argument("--shard-size", default="500MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache",
        choices=("both", "cold", "warm"),
        default="both",
        help="inputs read from the disk (cold), from the page cache (warm), or both in turn",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints and outputs")
    parser.add_argument(
        "--whole-tensor",
        default=",".join(WHOLE_TENSOR),
        help=f"comma-separated whole-tensor methods to time (default: all of {', '.join(WHOLE_TENSOR)})",
    )
    parser.add_argument("--no-ties", action="store_true", help="skip the whole-tensor measurements")
    parser.add_argument(
        "--mergekit-spec", default=MERGEKIT, help="what to pip-install in the throwaway mergekit venv"
    )
    parser.add_argument("--no-mergekit", action="store_true", help="skip the mergekit comparison")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive torch merge (and its check)")
    args = parser.parse_args()
    whole = [] if args.no_ties else [n for n in args.whole_tensor.split(",") if n]
    unknown = sorted(set(whole) - set(WHOLE_TENSOR))
    if unknown:
        parser.error(f"--whole-tensor: unknown {unknown}; choose from {', '.join(WHOLE_TENSOR)}")
    shard_bytes = int(float(args.shard_size.upper().removesuffix("MB")) * 1e6)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_merge.", dir=args.workdir))
    py = sys.executable
    me = str(Path(__file__).resolve())
    try:
        a, b = work / "a", work / "b"
        t0 = time.perf_counter()
        for folder, seed in ((a, 0), (b, 1)):
            subprocess.run(
                [py, me, "_generate", str(folder), str(seed), str(args.layers), str(shard_bytes)], check=True
            )
        size = _size(a)
        shards = len(list(a.glob("*.safetensors")))
        print(
            f"inputs: 2 x {size / 1e9:.2f} GB bf16 in {shards} shards each (generated in {time.perf_counter() - t0:.0f} s)"
        )

        outputs = {
            "copy": work / "out_copy",
            "naive": work / "out_naive",
            "merge_tool": work / "out_merge_tool",
        }
        commands = {
            "copy": (
                f"mkdir -p {outputs['copy']} && cp {a}/*.safetensors {outputs['copy']}/ "
                f"&& cat {b}/*.safetensors > /dev/null",
                True,
            ),  # fmt: skip
            "naive": ([py, me, "_naive", str(a), str(b), str(outputs["naive"]), str(shard_bytes)], False),
            "merge_tool": (
                [
                    py,
                    "-m",
                    "merge_tool",
                    "--models",
                    str(a),
                    str(b),
                    "--output",
                    str(outputs["merge_tool"]),
                    "--max-shard-size",
                    args.shard_size,
                    "--no-progress",
                ],
                False,
            ),  # fmt: skip
            "python+torch": ([py, "-c", "import torch"], False),
        }
        for name in whole:
            outputs[name] = work / f"out_{name}"
            params = [arg for value in WHOLE_TENSOR[name] for arg in ("--param", value)]
            commands[name] = (
                [
                    py, "-m", "merge_tool", "--method", name, "--base", str(a), "--models", str(b),
                    *params, "--output", str(outputs[name]),
                    "--max-shard-size", args.shard_size, "--no-progress",
                ],
                False,
            )  # fmt: skip
        venv = None if args.no_mergekit else mergekit_venv(work, args.mergekit_spec)
        for name, template in MERGEKIT_CONFIGS.items() if venv else ():
            if name not in commands:
                continue
            config = work / f"mergekit_{name}.yml"
            config.write_text(template.format(a=a, b=b))
            outputs["mergekit_" + name] = work / f"out_mergekit_{name}"
            commands["mergekit_" + name] = (
                [str(venv / "bin" / "mergekit-yaml"), str(config), str(outputs["mergekit_" + name]),
                 "--out-shard-size", args.shard_size.replace("MB", "M"), "--lazy-unpickle"],
                False,
            )  # fmt: skip
        if args.no_naive:
            del commands["naive"], outputs["naive"]
        modes = ("cold", "warm") if args.cache == "both" else (args.cache,)
        for mode in modes:
            results = _measure(mode, commands, outputs, a, b, args.repeats)
            for other in ("naive", "mergekit_merge_tool"):
                if other in outputs:
                    same = subprocess.run(
                        [py, me, "_verify", str(outputs[other]), str(outputs["merge_tool"])]
                    )
                    if same.returncode and other == "naive":
                        raise SystemExit("naive and merge_tool outputs differ")
                    print(
                        f"{other} and merge_tool outputs {'differ' if same.returncode else 'hold identical tensors'}"
                    )
            _report(mode, results, shard_bytes)
            for name in outputs:
                shutil.rmtree(outputs[name], ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        step, *rest = sys.argv[1:]
        if step == "_generate":
            generate(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif step == "_naive":
            naive(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3]))
        elif step == "_verify":
            verify(Path(rest[0]), Path(rest[1]))
        else:
            raise SystemExit(f"unknown step {step}")
    else:
        main()
