"""The sources table: every dataset the converters know, with how to find, read and convert it.

Why one table: a source used to be spelled out in the CLI's subparsers and elif chain, the
pipeline's discovery, the registry and the mixture's categories. Now each of those reads this
table, so a new converter is one module (its `convert_*` function) plus one entry here: a
`Converter` (its `python -m converters` subcommand and options) and a `Source` per dataset it
produces (name, Table 12 category, how `converters all` finds it under DATA_ROOT).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .groma import convert_groma
from .llava import collect_llava_inputs, convert_llava_onevision, convert_m4_instruct
from .mgrounding import TASK_FILES, convert_mgrounding
from .refcoco import DATASETS as REFCOCO_DATASETS
from .refcoco import convert_refcoco
from .report import ConversionReport
from .trajectories import RL_NAME, SFT_NAME


@dataclass(frozen=True)
class Converter:
    """One `python -m converters <cli>` subcommand: its own options and how they call the module.

    `run(args, options)` converts; `options` holds the common ones (output, rejects, image checks,
    reject rate, force, require_images). `input_flags` name the arguments that are files it reads,
    so they are checked against its outputs before any work.
    """

    cli: str
    help: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, dict[str, Any]], ConversionReport]
    needs_images: bool = True  # a record without images is rejected (`no_images`)
    input_flags: tuple[str, ...] = ("input",)


@dataclass(frozen=True)
class Found:
    """A source present under DATA_ROOT: the files it reads and the call that converts them.

    `convert(output=, rejects=, force=, **options)` returns a ConversionReport; `params` are
    extra settings that belong in the pipeline's up-to-date stamp (e.g. an image folder).
    """

    inputs: list[Path]
    convert: Callable[..., ConversionReport]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One dataset: OUT/sharegpt/<name>.json, its dataset_info.json entry and a mixture source."""

    name: str
    category: str  # a category of the mixtures file (recipes/mixtures.yaml)
    converter: Converter
    # (DATA_ROOT, OUT) -> Found, or a note saying what is missing (the source is then skipped)
    discover: Callable[[Path, Path], Found | str]

    @property
    def needs_images(self) -> bool:
        return self.converter.needs_images


# ---- the converters' subcommands ---------------------------------------------------------------


def _mgrounding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", required=True, type=Path, help="folder holding MGrounding-630k/")


def _refcoco_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=sorted(REFCOCO_DATASETS))
    p.add_argument("--refs", required=True, type=Path, help="refs(unc).p or refs(umd).p")
    p.add_argument("--instances", required=True, type=Path, help="instances.json (COCO format)")
    p.add_argument("--image-dir", required=True, type=Path, help="COCO train2014 images")
    p.add_argument("--split", default="train")


def _llava_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, nargs="+", type=Path, help="files or folders")
    p.add_argument("--image-dir", type=Path, help="where embedded parquet images are written (once)")
    p.add_argument(
        "--image-root", type=Path, help="JSON `image` paths are relative to this (default: JSON's folder)"
    )


def _m4_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", type=Path, help="default: the annotation file's folder")


def _groma_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--image-root", required=True, type=Path, help="Visual Genome images folder")


MGROUNDING = Converter(
    "mgrounding",
    "one MGrounding-630k JSON file",
    _mgrounding_options,
    lambda a, o: convert_mgrounding(a.input, a.image_root, **o),
)
REFCOCO = Converter(
    "refcoco",
    "RefCOCO / RefCOCO+ / RefCOCOg (refer layout), train split",
    _refcoco_options,
    lambda a, o: convert_refcoco(a.refs, a.instances, a.image_dir, name=a.dataset, split=a.split, **o),
    input_flags=("refs", "instances"),
)
LLAVA_ONEVISION = Converter(
    "llava-onevision",
    "LLaVA-OneVision parquet and/or JSON files",
    _llava_options,
    lambda a, o: convert_llava_onevision(a.input, image_dir=a.image_dir, image_root=a.image_root, **o),
    needs_images=False,
)
M4_INSTRUCT = Converter(
    "m4-instruct",
    "M4-Instruct m4_instruct_annotations.json",
    _m4_options,
    lambda a, o: convert_m4_instruct(a.input, a.image_root or a.input.parent, **o),
    needs_images=False,
)
GROMA = Converter(
    "groma",
    "Groma-Instruct groma_instruct.json",
    _groma_options,
    lambda a, o: convert_groma(a.input, a.image_root, **o),
)


# ---- how `converters all` finds each source under DATA_ROOT ----------------------------------


def annotation_file(
    rel: str, convert: Callable[..., ConversionReport], image_root: str | None = None
) -> Callable[[Path, Path], Found | str]:
    """Discovery of a source that is one annotation file at DATA_ROOT/`rel`, its images under
    DATA_ROOT/`image_root` (None: the file's own folder); converted by convert(file, images, ...)."""

    def discover(root: Path, out: Path) -> Found | str:
        path = root / rel
        if not path.is_file():
            return f"{path} not found"
        images = path.parent if image_root is None else root / image_root
        return Found([path], partial(convert, path, images))

    return discover


def _refcoco(name: str, folder: str, refs_file: str) -> Callable[[Path, Path], Found | str]:
    def discover(root: Path, out: Path) -> Found | str:
        refs, instances = root / folder / refs_file, root / folder / "instances.json"
        if not (refs.is_file() and instances.is_file()):
            return f"{refs} or {instances} not found"
        images = root / "coco" / "train2014"
        return Found([refs, instances], partial(convert_refcoco, refs, instances, images, name=name))

    return discover


def _llava_onevision(root: Path, out: Path) -> Found | str:
    ov = root / "LLaVA-OneVision-Data"
    files = collect_llava_inputs([ov]) if ov.is_dir() else []
    if not files:
        return f"no .parquet/.json files under {ov}"
    image_dir = out / "images" / "llava_onevision"
    return Found(
        files,
        partial(convert_llava_onevision, files, image_dir=image_dir, base=ov),
        {"image_dir": str(image_dir)},
    )


# ---- the table (in pipeline order) ---------------------------------------------------------------

_FREE_FORM = "mg_free_form"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # OUT/sharegpt/<name>.json and a dataset_info.json name
OTHER_COMMANDS = ("mix", "trajectories", "all", "registry")  # __main__'s subcommands that are not sources
SOURCES: dict[str, Source] = {}


def converters() -> list[Converter]:
    """Each converter once, in table order (the CLI's subcommands)."""
    seen: dict[int, Converter] = {}
    for source in SOURCES.values():
        seen.setdefault(id(source.converter), source.converter)
    return list(seen.values())


def sources_by_category() -> dict[str, tuple[str, ...]]:
    """Category -> its sources, in table order (what each Table 12 category mixes)."""
    out: dict[str, list[str]] = {}
    for source in SOURCES.values():
        out.setdefault(source.category, []).append(source.name)
    return {category: tuple(names) for category, names in out.items()}


def register(source: Source) -> Source:
    """Add one source to the table; a name or a subcommand already taken by another is refused."""
    if not _NAME.fullmatch(source.name) or source.name in (SFT_NAME, RL_NAME):
        raise ValueError(f"source name {source.name!r} is not a free dataset name ([a-z0-9_])")
    if source.name in SOURCES:
        raise ValueError(f"source {source.name!r} is already in the sources table")
    if source.converter.cli in OTHER_COMMANDS:
        raise ValueError(f"subcommand {source.converter.cli!r} is one of the converters' own commands")
    for other in converters():
        if other.cli == source.converter.cli and other is not source.converter:
            raise ValueError(f"subcommand {other.cli!r} already belongs to another converter")
    SOURCES[source.name] = source
    return source


for _name, _rel in TASK_FILES.items():
    _category = "m_grounding_free_form" if _name == _FREE_FORM else "m_grounding_stage1"
    _discover = annotation_file(f"MGrounding-630k/{_rel}", partial(convert_mgrounding, name=_name), ".")
    register(Source(_name, _category, MGROUNDING, _discover))
for _name, (_folder, _refs_file) in REFCOCO_DATASETS.items():
    register(Source(_name, "s_grounding", REFCOCO, _refcoco(_name, _folder, _refs_file)))
register(Source("llava_onevision", "s_understanding", LLAVA_ONEVISION, _llava_onevision))
_M4 = annotation_file("M4-Instruct-Data/m4_instruct_annotations.json", convert_m4_instruct)
register(Source("m4_instruct", "m_understanding", M4_INSTRUCT, _M4))
_GROMA = annotation_file("Groma-Instruct/groma_instruct.json", convert_groma, "visual_genome/images")
register(Source("groma_instruct", "s_grounding", GROMA, _GROMA))
