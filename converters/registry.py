"""The dataset registries: `OUT/dataset_info.json` beside the data, and the repository's own.

Why: LLaMA-Factory finds a dataset as `dataset_dir/dataset_info.json` -> `file_name`, relative
to `dataset_dir`. `converters all --output-dir OUT` therefore registers every file it produced
in `OUT/dataset_info.json` with paths relative to OUT, so training reads `dataset_dir=OUT`
wherever OUT is (`make stage1 DATA_OUT=/scratch`). The repository's `dataset_info.json` holds
only the datasets the recipes train on, at their default place (`data/`), for
`llamafactory-cli train recipes/<stage>.yaml` run from the root with `dataset_dir: .`; it is
generated from the stage table (a test compares the committed file with `dataset_info()`).

A registry this tool did not write alone is merged, never clobbered: entries it does not
produce are kept as they are, and an entry of the same name that differs from its own (edited
by hand) is refused without --force.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.atomicio import atomic_write_text
from core.stages import MIXTURE, STAGES

log = logging.getLogger(__name__)

REGISTRY = "dataset_info.json"
SHAREGPT_DIR = "sharegpt"  # OUT/sharegpt/<dataset>.json: converted sources and derived sets
MIXTURES_DIR = "mixtures"  # OUT/mixtures/<prefix>_<stage>.json
DEFAULT_DATA_DIR = "data"  # `make data`'s DATA_OUT, relative to the repository root
MAX_BYTES = 64 << 20


class RegistryError(ValueError):
    """A dataset_info.json that cannot be merged; the message names the file and the entries."""


def entry(file_name: str) -> dict[str, Any]:
    """ShareGPT with a multi-image `images` column and human/gpt role tags."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def stage_files(prefix: str = "migician") -> dict[str, str]:
    """Each stage's dataset name -> its file relative to OUT, in the pipeline's layout."""
    return {
        stage.dataset_name(prefix): (
            f"{MIXTURES_DIR}/{stage.dataset_name(prefix)}.json"
            if stage.data == MIXTURE
            else f"{SHAREGPT_DIR}/{stage.data}.json"
        )
        for stage in STAGES.values()
    }


def dataset_info() -> dict[str, Any]:
    """The repository's registry: what the recipes train on, in `data/` (dataset_dir: .)."""
    return {name: entry(f"{DEFAULT_DATA_DIR}/{rel}") for name, rel in stage_files().items()}


def dataset_info_text() -> str:
    return json.dumps(dataset_info(), indent=2) + "\n"


def entries_for(files: dict[str, Path], dataset_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> entry whose file_name is the file relative to `dataset_dir` (which must hold it)."""
    out = {}
    for name, path in files.items():
        try:
            rel = Path(path).relative_to(dataset_dir)
        except ValueError:
            raise RegistryError(f"{path} (dataset {name!r}) is not inside {dataset_dir}") from None
        out[name] = entry(rel.as_posix())
    return out


def read_registry(path: Path) -> dict[str, Any]:
    """The entries of an existing dataset_info.json ({} when there is none)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RegistryError(f"cannot read the dataset registry {path}: {err.strerror or err}") from None
    problem = None
    if len(raw) > MAX_BYTES:
        problem = f"larger than {MAX_BYTES >> 20} MB"
    else:
        try:
            data = json.loads(raw)
        except RecursionError:
            problem = "nested too deeply"
        except ValueError as err:  # JSONDecodeError, not UTF-8, an integer over the digit limit
            problem = f"not JSON ({str(err)[:120]})"
        else:
            if not isinstance(data, dict):
                problem = f"a JSON {type(data).__name__}, not an object of dataset entries"
    if problem is not None:
        raise RegistryError(
            f"the dataset registry {path} is {problem}; fix or move it, or pass --force to replace it"
        )
    return data


def merged(
    path: Path, wanted: dict[str, dict[str, Any]], force: bool = False, current: dict | None = None
) -> dict[str, Any]:
    """The registry at `path` with `wanted` added; refuses (RegistryError) to change hand-edited entries.

    Entries not in `wanted` are kept as they are. With `force` an unreadable file is replaced
    and differing entries are overwritten (each one logged).
    """
    if current is None:
        try:
            current = read_registry(path)
        except RegistryError:
            if not force:
                raise
            log.warning("replacing the unreadable dataset registry %s (--force)", path)
            current = {}
    differ = [name for name, value in wanted.items() if name in current and current[name] != value]
    if differ and not force:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise RegistryError(
            f"{path}: entries {shown} differ from the ones `converters all` writes (edited by hand?); "
            "rename yours, or pass --force to replace them"
        )
    for name in differ:
        log.warning("%s: replacing entry %s (--force)", path, name)
    return {**current, **wanted}


def update_registry(path: Path, wanted: dict[str, dict[str, Any]], force: bool = False) -> bool:
    """Merge `wanted` into the registry at `path`, written atomically; False when nothing changed
    (then the file, and the way its owner formatted it, is left untouched)."""
    path = Path(path)
    try:
        current: dict | None = read_registry(path)
    except RegistryError:
        if not force:
            raise
        current = None
    new = merged(path, wanted, force, current)
    if current is not None and new == current and path.exists():
        return False
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")  # ASCII: a lone surrogate survives
    return True
