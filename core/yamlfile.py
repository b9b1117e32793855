"""One loader for the YAML files users hand over (merge configs, recipes, mixtures, the RL config).

Why: each reader called yaml.safe_load with its own wording; PyYAML's errors are four lines (context,
snippet, caret), a key given twice silently took the last value, and an alias bomb ("billion
laughs": a few hundred bytes whose aliases expand to 10^9 elements) loads in no memory but explodes
as soon as anything walks or formats it. Here every file is read bounded, its node graph is sized
with aliases expanded *before* any Python object is built, and every problem is one line naming the
file and the line.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

MAX_BYTES = 4 << 20  # a recipe or a merge config is a few KB; more is not one
MAX_NODES = 100_000  # scalars + collections once aliases are expanded
MAX_DEPTH = 100  # nesting; PyYAML's scanner is quadratic in it (1,000 levels: a second), a config needs ~5


class YAMLFileError(ValueError):
    """A YAML file (or text) that cannot be used; one line naming the source, the line and why."""


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader (no !!python tags), a key given twice in one mapping refused, nesting bounded."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLFileError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is fine
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it itself
                twice = False
            if twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r:.80} appears twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the document with every alias expanded; stops counting past `limit`.

    Iterative and memoised by node identity, so a bomb costs one visit per distinct node."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        )
        if not done:
            if key in on_path:
                raise YAMLFileError(f"line {node.start_mark.line + 1}: an alias refers to its own anchor")
            on_path.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in on_path:
                    raise YAMLFileError(
                        f"line {child.start_mark.line + 1}: an alias refers to its own anchor"
                    )
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        on_path.discard(key)
        sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
    return sizes[id(root)]


def _problem(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        what = " ".join(str(p) for p in (err.context, err.problem) if p)
        return where + " ".join(what.split())[:300]
    return " ".join(str(err).split())[:300]


def loads_yaml(text: str, source: str = "<text>", max_nodes: int = MAX_NODES) -> Any:
    """The parsed content of one YAML document `text`; YAMLFileError (one line naming `source`)."""
    loader = None
    try:
        loader = _Loader(text)  # (its reader refuses a non-printable character at once)
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, max_nodes)
        if size > max_nodes:
            raise YAMLFileError(
                f"more than {max_nodes} values once its aliases are expanded (an alias bomb?)"
            )
        return loader.construct_document(node)
    except YAMLFileError as err:
        raise YAMLFileError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise YAMLFileError(f"{source}: not valid YAML: {_problem(err)}") from None
    except RecursionError:
        raise YAMLFileError(f"{source}: nested too deeply to read") from None
    except ValueError as err:  # an integer over the digit limit
        raise YAMLFileError(
            f"{source}: cannot be read as YAML: {str(err).split('; use sys.')[0][:200]}"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(
    path: str | os.PathLike, expect: type | None = None, what: str = "", max_bytes: int = MAX_BYTES
) -> Any:
    """The parsed content of the YAML file `path`; YAMLFileError when it cannot be read, parsed or is
    not `expect` (`what` describes the expected content for the message, e.g. "a mapping of keys").
    An empty file is None (or, with `expect`, an empty `expect()`)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as err:
        raise YAMLFileError(f"cannot read {path}: {err.strerror or err}") from None
    if len(raw) > max_bytes:
        raise YAMLFileError(f"{path}: larger than {max_bytes} bytes; not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YAMLFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    data = loads_yaml(text, str(path))
    if data is None and expect is not None:
        return expect()
    if expect is not None and not isinstance(data, expect):
        expected = what or f"a YAML {expect.__name__}"
        raise YAMLFileError(f"{path} holds a YAML {type(data).__name__}; expected {expected}")
    return data
