"""`--box-format`: Qwen2.5-VL pixel boxes against hand-computed values, Qwen3-VL JSON on the grid, the
unknown-image reject, and `all --box-format qwen2.5-vl` end to end on the fixture data root.

The expected pixel boxes are worked out by hand in the comments (LLaMA-Factory 0.9.5's area pre-shrink with
int truncation, then smart_resize with factor 28 and the released processor's 3136..12845056), not by
calling the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import families
from converters.__main__ import main

FIXTURE_ROOT = Path(__file__).resolve().parent / "fixtures" / "converters" / "data_root"
INSTRUCTION = "Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>. Don't generate addtional words."


def _box(box) -> str:
    x1, y1, x2, y2 = box
    return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


def _image(root: Path, name: str, size) -> str:
    path = root / "MGrounding-630k" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "gray").save(path)
    return f"./MGrounding-630k/{name}"


def _record(rid, images, question, answer):
    placeholders = "<image>\n" * len(images)
    return {
        "id": rid,
        "type": "t",
        "images": images,
        "conversations": [
            {"from": "human", "value": placeholders + question},
            {"from": "gpt", "value": answer},
        ],
    }


def _convert(tmp_path, records, *flags) -> tuple[int, list[dict], list[dict]]:
    src = tmp_path / "in.json"
    src.write_text(json.dumps(records))
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    code = main(
        [
            "mgrounding",
            "--input",
            str(src),
            "--image-root",
            str(tmp_path),
            "--output",
            str(out),
            "--rejects",
            str(rej),
            "--max-reject-rate",
            "1",
            "--force",
            *flags,
        ]
    )
    kept = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rejects = [json.loads(line) for line in rej.read_text().splitlines()] if rej.exists() else []
    return code, kept, rejects


def _fenced(text: str) -> list[dict]:
    assert text.startswith("```json\n") and text.endswith("\n```"), text
    return json.loads(text[len("```json\n") : -len("\n```")])


# (size on disk, size LLaMA-Factory 0.9.5 feeds Qwen2.5-VL at 401408, grid box, its pixel box there)
PIXEL_CASES = [
    # above the budget: 1024x768 -> x sqrt(401408/786432) -> int(731.6) x int(548.7) = 731x548 ->
    # round(731/28)=26 -> 728, round(548/28)=20 -> 560 (qwen-vl-utils would say 728x532)
    ((1024, 768), (728, 560), (250, 500, 750, 1000), [182, 280, 546, 560]),
    # above: 1920x1080 -> 844x474 -> 840x476; 100*840/1000 = 84, 333*476/1000 = 158.508 -> 159
    ((1920, 1080), (840, 476), (100, 333, 900, 667), [84, 159, 756, 317]),
    # below the budget, sides rounded to 28: 300 -> 308, 200 -> 196; 125*308/1000 = 38.5 rounds half up
    ((300, 200), (308, 196), (125, 125, 875, 875), [39, 25, 270, 172]),
    # odd sizes: 641 -> round(22.89)=23 -> 644, 479 -> round(17.11)=17 -> 476;
    # 123*644/1000=79.212, 457*476/1000=217.532, 877*644/1000=564.788, 999*476/1000=475.524
    ((641, 479), (644, 476), (123, 457, 877, 999), [79, 218, 565, 476]),
    # far above: 4000x3000 -> int(731.6) x int(548.7) -> 728x560, as 1024x768
    ((4000, 3000), (728, 560), (0, 0, 1000, 1000), [0, 0, 728, 560]),
    # a thin odd one: 57 -> round(2.04)=2 -> 56, 2000 -> round(71.43)=71 -> 1988
    ((57, 2000), (56, 1988), (500, 10, 1000, 20), [28, 20, 56, 40]),
]


def test_qwen25_pixel_boxes_match_hand_computed_values(tmp_path):
    records = []
    for k, (size, _, grid, _) in enumerate(PIXEL_CASES):
        image = _image(tmp_path, f"p{k}.png", size)
        answer = f"<|object_ref_start|>obj {k}<|object_ref_end|>{_box(grid)}"
        records.append(_record(f"r{k}", [image], f"Locate obj {k}. {INSTRUCTION}", answer))
    code, kept, rejects = _convert(tmp_path, records, "--box-format", "qwen2.5-vl")
    assert code == 0 and rejects == []
    assert [r["id"] for r in kept] == [f"r{k}" for k in range(len(PIXEL_CASES))]
    for record, (_, _, _, pixels) in zip(kept, PIXEL_CASES, strict=True):
        question, answer = (t["value"] for t in record["conversations"])
        k = record["id"][1:]
        assert question.endswith(f"Locate obj {k}. Output its bbox coordinates using JSON format."), question
        assert "<|box_start|>" not in question + answer and "<|object_ref" not in question + answer
        assert _fenced(answer) == [{"bbox_2d": pixels, "label": f"obj {k}"}]


def test_qwen25_image_of_each_box_decides_its_pixels_and_unknown_is_rejected(tmp_path):
    big = _image(tmp_path, "big.png", (1024, 768))  # -> 728x560
    small = _image(tmp_path, "small.png", (300, 200))  # -> 308x196
    same = _image(tmp_path, "same.png", (1024, 768))
    box = (500, 500, 1000, 1000)
    records = [
        _record("named", [big, small], "Find it in the second image.", _box(box)),
        _record("prose", [big, small], "Find the dog.", f"Image-1: {_box(box)}\nImage-2: {_box(box)}"),
        _record("unknown", [big, small], "Find the dog.", _box(box)),
        _record("equal_sizes", [big, same], "Find the dog.", _box(box)),  # one size: no need to know
        _record(
            "question_box_unplaced", [big, small], f"Track {_box(box)}.", f"In the second image: {_box(box)}"
        ),
    ]
    code, kept, rejects = _convert(tmp_path, records, "--box-format", "qwen2.5-vl")
    assert code == 0
    by_id = {r["id"]: r["conversations"][1]["value"] for r in kept}
    assert _fenced(by_id["named"]) == [{"bbox_2d": [154, 98, 308, 196]}]
    assert (
        by_id["prose"]
        == 'Image-1: {"bbox_2d": [364, 280, 728, 560]}\nImage-2: {"bbox_2d": [154, 98, 308, 196]}'
    )
    assert _fenced(by_id["equal_sizes"]) == [{"bbox_2d": [364, 280, 728, 560]}]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "unknown": "unknown_box_image",
        "question_box_unplaced": "unknown_box_image",
    }
    detail = next(r["detail"] for r in rejects if r["id"] == "unknown")
    assert "names no image" in detail and "728x560, 308x196" in detail


def test_qwen3_writes_json_on_the_grid_and_the_native_instruction(tmp_path):
    image = _image(tmp_path, "a.png", (641, 479))  # sizes do not matter on the grid
    other = _image(tmp_path, "b.png", (300, 200))
    records = [
        _record(
            "one",
            [image],
            f"Where is the cat? {INSTRUCTION}",
            f"<|object_ref_start|>the cat<|object_ref_end|>{_box((123, 457, 877, 999))}",
        ),
        _record(
            "two", [image, other], "Find the dog.", _box((0, 0, 1000, 1000))
        ),  # no image needed on a grid
    ]
    code, kept, rejects = _convert(tmp_path, records, "--box-format", "qwen3-vl")
    assert code == 0 and rejects == []
    q, a = (t["value"] for t in kept[0]["conversations"])
    assert q == "<image>\nWhere is the cat? Report bbox coordinates in JSON format."
    assert _fenced(a) == [{"bbox_2d": [123, 457, 877, 999], "label": "the cat"}]
    assert _fenced(kept[1]["conversations"][1]["value"]) == [{"bbox_2d": [0, 0, 1000, 1000]}]


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl", "internvl"])
def test_the_tokenless_instruction_becomes_the_familys_too(tmp_path, family):
    """The demo's records (and any whose instruction has no box tokens) say "Format:(x1,y1),(x2,y2).": left
    in place, the family was trained on another instruction than eval asks with (its grounding_suffix)."""
    image = _image(tmp_path, "a.png", (300, 200))
    question = "Where is the cat? Format:(x1,y1),(x2,y2). Don't generate addtional words."
    _code, kept, _ = _convert(
        tmp_path, [_record("x", [image], question, _box((1, 2, 3, 4)))], "--box-format", family
    )
    fam = families.get_family(family)
    assert kept[0]["conversations"][0]["value"] == "<image>\nWhere is the cat?" + fam.grounding_suffix


def test_default_format_is_byte_identical_to_no_flag(tmp_path):
    image = _image(tmp_path, "a.png", (300, 200))
    records = [_record("x", [image], f"Where? {INSTRUCTION}", _box((1, 2, 3, 4)))]
    _convert(tmp_path, records)
    plain = (tmp_path / "out.jsonl").read_bytes()
    _convert(tmp_path, records, "--box-format", "qwen2-vl")
    assert (tmp_path / "out.jsonl").read_bytes() == plain
    assert b"<|box_start|>(1,2),(3,4)<|box_end|>" in plain


def test_hostile_labels_missing_images_and_bad_options(tmp_path, capsys):
    image = _image(tmp_path, "a.png", (300, 200))
    label = 'a "quoted" `fence` label \u00e9 \\ end'
    records = [
        _record(
            "label",
            [image],
            "Find it.",
            f"<|object_ref_start|>{label}<|object_ref_end|>{_box((0, 0, 500, 500))}",
        ),
        _record("missing", ["./MGrounding-630k/nope.png"], "Find it.", _box((0, 0, 500, 500))),
        _record("collapses", [image], "Find it.", _box((0, 0, 1, 1))),  # 0.308 px wide: rounds to 0
        _record("not_an_image", ["./MGrounding-630k/junk.png"], "Find it.", _box((0, 0, 500, 500))),
    ]
    (tmp_path / "MGrounding-630k" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    code, kept, rejects = _convert(tmp_path, records, "--box-format", "qwen2.5-vl")
    assert code == 0
    answer = kept[0]["conversations"][1]["value"]
    assert answer.count("```") == 2  # the backticks in the label cannot close the fence early
    assert _fenced(answer) == [{"bbox_2d": [0, 0, 154, 98], "label": label}]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "missing": "missing_image",
        "collapses": "box_collapses",
        "not_an_image": "undecodable_image",
    }

    src = tmp_path / "in.json"
    base = [
        "mgrounding",
        "--input",
        str(src),
        "--image-root",
        str(tmp_path),
        "--output",
        str(tmp_path / "o.json"),
    ]
    assert main([*base, "--image-max-pixels", "0"]) == 2
    assert main([*base, "--box-format", "qwen4-vl"]) == 2
    assert main([*base, "--image-min-pixels", "500000", "--force"]) == 1  # above the max
    assert "--image-min-pixels 500000 is above --image-max-pixels 401408" in capsys.readouterr().err
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    assert main([*base, "--box-format", "qwen2.5-vl", "--base-model", str(model), "--force"]) == 1
    assert "is Qwen3-VL (config.json), but --box-format is qwen2.5-vl" in capsys.readouterr().err


# ---- `all` end to end ------------------------------------------------------------------------------
def _all(data_root, out, *extra) -> int:
    argv = ["all", "--data-root", str(data_root), "--output-dir", str(out), "--stage2-total", "20"]
    return main([*argv, "--max-reject-rate", "0.5", "--traj-sft-size", "6", "--rl-size", "4", *extra])


@pytest.mark.slow  # an end-to-end run: `make test` runs it, `make test-unit` does not
def test_all_qwen25_end_to_end_then_format_change_redoes_every_step(tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(FIXTURE_ROOT, root)
    out = tmp_path / "out"
    assert _all(root, out, "--box-format", "qwen2.5-vl") == 0
    capsys.readouterr()
    sharegpt = out / "sharegpt"
    registry = json.loads((out / "dataset_info.json").read_text())
    assert "mg_common" in registry and "migician_stage1" in registry and "mg_rl" in registry
    assert not any("sharegpt_grid" in e["file_name"] for e in registry.values())
    for path in sharegpt.glob("*.json"):
        text = path.read_text()
        assert "<|box_start|>" not in text, f"{path.name} still holds box tokens"
    for name in ("mg_common", "refcoco", "groma_instruct", "mg_traj_sft", "mg_rl"):
        assert '"bbox_2d' in (sharegpt / f"{name}.json").read_text() or name == "mg_traj_sft"
    # The fixture images are all 64x48: LLaMA-Factory keeps 64x48 (3072 px, grown by sqrt(3136/3072) to
    # int(64.66) x int(48.50)), smart_resize gives round(64/28)*28 x round(48/28)*28 = 56x56.
    rl = json.loads((sharegpt / "mg_rl.json").read_text())
    assert rl and all(
        r["box_format"] == "qwen2.5-vl" and r["resized_sizes"] == [[56, 56]] * r["num_images"] for r in rl
    )
    for r in rl:
        x1, y1, x2, y2 = r["box"]
        expected = [int(v * 56 / 1000 + 0.5) for v in (x1, y1, x2, y2)]
        assert r["family_box"] == expected and "<|box_start|>" not in r["conversations"][1]["value"]
    sft = (sharegpt / "mg_traj_sft.json").read_text()
    assert "<bbox_id>[" in sft and '\\"bbox_2d\\"' in sft
    assert (out / "sharegpt_grid" / "mg_common.json").read_text().count("<|box_start|>") > 0
    report = json.loads((out / "reports" / "mg_common.json").read_text())
    assert (
        report["box_format"]["family"] == "qwen2.5-vl" and report["box_format"]["image_max_pixels"] == 401408
    )
    assert report["stamp"]["params"]["box_format"] == "qwen2.5-vl"
    traj = json.loads((out / "reports" / "mg_trajectories.json").read_text())
    assert traj["box_format"]["family"] == "qwen2.5-vl"

    assert _all(root, out, "--box-format", "qwen2.5-vl") == 0  # unchanged: nothing is redone
    assert "0 step(s) run" in capsys.readouterr().out
    assert _all(root, out) == 0  # back to qwen2-vl: every step is redone, no stale JSON kept
    assert "0 already up to date" in capsys.readouterr().out
    assert '"bbox_2d' not in (sharegpt / "mg_common.json").read_text()
    assert "<|box_start|>" in (sharegpt / "mg_rl.json").read_text()
    report = json.loads((out / "reports" / "mg_common.json").read_text())
    assert report["box_format"]["family"] == "qwen2-vl"


@pytest.mark.slow  # an end-to-end run: `make test` runs it, `make test-unit` does not
@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_trajectories_command_takes_grid_inputs_and_writes_the_family_form(tmp_path, family):
    out = tmp_path / "out"
    assert _all(FIXTURE_ROOT, out) == 0
    dest = tmp_path / "traj"
    code = main(
        [
            "trajectories",
            "--sharegpt-dir",
            str(out / "sharegpt"),
            "--output-dir",
            str(dest),
            "--sft-size",
            "4",
            "--rl-size",
            "3",
            "--box-format",
            family,
        ]
    )
    assert code == 0
    rl = (dest / "mg_rl.json").read_text()
    assert "<|box_start|>" not in rl and f'"box_format": "{family}"' in rl
