"""The compiled bf16 path of the task-vector merges gives the numpy path's bytes, on hostile values.

Why: `merge_tool/methods/fused.py` promises the same bytes as the numpy kernels (which the method
tests check against references), only faster. Both paths are real: the numpy one is what runs for every
other dtype, and it is forced here by making the pipeline see the tensors as not bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from merge_tool import pipeline, run_merge
from merge_tool.config import read_config
from merge_tool.methods import fused, sparsify
from merge_tool.methods.sparsify import SAMPLE_RUN, SAMPLE_SPANS
from merge_tool.plan import plan_spec

ARCH = {"architectures": ["TinyForCausalLM"], "model_type": "tiny", "dtype": "bfloat16"}
SAMPLED = 2 * SAMPLE_SPANS * SAMPLE_RUN + 4_321  # large enough for the sampled top-k bracket


def bf16(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(torch.bfloat16)


def hostile(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal values with NaN, infinities, signed zeros, denormals and bf16-rounding edge cases mixed in."""
    x = rng.standard_normal(n).astype(np.float32) * 0.02
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3e38, -3e38], np.float32)
    at = rng.choice(n, size=n // 50, replace=False)
    x[at] = rng.choice(specials, size=len(at))
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """A base and three fine-tunes: continuous deltas, heavily tied ones (five values), and hostile ones."""
    root = tmp_path_factory.mktemp("fused_models")
    rng = np.random.default_rng(11)
    base = {
        "big": hostile(rng, SAMPLED),
        "tied": np.zeros(SAMPLED, np.float32),  # model 1's deltas here are five exact values: mass ties
        "mid": rng.standard_normal((301, 257)).astype(np.float32) * 0.02,
        "small": rng.standard_normal(1000).astype(np.float32),
        "scalar": np.float32(0.5).reshape(()),
        "empty": np.zeros((0, 4), np.float32),
    }
    tuned = [
        {k: v + (rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for k, v in base.items()},
        {k: v + rng.integers(-2, 3, v.shape).astype(np.float32) * 2.0**-8 for k, v in base.items()},
        {k: hostile(rng, v.size).reshape(v.shape) if v.size > 1 else v for k, v in base.items()},
    ]
    folders = []
    for name, tensors in [("base", base), *((f"m{i}", t) for i, t in enumerate(tuned))]:
        folder = root / name
        folder.mkdir()
        save_file({k: bf16(v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(ARCH))
        folders.append(folder)
    return folders


CONFIGS = {
    "ties": "merge_method: ties\nparameters: {{density: 0.3}}",
    "ties_negative_no_normalize_lambda": "merge_method: ties\nparameters: {{density: 0.6, normalize: false, lambda: 1.7}}",
    "ties_rescale": "merge_method: ties\nparameters: {{density: 0.4, rescale: true}}",
    "task_arithmetic": "merge_method: task_arithmetic\nparameters: {{lambda: 0.9}}",
    "task_arithmetic_normalize": "merge_method: task_arithmetic\nparameters: {{normalize: true}}",
    "breadcrumbs": "merge_method: breadcrumbs\nparameters: {{density: 0.5, gamma: 0.05}}",
    "breadcrumbs_ties": "merge_method: breadcrumbs_ties\nparameters: {{density: 0.7, gamma: 0.1, normalize: true}}",
    "dare_ties": "merge_method: dare_ties\nparameters: {{density: 0.5, random_seed: 3}}",
}
WEIGHTS = (0.5, -0.3, 0.8)


def merge(models: list[Path], method: str, out: Path, compiled: bool, monkeypatch) -> bytes:
    base, *tuned = models
    text = CONFIGS[method].format() + f"\nbase_model: {base}\ndtype: bfloat16\nmodels:\n"
    text += "".join(
        f"  - model: {m}\n    parameters: {{weight: {w}}}\n" for m, w in zip(tuned, WEIGHTS, strict=True)
    )
    config = out.with_suffix(".yaml")
    config.write_text(text)
    with monkeypatch.context() as patch:
        if not compiled:
            patch.setattr(pipeline, "_raw_bf16", lambda plan, name: False)
        plan = plan_spec(read_config(config))
        try:
            run_merge(plan, out, progress=False, chunk_elements=1 << 17, threads=2, force=True)
        finally:
            plan.close()
    return (out / "model.safetensors").read_bytes()


@pytest.mark.parametrize("method", CONFIGS)
def test_the_compiled_path_writes_the_numpy_paths_bytes(models, method, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sparsify, "CANDIDATES_MIN", 1000)  # a bracket holds at most numel / 16 keys
    with caplog.at_level("DEBUG", logger="merge_tool.methods.sparsify"):
        compiled = merge(models, method, tmp_path / "compiled", True, monkeypatch)
    reference = merge(models, method, tmp_path / "numpy", False, monkeypatch)
    assert compiled == reference
    if method == "ties":  # not vacuous: the tied tensor's bracket overflowed, and its merge went to numpy
        assert "tied: top-k bracket missed for models [1]" in caplog.text


def test_the_compiled_path_is_taken_for_bf16(models, tmp_path, monkeypatch):
    """Not vacuous: the fused kernels run for these bf16 models (and the numpy path does not)."""
    calls = {"combine": 0, "gather": 0}
    for name in calls:
        real = getattr(fused, name)

        def counted(*args, real=real, name=name):
            calls[name] += 1
            return real(*args)

        monkeypatch.setattr(fused, name, counted)
    merge(models, "ties", tmp_path / "compiled", True, monkeypatch)
    assert calls["combine"] > 0 and calls["gather"] > 0
    calls.update(combine=0, gather=0)
    merge(models, "ties", tmp_path / "numpy", False, monkeypatch)
    assert calls == {"combine": 0, "gather": 0}
