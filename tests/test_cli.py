"""The command lines as one family: cli.py's exit codes and error prefix, the packaging, `make test-unit`.

The packaging checks read the metadata setuptools itself builds from pyproject.toml (in a copy of the
tree, so nothing is written here), then run each console script through the same wrapper pip writes.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import import_module
from importlib.metadata import PathDistribution
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from core import cli
from tests.conftest import REPO

SCRIPTS = {
    "migician-convert": "converters.__main__:main",
    "migician-merge": "merge_tool.__main__:main",
    "migician-eval": "eval.__main__:main",
    "migician-rl": "rl.__main__:main",
    "migician-datagen": "datagen.__main__:main",
}
EXTRAS = {  # extra -> the requirements file the Makefile installs from
    "train": "train.txt",
    "train-cuda": "train-cuda.txt",
    "eval": "eval-cpu.txt",
    "eval-cuda": "eval-cuda.txt",
}
UNIT = "not slow and not vllm and not train"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------- cli.py


def test_exit_code_table_and_error_line(capsys):
    assert (cli.EXIT_OK, cli.EXIT_BAD_INPUT, cli.EXIT_USAGE, cli.EXIT_PARTIAL) == (0, 1, 2, 3)
    assert cli.EXIT_INTERRUPTED == 130 and cli.signal_code(15) == 143
    assert cli.fail("python -m x", "no such file a.json") == 1
    assert cli.fail("python -m x", "bad flag", cli.EXIT_USAGE) == 2
    assert (
        capsys.readouterr().err == "python -m x: error: no such file a.json\npython -m x: error: bad flag\n"
    )


def test_prog_name_is_what_the_user_typed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/site-packages/merge_tool/__main__.py"])
    assert cli.prog_name("merge_tool", "migician-merge") == "python -m merge_tool"
    monkeypatch.setattr(sys, "argv", ["/home/u/.venv/bin/migician-merge", "--help"])
    assert cli.prog_name("merge_tool", "migician-merge") == "migician-merge"
    monkeypatch.setattr(sys, "argv", ["/home/u/.venv/bin/migician-merge-old"])
    assert cli.prog_name("merge_tool", "migician-merge") == "python -m merge_tool"


# ---------------------------------------------------------------- the CLIs use it


def test_merge_tool_codes_and_prefix(tmp_path, capsys):
    from merge_tool.__main__ import main

    assert main(["--help"]) == 0
    assert "usage: python -m merge_tool" in capsys.readouterr().out
    assert main(["--output", str(tmp_path / "o"), "--bogus"]) == 2
    assert "python -m merge_tool: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "o")]) == 2  # neither --models nor a config
    assert "python -m merge_tool: error: give --models A B ... or a config file" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("merge_method: linear\nmodels: [a, b]\n")
    assert main([str(config), "--weights", "0.5", "0.5", "--output", str(tmp_path / "o")]) == 2
    assert "--weights cannot be combined with a config file" in capsys.readouterr().err
    assert main(["--models", str(tmp_path / "nowhere"), str(tmp_path), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m merge_tool: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_rl_codes_and_prefix(tmp_path, capsys):
    from rl.__main__ import main

    assert main(["rewards", "--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"python -m rl: error: input {tmp_path / 'none.jsonl'} does not exist\n"
    assert main(["rewards", "--input", "x"]) == 2
    assert "error: the following arguments are required: --output" in capsys.readouterr().err
    assert main(["nope"]) == 2 and main(["--help"]) == 0


def test_demo_refuses_a_tree_built_with_other_settings(tmp_path, capsys):
    """Checked before any step runs, so this costs nothing; the reduced demo in test_demo.py checks the rest."""
    from demo.run import PROFILES, Demo, main

    demo = Demo(tmp_path, PROFILES["smoke"], sys.executable, seed=0)
    demo.claim()
    settings = (demo.saves / "demo_settings.json").read_text()
    assert main(["--workdir", str(tmp_path), "--profile", "smoke", "--seed", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("python -m demo.run: error: ") and "seed 0 -> 1" in captured.err
    assert captured.out == "" and (demo.saves / "demo_settings.json").read_text() == settings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saves"]


def test_demo_synth_bad_value_and_existing_output_are_bad_input(tmp_path, capsys):
    from demo.synth import main

    out = tmp_path / "raw"
    assert main(["--out", str(out), "--image-size", "20", "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("python -m demo.synth: error: ")
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    assert main(["--out", str(out), "--stage1", "6", "--bench", "7", "--quiet"]) == 1
    assert "--force" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["mine.txt"]


# ---------------------------------------------------------------- packaging


@pytest.fixture(scope="module")
def metadata(tmp_path_factory) -> Path:
    """The folder of the metadata setuptools builds from pyproject.toml (dist-info and egg-info)."""
    root = tmp_path_factory.mktemp("pkg")
    skip = {"tests", "data", "saves", "outputs"}
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for entry in REPO.iterdir():
        if entry.suffix == ".py" and entry.is_file():
            shutil.copy(entry, root / entry.name)
        elif entry.is_dir() and not entry.name.startswith(".") and entry.name not in skip:
            shutil.copytree(entry, root / entry.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = root / "metadata"
    out.mkdir()
    code = "import sys; from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def dist(metadata) -> PathDistribution:
    """The distribution as `pip install -e .` would record it."""
    return PathDistribution(next(metadata.glob("*.dist-info")))


def pins(path: Path) -> list[str]:
    """A requirements file's requirements, normalised (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return sorted(str(Requirement(line)) for line in lines if line)


def test_console_scripts_are_declared_and_return_ints(dist):
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == SCRIPTS
    for target in scripts.values():
        module, func = target.split(":")
        main = getattr(import_module(module), func)
        assert main.__annotations__.get("return") in (int, "int"), target


def test_extras_are_the_requirements_files_pin_for_pin(dist):
    by_extra: dict[str, list[str]] = {}
    for text in dist.requires or []:
        req = Requirement(text)
        extra = re.fullmatch(r'extra == "([^"]+)"', str(req.marker or ""))
        assert extra, f"{text}: every dependency belongs to one environment's extra"
        req.marker = None
        by_extra.setdefault(extra.group(1), []).append(str(req))
    assert sorted(dist.metadata.get_all("Provides-Extra")) == sorted(EXTRAS)
    for extra, filename in EXTRAS.items():
        assert sorted(by_extra.get(extra, [])) == pins(REPO / "requirements" / filename), (extra, filename)


def test_pins_check_can_fail(tmp_path):
    """Negative control: a file that drifted from its extra compares unequal."""
    drifted = tmp_path / "train.txt"
    drifted.write_text(
        (REPO / "requirements/train.txt").read_text().replace("torch==2.14.1", "torch==2.15.0")
    )
    assert pins(drifted) != sorted(
        str(Requirement(r)) for r in PYPROJECT["project"]["optional-dependencies"]["train"]
    )


def test_every_module_and_subpackage_is_shipped(dist, metadata):
    top = set((dist.read_text("top_level.txt") or "").split())
    assert {"core", "families", "converters", "merge_tool", "eval", "rl", "demo", "datagen"} <= top
    assert "tests" not in top
    sources = set(next(metadata.glob("*.egg-info")).joinpath("SOURCES.txt").read_text().split())
    packages = [p for p in REPO.glob("*/**/__init__.py") if p.relative_to(REPO).parts[0] in top]
    assert any("methods" in p.parts for p in packages)  # merge_tool.methods: a subpackage
    for init in packages:
        rel = init.relative_to(REPO).as_posix()
        assert rel in sources, f"{rel} would be missing from a wheel"


def _wrapper(name: str, target: str, bindir: Path) -> Path:
    """The console script exactly as pip writes it (distlib's template)."""
    module, func = target.split(":")
    script = bindir / name
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""\
            import re
            import sys
            from {module} import {func}
            if __name__ == '__main__':
                sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
                sys.exit({func}())
            """
        )
    )
    script.chmod(0o755)
    return script


def test_console_scripts_run_with_the_shared_codes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name, target in SCRIPTS.items():
        script = _wrapper(name, target, tmp_path)
        ok = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=120)
        assert ok.returncode == 0 and "usage:" in ok.stdout, (name, ok.stderr[-2000:])
        bad = subprocess.run(
            [str(script), "--no-such-flag"], capture_output=True, text=True, env=env, timeout=120
        )
        assert bad.returncode == 2 and "error:" in bad.stderr, (name, bad.returncode, bad.stderr[-2000:])
    merge = subprocess.run(  # the name the user typed is the prefix
        [
            str(tmp_path / "migician-merge"),
            "--models",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--output",
            "o",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert merge.returncode == 1 and merge.stderr.startswith("migician-merge: error: "), merge.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- fast tests


def test_make_test_unit_runs_the_unit_markers():
    declared = {m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    assert set(re.findall(r"\w+", UNIT)) - {"not", "and"} <= declared
    env = {**os.environ, "DEVICE": "cpu"}
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert re.search(r"^\s+test-unit\s+\S", listed.stdout, re.M), listed.stdout
    dry = subprocess.run(
        ["make", "-n", "test-unit"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert "-m pytest" in dry.stdout and f'-m "{UNIT}"' in dry.stdout, dry.stdout
    assert "pip install" not in dry.stdout  # an existing .venv is used as it is
    full = subprocess.run(
        ["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert (
        re.search(r"-m pytest -q -ra (--durations=\d+ )?tests", full.stdout) and ' -m "' not in full.stdout
    )  # `make test` runs everything


HEAVY_FIXTURES = {"tiny_model", "eval_python", "server"}  # tests/conftest.py: a transformers model; vLLM
HEAVY_MODULES = {"llamafactory", "transformers", "vllm", "trl", "deepspeed"}
EXCLUDING = {"slow", "vllm", "train"}


def _mark_names(node: ast.AST) -> set[str]:
    """`pytest.mark.X` names anywhere in a decorator or a `pytestmark = ...` value."""
    return {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute)
    }


def _imported(node: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            names.add(n.module.split(".")[0])
    return names


def heavy_unmarked(source: str, filename: str) -> list[str]:
    """Tests that need a model, LLaMA-Factory or vLLM (directly, or through a fixture or helper of the
    same file) but carry none of the markers `make test-unit` deselects."""
    tree = ast.parse(source)
    body = tree.body
    if any(
        isinstance(s, ast.Assign)
        and any(getattr(t, "id", "") == "pytestmark" for t in s.targets)
        and _mark_names(s.value) & EXCLUDING
        for s in body
    ):
        return []
    top_imports = set().union(*(_imported(s) for s in body if isinstance(s, (ast.Import, ast.ImportFrom))))
    functions = {s.name: s for s in body if isinstance(s, ast.FunctionDef)}

    def heavy(fn: ast.FunctionDef, seen: set[str]) -> bool:
        if fn.name in seen:
            return False
        seen.add(fn.name)
        args = {a.arg for a in fn.args.args}
        called = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        return bool(
            args & HEAVY_FIXTURES
            or _imported(fn) & HEAVY_MODULES
            or any(heavy(functions[a], seen) for a in (args | called) & set(functions))
        )

    return [
        f"{filename}::{fn.name}"
        for fn in functions.values()
        if fn.name.startswith("test")
        and (top_imports & HEAVY_MODULES or heavy(fn, set()))
        and not set().union(*map(_mark_names, fn.decorator_list)) & EXCLUDING
    ]


def test_heavy_check_can_fail():
    src = "import pytest\n\n@pytest.fixture\ndef run(tiny_model):\n    return 1\n\n"
    assert heavy_unmarked(src + "def test_a(run):\n    pass\n", "t.py") == ["t.py::test_a"]
    assert heavy_unmarked(src + "@pytest.mark.train\ndef test_a(run):\n    pass\n", "t.py") == []
    helper = "def load():\n    from transformers import AutoProcessor\n\ndef test_b():\n    load()\n"
    assert heavy_unmarked(helper, "t.py") == ["t.py::test_b"]
    assert heavy_unmarked("import pytest\npytestmark = pytest.mark.vllm\n" + helper, "t.py") == []
    assert heavy_unmarked("def test_c(tmp_path):\n    import json\n", "t.py") == []


def test_every_heavy_test_is_marked_out_of_test_unit():
    found = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        found += heavy_unmarked(path.read_text(), path.name)
    assert found == [], "mark these @pytest.mark.train / vllm / slow (see pyproject.toml's markers)"
