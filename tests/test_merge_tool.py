"""merge_tool on small hand-written safetensors checkpoints: exact arithmetic, layouts, refusals.

Checkpoints are written with the safetensors library itself and outputs are
read back with it, so merge_tool's own format code is checked against the
reference implementation, not against itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.atomicio import OutputExistsError
from merge_tool import MergeError, build_plan, run_merge
from tests.conftest import REPO, run_main

ARCH = {"architectures": ["TinyForCausalLM"], "model_type": "tiny", "dtype": "bfloat16"}


def make_tensors(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A model-like mix: bf16 matrices (some spanning many chunks), fp32 and fp16 tensors, a 0-d
    scalar, an empty tensor and an int64 buffer that is the same in every model."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g) * scale

    return {
        "embed.weight": randn(61, 37).to(torch.bfloat16),
        "layers.0.attn.q.weight": randn(37, 37).to(torch.bfloat16),
        "layers.0.mlp.up.weight": randn(5003).to(torch.bfloat16),
        "layers.0.mlp.down.weight": randn(401, 499).to(torch.bfloat16),  # spans several compute blocks
        "layers.0.norm.weight": randn(37).to(torch.float32),
        "layers.1.proj.weight": randn(13, 7).to(torch.float16),
        "layers.1.gate": randn(()).to(torch.bfloat16),
        "layers.1.empty": torch.empty(0, 4, dtype=torch.bfloat16),
        "rotary.position_ids": torch.arange(29, dtype=torch.int64),
        "lm_head.weight": randn(61, 37).to(torch.bfloat16),
    }


def write_checkpoint(
    folder: Path, tensors: dict[str, torch.Tensor], shards: int = 1, config: dict | None = ARCH
) -> Path:
    """Write like save_pretrained: one model.safetensors, or N shards plus model.safetensors.index.json."""
    folder.mkdir(parents=True)
    names = list(tensors)
    if shards == 1:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            part = names[i::shards]
            filename = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({n: tensors[n] for n in part}, folder / filename, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, filename))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    return folder


def load_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Read a merged folder with the safetensors library, checking the index against the shards."""
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return load_file(folder / "model.safetensors")
    weight_map = json.loads(index.read_text())["weight_map"]
    tensors = {}
    for filename in sorted(set(weight_map.values())):
        shard = load_file(folder / filename)
        assert all(weight_map[name] == filename for name in shard), filename
        tensors.update(shard)
    assert set(tensors) == set(weight_map)
    return tensors


def merge(models, out, chunk_elements=1000, threads=2, force=False, max_shard_size="4KB", **plan_args):
    """Plan and run through the Python API, with chunks small enough to split most tensors."""
    plan = build_plan([str(m) for m in models], **plan_args)
    try:
        return run_merge(
            plan,
            out,
            force=force,
            max_shard_size=max_shard_size,
            progress=False,
            chunk_elements=chunk_elements,
            threads=threads,
        )
    finally:
        plan.close()


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m merge_tool ARGS` as its own main() in this process, with stdout and stderr captured.

    Why in-process: interpreter and numpy start-up (~0.7 s a call) was most of the merge tests' time.
    The process itself (exit status, signals, no torch import) is tested through `python_m`, which
    runs the real `python -m merge_tool`, as do calls that pass subprocess options (`kwargs`).
    """
    return python_m(*args, **kwargs) if kwargs else run_main("merge_tool", args)


def python_m(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "merge_tool", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def fp32_linear(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The reference: sum_i w_i * x_i in float32, in plain torch."""
    acc = tensors[0].float() * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        acc = acc + tensor.float() * weight
    return acc


def fp32_task_arithmetic(base, tensors, weights, scale):
    acc = (tensors[0].float() - base.float()) * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        acc = acc + (tensor.float() - base.float()) * weight
    return base.float() + acc * scale


def within_half_ulp(result: torch.Tensor, terms: list[torch.Tensor]) -> bool:
    """True when `result` (bf16/fp16) is sum(terms) rounded once: error <= half an ulp of the exact sum,
    plus float32 accumulation noise (a few 2**-24 of the terms' magnitudes, which matter under cancellation)."""
    mantissa_bits = {torch.bfloat16: 8, torch.float16: 11}[result.dtype]
    exact = sum(terms)
    magnitude = sum(t.abs() for t in terms)
    _, exponent = torch.frexp(exact)
    ulp = torch.ldexp(torch.ones_like(exact), exponent - mantissa_bits)
    error = (result.double() - exact).abs()
    return bool((error <= 0.5 * ulp + 4 * 2**-24 * magnitude + 1e-30).all())


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


# ---------------------------------------------------------------- exactness


@pytest.fixture
def three_models(tmp_path):
    specs = [(0, 3), (1, 1), (2, 2)]  # seed, shard count: sharded and single-file inputs mixed
    return [
        write_checkpoint(tmp_path / f"m{seed}", make_tensors(seed), shards=shards) for seed, shards in specs
    ]


def test_two_models_uniform_is_fp32_average_rounded_once(three_models, tmp_path):
    a, b = three_models[:2]
    summary = merge([a, b], tmp_path / "out")
    merged = load_folder(tmp_path / "out")
    ta, tb = load_file_all(a), load_file_all(b)
    assert list(merged) and set(merged) == set(ta)
    assert summary["shards"] > 1  # a 4 KB limit forces a sharded output with an index
    for name, tensor in merged.items():
        assert tensor.dtype == ta[name].dtype and tensor.shape == ta[name].shape, name
        if not tensor.dtype.is_floating_point:
            assert torch.equal(tensor, ta[name]), name
            continue
        expected = fp32_linear([ta[name], tb[name]], [0.5, 0.5]).to(tensor.dtype)
        assert torch.equal(tensor, expected), name
        if tensor.dtype in (torch.bfloat16, torch.float16) and tensor.numel():
            assert within_half_ulp(tensor, [ta[name].double() / 2, tb[name].double() / 2]), name


def test_rounding_check_can_fail():
    """Negative control: averaging in bf16 (two roundings) breaks the half-ulp bound that merges meet."""
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(4096, generator=g) * 3).to(torch.bfloat16)
    b = (torch.randn(4096, generator=g) * 3).to(torch.bfloat16)
    terms = [a.double() / 3, b.double() / 3]
    assert within_half_ulp((a.float() / 3 + b.float() / 3).to(torch.bfloat16), terms)
    assert not within_half_ulp(a / 3 + b / 3, terms)


def test_special_values_round_like_torch(tmp_path):
    """inf, NaN, overflow past the largest bf16, bf16 subnormals and ties: same bits as torch's rounding."""
    big = torch.finfo(torch.bfloat16).max
    tiny = torch.finfo(torch.bfloat16).smallest_normal
    a_vals = [float("inf"), float("-inf"), float("nan"), big, -big, tiny / 8, 1.0, 1.0 + 2**-7, 3.0, 0.0]
    b_vals = [1.0, -2.0, 5.0, big, -big, tiny / 16, 1.0 + 2**-7, 1.0 + 2**-6, float("nan"), -0.0]
    a = write_checkpoint(tmp_path / "a", {"w": torch.tensor(a_vals).to(torch.bfloat16)})
    b = write_checkpoint(tmp_path / "b", {"w": torch.tensor(b_vals).to(torch.bfloat16)})
    ta, tb = load_file_all(a)["w"], load_file_all(b)["w"]
    for weights in ([0.5, 0.5], [0.75, 0.25], [1.0, 1.0]):
        merge([a, b], tmp_path / "out", weights=weights, force=True, allow_unnormalized=True)
        merged = load_folder(tmp_path / "out")["w"]
        expected = fp32_linear([ta, tb], weights).to(torch.bfloat16)
        torch.testing.assert_close(merged, expected, rtol=0, atol=0, equal_nan=True)
        assert merged[0].isinf() and merged[2].isnan() and merged[8].isnan()
        assert merged[3].isinf() == (weights == [1.0, 1.0])  # 2 x the largest bf16 overflows


def load_file_all(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def test_three_models_custom_weights_through_the_cli(three_models, tmp_path):
    weights = [0.5, 0.3, 0.2]
    out = tmp_path / "out"
    proc = python_m(
        "--models", *map(str, three_models), "--weights", *map(str, weights), "--output", str(out),
        "--max-shard-size", "3KB",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "B/s" in proc.stderr  # the progress bar reports throughput
    merged = load_folder(out)
    inputs = [load_file_all(m) for m in three_models]
    for name, tensor in merged.items():
        if tensor.dtype.is_floating_point:
            expected = fp32_linear([t[name] for t in inputs], weights).to(tensor.dtype)
            assert torch.equal(tensor, expected), name
            if tensor.dtype == torch.bfloat16 and tensor.numel():
                terms = [w * t[name].double() for w, t in zip(weights, inputs, strict=True)]
                assert within_half_ulp(tensor, terms), name
        else:
            assert torch.equal(tensor, inputs[0][name])
    record = json.loads((out / "merge_tool_config.json").read_text())
    assert record["weights"] == weights and record["method"] == "linear"


def test_three_models_uniform(three_models, tmp_path):
    merge(three_models, tmp_path / "out", max_shard_size="1GB", threads=1, chunk_elements=150_001)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == ["model.safetensors"]
    merged = load_folder(tmp_path / "out")
    inputs = [load_file_all(m) for m in three_models]
    third = 1 / 3
    for name, tensor in merged.items():
        if tensor.dtype.is_floating_point:
            expected = fp32_linear([t[name] for t in inputs], [third] * 3).to(tensor.dtype)
            assert torch.equal(tensor, expected), name


def test_task_arithmetic(three_models, tmp_path):
    base, m1, m2 = three_models
    proc = cli(
        "--method", "task-arithmetic", "--base", str(base), "--scale", "0.7",
        "--models", str(m1), str(m2), "--weights", "0.6", "0.4", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    merged = load_folder(tmp_path / "out")
    tb, t1, t2 = (load_file_all(m) for m in three_models)
    for name, tensor in merged.items():
        if tensor.dtype.is_floating_point:
            expected = fp32_task_arithmetic(tb[name], [t1[name], t2[name]], [0.6, 0.4], 0.7)
            assert torch.equal(tensor, expected.to(tensor.dtype)), name
        else:
            assert torch.equal(tensor, tb[name])
    record = json.loads((tmp_path / "out" / "merge_tool_config.json").read_text())
    assert record["method"] == "task_arithmetic" and record["parameters"]["lambda"] == 0.7 and record["base"]


def test_float32_output_keeps_the_unrounded_sum(three_models, tmp_path):
    a, b = three_models[:2]
    merge([a, b], tmp_path / "out", dtype="float32")
    merged = load_folder(tmp_path / "out")
    ta, tb = load_file_all(a), load_file_all(b)
    for name, tensor in merged.items():
        if ta[name].dtype.is_floating_point:
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, fp32_linear([ta[name], tb[name]], [0.5, 0.5])), name
        else:
            assert tensor.dtype == torch.int64
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "float32"


def test_mixed_float_dtypes_need_an_explicit_dtype(tmp_path):
    """A ZeRO-consolidated fp32 model and a bf16 model: refused unless --dtype says what to write."""
    bf16 = write_checkpoint(tmp_path / "bf16", make_tensors(0))
    fp32 = write_checkpoint(
        tmp_path / "fp32",
        {n: t.float() if t.dtype.is_floating_point else t for n, t in make_tensors(1).items()},
    )
    with pytest.raises(MergeError, match=r"tensor 'embed.weight' is bfloat16 in .* but float32 in .*--dtype"):
        build_plan([bf16, fp32])
    merge([bf16, fp32], tmp_path / "out", dtype="bf16")
    merged = load_folder(tmp_path / "out")
    ta, tb = load_file_all(bf16), load_file_all(fp32)
    expected = fp32_linear([ta["layers.0.norm.weight"], tb["layers.0.norm.weight"]], [0.5, 0.5])
    assert torch.equal(merged["layers.0.norm.weight"], expected.to(torch.bfloat16))


# ---------------------------------------------------------------- layouts and carried files


def test_checkpoint_folder_and_carried_files(tmp_path):
    """A checkpoint-N/ folder with training leftovers: weights read, leftovers not carried over."""
    run = tmp_path / "run"
    ckpt = write_checkpoint(run / "checkpoint-20", make_tensors(0), shards=2)
    for leftover in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (ckpt / leftover).write_bytes(b"\0" * 16)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    other = write_checkpoint(tmp_path / "other", make_tensors(1))
    (other / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))

    with pytest.raises(MergeError, match=r"holds checkpoint-20; pass one of them"):
        build_plan([run, other])
    summary = merge([ckpt, other], tmp_path / "out")
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja"} <= names
    assert not names & {
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "training_args.bin",
        "trainer_state.json",
    }
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model_max_length": 128}  # the first's
    assert any("tokenizer_config.json differs" in note for note in summary["notes"])


def test_non_floating_tensors_must_be_equal(tmp_path):
    a = write_checkpoint(tmp_path / "a", make_tensors(0))
    changed = make_tensors(1)
    changed["rotary.position_ids"] = changed["rotary.position_ids"].flip(0)
    b = write_checkpoint(tmp_path / "b", changed)
    with pytest.raises(MergeError, match=r"non-floating tensor 'rotary.position_ids' \(int64\) differs"):
        build_plan([a, b])


# ---------------------------------------------------------------- refusals leave nothing behind


@pytest.fixture
def pair(tmp_path):
    return write_checkpoint(tmp_path / "a", make_tensors(0), shards=2), write_checkpoint(
        tmp_path / "b", make_tensors(1)
    )


def refused(tmp_path, *args: str) -> str:
    """Run the CLI expecting a refusal; check it left neither OUT nor temporary files."""
    before = {p.name for p in tmp_path.iterdir()}
    proc = cli(*args, "--output", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path, before) == []
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("python -m merge_tool: error: "), proc.stderr  # cli.py's one style
    return proc.stderr


def test_refuses_shape_mismatch(pair, tmp_path):
    a, _ = pair
    tensors = make_tensors(1)
    tensors["layers.0.attn.q.weight"] = tensors["layers.0.attn.q.weight"][:, :36].contiguous()
    c = write_checkpoint(tmp_path / "c", tensors)
    err = refused(tmp_path, "--models", str(a), str(c))
    assert "tensor 'layers.0.attn.q.weight' has shape [37, 37] in" in err and "but [37, 36] in" in err


def test_refuses_missing_tensor(pair, tmp_path):
    a, _ = pair
    tensors = make_tensors(1)
    del tensors["lm_head.weight"]
    c = write_checkpoint(tmp_path / "c", tensors, shards=2)
    err = refused(tmp_path, "--models", str(a), str(c))
    assert f"tensor 'lm_head.weight' is in {a} but missing from {c}" in err


def test_refuses_extra_tensor(pair, tmp_path):
    a, _ = pair
    c = write_checkpoint(tmp_path / "c", {**make_tensors(1), "visual.extra": torch.zeros(3)})
    err = refused(tmp_path, "--models", str(a), str(c))
    assert f"tensor 'visual.extra' is in {c} but missing from {a}" in err


def test_refuses_other_architecture(pair, tmp_path):
    a, _ = pair
    c = write_checkpoint(tmp_path / "c", make_tensors(1), config={**ARCH, "architectures": ["OtherModel"]})
    err = refused(tmp_path, "--models", str(a), str(c))
    assert "architecture differs" in err and "OtherModel" in err


def test_refuses_weights_not_summing_to_one(pair, tmp_path):
    a, b = pair
    err = refused(tmp_path, "--models", str(a), str(b), "--weights", "0.7", "0.7")
    assert "sum to 1.4, not 1" in err and "--allow-unnormalized" in err
    err = refused(tmp_path, "--models", str(a), str(b), "--weights", "1.0")
    assert "got 1 weights for 2 models" in err
    proc = cli(
        "--models",
        str(a),
        str(b),
        "--weights",
        "0.7",
        "0.7",
        "--allow-unnormalized",
        "--output",
        str(tmp_path / "ok"),
    )
    assert proc.returncode == 0, proc.stderr
    merged, ta, tb = load_folder(tmp_path / "ok"), load_file_all(a), load_file_all(b)
    expected = fp32_linear([ta["embed.weight"], tb["embed.weight"]], [0.7, 0.7]).to(torch.bfloat16)
    assert torch.equal(merged["embed.weight"], expected)


def test_refuses_non_empty_output_unless_forced(pair, tmp_path):
    a, b = pair
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    before = {p.name for p in tmp_path.iterdir()}
    proc = cli("--models", str(a), str(b), "--output", str(out))
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert (out / "keep.txt").read_text() == "user data" and [p.name for p in out.iterdir()] == ["keep.txt"]
    assert leftovers(tmp_path, before) == []
    with pytest.raises(OutputExistsError):
        merge([a, b], out)
    proc = cli("--models", str(a), str(b), "--output", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert leftovers(tmp_path, before) == []  # the replaced folder is gone too


def test_refuses_to_write_over_an_input(pair, tmp_path):
    a, b = pair
    proc = cli("--models", str(a), str(b), "--output", str(a), "--force")
    assert proc.returncode == 1 and "would replace input model" in proc.stderr
    assert (a / "model.safetensors.index.json").exists()


def test_refuses_deepspeed_only_folder(pair, tmp_path):
    a, _ = pair
    ds = tmp_path / "ds"
    (ds / "global_step40").mkdir(parents=True)
    (ds / "global_step40" / "mp_rank_00_model_states.pt").write_bytes(b"\0")
    (ds / "global_step40" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\0")
    (ds / "latest").write_text("global_step40")
    (ds / "zero_to_fp32.py").write_text("# deepspeed's script")
    (ds / "config.json").write_text(json.dumps(ARCH))
    err = refused(tmp_path, "--models", str(a), str(ds))
    assert "DeepSpeed ZeRO shards (global_step40/)" in err
    assert f"python {ds / 'zero_to_fp32.py'} {ds}" in err and "--safe_serialization" in err
    assert "stage3_gather_16bit_weights_on_model_save" in err


def test_refuses_adapters_and_bin_weights(pair, tmp_path):
    a, _ = pair
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text("{}")
    assert "LoRA adapter" in refused(tmp_path, "--models", str(a), str(lora))
    pt = tmp_path / "pt"
    pt.mkdir()
    (pt / "pytorch_model.bin").write_bytes(b"\0")
    assert "PyTorch .bin weights" in refused(tmp_path, "--models", str(a), str(pt))
    assert "does not exist" in refused(tmp_path, "--models", str(a), str(tmp_path / "nowhere"))


def test_refuses_truncated_or_missing_shards(pair, tmp_path):
    a, _ = pair
    c = write_checkpoint(tmp_path / "c", make_tensors(1), shards=2)
    shard = c / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    err = refused(tmp_path, "--models", str(a), str(c))
    assert f"{shard}: tensor" in err and "truncated" in err
    shard.unlink()
    err = refused(tmp_path, "--models", str(a), str(c))
    assert "names shard model-00002-of-00002.safetensors" in err and "is missing" in err


def test_interrupted_merge_leaves_nothing(tmp_path):
    """SIGTERM in the middle of writing: the temporary folder is removed and OUT never appears."""
    g = torch.Generator().manual_seed(0)
    big = {f"w{i}": torch.randn(1024, 1024, generator=g).to(torch.bfloat16) for i in range(48)}
    a = write_checkpoint(tmp_path / "a", big, shards=4)
    b = write_checkpoint(tmp_path / "b", {k: v + 1 for k, v in big.items()}, shards=4)
    before = {p.name for p in tmp_path.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--models", str(a), str(b), "--output", str(tmp_path / "out"), "--max-shard-size", "4MB"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "merge_tool", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline and proc.poll() is None and seen is None:
        temps = [p for p in tmp_path.glob(".out.*.tmp") if any(p.glob("model-*.safetensors"))]
        seen = temps[0] if temps else None
        time.sleep(0.002)
    assert seen is not None, "the merge finished (or failed) before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert (
        f"python -m merge_tool: error: stopped by SIGTERM; nothing was written to {tmp_path / 'out'}"
        in stderr
    )
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path, before) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": "b"}, "--method linear does not use --base"),
        ({"method": "task-arithmetic"}, "needs --base"),
        ({"method": "ties"}, "needs --base"),
        ({"method": "model_stock"}, "unknown method 'model_stock'; use one of linear, task_arithmetic, ties"),
        ({"dtype": "int8"}, "unknown --dtype 'int8'"),
        ({"weights": [0.5, float("nan")]}, "weights must be finite"),
    ],
)
def test_refuses_bad_options(pair, kwargs, message):
    a, b = pair
    with pytest.raises(MergeError, match=re.escape(message)):
        build_plan([a, b], **{k: (b if v == "b" else v) for k, v in kwargs.items()})


def test_refuses_bad_shard_size_and_single_model(pair, tmp_path):
    a, b = pair
    assert "cannot read size '12 parsecs'" in refused(
        tmp_path, "--models", str(a), str(b), "--max-shard-size", "12 parsecs"
    )
    assert "needs at least 2 models, got 1" in refused(tmp_path, "--models", str(a))


def test_standalone_without_torch_or_frameworks(pair, tmp_path):
    """The CLI merges without importing torch, safetensors, transformers, LLaMA-Factory or vLLM."""
    a, b = pair
    code = (
        "import sys; from merge_tool.__main__ import main; "
        f"rc = main(['--models', {str(a)!r}, {str(b)!r}, '--output', {str(tmp_path / 'out')!r}]); "
        "heavy = [m for m in ('torch', 'safetensors', 'transformers', 'llamafactory', 'vllm') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc or bool(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()
