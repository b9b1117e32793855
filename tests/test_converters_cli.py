"""`python -m converters` exits with cli.py's codes and its one error style.

0 ok, 1 bad input (nothing partial kept), 2 usage (argparse), 3 partial result (some steps'
outputs kept), 130 Ctrl-C; errors read `python -m converters: error: ...`, library progress
`converters: ...` on stderr. Run as real processes where the exit status itself is the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converters.__main__ import main
from core.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE
from tests.conftest import default_signals

REPO = Path(__file__).resolve().parents[1]
FIXTURE_ROOT = REPO / "tests" / "fixtures" / "converters" / "data_root"


def converters(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converters", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        **kwargs,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["all"], "python -m converters all: error: the following arguments are required: --data-root"),
        (["nope"], "python -m converters: error: argument command: invalid choice: 'nope'"),
        (
            ["mgrounding", "--input", "a", "--image-root", "b", "--output", "c", "--max-reject-rate", "2"],
            "must be between 0 and 1",
        ),
        (["mix", "--sharegpt-dir", "s", "--output-dir", "o", "--mixture-prefix", "../up"], "letters, digits"),
        (["all", "--data-root", "r", "--output-dir", "o", "--stage1-total", "-5"], "must be 0 or more"),
    ],
)
def test_usage_errors_exit_2(args, message):
    proc = converters(*args)
    assert proc.returncode == EXIT_USAGE and message in proc.stderr, proc.stderr


def test_bad_input_exits_1_with_the_shared_prefix(tmp_path, capsys):
    assert main(["all", "--data-root", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "o")]) == 1
    assert f"python -m converters: error: --data-root {tmp_path / 'missing'} is not a folder" in (
        capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    assert main(["all", "--data-root", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "python -m converters: error: no known source under" in err
    assert "converters: note: skipped mg_common:" in err  # the library's log lines, with their own prefix
    assert not (tmp_path / "o").exists()

    stale = tmp_path / "dataset_info.json"
    stale.write_text("{}\n")
    assert main(["registry", "--output", str(stale), "--check"]) == EXIT_BAD_INPUT
    assert "is out of date; regenerate it with `python -m converters registry --force`" in (
        capsys.readouterr().err
    )


def test_a_run_that_keeps_some_steps_exits_3_and_all_failed_exits_1(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "Groma-Instruct").mkdir(parents=True)
    (root / "Groma-Instruct" / "groma_instruct.json").write_text("{ torn")
    common = root / "MGrounding-630k" / "Common_Object"
    common.mkdir(parents=True)
    src = FIXTURE_ROOT / "MGrounding-630k" / "Common_Object" / "common_train_70k.json"
    (common / "common_train_70k.json").write_bytes(src.read_bytes())
    argv = ["all", "--data-root", str(root), "--output-dir", str(tmp_path / "out"), "--max-reject-rate", "1"]
    # mg_common's images are not under this root: its records are rejected, but it is written (rate 1)
    assert main(argv) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "converters: error: groma_instruct:" in err and "not mixing; failed step(s): groma_instruct" in err
    assert json.loads((tmp_path / "out" / "dataset_info.json").read_text())["mg_common"]

    (common / "common_train_70k.json").unlink()
    assert main([*argv[:-4], "--output-dir", str(tmp_path / "out2")]) == EXIT_BAD_INPUT  # nothing kept
    assert "failed step(s): groma_instruct" in capsys.readouterr().err


def test_ctrl_c_exits_130_and_leaves_no_temporary_file(tmp_path):
    src = tmp_path / "big.json"
    record = {
        "id": "x",
        "images": [],
        "conversations": [{"from": "human", "value": "q " * 40}, {"from": "gpt", "value": "a " * 40}],
    }
    head, tail = json.dumps(record).split('"id": "x"')  # one encoding, many ids
    with open(src, "w", encoding="utf-8") as handle:  # enough records to be mid-way when the signal lands
        handle.write("[\n" + ",\n".join(f'{head}"id": "r{i}"{tail}' for i in range(300_000)) + "\n]\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "converters",
            "m4-instruct",
            "--input",
            str(src),
            "--output",
            str(out / "o.json"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    deadline = time.time() + 60
    while not any(p.name.endswith(".tmp") for p in out.iterdir()) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "python -m converters: error: interrupted" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
