"""merge_tool's methods against hand-computed tensors, mergekit configs, replay and bad configs.

Inputs are tiny float32 safetensors files written with the safetensors library;
outputs are read back with it. Small cases are worked out by hand in the
comments; larger ones are checked against a plain in-memory numpy reference
(sort-based top-k, whole-tensor norms) that shares no code with the streaming
implementation, with chunks small enough that every whole-tensor statistic
spans several chunks and worker threads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from merge_tool import MergeError, build_plan, run_merge
from merge_tool.config import read_config
from merge_tool.methods import METHODS
from merge_tool.methods.sparsify import random_keep
from merge_tool.plan import plan_spec
from tests.test_merge_tool import cli, python_m

ARCH = {"architectures": ["TinyForCausalLM"], "model_type": "tiny"}


def model(folder: Path, **tensors) -> Path:
    folder.mkdir(parents=True)
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(ARCH))
    return folder


def run(plan, out: Path, chunk_elements: int = 4, threads: int = 2) -> dict[str, np.ndarray]:
    try:
        run_merge(plan, out, progress=False, chunk_elements=chunk_elements, threads=threads, force=True)
    finally:
        plan.close()
    return load_file(out / "model.safetensors")


def run_config(tmp_path: Path, text: str, name: str = "out", **kw) -> dict[str, np.ndarray]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return run(plan_spec(read_config(path)), tmp_path / name, **kw)


# ---------------------------------------------------------------- hand-computed


def test_linear_config_normalizes_by_default(tmp_path):
    a = model(tmp_path / "a", w=[1, 2, 3, 4])
    b = model(tmp_path / "b", w=[3, 2, 1, 0])
    config = f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1}}\n  - model: {b}\n    parameters: {{weight: 3}}\n"
    out = run_config(tmp_path, config)
    np.testing.assert_array_equal(out["w"], [2.5, 2.0, 1.5, 1.0])  # (1 a + 3 b) / 4
    raw = run_config(tmp_path, config + "parameters: {normalize: false}\n", name="raw")
    np.testing.assert_array_equal(raw["w"], [10, 8, 6, 4])  # 1 a + 3 b


def test_task_arithmetic_with_lambda_and_normalize(tmp_path):
    base = model(tmp_path / "base", w=[1, 1, 1, 1])
    m1 = model(tmp_path / "m1", w=[2, 0, 1, 3])  # d1 = [1, -1, 0, 2]
    m2 = model(tmp_path / "m2", w=[1, 3, 1, -1])  # d2 = [0, 2, 0, -2]
    plan = build_plan([m1, m2], method="task_arithmetic", base=base, weights=[0.5, 0.5], scale=2.0)
    np.testing.assert_array_equal(run(plan, tmp_path / "o1")["w"], [2, 2, 1, 1])  # 1 + 2 * [0.5, 0.5, 0, 0]
    plan = build_plan(
        [m1, m2], method="task_arithmetic", base=base, weights=[1, 3], params={"normalize": True},
        allow_unnormalized=True,
    )  # fmt: skip
    np.testing.assert_array_equal(run(plan, tmp_path / "o2")["w"], [1.25, 2.25, 1, 0])  # 1 + (d1 + 3 d2) / 4


def test_ties_top_k_sign_election_and_disjoint_mean(tmp_path):
    base = model(tmp_path / "base", w=[0] * 6, t=[1] * 6)
    # w: m1 keeps -4, 3, 2 (density 0.5 of 6 -> k = 3); m2 keeps -3, -2.5, 2.
    # sum = [3, 2, -3, -0.5, -4, 0] elects signs [+, +, -, -, -, +]; at index 3 m1's +2 disagrees and is
    # dropped; every surviving element has one agreeing model, so the disjoint mean is the element itself.
    # t (base 1): m2's magnitudes 1 at index 0 and 4 tie for its third place; the first in order is kept.
    # d1 = [3, 0, 0, 2, -4, 0], d2 = [1, 2, -3, 0, 0, 0]: index 0 has two agreeing (mean (3 + 1) / 2 = 2).
    m1 = model(tmp_path / "m1", w=[3, -1, 0.5, 2, -4, 0.1], t=[4, 0, 1.5, 3, -3, 1.1])
    m2 = model(tmp_path / "m2", w=[1, 2, -3, -2.5, -1, 0.2], t=[2, 3, -2, 0.5, 0, 1.2])
    config = f"""
merge_method: ties
base_model: {base}
models:
  - model: {base}
  - model: {m1}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {m2}
    parameters: {{weight: 1.0, density: 0.5}}
dtype: float32
"""
    out = run_config(tmp_path, config)
    np.testing.assert_array_equal(out["w"], [3, 2, -3, -2.5, -4, 0])
    np.testing.assert_array_equal(out["t"], [3, 3, -2, 3, -3, 1])  # base 1 + [2, 2, -3, 2, -4, 0]
    unnormalized = run_config(tmp_path, config + "parameters: {normalize: false}\n", name="sum")
    np.testing.assert_array_equal(unnormalized["t"], [5, 3, -2, 3, -3, 1])  # index 0: 1 + 3 + 1


def test_slerp_hand_values_and_colinear_fallback(tmp_path):
    a = model(tmp_path / "a", q=[1, 0], r=[2, 0], c=[1, 2])
    b = model(tmp_path / "b", q=[0, 1], r=[0, 1], c=[2, 4])  # c: colinear with a's, so lerp
    config = f"merge_method: slerp\nbase_model: {a}\nmodels:\n  - model: {a}\n  - model: {b}\nparameters: {{t: T}}\n"
    half = run_config(tmp_path, config.replace("T", "0.5"), name="half")
    h = math.sqrt(0.5)
    np.testing.assert_allclose(half["q"], [h, h], rtol=1e-6)  # 90 degrees apart: sin(45)/sin(90) each
    np.testing.assert_allclose(half["r"], [2 * h, h], rtol=1e-6)  # the angle is normalized, the sum is not
    np.testing.assert_array_equal(half["c"], [1.5, 3.0])
    quarter = run_config(tmp_path, config.replace("T", "0.25"), name="quarter")
    np.testing.assert_allclose(quarter["q"], [math.cos(math.pi / 8), math.sin(math.pi / 8)], rtol=1e-6)
    np.testing.assert_array_equal(quarter["c"], [1.25, 2.5])  # 0.75 a + 0.25 b
    ends = [run_config(tmp_path, config.replace("T", t), name=f"t{t}") for t in ("0", "1")]
    np.testing.assert_allclose(ends[0]["r"], [2, 0], atol=1e-7)
    np.testing.assert_allclose(ends[1]["r"], [0, 1], atol=1e-7)


def test_dare_linear_drops_and_l1_rescales(tmp_path):
    rng = np.random.default_rng(0)
    base_w = rng.standard_normal(20_000).astype(np.float32)
    delta = rng.standard_normal(20_000).astype(np.float32)
    base = model(tmp_path / "base", w=base_w)
    m1 = model(tmp_path / "m1", w=base_w + delta)
    plan = build_plan(
        [m1], method="dare_linear", base=base, weights=[1.0], params={"density": 0.3, "random_seed": 7}
    )
    out = run(plan, tmp_path / "out", chunk_elements=3000)["w"]  # 7 chunks, the last one short
    d = (base_w + delta).astype(np.float32) - base_w  # the task vector as stored
    kept = out != base_w
    assert 0.28 < kept.mean() < 0.32  # Bernoulli(0.3)
    factor = np.abs(d).sum(dtype=np.float64) / np.abs(d[kept]).sum(dtype=np.float64)  # mergekit's L1 rescale
    expected = np.where(kept, base_w + d * np.float32(factor), base_w)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    again = build_plan([m1], method="dare_linear", base=base, params={"density": 0.3, "random_seed": 7})
    np.testing.assert_array_equal(run(again, tmp_path / "again", chunk_elements=1 << 20, threads=1)["w"], out)
    other = build_plan([m1], method="dare_linear", base=base, params={"density": 0.3, "random_seed": 8})
    assert (run(other, tmp_path / "other", chunk_elements=3000)["w"] != out).any()


def test_dare_ties_consensus_on_the_seeded_mask(tmp_path):
    rng = np.random.default_rng(1)
    n = 5000
    base_w = np.zeros(n, np.float32)
    d1, d2 = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    base = model(tmp_path / "base", w=base_w)
    m1, m2 = model(tmp_path / "m1", w=d1), model(tmp_path / "m2", w=d2)
    params = {"density": 0.5, "random_seed": 3, "rescale": False}
    plan = build_plan([m1, m2], method="dare_ties", base=base, weights=[0.6, 0.4], params=params)
    out = run(plan, tmp_path / "out", chunk_elements=777)["w"]
    from merge_tool.methods.sparsify import name_key

    k1 = random_keep(3, name_key("w"), 0, 0, n, 0.5)
    k2 = random_keep(3, name_key("w"), 1, 0, n, 0.5)
    w1, w2 = np.float32(0.6) * d1 * k1, np.float32(0.4) * d2 * k2
    sign = np.where(w1 + w2 >= 0, 1, -1)
    a1, a2 = np.sign(w1) == sign, np.sign(w2) == sign
    np.testing.assert_allclose(out, w1 * a1 + w2 * a2, rtol=1e-6, atol=1e-7)  # normalize is off for dare_ties
    assert 0.45 < k1.mean() < 0.55 and (k1 != k2).any()


# ---------------------------------------------------------------- streaming matches in-memory references


def reference_ties(base, deltas, weights, densities):
    """TIES in memory: stable argsort top-k (ties to the lower index), sign election, disjoint mean."""
    kept = []
    for d, density in zip(deltas, densities, strict=True):
        k = max(1, int(density * d.size))
        order = np.argsort(-np.abs(d), kind="stable")[:k]
        mask = np.zeros(d.size, bool)
        mask[order] = True
        kept.append(d * mask)
    wd = [w * d for w, d in zip(weights, kept, strict=True)]
    sign = np.where(sum(wd) >= 0, 1, -1)
    agree = [np.sign(x) == sign for x in wd]
    mixed = sum(x * a for x, a in zip(wd, agree, strict=True))
    div = sum(np.float32(w) * a for w, a in zip(weights, agree, strict=True)).astype(np.float32)
    div[div == 0] = 1
    return base + mixed / div


def test_ties_streaming_equals_sorting_with_many_ties(tmp_path):
    rng = np.random.default_rng(2)
    base_w = rng.integers(-3, 4, 50_003).astype(np.float32)
    deltas = [rng.integers(-6, 7, 50_003).astype(np.float32) * 0.25 for _ in range(3)]  # heavy ties
    base = model(tmp_path / "base", w=base_w)
    models = [model(tmp_path / f"m{i}", w=base_w + d) for i, d in enumerate(deltas)]
    weights, densities = [0.5, 0.3, 0.2], [0.2, 0.55, 0.9]
    lines = [
        f"  - model: {m}\n    parameters: {{weight: {w}, density: {d}}}"
        for m, w, d in zip(models, weights, densities, strict=True)
    ]
    config = f"merge_method: ties\nbase_model: {base}\nmodels:\n" + "\n".join(lines) + "\n"
    out = run_config(tmp_path, config, chunk_elements=4099)["w"]
    np.testing.assert_allclose(out, reference_ties(base_w, deltas, weights, densities), rtol=1e-6, atol=1e-6)


def test_ties_on_a_tensor_large_enough_to_be_sampled_equals_sorting(tmp_path, caplog, monkeypatch):
    """Over 2 x SAMPLE_SPANS x SAMPLE_RUN elements the top-k is bracketed from a sample first; the kept
    elements (and so the bytes) are the sort's, for continuous deltas (the bracket holds) and for
    heavily tied ones (the bracket fails and the radix select takes over)."""
    from merge_tool.methods import sparsify
    from merge_tool.methods.sparsify import SAMPLE_RUN, SAMPLE_SPANS

    monkeypatch.setattr(sparsify, "CANDIDATES_MIN", 1000)  # hold at most n / 16 keys inside a bracket
    n = 2 * SAMPLE_SPANS * SAMPLE_RUN + 12_345
    rng = np.random.default_rng(5)
    base_w = rng.standard_normal(n).astype(np.float32)
    deltas = [
        (rng.standard_normal(n) * 0.01).astype(np.float32),
        rng.integers(-2, 3, n).astype(np.float32) * 0.5,  # five values: mass ties at any cut-off
    ]
    base = model(tmp_path / "base", w=base_w)
    models = [model(tmp_path / f"m{i}", w=base_w + d) for i, d in enumerate(deltas)]
    deltas = [load_file(m / "model.safetensors")["w"] - base_w for m in models]  # as stored
    config = f"merge_method: ties\nbase_model: {base}\nmodels:\n" + "".join(
        f"  - model: {m}\n    parameters: {{weight: {w}, density: 0.3}}\n"
        for m, w in zip(models, [0.6, 0.4], strict=True)
    )
    with caplog.at_level("DEBUG", logger="merge_tool.methods.sparsify"):
        out = run_config(tmp_path, config, chunk_elements=1 << 18)["w"]
    assert "bracket missed for models [1]" in caplog.text  # the tied model fell back; the other did not
    expected = reference_ties(base_w, deltas, [0.6, 0.4], [0.3, 0.3])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_slerp_streaming_equals_whole_tensor(tmp_path):
    rng = np.random.default_rng(3)
    a_w, b_w = (rng.standard_normal(30_000).astype(np.float32) for _ in range(2))
    a, b = model(tmp_path / "a", w=a_w), model(tmp_path / "b", w=b_w)
    out = run(build_plan([b], method="slerp", base=a, params={"t": 0.3}), tmp_path / "o", chunk_elements=999)[
        "w"
    ]
    a64, b64 = a_w.astype(np.float64), b_w.astype(np.float64)
    theta = math.acos(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    expected = (math.sin(0.7 * theta) * a64 + math.sin(0.3 * theta) * b64) / math.sin(theta)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the CLI, replay, the table


def test_cli_ties_and_replay_gives_the_same_bytes(tmp_path):
    rng = np.random.default_rng(4)
    base_w = rng.standard_normal(3000).astype(np.float32)
    base = model(tmp_path / "base", w=base_w, v=base_w[:10])
    m = [
        model(tmp_path / f"m{i}", w=base_w + rng.standard_normal(3000).astype(np.float32), v=base_w[:10] + i)
        for i in range(2)
    ]
    proc = cli(
        "--method", "dare_ties", "--base", str(base), "--models", str(m[0]), str(m[1]),
        "--param", "density=0.4", "--param", "random_seed=5", "--output", str(tmp_path / "first"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recorded = tmp_path / "first" / "merge_config.yaml"
    assert "merge_method: dare_ties" in recorded.read_text() and "random_seed: 5" in recorded.read_text()
    proc = cli(str(recorded), "--output", str(tmp_path / "replay"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    first, replay = (tmp_path / d / "model.safetensors" for d in ("first", "replay"))
    assert first.read_bytes() == replay.read_bytes()
    assert (tmp_path / "replay" / "merge_config.yaml").read_text() == recorded.read_text()


def test_every_table_method_records_a_replayable_config(tmp_path):
    base = model(tmp_path / "base", w=[0.5, -1, 2, 0])
    m1 = model(tmp_path / "m1", w=[1, -2, 2.5, 1])
    m2 = model(tmp_path / "m2", w=[0, 1, 1, -1])
    for name, method in METHODS.items():
        params = {"t": 0.4} if method.param("t") else {"density": 0.5} if method.param("density") else {}
        models = [m1] if method.max_models == 1 else [m1, m2]
        plan = build_plan(models, method=name, base=base if method.needs_base else None, params=params)
        out = run(plan, tmp_path / name)
        replayed = run(
            plan_spec(read_config(tmp_path / name / "merge_config.yaml")), tmp_path / f"{name}-replay"
        )
        np.testing.assert_array_equal(out["w"], replayed["w"], err_msg=name)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("merge_method: model_soup\nmodels: [A, B]\n", "unknown method 'model_soup'; use one of linear"),
        ("merge_method: ties\nmodels: [{model: A, parameters: {weight: 1}}]\n", "ties needs base_model"),
        (
            "merge_method: slerp\nbase_model: A\nmodels: [A, B]\nparameters: {t: 1.5}\n",
            "parameter 't' is 1.5, outside [0, 1]",
        ),
        ("merge_method: slerp\nbase_model: A\nmodels: [A, B]\nparameters: {t: -0.1}\n", "outside [0, 1]"),
        ("merge_method: slerp\nbase_model: A\nmodels: [A, B]\n", "slerp needs the parameter 't'"),
        (
            "merge_method: slerp\nbase_model: A\nmodels: [A, B, C]\nparameters: {t: 0.5}\n",
            "needs exactly 1 models besides the base model, got 2",
        ),
        (
            "merge_method: ties\nbase_model: A\nmodels: [{model: B, parameters: {weight: 1, density: [0.2, 0.8]}}]\n",
            "'density' is a list (a mergekit gradient",
        ),
        (
            "merge_method: ties\nbase_model: A\nmodels: [{model: B, parameters: {weight: 1, density: 0}}]\n",
            "'density' is 0, outside (0, 1]",
        ),
        (
            "merge_method: ties\nbase_model: A\nmodels: [{model: B, parameters: {weight: 1, densty: 0.5}}]\n",
            "ties has no parameter 'densty'",
        ),
        ("merge_method: ties\nbase_model: A\nmodels: [{model: B}]\n", "has no 'weight'"),
        (
            "merge_method: linear\nmodels: [{model: A, parameters: {weight: .nan}}, {model: B, parameters: {weight: 1}}]\n",
            "must be a finite number",
        ),
        (
            "merge_method: linear\nmodels: [{model: A, parameters: {weight: '0.5'}}, {model: B, parameters: {weight: 1}}]\n",
            "must be a number, got '0.5'",
        ),
        (
            "merge_method: slerp\nbase_model: A\nmodels: [{model: B, parameters: {t: 0.5}}]\n",
            "'t' is a global parameter of slerp",
        ),
        ("merge_method: linear\nslices: []\nmodels: [A, B]\n", "`slices` (layer slices"),
        (
            "merge_method: linear\nmodels: [A, B]\ntokenizer_source: union\n",
            "tokenizer_source 'union' is not supported",
        ),
        ("merge_method: linear\nmodels: [A, B]\nmerge_metod: x\n", "unknown keys ['merge_metod']"),
        ("- just a list\n", "a merge config is a mapping"),
        ("merge_method: [linear\n", "not valid YAML"),
        (
            "merge_method: linear\nmodels: [{model: A, parameters: {weight: 1}}, {model: A, parameters: {weight: 1}}]\n",
            "is the same folder as model",
        ),
        (
            "merge_method: linear\nmodels: [{model: A, parameters: {weight: 0}}, {model: B, parameters: {weight: 0}}]\n",
            "sum to 0, so they cannot be normalized",
        ),
    ],
)
def test_bad_configs_are_refused_by_name(tmp_path, config, message):
    for name in "ABC":
        model(tmp_path / name, w=[1.0, 2.0])
    path = tmp_path / "bad.yaml"
    path.write_text(
        config.replace("A", str(tmp_path / "A"))
        .replace("B", str(tmp_path / "B"))
        .replace("C,", f"{tmp_path / 'C'},")
        .replace("C]", f"{tmp_path / 'C'}]")
    )
    proc = cli(str(path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_ignored_and_base_parameters_are_noted(tmp_path):
    base = model(tmp_path / "base", w=[0, 0])
    m1 = model(tmp_path / "m1", w=[1, 2])
    path = tmp_path / "c.yaml"
    path.write_text(
        f"merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {base}\n    parameters: {{weight: 1}}\n"
        f"  - model: {m1}\n    parameters: {{weight: 1}}\nparameters: {{int8_mask: true}}\n"
    )
    proc = cli(str(path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "int8_mask' is ignored" in proc.stderr and "it is base_model" in proc.stderr


def test_cli_flags_cannot_be_mixed_with_a_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("merge_method: linear\nmodels: [a, b]\n")
    proc = cli(str(path), "--weights", "0.5", "0.5", "--output", str(tmp_path / "out"))
    assert proc.returncode == 2 and "--weights cannot be combined with a config file" in proc.stderr


def test_whole_tensor_method_refusal_messages_for_cli(tmp_path):
    a, b = model(tmp_path / "a", w=[1, 2]), model(tmp_path / "b", w=[2, 1])
    with pytest.raises(MergeError, match=r"--param: parameter 't' is 2, outside \[0, 1\]"):
        build_plan([b], method="slerp", base=a, params={"t": 2})
    with pytest.raises(MergeError, match="--scale is task arithmetic's lambda; slerp has no lambda"):
        build_plan([b], method="slerp", base=a, params={"t": 0.5}, scale=2.0)
    with pytest.raises(MergeError, match=r"--method slerp takes no --weights"):
        build_plan([b], method="slerp", base=a, params={"t": 0.5}, weights=[1.0])


# ---------------------------------------------------------------- Model Breadcrumbs (breadcrumbs, breadcrumbs_ties)

# w: 10 elements, base 1, density 0.5 and gamma 0.1 -> kept int(5.0) = 5, removed from the top int(1.0) = 1.
# d1 = [6, -1, 0.5, 4, -3, 2, 0.1, -6, 1.5, 0.2]: |6| at 0 and 7 tie for first, the earlier (0) is the outlier;
#   ranks 2-6 are indices 7, 3, 4, 5, 8 -> [0, 0, 0, 4, -3, 2, 0, -6, 1.5, 0].
# d2 = [-2, 3, 2, -4, 0.5, -1, 2.5, 0.25, -7, 2]: -7 (8) is the outlier; ranks 2-6 are 3, 1, 6, then of the three
#   2s (0, 2, 9) the first two -> [-2, 3, 2, -4, 0, 0, 2.5, 0, 0, 0].
# t: 4 elements -> kept 2, top int(0.4) = 0: plain top-2 (mergekit's slice [2:-0] would keep nothing).
#   d1 = [1, -4, 3, 2] -> [0, -4, 3, 0]; d2 = [2, 0, 0, -1] -> [2, 0, 0, -1].
BREAD_D1 = [6, -1, 0.5, 4, -3, 2, 0.1, -6, 1.5, 0.2]
BREAD_D2 = [-2, 3, 2, -4, 0.5, -1, 2.5, 0.25, -7, 2]


def breadcrumbs_models(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = model(tmp_path / "base", w=[1] * 10, t=[0] * 4)
    m1 = model(tmp_path / "m1", w=np.add(BREAD_D1, 1), t=[1, -4, 3, 2])
    m2 = model(tmp_path / "m2", w=np.add(BREAD_D2, 1), t=[2, 0, 0, -1])
    return base, m1, m2


def breadcrumbs_config(method: str, base: Path, m1: Path, m2: Path, extra: str = "") -> str:
    return f"""
merge_method: {method}
base_model: {base}
models:
  - model: {base}
  - model: {m1}
    parameters: {{weight: 1.0, density: 0.5, gamma: 0.1}}
  - model: {m2}
    parameters: {{weight: 0.5, density: 0.5, gamma: 0.1}}
dtype: float32
{extra}"""


def test_breadcrumbs_removes_outliers_and_smallest_then_sums(tmp_path):
    base, m1, m2 = breadcrumbs_models(tmp_path)
    config = breadcrumbs_config("breadcrumbs", base, m1, m2)
    out = run_config(tmp_path, config)  # normalize is off by default, as in mergekit
    # 1 + d1' + 0.5 d2' = 1 + [-1, 1.5, 1, 2, -3, 2, 1.25, -6, 1.5, 0]
    np.testing.assert_array_equal(out["w"], [0, 2.5, 2, 3, -2, 3, 2.25, -5, 2.5, 1])
    np.testing.assert_array_equal(out["t"], [1, -4, 3, -0.5])  # [0, -4, 3, 0] + 0.5 [2, 0, 0, -1]
    normalized = run_config(tmp_path, config + "parameters: {normalize: true, lambda: 3}\n", name="norm")
    np.testing.assert_allclose(normalized["w"], 1 + 3 * (out["w"] - 1) / 1.5, rtol=1e-6)  # / (1 + 0.5)


def test_breadcrumbs_ties_elects_signs_on_the_band(tmp_path):
    base, m1, m2 = breadcrumbs_models(tmp_path)
    config = breadcrumbs_config("breadcrumbs_ties", base, m1, m2)
    out = run_config(tmp_path, config)
    # w1 d1' = [0, 0, 0, 4, -3, 2, 0, -6, 1.5, 0], w2 d2' = [-1, 1.5, 1, -2, 0, 0, 1.25, 0, 0, 0]; the sum's sign
    # at index 3 is + (4 - 2), so m2's -2 is dropped; elsewhere at most one model is non-zero.
    np.testing.assert_array_equal(out["w"], [0, 2.5, 2, 5, -2, 3, 2.25, -5, 2.5, 1])
    normalized = run_config(tmp_path, config + "parameters: {normalize: true}\n", name="norm")
    # divided by the agreeing weights: 0.5 where only m2 agrees, 1 where only m1 does, 1 where none (index 9)
    np.testing.assert_array_equal(normalized["w"], [-1, 4, 3, 5, -2, 3, 3.5, -5, 2.5, 1])
    np.testing.assert_array_equal(normalized["t"], [2, -4, 3, -1])  # m2 alone at 0 and 3: (0.5 d2) / 0.5


def test_breadcrumbs_edge_counts(tmp_path):
    base, m1, m2 = breadcrumbs_models(tmp_path)
    # density 0.2 of t's 4 elements keeps int(0.8) = 0: nothing (as mergekit, no error). w keeps int(2.0) = 2
    # and removes int(0.6) = 0 outliers: the top 2 of d1 (6 at 0 and -6 at 7).
    plan = build_plan(
        [m1], method="breadcrumbs", base=base, weights=[1.0], params={"density": 0.2, "gamma": 0.06}
    )
    out = run(plan, tmp_path / "small")
    np.testing.assert_array_equal(out["t"], [0, 0, 0, 0])
    np.testing.assert_array_equal(out["w"], [7, 1, 1, 1, 1, 1, 1, -5, 1, 1])
    # density 1 keeps the task vector whole whatever gamma is (mergekit's `density >= 1: return tensor`)
    whole = build_plan([m1, m2], method="breadcrumbs", base=base, weights=[1, 0.5], params={"gamma": 0.5},
                       allow_unnormalized=True)  # fmt: skip
    arithmetic = build_plan(
        [m1, m2], method="task_arithmetic", base=base, weights=[1, 0.5], allow_unnormalized=True
    )
    np.testing.assert_array_equal(run(whole, tmp_path / "whole")["w"], run(arithmetic, tmp_path / "ta")["w"])
    # density + gamma = 1 exactly (0.7 + 0.3): the top 3 go, the other 7 stay
    edge = build_plan(
        [m1], method="breadcrumbs", base=base, weights=[1.0], params={"density": 0.7, "gamma": 0.3}
    )
    np.testing.assert_array_equal(
        run(edge, tmp_path / "edge")["w"], np.float32([1, 0, 1.5, 1, -2, 3, 1.1, 1, 2.5, 1.2])
    )


def reference_breadcrumbs(base, deltas, weights, densities, gammas, consensus, normalize, rescale, lambda_):
    """Breadcrumbs in memory: a stable argsort by magnitude, ranks [top, top + kept) kept, then mergekit's mix."""
    kept_deltas = []
    for d, density, gamma in zip(deltas, densities, gammas, strict=True):
        kept, top = int(density * d.size), int(gamma * d.size)
        top = min(top, d.size - kept)
        mask = np.zeros(d.size, bool)
        mask[np.argsort(-np.abs(d), kind="stable")[top : top + kept]] = True
        sparse = d * mask
        if rescale:
            before, after = np.abs(d).sum(dtype=np.float64), np.abs(sparse).sum(dtype=np.float64)
            sparse = sparse * np.float32(before / after)
        kept_deltas.append(sparse)
    wd = [np.float32(w) * d for w, d in zip(weights, kept_deltas, strict=True)]
    if consensus:
        sign = np.where(sum(wd) >= 0, 1, -1)
        agree = [np.sign(x) == sign for x in wd]
        mixed = sum(x * a for x, a in zip(wd, agree, strict=True))
        div = sum(np.float32(w) * a for w, a in zip(weights, agree, strict=True)).astype(np.float32)
        div[div == 0] = 1
    else:
        mixed, div = sum(wd), np.float32(sum(weights))
    return base + np.float32(lambda_) * (mixed / div if normalize else mixed)


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_breadcrumbs_streaming_equals_sorting_with_many_ties(tmp_path, method):
    rng = np.random.default_rng(5)
    n = 50_003
    base_w = rng.integers(-3, 4, n).astype(np.float32)
    deltas = [rng.integers(-6, 7, n).astype(np.float32) * 0.25 for _ in range(3)]  # 13 values: heavy ties
    base = model(tmp_path / "base", w=base_w)
    models = [model(tmp_path / f"m{i}", w=base_w + d) for i, d in enumerate(deltas)]
    weights, densities, gammas = [0.5, 0.3, 0.2], [0.2, 0.55, 0.7], [0.05, 0.3, 0.0]
    lines = [
        f"  - model: {m}\n    parameters: {{weight: {w}, density: {d}, gamma: {g}}}"
        for m, w, d, g in zip(models, weights, densities, gammas, strict=True)
    ]
    head = f"merge_method: {method}\nbase_model: {base}\nmodels:\n" + "\n".join(lines) + "\n"
    consensus = method == "breadcrumbs_ties"
    for name, normalize, rescale in (("plain", False, False), ("both", True, True)):
        config = (
            head
            + f"parameters: {{normalize: {str(normalize).lower()}, rescale: {str(rescale).lower()}, lambda: 0.7}}\n"
        )
        out = run_config(tmp_path, config, name=name, chunk_elements=4099)["w"]
        expected = reference_breadcrumbs(
            base_w, deltas, weights, densities, gammas, consensus, normalize, rescale, 0.7
        )
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_breadcrumbs_ties_without_outliers_is_ties(tmp_path):
    rng = np.random.default_rng(6)
    base_w = rng.standard_normal(9000).astype(np.float32)
    base = model(tmp_path / "base", w=base_w)
    models = [
        model(tmp_path / f"m{i}", w=base_w + rng.standard_normal(9000).astype(np.float32)) for i in range(2)
    ]
    common = {"density": 0.3, "normalize": True}
    ties = build_plan(models, method="ties", base=base, params=common)
    crumbs = build_plan(models, method="breadcrumbs_ties", base=base, params={**common, "gamma": 0.0})
    out = {
        name: run(plan, tmp_path / name, chunk_elements=700)["w"]
        for name, plan in (("t", ties), ("c", crumbs))
    }
    np.testing.assert_array_equal(out["t"], out["c"])


def test_breadcrumbs_mergekit_yaml_through_the_cli_and_replay(tmp_path):
    base, m1, m2 = breadcrumbs_models(tmp_path)
    path = tmp_path / "crumbs.yaml"
    path.write_text(
        breadcrumbs_config(
            "breadcrumbs_ties", base, m1, m2, "parameters: {normalize: true, int8_mask: true}\n"
        )
    )
    proc = python_m(
        str(path), "--output", str(tmp_path / "first"), "--no-progress"
    )  # the real python -m merge_tool
    assert proc.returncode == 0, proc.stderr
    assert (
        "int8_mask' is ignored" in proc.stderr
    )  # base_model listed among the models (no parameters) is fine
    first = load_file(tmp_path / "first" / "model.safetensors")
    np.testing.assert_array_equal(first["w"], [-1, 4, 3, 5, -2, 3, 3.5, -5, 2.5, 1])  # as hand-computed above
    recorded = tmp_path / "first" / "merge_config.yaml"
    text = recorded.read_text()
    assert "merge_method: breadcrumbs_ties" in text and "gamma: 0.1" in text and "rescale: false" in text
    proc = cli(str(recorded), "--output", str(tmp_path / "replay"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "first" / "model.safetensors").read_bytes() == (
        tmp_path / "replay" / "model.safetensors"
    ).read_bytes()
    assert (tmp_path / "replay" / "merge_config.yaml").read_text() == text
    # the same merge from flags: --method breadcrumbs_ties with per-model values given for every model
    proc = cli(
        "--method", "breadcrumbs", "--base", str(base), "--models", str(m1), str(m2), "--weights", "1", "0.5",
        "--allow-unnormalized", "--param", "density=0.5", "--param", "gamma=0.1", "--output", str(tmp_path / "flags"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    flags = load_file(tmp_path / "flags" / "model.safetensors")
    np.testing.assert_array_equal(flags["w"], [0, 2.5, 2, 3, -2, 3, 2.25, -5, 2.5, 1])


@pytest.mark.parametrize(
    ("params", "glob", "message"),
    [
        (
            "{weight: 1, density: 0.95, gamma: 0.1}",
            "",
            "model 1 of 1 (in order, base_model excluded): parameter "
            "'gamma' is 0.1 with 'density' 0.95; density + gamma must be at most 1",
        ),
        (
            "{weight: 1, density: 0.9}",
            "parameters: {gamma: 0.2}",
            "parameter 'gamma' is 0.2 with 'density' 0.9",
        ),
        ("{weight: 1, density: 0.5, gamma: -0.1}", "", "parameter 'gamma' is -0.1, outside [0, 1]"),
        ("{weight: 1, density: 0.5, gamma: 1.5}", "", "parameter 'gamma' is 1.5, outside [0, 1]"),
        ("{weight: 1, density: 0, gamma: 0.1}", "", "parameter 'density' is 0, outside (0, 1]"),
        ("{weight: 1, density: 1.2}", "", "parameter 'density' is 1.2, outside (0, 1]"),
        ("{weight: 1, density: 0.5, gamma: [0.1, 0.2]}", "", "'gamma' is a list (a mergekit gradient"),
        ("{weight: 1, density: 0.5, gamma: .nan}", "", "'gamma' must be a finite number"),
        ("{weight: 1, density: 0.5, gama: 0.1}", "", "breadcrumbs has no parameter 'gama'"),
        ("{density: 0.5}", "", "has no 'weight'"),
        ("{weight: 1}", "parameters: {normalize: 1}", "parameter 'normalize' must be true or false"),
    ],
)
def test_breadcrumbs_bad_parameters_are_refused_by_name(tmp_path, params, glob, message):
    base, m1 = model(tmp_path / "A", w=[1.0, 2.0]), model(tmp_path / "B", w=[2.0, 1.0])
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"merge_method: breadcrumbs\nbase_model: {base}\nmodels:\n  - model: {m1}\n    parameters: {params}\n{glob}\n"
    )
    proc = cli(str(path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_breadcrumbs_ties_refusal_names_the_model_from_the_cli(tmp_path):
    a, b, c = (model(tmp_path / n, w=[1.0, 2.0]) for n in "abc")
    proc = cli(
        "--method", "breadcrumbs_ties", "--base", str(a), "--models", str(b), str(c),
        "--param", "density=0.8", "--param", "gamma=0.25", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        "breadcrumbs_ties: model 1 of 2" in proc.stderr and "density + gamma must be at most 1" in proc.stderr
    )
    assert not (tmp_path / "out").exists()
