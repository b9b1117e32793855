"""merge_tool's cases from issue 16: hostile headers, indexes, weights, paths and signals.

Each case is a regression test: the input is refused with a one-line error that
names the file and tensor (no traceback, exit 1, nothing written), or, where a
merge may go on, it goes on and says what it did. Headers are written by hand
(raw bytes), since the safetensors library refuses to write them.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.conftest import REPO, default_signals
from tests.test_merge_tool import cli

ARCH = {"architectures": ["TinyForCausalLM"], "model_type": "tiny"}


def model(folder: Path, **tensors) -> Path:
    folder.mkdir(parents=True)
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(ARCH))
    return folder


def raw_model(folder: Path, header: dict | str, data: bytes) -> Path:
    """A model folder whose model.safetensors has exactly this header (JSON text or object) and data."""
    folder.mkdir(parents=True)
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    (folder / "config.json").write_text(json.dumps(ARCH))
    return folder


def refused(tmp_path: Path, *args: str) -> str:
    before = {p.name for p in tmp_path.iterdir()}
    proc = cli(*args, "--output", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted({p.name for p in tmp_path.iterdir()} - before) == []
    return proc.stderr


W = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
GOOD_DATA = struct.pack("<2f", 1.0, 2.0)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": {**W, "dtype": ["F32"]}}, GOOD_DATA, "tensor 'w' has dtype ['F32'], not a dtype name"),
        ({"__metadata__": ["format", "pt"], "w": W}, GOOD_DATA, "__metadata__ must be an object of strings"),
        ({"__metadata__": "pt", "w": W}, GOOD_DATA, "__metadata__ must be an object of strings"),
        ({"__metadata__": {"format": 1}, "w": W}, GOOD_DATA, "__metadata__ must be an object of strings"),
        ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1e999]}}', GOOD_DATA, "has data_offsets [0, inf]"),
        ('{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 8]}}', GOOD_DATA, "has shape [inf]"),
        ({"w": {**W, "shape": [2.5]}}, GOOD_DATA, "tensor 'w' has shape [2.5]; a shape is a list of"),
        ({"w": {**W, "shape": [-2]}}, GOOD_DATA, "tensor 'w' has shape [-2]"),
        ({"w": {**W, "shape": [True, 2]}}, GOOD_DATA, "tensor 'w' has shape [True, 2]"),
        ({"w": {**W, "data_offsets": [0, 8, 9]}}, GOOD_DATA, "they are two non-negative integers"),
        ({"w": "F32"}, GOOD_DATA, "tensor 'w' has a malformed header entry"),
        (
            {"w": {**W, "data_offsets": [0, 8]}, "v": {**W, "data_offsets": [12, 20]}},
            GOOD_DATA + b"\0" * 4 + GOOD_DATA,
            "4 unused bytes after tensor 'w' (before 'v')",
        ),
        ({"w": {**W, "data_offsets": [4, 12]}}, b"\0" * 4 + GOOD_DATA, "4 unused bytes before the first tensor"),
        ({"w": W}, GOOD_DATA + b"junk", "4 bytes after the last tensor"),
        ('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, ' + "9" * 5000 + "]}}", GOOD_DATA, "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, b"", "nested too deeply"),
        ({"w": {**W, "dtype": "F8_E4M3", "shape": [8]}}, GOOD_DATA, "float8_e4m3fn, which merge_tool does not merge"),
    ],
    ids=[
        "dtype-list", "metadata-list", "metadata-string", "metadata-int-value", "offsets-1e999", "shape-1e999",
        "shape-float", "shape-negative", "shape-bool", "offsets-three", "entry-string", "gap-between",
        "gap-before", "trailing-bytes", "5000-digit-offset", "deep-nesting", "float8",
    ],
)  # fmt: skip
def test_hostile_safetensors_headers_are_refused_by_file_and_tensor(tmp_path, header, data, message):
    good = model(tmp_path / "good", w=[1.0, 2.0])
    bad = raw_model(tmp_path / "bad", header, data)
    err = refused(tmp_path, "--models", str(good), str(bad))
    assert f"{bad / 'model.safetensors'}: " in err and message in err, err


def test_good_raw_header_is_accepted(tmp_path):
    """Control for the cases above: the same hand-written layout, well-formed, merges."""
    good = model(tmp_path / "good", w=[1.0, 2.0])
    other = raw_model(
        tmp_path / "raw", {"__metadata__": {"format": "pt"}, "w": W}, struct.pack("<2f", 3.0, 4.0)
    )
    proc = cli("--models", str(good), str(other), "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(load_file(tmp_path / "out" / "model.safetensors")["w"], [2.0, 3.0])


@pytest.mark.parametrize(
    "value", [5, None, ["model.safetensors"], "/etc/passwd", "../other/model.safetensors"]
)
def test_index_whose_weight_map_value_is_not_a_shard_name(tmp_path, value):
    good = model(tmp_path / "good", w=[1.0, 2.0])
    bad = model(tmp_path / "bad", w=[1.0, 2.0])
    (bad / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": value}}))
    err = refused(tmp_path, "--models", str(good), str(bad))
    assert "weight_map puts tensor 'w' in" in err and "not a shard file name" in err


def test_config_json_that_is_not_an_object(tmp_path):
    good = model(tmp_path / "good", w=[1.0, 2.0])
    bad = model(tmp_path / "bad", w=[1.0, 2.0])
    (bad / "config.json").write_text("[1, 2]")
    assert f"{bad / 'config.json'}: a model config is a JSON object, got list" in refused(
        tmp_path, "--models", str(good), str(bad)
    )


def test_negative_weights_summing_to_one(tmp_path):
    """linear: refused (an average with a negative weight extrapolates); task vectors: allowed, with a note."""
    a, b = model(tmp_path / "a", w=[1.0, 2.0]), model(tmp_path / "b", w=[3.0, 5.0])
    err = refused(tmp_path, "--models", str(a), str(b), "--weights", "1.5", "-0.5")
    assert f"negative weight -0.5 for {b}: linear averages models" in err and "task_arithmetic" in err
    base = model(tmp_path / "base", w=[0.0, 0.0])
    proc = cli(
        "--method", "task_arithmetic", "--base", str(base), "--models", str(a), str(b),
        "--weights", "1.5", "-0.5", "--output", str(tmp_path / "ta"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        f"note: negative weight -0.5 for {b}: a negative weight subtracts that model's task vector"
        in proc.stderr
    )
    np.testing.assert_array_equal(load_file(tmp_path / "ta" / "model.safetensors")["w"], [0.0, 0.5])


def test_same_model_twice_is_refused_after_resolving_links(tmp_path):
    a, b = model(tmp_path / "a", w=[1.0, 2.0]), model(tmp_path / "b", w=[3.0, 5.0])
    (tmp_path / "link").symlink_to(a)
    err = refused(tmp_path, "--models", str(a), str(b), str(tmp_path / "link"))
    assert f"model {tmp_path / 'link'} is the same folder as model {a}" in err
    err = refused(tmp_path, "--method", "ties", "--base", str(tmp_path / "link"), "--models", str(a), str(b))
    assert f"model {a} is the same folder as --base {tmp_path / 'link'}" in err


def test_output_inside_an_input_folder_is_refused(tmp_path):
    a, b = model(tmp_path / "a", w=[1.0, 2.0]), model(tmp_path / "b", w=[3.0, 5.0])
    proc = cli("--models", str(a), str(b), "--output", str(b / "merged"))
    assert proc.returncode == 1 and f"--output {b / 'merged'} is inside input model {b}" in proc.stderr
    assert sorted(p.name for p in b.iterdir()) == ["config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two 96 MB models (24 tensors, twelve 8 MB shards to merge), written once for the three signals."""
    root = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    big = {f"w{i}": rng.standard_normal(1 << 20).astype(np.float32) for i in range(24)}
    return model(root / "a", **big), model(root / "b", **{k: v + 1 for k, v in big.items()})


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_merge_leaves_no_temporary_folder(tmp_path, signum, big_pair):
    a, b = big_pair
    before = {p.name for p in tmp_path.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [
        "--models",
        str(a),
        str(b),
        "--output",
        str(tmp_path / "out"),
        "--max-shard-size",
        "8MB",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "merge_tool", *args],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    deadline, seen = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None and seen is None:
        temps = [p for p in tmp_path.glob(".out.*.tmp") if any(p.glob("model-*.safetensors"))]
        seen = temps[0] if temps else None
        time.sleep(0.002)
    assert seen is not None, "the merge finished (or failed) before it could be interrupted"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum), stderr
    assert "nothing was written" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()
    assert sorted({p.name for p in tmp_path.iterdir()} - before) == []


# Runs merge_tool's main with a profile hook that raises the signal the instant a lock inside
# ThreadPoolExecutor.submit is taken: the moment a signal's exception used to leave that lock held.
_WORST_MOMENT = """
import signal, sys
from merge_tool.__main__ import main

signum, seen = int(sys.argv[1]), [0]

def hook(frame, event, arg):
    if event == "c_return" and getattr(arg, "__name__", "") == "__enter__" and frame.f_code.co_name == "__enter__":
        caller = frame.f_back
        if caller is not None and caller.f_code.co_name == "acquire" and caller.f_back.f_code.co_name == "_adjust_thread_count":
            seen[0] += 1
            if seen[0] == 3:
                sys.setprofile(None)
                signal.raise_signal(signum)

sys.setprofile(hook)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_the_instant_the_pool_takes_a_lock_still_stops_the_merge(tmp_path, signum, big_pair):
    a, b = big_pair
    args = ["--models", str(a), str(b), "--output", str(tmp_path / "out"), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORST_MOMENT, str(int(signum)), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the merge hung after {signal.Signals(signum).name} (a lock left held by the signal)")
    assert proc.returncode == 128 + signum, stderr
    assert "nothing was written" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
