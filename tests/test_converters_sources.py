"""RefCOCO family, LLaVA-OneVision (parquet + JSON), M4-Instruct and Groma-Instruct converters
on fixtures in their published layouts (tests/fixtures/converters/data_root)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from converters.__main__ import main
from converters.refcoco import load_refs

ROOT = Path(__file__).resolve().parent / "fixtures" / "converters" / "data_root"


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def rejects(path: Path) -> dict:
    return {r["id"]: r["reason"] for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


@pytest.mark.parametrize(
    ("dataset", "folder", "refs_file", "first_ref"),
    [("refcoco", "refcoco", "refs(unc).p", 1), ("refcoco_plus", "refcoco+", "refs(unc).p", 101)]
    + [("refcocog", "refcocog", "refs(umd).p", 201)],
)
def test_refcoco_train_refs_become_qwen_grounding_records(tmp_path, dataset, folder, refs_file, first_ref):
    out = tmp_path / "out.json"
    argv = ["refcoco", "--dataset", dataset, "--refs", str(ROOT / folder / refs_file)]
    argv += [
        "--instances",
        str(ROOT / folder / "instances.json"),
        "--image-dir",
        str(ROOT / "coco" / "train2014"),
    ]
    assert main([*argv, "--output", str(out), "--max-reject-rate", "1", "--check-images"]) == 0
    records = load(out)
    # ref 1: two distinct sentences (the repeated "left guy" is dropped); ref 2: one; the val ref is skipped.
    assert [r["id"] for r in records] == [
        f"{dataset}-{first_ref}-0",
        f"{dataset}-{first_ref}-1",
        f"{dataset}-{first_ref + 1}-0",
    ]
    man, _, dog = records
    assert man["images"] == [str(ROOT / "coco" / "train2014" / "COCO_train2014_000000000009.jpg")]
    assert man["type"] == dataset
    # bbox [2, 3, 20, 30] on 64x48 pixels -> (31.25, 62.5, 343.75, 687.5) per mille, rounded half up
    assert man["conversations"][1]["value"] == (
        "<|object_ref_start|>man in red shirt<|object_ref_end|><|box_start|>(31,63),(344,688)<|box_end|>"
    )
    assert "<image>" in man["conversations"][0]["value"]
    assert "<|object_ref_start|>man in red shirt<|object_ref_end|>" in man["conversations"][0]["value"]
    # bbox [30.4, 10, 33.6, 38] reaches the right and bottom edges exactly
    assert dog["conversations"][1]["value"].endswith("<|box_start|>(475,208),(1000,1000)<|box_end|>")
    assert rejects(tmp_path / "out.rejects.jsonl") == {
        f"{dataset}-{first_ref + 3}-0": "bad_box",  # a 0.01-pixel-wide box collapses to x1 == x2
        f"{dataset}-{first_ref + 4}": "bad_record",  # ann_id not in instances.json
    }


def test_refs_pickles_may_not_run_code(tmp_path):
    evil = tmp_path / "refs(unc).p"
    evil.write_bytes(pickle.dumps(Path("/etc/passwd")))
    with pytest.raises(ValueError, match="only lists/dicts/strings"):
        load_refs(evil)
    # The published files are Python 2 pickles whose strings load as bytes: they come back as str.
    refs = load_refs(ROOT / "refcoco" / "refs(unc).p")
    assert refs[0]["sentences"][0]["sent"] == "man in red shirt" and refs[0]["split"] == "train"


def test_llava_onevision_parquet_images_extracted_once_and_json_form(tmp_path, capsys):
    images = tmp_path / "images"
    argv = ["llava-onevision", "--input", str(ROOT / "LLaVA-OneVision-Data"), "--image-dir", str(images)]
    assert (
        main([*argv, "--output", str(tmp_path / "a.json"), "--max-reject-rate", "0.5", "--check-images"]) == 0
    )
    assert "3 written, 0 already extracted" in capsys.readouterr().out
    records = {r["id"]: r for r in load(tmp_path / "a.json")}
    parquet_ids = {"clevr_1", "clevr_2", "text_only_1", "clevr_3"}
    assert set(records) == parquet_ids | {"000000000009", "000000000025", "text_only_2"}
    clevr = records["clevr_1"]
    assert clevr["type"] == "CLEVR-Math(MathV360K)"
    (path,) = clevr["images"]
    assert path.startswith(str(images)) and path.endswith(".jpg")
    with Image.open(path) as im:
        assert im.size == (64, 48)
    assert records["clevr_2"]["images"][0].endswith(".png")  # format from the bytes, not a name
    assert records["clevr_2"]["conversations"][0]["value"].startswith("<image>\n")  # fixed
    assert records["text_only_1"]["images"] == [] and records["text_only_2"]["images"] == []
    json_form = records["000000000009"]
    assert json_form["images"] == [
        str(ROOT / "LLaVA-OneVision-Data" / "sharegpt4v(coco)" / "images" / "l1.jpg")
    ]
    assert records["000000000025"]["type"] == "sharegpt4v(coco)"  # no data_source: the subset folder
    assert rejects(tmp_path / "a.rejects.jsonl") == {"placeholder_without_image": "placeholder_mismatch"}

    before = {p: p.stat().st_mtime_ns for p in images.rglob("*") if p.is_file()}
    assert main([*argv, "--output", str(tmp_path / "b.json"), "--max-reject-rate", "0.5"]) == 0
    assert "0 written, 3 already extracted" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in images.rglob("*") if p.is_file()} == before
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_llava_parquet_needs_an_image_dir(tmp_path, capsys):
    argv = [
        "llava-onevision",
        "--input",
        str(ROOT / "LLaVA-OneVision-Data"),
        "--output",
        str(tmp_path / "o.json"),
    ]
    assert main(argv) == 1
    assert "--image-dir" in capsys.readouterr().err


def test_m4_instruct_multi_image_lists(tmp_path):
    m4 = ROOT / "M4-Instruct-Data"
    argv = [
        "m4-instruct",
        "--input",
        str(m4 / "m4_instruct_annotations.json"),
        "--output",
        str(tmp_path / "o.json"),
    ]
    assert main([*argv, "--check-images"]) == 0
    records = {r["id"]: r for r in load(tmp_path / "o.json")}
    assert records["nlvr2_0002"]["images"] == [str(m4 / "nlvr2" / n) for n in ("m2.png", "m3.png", "m1.png")]
    assert records["nlvr2_0002"]["type"] == "m4_instruct"
    assert records["nlvr2_0003"]["conversations"][0]["value"] == "<image>\n<image>\nCompare the two images."
    assert len(records["nlvr2_0001"]["conversations"]) == 4


def test_groma_boxes_substituted_in_qwen_format(tmp_path):
    argv = ["groma", "--input", str(ROOT / "Groma-Instruct" / "groma_instruct.json")]
    argv += ["--image-root", str(ROOT / "visual_genome" / "images"), "--output", str(tmp_path / "o.json")]
    assert main([*argv, "--max-reject-rate", "0.5", "--check-images"]) == 0
    first, second = load(tmp_path / "o.json")
    red = "<|box_start|>(63,125),(375,750)<|box_end|>"  # [4, 6, 20, 30] on 64x48
    dots = "<|box_start|>(500,167),(969,917)<|box_end|>"  # [32, 8, 30, 36]
    assert first["conversations"] == [
        {"from": "human", "value": "<image>\nWhat can you see on the left?"},
        {
            "from": "gpt",
            "value": f"There is <|object_ref_start|>a red box<|object_ref_end|>{red} next to "
            f"<|object_ref_start|>two white dots<|object_ref_end|>{dots}{red}.",
        },
        {"from": "human", "value": "Anything on the right?"},
        {"from": "gpt", "value": f"Only <|object_ref_start|>the background<|object_ref_end|>{dots}."},
    ]
    assert first["images"] == [str(ROOT / "visual_genome" / "images" / "1.jpg")]
    assert [t["from"] for t in second["conversations"]] == ["human", "gpt"]  # roles from position
    assert second["conversations"][1]["value"].endswith("<|box_start|>(0,0),(1000,1000)<|box_end|>.")
    assert rejects(tmp_path / "o.rejects.jsonl") == {"groma-2": "bad_box"}  # 1 <ground_box>, 2 box_inds
