"""Print `tokenized_path=<recipe's path>-<fingerprint>` for a recipe plus its command-line overrides.

Why: once `tokenized_path` exists, LLaMA-Factory loads it and ignores every
data argument ("Loading dataset from disk will ignore other data
arguments"), so after a new `make data`, another template or cutoff it would
silently train on the old tokens. The fingerprint covers what tokenization
depends on: the data and processor arguments (LLaMA-Factory's own
DataArguments and ProcessorArguments fields, after the overrides), the
training stage, each dataset's dataset_info.json entry and file contents, and
the tokenizer and processor files of model_name_or_path. Changing any of them
gives a new cache folder; changing the learning rate or the GPU count does not.

    python scripts/tokenized_path.py recipes/stage1.yaml [key=value ...]

Prints nothing when the effective tokenized_path is null. A dataset whose file
is missing is refused (exit 2) with the file and how to build it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

# Arguments that change how fast the cache is built or where it lives, not what it holds.
NOT_CONTENT = {
    "tokenized_path",
    "preprocessing_num_workers",
    "preprocessing_batch_size",
    "overwrite_cache",
    "data_shared_file_system",
}
# What AutoTokenizer / AutoProcessor read from a model folder.
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)
DEFAULT_DATASET_DIR = "data"  # LLaMA-Factory's default when the recipe has none


class FingerprintError(Exception):
    """A recipe whose data cannot be found: training would fail later and less clearly."""


def effective_config(recipe: Path, overrides: list[str]) -> dict:
    """The recipe merged with key=value overrides exactly as `llamafactory-cli train` merges them."""
    merged = OmegaConf.merge(OmegaConf.load(recipe), OmegaConf.from_cli(overrides))
    return OmegaConf.to_container(merged)


def _dataclass_fields(source: Path, class_name: str) -> set[str]:
    """Annotated field names of one class, read from its source (importing llamafactory takes ~10 s)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return {
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    raise FingerprintError(f"{source} has no class {class_name}; is llamafactory the pinned version?")


def data_argument_names() -> set[str]:
    """LLaMA-Factory's data and processor argument names, read from its own dataclasses."""
    spec = importlib.util.find_spec("llamafactory")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FingerprintError("llamafactory is not installed in this environment (run `make setup`)")
    hparams = Path(spec.submodule_search_locations[0]) / "hparams"
    names = _dataclass_fields(hparams / "data_args.py", "DataArguments")
    names |= _dataclass_fields(hparams / "model_args.py", "ProcessorArguments")
    return (names | {"stage"}) - NOT_CONTENT


def _hash_file(digest, path: Path) -> None:
    digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)


def _hash_dataset(digest, name: str, registry: dict, dataset_dir: Path, registry_path: Path) -> None:
    entry = registry.get(name)
    if entry is None:
        raise FingerprintError(f"dataset {name!r} is not registered in {registry_path}")
    digest.update(json.dumps({name: entry}, sort_keys=True).encode())
    file_name = entry.get("file_name")
    if file_name is None:  # hub or script datasets: their entry is all we can see
        return
    path = dataset_dir / file_name
    if not path.exists():
        raise FingerprintError(
            f"dataset {name!r}: {path} does not exist; build it with "
            "`make data DATA_ROOT=/path/holding/MGrounding-630k` (see README, Data)"
        )
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        _hash_file(digest, file)


def fingerprint(config: dict, cwd: Path) -> str:
    """12 hex digits that change exactly when the tokenized dataset would."""
    digest = hashlib.blake2b(digest_size=6)
    names = data_argument_names()
    settings = {k: v for k, v in config.items() if k in names}  # key order: sort_keys below
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())

    dataset_dir = cwd / str(config.get("dataset_dir") or DEFAULT_DATASET_DIR)
    datasets = [
        d.strip()
        for key in ("dataset", "eval_dataset")
        for d in str(config.get(key) or "").split(",")
        if d.strip()
    ]
    if datasets:
        registry_path = dataset_dir / "dataset_info.json"
        try:
            registry = json.loads(registry_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FingerprintError(f"cannot read the dataset registry {registry_path}: {err}") from err
        for name in datasets:
            _hash_dataset(digest, name, registry, dataset_dir, registry_path)

    model = str(config.get("model_name_or_path", ""))
    digest.update(model.encode())
    model_dir = cwd / model
    if model_dir.is_dir():  # a local folder: its tokenizer and processor, not just its name
        for name in PROCESSOR_FILES:
            if (model_dir / name).is_file():
                _hash_file(digest, model_dir / name)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        print("usage: python scripts/tokenized_path.py RECIPE.yaml [key=value ...]", file=sys.stderr)
        return 2
    config = effective_config(Path(argv[0]), argv[1:])
    base = config.get("tokenized_path")
    if base in (None, "", "null"):
        return 0
    try:
        print(f"tokenized_path={base}-{fingerprint(config, Path.cwd())}")
    except FingerprintError as err:
        print(f"{argv[0]}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
