"""yamlfile: the one YAML loader of the pack (issue #25), and each reader that uses it.

Every hostile file is one line naming the file (and the line where PyYAML knows it): a `!!python`
tag, a key given twice, an alias bomb (refused before anything walks or formats it), an alias to
its own anchor, nesting too deep, an integer over the digit limit, a huge or a non-UTF-8 file.
"""

from __future__ import annotations

import json
import resource

import pytest

from converters.composition import CompositionError, load_composition
from core.yamlfile import MAX_NODES, YAMLFileError, loads_yaml, read_yaml
from rl.config import ConfigError, load_recipe
from tests.test_hostile_merge import model
from tests.test_merge_tool import cli


def bomb(under: str) -> str:
    """Billion laughs: nine aliases a level, nine levels (9^9 = 387M strings once expanded)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{under}: *l8\n"


HOSTILE = [
    ("merge_method: linear\nmerge_method: slerp\n", "line 2 column 1: key 'merge_method' appears twice"),
    ("a: !!python/object/apply:os.system ['echo owned']\n", "could not determine a constructor"),
    ("a: [1, 2\nb: 3\n", "not valid YAML: line 2"),
    (bomb("merge_method"), f"more than {MAX_NODES} values once its aliases are expanded"),
    ("a: &a [1, *a]\n", "line 1: an alias refers to its own anchor"),
    ("[" * 5000 + "]" * 5000, "line 1: nested deeper than 100 levels"),
    ("a: " + "9" * 5000 + "\n", "cannot be read as YAML: Exceeds the limit (4300 digits)"),
    ("a: \x00\n", "not valid YAML: unacceptable character #x0000"),  # found by test_properties
]


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_hostile_yaml_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YAMLFileError) as err:
        read_yaml(path)
    assert str(err.value).startswith(f"{path}") and message in str(err.value), err.value
    assert "\n" not in str(err.value)


def test_good_yaml_reads_as_safe_load_would(tmp_path):
    text = "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\nl: [*b, *b]\nn: 1e-5\n"
    assert loads_yaml(text) == {
        "base": {"x": 1, "y": 2},
        "c": {"x": 3, "y": 2},
        "l": [{"x": 1, "y": 2}] * 2,
        "n": "1e-5",
    }
    assert loads_yaml("") is None and loads_yaml("7") == 7
    (tmp_path / "e.yaml").write_text("")
    assert read_yaml(tmp_path / "e.yaml", dict) == {}
    (tmp_path / "l.yaml").write_text("- 1\n")
    with pytest.raises(YAMLFileError, match="holds a YAML list; expected a mapping"):
        read_yaml(tmp_path / "l.yaml", dict, "a mapping")
    (tmp_path / "b.yaml").write_bytes(b"a: caf\xe9\n")
    with pytest.raises(YAMLFileError, match="not UTF-8 text"):
        read_yaml(tmp_path / "b.yaml")
    with pytest.raises(YAMLFileError, match="larger than 1 bytes"):
        read_yaml(tmp_path / "l.yaml", max_bytes=1)  # (the file is 4 bytes: max_bytes bounds the read)
    with pytest.raises(YAMLFileError, match=f"cannot read {tmp_path}"):
        read_yaml(tmp_path)


def test_a_bomb_is_refused_within_bounded_memory(tmp_path):
    """The bomb is sized on the node graph (one visit per distinct node), never expanded."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(YAMLFileError, match="alias bomb"):
        loads_yaml(bomb("tokenizer_source"), "x.yaml")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


@pytest.mark.parametrize("key", ["merge_method", "base_model", "tokenizer_source", "parameters"])
def test_merge_config_bomb_under_any_key_is_refused_cleanly(tmp_path, key):
    path = tmp_path / "m.yaml"
    path.write_text(bomb(key))
    proc = cli(str(path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{path}: more than {MAX_NODES} values" in proc.stderr and not (tmp_path / "out").exists()


def test_merge_config_duplicate_key_and_python_tag_are_one_line(tmp_path):
    for text, message in HOSTILE[:2]:
        path = tmp_path / "m.yaml"
        path.write_text(text)
        proc = cli(str(path), "--output", str(tmp_path / "out"))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_merge_config_inside_output_is_never_deleted_by_force(tmp_path):
    a, b = model(tmp_path / "a", w=[1.0, 2.0]), model(tmp_path / "b", w=[3.0, 5.0])
    out = tmp_path / "out"
    out.mkdir()
    config = out / "CONFIG.yaml"
    config.write_text(
        json.dumps(
            {
                "merge_method": "linear",
                "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in (a, b)],
            }
        )
    )
    proc = cli(str(config), "--output", str(out), "--force")
    assert proc.returncode == 1 and f"--output {out} holds the config {config}" in proc.stderr, proc.stderr
    assert config.exists() and sorted(p.name for p in out.iterdir()) == ["CONFIG.yaml"]


def test_recipe_and_mixtures_use_the_same_loader(tmp_path):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("output_dir: o\noutput_dir: p\n")
    with pytest.raises(
        ConfigError, match=f"^recipe {recipe}: not valid YAML: line 2 column 1: key 'output_dir'"
    ):
        load_recipe(recipe, [])
    recipe.write_text(bomb("model_name_or_path"))
    with pytest.raises(ConfigError, match="alias bomb"):
        load_recipe(recipe, [])
    mixtures = tmp_path / "mixtures.yaml"
    mixtures.write_text(bomb("categories"))
    with pytest.raises(CompositionError, match=f"^{mixtures}: more than"):
        load_composition(mixtures)
