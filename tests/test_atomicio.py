"""atomicio: distinct paths, file modes under the umask, and signals that leave no temporary file.

Issue 16: every file written through atomic_file was mode 0600; SIGTERM/SIGHUP during a
conversion left `.OUT.XXXX.tmp` files; `--report` equal to `--output` replaced the dataset.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.atomicio import (
    Interrupted,
    SamePathError,
    atomic_dir,
    atomic_file,
    atomic_write_text,
    ensure_distinct_paths,
)
from tests.conftest import default_signals

REPO = Path(__file__).resolve().parents[1]


def test_distinct_paths_names_both_flags_and_sees_through_links(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("[]", encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(data)
    hard = tmp_path / "hard.json"
    os.link(data, hard)
    for other in (data, link, hard, tmp_path / "sub" / ".." / "data.json"):
        with pytest.raises(SamePathError, match=r"--input and --report are the same file"):
            ensure_distinct_paths(
                {"--input": [tmp_path / "a.json", data], "--output": None, "--report": other}
            )
    with pytest.raises(SamePathError, match="--input is given twice"):
        ensure_distinct_paths({"--input": [data, link]})
    ensure_distinct_paths({"--input": data, "--output": tmp_path / "out.json", "--report": None})  # fine
    with pytest.raises(SamePathError, match="not a usable path"):
        ensure_distinct_paths({"--output": "a\x00b"})


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_file(tmp_path / "b.bin", "wb") as handle:
            handle.write(b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_interrupted_unwinds_and_removes_the_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(Interrupted) as err, atomic_file(target) as handle:
        handle.write("half")
        raise Interrupted(signal.SIGTERM)
    assert err.value.code == 128 + signal.SIGTERM and "SIGTERM" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def _big_mgrounding(root: Path, n: int) -> Path:
    image = root / "MGrounding-630k" / "a.jpg"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"not checked")
    record = {
        "id": "r",
        "images": ["./MGrounding-630k/a.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nWhere is it? " + "pad " * 40},
            {"from": "gpt", "value": "<|box_start|>(1,2),(30,40)<|box_end|>"},
        ],
    }
    path = root / "big.json"
    head, tail = json.dumps(record).split('"id": "r"')  # one encoding, n ids
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        handle.write(",\n".join(f'{head}"id": "r{i}"{tail}' for i in range(n)))
        handle.write("\n]\n")
    return path


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """150,000 records (enough to be mid-way when the signal lands), written once for the three signals."""
    return _big_mgrounding(tmp_path_factory.mktemp("big"), 150_000)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_a_conversion_leaves_no_temporary_file(tmp_path, signum, big_input):
    big = big_input
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "converters",
        "mgrounding",
        "--input",
        str(big),
        "--image-root",
        str(big.parent),
    ]
    cmd += ["--output", str(out_dir / "o.json"), "--report", str(out_dir / "r.json")]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None, "the conversion ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0, stderr
    if signum != signal.SIGINT:
        assert proc.returncode == 128 + signum, stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [], stderr  # nothing half-written, nothing left


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_an_interrupt_the_moment_the_temporary_sibling_exists_leaves_nothing(tmp_path, monkeypatch, kind):
    """The window a SIGINT handled in a pool's thread hit (a CI run left `.o.json.*.tmp`): KeyboardInterrupt
    right after the OS made the temporary file or folder, before its name reached the cleanup."""
    call = "open" if kind == "file" else "mkdir"
    real = getattr(os, call)

    def made_then_interrupted(name, *args, **kwargs):
        out = real(name, *args, **kwargs)  # an existing parent's FileExistsError passes through
        if str(name).endswith(".tmp"):
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(os, call, made_then_interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_file(out) if kind == "file" else atomic_dir(out):
        pass
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_grid_conversion_refuses_overflow_with_value_error():
    """1e306 * 1000 overflows to infinity: a ValueError naming the value, not an OverflowError."""
    from core import grounding

    for value, size in ((1e306, 10.0), (float("nan"), 10.0), (5.0, 0.0), (5.0, float("inf"))):
        with pytest.raises(ValueError, match="cannot put coordinate"):
            grounding.to_grid(value, size)
    assert grounding.to_grid(0.5, 1000.0) == 1 and grounding.to_grid(2.5, 1000.0) == 3  # half up
