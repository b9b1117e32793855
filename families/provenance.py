"""Which family a converted data set was written for: the one owner of the `box_format` record.

Why: the converters write the record (a report's `box_format`, an RL record's `box_format` field), and
training, GRPO and eval read it to refuse data whose boxes mean something else for the model (a Qwen2-VL
grid box read as Qwen2.5-VL pixels is wrong by the canvas' scale). Writer and readers share this module,
so the field's name and meaning live in one place. Nothing in a data folder is trusted to be well-formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.jsonfile import JSONFileError, read_json
from families.registry import DEFAULT_FAMILY, FAMILIES, Family, get_family

REPORT_KEY = "box_format"  # in a converter report: a dict whose "family" names the family


def report_entry(described: dict | None) -> dict:
    """The `box_format` value a converter report records (data without a family is the default one's)."""
    return dict(described) if described else {"family": DEFAULT_FAMILY}


def report_family(report: dict) -> str | None:
    """The family a converter report records, or None when it records none."""
    value = report.get(REPORT_KEY) if isinstance(report, dict) else None
    return value.get("family") if isinstance(value, dict) else None


def record_family(record: dict) -> object:
    """The family an RL/trajectory record was converted for (its `box_format` field; none: the default)."""
    return record.get(REPORT_KEY, DEFAULT_FAMILY)


def record_fields(family: Family) -> dict:
    """The field a converted record carries when it is not in the default family's form."""
    return {} if family.name == DEFAULT_FAMILY else {REPORT_KEY: family.name}


_MAX_REPORT_BYTES = 64 * 1024 * 1024  # a symlink to /dev/zero or a huge file stops at the bound


class DataFamilyError(ValueError):
    """Training data converted for another family than the model's (its boxes mean something else)."""


@dataclass(frozen=True)
class DataFormats:
    """What a data folder's converter reports (DATA_DIR/reports/*.json) say its records were written for."""

    recorded: dict[str, list[Path]]  # family -> the reports that record it
    unrecorded: list[Path]  # conversion reports from before the box format was recorded
    unreadable: list[tuple[Path, str]]  # reports that cannot be read, and why


def data_box_formats(data_dir: str | Path) -> DataFormats:
    """The box formats the converters recorded (converters.report's and trajectories' `box_format`) in
    DATA_DIR/reports/*.json and DATA_DIR/*.report.json.

    A conversion report names its `output` and `rejects` (converters.report's since the first release);
    other JSON there (the mixture reports, over records already counted) is not one. Nothing in the
    folder is trusted to be well-formed.
    """
    recorded: dict[str, list[Path]] = {}
    unrecorded: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    folder = Path(data_dir)  # `converters all` writes reports/; a single converter's --report may sit beside
    for path in sorted([*(folder / "reports").glob("*.json"), *folder.glob("*.report.json")]):
        try:
            report = read_json(path, max_bytes=_MAX_REPORT_BYTES, what="a converter report")
        except JSONFileError as err:
            unreadable.append((path, str(err)))
            continue
        if not isinstance(report, dict) or not (
            "box_format" in report or {"output", "rejects"} <= set(report)
        ):
            continue
        fmt = report.get(REPORT_KEY)
        if fmt is None:
            unrecorded.append(path)
        elif isinstance(fmt, dict) and isinstance(fmt.get("family"), str) and fmt["family"] in FAMILIES:
            recorded.setdefault(fmt["family"], []).append(path)
        else:
            unreadable.append((path, f"box_format {fmt!r:.80} names no known family"))
    return DataFormats(recorded, unrecorded, unreadable)


def _names(paths: Sequence[Path], limit: int = 3) -> str:
    shown = ", ".join(f"{p.parent.name}/{p.name}" for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_data_family(
    data_dir: str | Path, family: str | Family, model: str | Path, forced: str | None = None
) -> list[str]:
    """Refuse (DataFamilyError) data whose recorded box format is not the model's family; the warnings
    for what cannot be told (data converted before the format was recorded, unreadable reports)."""
    fam = get_family(family)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataFamilyError(
            f"{data_dir} is not a folder: no converted data to train {model} on (check DATA_OUT / dataset_dir; "
            "make data writes it)"
        )
    found = data_box_formats(data_dir)
    wrong = {name: paths for name, paths in found.recorded.items() if name != fam.name}
    if wrong:
        held = "; ".join(f"--box-format {name} ({_names(paths)})" for name, paths in sorted(wrong.items()))
        why = f"FAMILY={forced}" if forced else "its config.json model_type"
        redo = f"make data DATA_ROOT=/path/holding/MGrounding-630k DATA_OUT={data_dir} BASE_MODEL={model}"
        redo += f" FAMILY={forced}" if forced else ""
        raise DataFamilyError(
            f"{data_dir} holds data converted with {held}, but {model} is a {fam.display} model ({fam.name}, "
            f"from {why}): its boxes would be learnt in the wrong convention. Convert the data for it: {redo} "
            f"(that is, python -m converters all ... --output-dir {data_dir} --box-format {fam.name}), "
            "or train a model of the data's family"
        )
    warnings = [f"{path}: cannot tell its box format ({why})" for path, why in found.unreadable]
    if found.unrecorded or not (found.recorded or found.unreadable):
        what = _names(found.unrecorded) if found.unrecorded else f"no converter report in {data_dir}/reports"
        warnings.append(
            f"{data_dir}: no record of the box format its data was converted with ({what}; data converted "
            f"before --box-format existed is Qwen2-VL's); training it as {fam.name} unchecked"
        )
    return warnings
