"""The sources table (converters/sources.py): a new converter is one module plus one entry.

The test writes a real converter module (a toy annotation format) to a temporary folder, registers
one `Source` for it, and then sees it everywhere the table is read: the CLI's subcommands and help,
`converters all`'s discovery and steps, OUT/dataset_info.json and the Table 12 category it feeds.
Nothing else is edited: no elif chain, no registry list, no category constant.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from converters import sources
from converters.__main__ import build_parser, main
from converters.composition import load_composition
from converters.pipeline import conversion_steps

FIXTURE_ROOT = Path(__file__).resolve().parent / "fixtures" / "converters" / "data_root"
IMAGE = FIXTURE_ROOT / "coco" / "train2014" / "COCO_train2014_000000000009.jpg"

# The one module: a toy single-image grounding format, read with the package's own helpers.
TOY_MODULE = '''
    """Toy-Ground (a made-up format) -> ShareGPT: {uid, file, question, box} per record."""
    from pathlib import Path

    from core.grounding import box_tokens
    from converters.convert import convert_file
    from converters.records import Rejected, make_resolver
    from core.streaming import SourceReject, iter_json_records


    def iter_toy(path, image_root, progress=None):
        resolve = make_resolver(image_root)
        for item in iter_json_records(path, progress=progress, skip_bad=True):
            if isinstance(item, SourceReject):
                yield item
                continue
            try:
                image = resolve(item["file"])
            except Rejected as err:
                yield SourceReject(item["uid"], err.reason, err.detail)
                continue
            yield {
                "id": item["uid"],
                "type": "toy_ground",
                "images": [image],
                "conversations": [
                    {"from": "human", "value": "<image>\\n" + item["question"]},
                    {"from": "gpt", "value": box_tokens(item["box"])},
                ],
            }


    def convert_toy(input_path, image_root, output, rejects, name="toy_ground", **options):
        return convert_file(
            input_path,
            "Toy-Ground file",
            lambda path, progress: iter_toy(path, Path(image_root), progress),
            output,
            rejects,
            name=name,
            **options,
        )
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy module imported from its own file, and its one table entry registered (undone after)."""
    module_path = tmp_path / "toy_ground.py"
    module_path.write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("toy_ground", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def options(p):
        p.add_argument("--input", required=True, type=Path)
        p.add_argument("--image-root", required=True, type=Path)

    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    # ---- the one entry ----
    sources.register(
        sources.Source(
            "toy_ground",
            "s_grounding",
            sources.Converter(
                "toy-ground",
                "Toy-Ground annotations",
                options,
                lambda a, o: module.convert_toy(a.input, a.image_root, **o),
            ),
            sources.annotation_file("Toy-Ground/toy.json", module.convert_toy),  # images beside it
        )
    )
    return module


def _toy_data(root: Path) -> Path:
    folder = root / "Toy-Ground"
    (folder / "img").mkdir(parents=True)
    shutil.copy(IMAGE, folder / "img" / "a.jpg")
    records = [
        {
            "uid": f"toy-{i}",
            "file": "img/a.jpg",
            "question": f"Find thing {i}.",
            "box": [10 * i, 20, 300, 400],
        }
        for i in range(4)
    ]
    records.append({"uid": "toy-bad", "file": "../../escape.jpg", "question": "Find.", "box": [1, 2, 3, 4]})
    (folder / "toy.json").write_text(json.dumps(records), encoding="utf-8")
    return folder / "toy.json"


def test_a_registered_source_is_a_subcommand_with_its_options(toy, tmp_path, capsys):
    assert "toy-ground" in build_parser().format_help()
    src = _toy_data(tmp_path)
    out = tmp_path / "toy.json"
    argv = ["toy-ground", "--input", str(src), "--image-root", str(src.parent), "--output", str(out)]
    assert main([*argv, "--max-reject-rate", "0.5", "--check-images"]) == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == ["toy-0", "toy-1", "toy-2", "toy-3"]
    assert records[1]["conversations"][1]["value"] == "<|box_start|>(10,20),(300,400)<|box_end|>"
    rejected = [json.loads(line) for line in (tmp_path / "toy.rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejected] == [("toy-bad", "image_outside_root")]
    assert "5 records read, 4 kept" in capsys.readouterr().out


def test_a_registered_source_is_discovered_converted_registered_and_mixed(toy, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(FIXTURE_ROOT, root)
    options = {"check_images": False, "workers": None, "max_reject_rate": 0.5, "image_cache": None}
    steps, notes = conversion_steps(root, tmp_path / "out", options)
    assert "toy_ground" not in [s.name for s in steps] and any("skipped toy_ground" in n for n in notes)
    _toy_data(root)
    steps, _ = conversion_steps(root, tmp_path / "out", options)
    assert steps[-1].name == "toy_ground" and steps[-1].inputs == [root / "Toy-Ground" / "toy.json"]
    assert "toy_ground" in load_composition().sources("s_grounding")

    out = tmp_path / "out"
    argv = ["all", "--data-root", str(root), "--output-dir", str(out), "--max-reject-rate", "0.5"]
    assert main([*argv, "--stage1-total", "60", "--stage2-total", "20"]) == 0
    assert len(json.loads((out / "sharegpt" / "toy_ground.json").read_text(encoding="utf-8"))) == 4
    registry = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert registry["toy_ground"]["file_name"] == "sharegpt/toy_ground.json"
    report = json.loads((out / "reports" / "migician_stage1.report.json").read_text(encoding="utf-8"))
    assert "toy_ground" in report["categories"]["s_grounding"]["sources"]
    assert report["sources"]["toy_ground"]["available"] == 4
    mixture = json.loads((out / "mixtures" / "migician_stage1.json").read_text(encoding="utf-8"))
    assert any(r["source"] == "toy_ground" for r in mixture)


def test_the_table_refuses_clashing_entries(monkeypatch):
    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    refcoco = sources.SOURCES["refcoco"]
    with pytest.raises(ValueError, match="already in the sources table"):
        sources.register(refcoco)
    other = sources.Converter("refcoco", "another", lambda p: None, lambda a, o: None)
    with pytest.raises(ValueError, match="subcommand 'refcoco' already belongs to another converter"):
        sources.register(sources.Source("refcoco_v2", "s_grounding", other, refcoco.discover))
    mix = sources.Converter("mix", "clash", lambda p: None, lambda a, o: None)
    with pytest.raises(ValueError, match="converters' own commands"):
        sources.register(sources.Source("mixer", "s_grounding", mix, refcoco.discover))
    for bad in ("mg_rl", "../x", "Refcoco", ""):
        with pytest.raises(ValueError, match="not a free dataset name"):
            sources.register(sources.Source(bad, "s_grounding", refcoco.converter, refcoco.discover))


def test_the_table_is_what_every_reader_sees():
    """The 13 published sources, in the order the pipeline runs them, each in its Table 12 category."""
    assert list(sources.SOURCES) == [
        "mg_common",
        "mg_diff",
        "mg_group_grounding",
        "mg_object_tracking",
        "mg_referring",
        "mg_region",
        "mg_free_form",
        "refcoco",
        "refcoco_plus",
        "refcocog",
        "llava_onevision",
        "m4_instruct",
        "groma_instruct",
    ]
    assert [c.cli for c in sources.converters()] == [
        "mgrounding",
        "refcoco",
        "llava-onevision",
        "m4-instruct",
        "groma",
    ]
    needs = {name: s.needs_images for name, s in sources.SOURCES.items()}
    assert [n for n, v in needs.items() if not v] == ["llava_onevision", "m4_instruct"]
    assert sources.sources_by_category()["m_grounding_free_form"] == ("mg_free_form",)
