"""LLaVA-style conversation data -> ShareGPT: LLaVA-OneVision (JSON and parquet) and M4-Instruct.

Why: the paper's S-/M-Understanding data ships in LLaVA's layout: an
`image` field (one path, a list of paths, or embedded bytes in the parquet
release) next to human/gpt `conversations`. LLaMA-Factory wants an `images`
list of files, so parquet images are written out once (a file that already
exists with the same size is not rewritten, so re-runs and resumed runs skip
the work) and every path is made absolute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.streaming import iter_json_records

from .convert import SourceReject, convert, convert_file
from .records import Rejected, make_resolver
from .report import ConversionReport

_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_extension(data: bytes, hint: str | None = None) -> str:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    suffix = Path(hint or "").suffix.lstrip(".").lower()
    return _UNSAFE.sub("", suffix) or "bin"


def write_once(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless a file of that size is already there; True if written.

    Written through a temporary sibling and a rename, so an interrupted run never
    leaves a short file that a later run would mistake for a finished one.
    """
    try:
        if path.stat().st_size == len(data):
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:  # also SIGTERM (atomicio.exit_on_signals): no temporary file stays behind
        tmp.unlink(missing_ok=True)
        raise
    return True


def _image_list(value: Any) -> Any:
    """LLaVA's `image` field (absent, one path or a list) -> a list, or the odd value for the checks to reject."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return value


def iter_llava_json(path: Path, image_root: Path, default_type: str, progress=None) -> Iterator[Any]:
    """Records of a LLaVA-style JSON/JSONL file; `image` paths are relative to `image_root`."""
    resolve = make_resolver(image_root)
    for raw in iter_json_records(path, progress=progress, skip_bad=True):
        if not isinstance(raw, dict):
            yield raw  # a SourceReject, or a value the checks reject with its type
            continue
        images = _image_list(raw.get("image", raw.get("images")))
        if isinstance(images, list) and all(isinstance(p, str) and p for p in images):
            try:
                images = [resolve(p) for p in images]
            except Rejected as err:
                yield SourceReject(raw.get("id"), err.reason, f"{path}: {err.detail}")
                continue
        yield {
            "id": raw.get("id"),
            "type": raw.get("data_source") or default_type,
            "images": images,
            "conversations": raw.get("conversations"),
        }


def _parquet_rows(parquet, path: Path, columns: list[str], batch_rows: int) -> Iterator[tuple[Any, int]]:
    """(row dict, row number) of every row group; the rows of a group that cannot be read
    (a corrupt page) come as SourceRejects naming file, group and rows, and the next group is read."""
    row = 0
    for group in range(parquet.metadata.num_row_groups):
        n_rows = parquet.metadata.row_group(group).num_rows
        done = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                items = batch.to_pylist()
                for item in items:
                    yield item, row + done
                    done += 1
        except Exception as err:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ... for bad pages
            detail = f"{path} row group {group}: unreadable ({type(err).__name__}: {str(err)[:200]})"
            for lost in range(done, n_rows):
                yield SourceReject(None, "bad_record", f"{detail}; row {row + lost} lost"), row + lost
        row += n_rows


class ParquetImages:
    """Counts of images written vs. already present during one parquet conversion."""

    def __init__(self) -> None:
        self.written = 0
        self.present = 0


def iter_llava_parquet(
    path: Path, image_dir: Path, subset: str, stats: ParquetImages, batch_rows: int = 256
) -> Iterator[Any]:
    """Rows of one LLaVA-OneVision parquet file; embedded images go to image_dir/subset/<file>/<row>.<ext>."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:
        raise ValueError(f"{path}: not a readable parquet file: {err}") from None
    names = set(parquet.schema_arrow.names)
    missing = {"id", "conversations"} - names
    if missing:
        raise ValueError(f"{path}: parquet file lacks column(s) {sorted(missing)}; found {sorted(names)}")
    columns = [c for c in ("id", "image", "conversations", "data_source") if c in names]
    folder = Path(os.path.abspath(image_dir)) / _UNSAFE.sub("_", subset) / _UNSAFE.sub("_", path.stem)
    resolve = make_resolver(path.parent)
    for item, row in _parquet_rows(parquet, path, columns, batch_rows):
        if isinstance(item, SourceReject):
            yield item
            continue
        image = item.get("image")
        images: list[str] = []
        if isinstance(image, dict) and image.get("bytes"):
            data = image["bytes"]
            target = folder / f"{row:08d}.{image_extension(data, image.get('path'))}"
            if write_once(target, data):
                stats.written += 1
            else:
                stats.present += 1
            images = [str(target)]
        elif isinstance(image, dict) and image.get("path"):
            try:
                images = [resolve(image["path"])]
            except Rejected as err:
                yield SourceReject(item.get("id"), err.reason, f"{path} row {row}: {err.detail}")
                continue
        elif image not in (None, {}) and not isinstance(image, dict):
            yield SourceReject(
                item.get("id"), "bad_record", f"{path} row {row}: image is a {type(image).__name__}"
            )
            continue
        yield {
            "id": item.get("id"),
            "type": item.get("data_source") or subset,
            "images": images,
            "conversations": item.get("conversations"),
        }


def _json_inputs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".json", ".jsonl") and p.is_file())


def collect_llava_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand folders into their parquet/JSON files (sorted, so output order is stable)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(p.rglob("*.parquet")))
            found.extend(_json_inputs(p))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"LLaVA input {p} not found")
    return found


def convert_llava_onevision(
    inputs: list[str | os.PathLike],
    output: str | os.PathLike,
    rejects: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
    name: str = "llava_onevision",
    require_images: bool = False,
    **options,
) -> ConversionReport:
    """Convert LLaVA-OneVision parquet and/or JSON files into one ShareGPT file.

    Parquet images are extracted under `image_dir`; JSON `image` paths are relative to
    `image_root` (default: the JSON file's folder). The subset name (used as the record
    type when a row has no `data_source`) is the file's folder relative to `base`.
    """
    files = collect_llava_inputs(inputs)
    if not files:
        raise FileNotFoundError(f"no .parquet/.json files in {[str(p) for p in inputs]}")
    if any(f.suffix == ".parquet" for f in files) and image_dir is None:
        raise ValueError("parquet inputs need --image-dir (where their embedded images are written)")
    stats = ParquetImages()

    def subset_of(f: Path) -> str:
        if base is not None:
            with_base = os.path.relpath(f.parent, base)
            if not with_base.startswith(".."):
                return with_base if with_base != "." else f.stem
        return f.parent.name

    def records() -> Iterator[Any]:
        for f in files:
            if f.suffix.lower() == ".parquet":
                yield from iter_llava_parquet(f, Path(image_dir), subset_of(f), stats)
            else:
                yield from iter_llava_json(f, Path(image_root) if image_root else f.parent, subset_of(f))

    report = convert(
        tqdm(records(), desc=name, unit="rec", disable=None),
        output,
        rejects,
        name=name,
        inputs=files,
        require_images=require_images,
        **options,
    )
    if stats.written or stats.present:
        report.notes.append(
            f"parquet images: {stats.written} written, {stats.present} already extracted (under {image_dir})"
        )
    return report


def convert_m4_instruct(
    input_path: str | os.PathLike,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    rejects: str | os.PathLike,
    name: str = "m4_instruct",
    require_images: bool = False,
    **options,
) -> ConversionReport:
    """M4-Instruct's annotation JSON (`image`: list of paths relative to `image_root`)."""
    return convert_file(
        input_path,
        "M4-Instruct annotations",
        lambda path, progress: iter_llava_json(path, Path(image_root), "m4_instruct", progress=progress),
        output,
        rejects,
        name=name,
        require_images=require_images,
        **options,
    )
