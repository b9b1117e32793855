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
from merge_tool.dtypes import BF16, widen
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
    "dare_ties_no_rescale_normalize": "merge_method: dare_ties\nparameters: {{density: 0.6, rescale: false, normalize: true}}",
    "dare_linear": "merge_method: dare_linear\nparameters: {{density: 0.3, random_seed: 5, lambda: 1.3}}",
    "dare_ties_per_model_density": "merge_method: dare_ties\nparameters: {{random_seed: 8}}",
}
# per-model parameters; density 1.0: model 2's task vector is kept whole (no mask, no factor)
PER_MODEL = {"dare_ties_per_model_density": (", density: 0.5", ", density: 1.0", ", density: 0.2")}
ODD_CHUNK = 3 * pipeline.BLOCK // 2 + 7  # chunks, blocks and DARE's 65,536-element tiles out of step
WEIGHTS = (0.5, -0.3, 0.8)


def merge(
    models: list[Path], method: str, out: Path, compiled: bool, monkeypatch, chunk: int = 1 << 17
) -> bytes:
    base, *tuned = models
    text = CONFIGS[method].format() + f"\nbase_model: {base}\ndtype: bfloat16\nmodels:\n"
    extra = PER_MODEL.get(method, ("", "", ""))
    text += "".join(
        f"  - model: {m}\n    parameters: {{weight: {w}{e}}}\n"
        for m, w, e in zip(tuned, WEIGHTS, extra, strict=True)
    )
    config = out.with_suffix(".yaml")
    config.write_text(text)
    with monkeypatch.context() as patch:
        if not compiled:
            patch.setattr(pipeline, "_raw_bf16", lambda plan, name: False)
        plan = plan_spec(read_config(config))
        try:
            run_merge(plan, out, progress=False, chunk_elements=chunk, threads=2, force=True)
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


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_with_chunks_out_of_step_with_its_tiles(models, method, tmp_path, monkeypatch):
    """Chunks that start inside a tile and in the middle of a word: the compiled mask jumps ahead in the
    stream, and the L1 sums follow the numpy path's blocks."""
    compiled = merge(models, method, tmp_path / "compiled", True, monkeypatch, chunk=ODD_CHUNK)
    assert compiled == merge(models, method, tmp_path / "numpy", False, monkeypatch, chunk=ODD_CHUNK)


@pytest.mark.parametrize(
    "method, kernels", [("ties", ("combine", "gather")), ("dare_ties", ("combine", "random_keep", "l1_sums"))]
)
def test_the_compiled_path_is_taken_for_bf16(models, method, kernels, tmp_path, monkeypatch):
    """Not vacuous: the fused kernels run for these bf16 models (and the numpy path does not)."""
    calls = dict.fromkeys(kernels, 0)
    for name in calls:
        real = getattr(fused, name)

        def counted(*args, real=real, name=name):
            calls[name] += 1
            return real(*args)

        monkeypatch.setattr(fused, name, counted)
    merge(models, method, tmp_path / "compiled", True, monkeypatch)
    assert all(calls.values()), calls
    calls.update(dict.fromkeys(kernels, 0))
    merge(models, method, tmp_path / "numpy", False, monkeypatch)
    assert not any(calls.values()), calls


def test_dare_mask_is_numpys_pcg64_stream_from_any_start():
    """fused.random_keep against sparsify.random_keep (numpy's own generator), starts in mid-tile and
    mid-word, spans across tiles, densities at the edges."""
    rng = np.random.default_rng(5)
    numel = 3 * sparsify.TILE + 1001
    name = sparsify.name_key("model.layers.0.mlp.up_proj.weight")
    states = sparsify.random_states(11, name, 2, range(-(-numel // sparsify.TILE)))
    for density in (0.5, 0.07, 0.999999999, 1e-9):
        for _ in range(25):
            start = int(rng.integers(0, numel))
            n = int(rng.integers(1, numel - start + 1))
            keep = np.empty(n, np.uint8)
            fused.random_keep(states, sparsify.keep_limit(density), start, keep)
            expected = sparsify.random_keep(11, name, 2, start, n, density)
            assert np.array_equal(keep.view(bool), expected), (density, start, n)


@pytest.mark.parametrize("n", [1, 7, 8191, 8193, 65536, 2 * 65536 + 77, 140_001])
def test_dare_l1_sums_are_the_numpy_passs_float64_bits(n):
    """fused.l1_sums (|d| and the compaction compiled, the sums numpy's) against the numpy pass's per-block
    np.abs(d).sum(dtype=np.float64) and np.abs(d[keep]).sum(...), on log-normal magnitudes (a sigma of 11
    binades, where another block partition or order of the rows gives other bits)."""
    rng = np.random.default_rng(n)
    wide = (rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 8)).astype(np.float32)
    x, base = bf16(wide).view(torch.uint16).numpy(), bf16(wide * 0.25).view(torch.uint16).numpy()
    keep = (rng.random(n) < 0.3).astype(np.uint8)
    block = 65536
    expected = None
    for s in range(0, n, block):
        t = min(block, n - s)
        delta, widened_base = np.empty(t, np.float32), np.empty(t, np.float32)
        widen(x[s : s + t], BF16, delta)
        widen(base[s : s + t], BF16, widened_base)
        delta -= widened_base
        row = np.array(
            [
                np.abs(delta).sum(dtype=np.float64),
                np.abs(delta[keep[s : s + block] == 1]).sum(dtype=np.float64),
            ]
        )
        expected = row if expected is None else expected + row
    assert fused.l1_sums(x, base, keep, block).tobytes() == expected.tobytes()
