"""The demo's synthetic data: determinism, published layouts, and answers recomputed from the pixels.

The pixel checks do not reuse the generator's bookkeeping: they read the written PNG/JPEG files,
find the target from the question text and the images alone (the colour named, the colour of the
source image, the marked object, the colour present in every image, the changed pixels, the crop),
and compare its pixel box with the written answer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.atomicio import OutputExistsError
from demo import synth
from demo.synth_draw import COLORS, MARKER
from tests.conftest import REPO, run_main

SMALL = {"stage1": 120, "free_form": 60, "general": 30, "bench": 70, "image_size": 84}
MIG_TASKS = {
    "diff",
    "view_diff",
    "common_object",
    "object_tracking",
    "multi_view",
    "region",
    "refer_grounding",
    "group_grounding",
    "reasoning",
    "correspondence",
}
TASK_FILES = {
    "Common_Object/common_train_70k.json": "common_train",
    "Difference/diff_train_70k.json": "diff_train",
    "Group_Grounding/gg_train_120k.json": "gg_train",
    "Object_Tracking/ot_train_130k.json": "ot_train",
    "Referring_Grounding/refer_train_70k.json": "refer_train",
    "Region_Locating/region_train_70k.json": "region_train",
    "Free-Form/free_form_grounding_130k.json": "free_form",
}
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]
BOX = re.compile(r"<\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    synth.generate(out, seed=0, progress=False, **SMALL)
    return out


@pytest.fixture(scope="module")
def suffix(root: Path) -> str:
    """The format suffix the bench-style training questions end with (recorded in the manifest)."""
    return json.loads((root / synth.MANIFEST).read_text())["format_suffix"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel).convert("RGB"), dtype=np.int16)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), right/bottom exclusive, of the True pixels."""
    if not mask.any():
        return None
    rows, cols = np.where(mask.any(axis=1))[0], np.where(mask.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _color_mask(px: np.ndarray, rgb, tol: int = 0) -> np.ndarray:
    return (np.abs(px - np.array(rgb, dtype=np.int16)) <= tol).all(axis=2)


def _colors_in(px: np.ndarray) -> set[str]:
    return {name for name, rgb in COLORS.items() if _color_mask(px, rgb).any()}


def _cell_of(box, px) -> tuple[int, int, int, int]:
    """The 3x3 grid cell (pixel box) that wholly contains `box`; fails if the box crosses a cell edge."""
    h, w = px.shape[:2]
    xs, ys = [round(i * w / 3) for i in range(4)], [round(i * h / 3) for i in range(4)]
    left, top, right, bottom = box
    cols = [c for c in range(3) if xs[c] <= left and right <= xs[c + 1]]
    rows = [r for r in range(3) if ys[r] <= top and bottom <= ys[r + 1]]
    assert len(cols) == 1 and len(rows) == 1, f"object box {box} is not inside one grid cell"
    return xs[cols[0]], ys[rows[0]], xs[cols[0] + 1], ys[rows[0] + 1]


def _grid(box, px) -> tuple[int, int, int, int]:
    h, w = px.shape[:2]
    left, top, right, bottom = box
    return round(1000 * left / w), round(1000 * top / h), round(1000 * right / w), round(1000 * bottom / h)


def _unit(box, px) -> list[float]:
    h, w = px.shape[:2]
    left, top, right, bottom = box
    return [round(left / w, 3), round(top / h, 3), round(right / w, 3), round(bottom / h, 3)]


def _ordinal(question: str, after: str) -> int:
    m = re.search(after + r" the (\w+) image", question)
    assert m, question
    return ORDINALS.index(m.group(1))


def _expected_box(task: str, question: str, pxs: list[np.ndarray]) -> tuple[int, tuple]:
    """Find the target from the question and the pixels alone: (image index, its cell's pixel box)."""
    target, box = _find_target(task, question, pxs)
    return target, _cell_of(box, pxs[target])


def _find_target(task: str, question: str, pxs: list[np.ndarray]) -> tuple[int, tuple]:
    """(image index, pixel box of the target's own pixels)."""
    if task == "group_grounding":
        color = re.search(r"Find the (\w+) (\w+) in these images", question).group(1)
        holders = [i for i, px in enumerate(pxs) if color in _colors_in(px)]
        assert len(holders) == 1, f"{color} is in images {holders}: not a unique reference"
        return holders[0], _bbox(_color_mask(pxs[holders[0]], COLORS[color]))
    if task in ("refer_grounding", "reasoning"):
        source = _colors_in(pxs[0])
        assert len(source) == 1, f"source image shows {source}"
        (color,) = source
        return 1, _bbox(_color_mask(pxs[1], COLORS[color]))
    if task == "object_tracking":
        marker = _bbox(_color_mask(pxs[0], MARKER))
        left, top, right, bottom = marker
        inside = pxs[0][top + 2 : bottom - 2, left + 2 : right - 2]
        (color,) = _colors_in(inside)
        target = _ordinal(question, "Locate it in")
        assert target > 0
        return target, _bbox(_color_mask(pxs[target], COLORS[color]))
    if task == "common_object":
        shared = set.intersection(*(_colors_in(px) for px in pxs))
        assert len(shared) == 1, f"colours shared by all images: {shared}"
        target = _ordinal(question, "locate it in")
        return target, _bbox(_color_mask(pxs[target], COLORS[shared.pop()]))
    if task == "diff":
        assert len(pxs) == 2
        return 1, _bbox((pxs[0] != pxs[1]).any(axis=2))
    raise AssertionError(task)


def _check_region(answer_px_box, pxs, question) -> None:
    m = re.match(r"The (\w+) image is a region cropped from the first image", question)
    crop_index = ORDINALS.index(m.group(1))
    left, top, right, bottom = answer_px_box
    full = Image.fromarray(pxs[0].astype(np.uint8))
    crop = full.crop((left, top, right, bottom)).resize(
        pxs[crop_index].shape[1::-1], Image.Resampling.NEAREST
    )
    assert np.array_equal(np.asarray(crop, dtype=np.int16), pxs[crop_index]), (
        "answer box is not the cropped region"
    )


def _png(image: Image.Image) -> bytes:
    from demo.synth_draw import png_bytes

    return png_bytes(image)


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path, root):
    # seed 0 again, in another process with another string-hash seed: no dependence on set/dict order
    again = tmp_path / "again"
    args = [sys.executable, "-m", "demo.synth", "--out", str(again), "--quiet"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    first, second = _files(root), _files(again)
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"files differ between two runs with seed 0: {differing[:5]}"

    other = tmp_path / "other"
    synth.generate(other, seed=1, progress=False, **SMALL)
    third = _files(other)
    assert third["MIG-Bench/MIG_data.json"] != first["MIG-Bench/MIG_data.json"]
    assert third["MGrounding-630k/MGrounding-630k.json"] != first["MGrounding-630k/MGrounding-630k.json"]


def test_mgrounding_records_follow_the_dataset_card(root):
    combined = []
    for rel, rtype in TASK_FILES.items():
        records = json.loads((root / "MGrounding-630k" / rel).read_text())
        task_dir = rel.split("/")[0]
        assert records, rel
        for rec in records:
            assert list(rec) == ["id", "images", "conversations", "type"], rec["id"]
            assert rec["type"] == rtype
            n = len(rec["images"])
            assert 2 <= n <= 4, rec["id"]
            for path in rec["images"]:
                assert path.startswith(f"./MGrounding-630k/{task_dir}/"), path
                assert (root / path).is_file(), path
            roles = [t["from"] for t in rec["conversations"]]
            assert roles == ["human", "gpt"] * (len(roles) // 2) and roles, rec["id"]
            first = rec["conversations"][0]["value"]
            assert first.startswith("<image>\n" * n) and not first[len("<image>\n" * n) :].startswith(
                "<image>"
            )
            text = "".join(t["value"] for t in rec["conversations"])
            assert text.count("<image>") == n, f"{rec['id']}: placeholders != images"
            assert text.count("<|object_ref_start|>") == text.count("<|object_ref_end|>")
            assert BOX.search(rec["conversations"][-1]["value"]), f"{rec['id']}: last answer has no box"
            for t in rec["conversations"][1::2]:
                boxes = BOX.findall(t["value"])
                assert t["value"].count("<|box_start|>") == len(boxes), t["value"]
                for x1, y1, x2, y2 in (map(int, b) for b in boxes):
                    assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000, t["value"]
        combined += records
    assert json.loads((root / "MGrounding-630k" / "MGrounding-630k.json").read_text()) == combined
    ids = [r["id"] for r in combined]
    assert len(ids) == len(set(ids))


NAMED = re.compile(r"It's in the (\w+) image\. " + BOX.pattern)


def test_most_bench_analogue_answers_are_the_bare_box(root, suffix):
    """...or, where the bench question leaves the image open (group grounding), the box after its image."""
    for rel, rtype in list(TASK_FILES.items())[:6]:
        records = json.loads((root / "MGrounding-630k" / rel).read_text())
        form = NAMED if rtype == "gg_train" else BOX
        asked = [r for r in records if r["conversations"][0]["value"].endswith(" " + suffix)]
        assert len(asked) >= 0.6 * len(records), rel
        for r in asked:
            assert form.fullmatch(r["conversations"][1]["value"]), r["id"]
        for r in records:  # a bare box answers only the bench's question
            assert not BOX.fullmatch(r["conversations"][1]["value"]) or r in asked, r["id"]


def test_training_answers_match_the_pixels(root, suffix):
    """Bench-style records: the box from the pixels equals the answer (0-1000 grid, exact)."""
    checked = Counter()
    for rel in TASK_FILES:
        for rec in json.loads((root / "MGrounding-630k" / rel).read_text()):
            human = rec["conversations"][0]["value"]
            if not human.endswith(suffix):
                continue
            question = human.replace("<image>\n", "").removesuffix(suffix)
            pxs = [_pixels(root, p) for p in rec["images"]]
            (answer,) = [tuple(map(int, b)) for b in BOX.findall(rec["conversations"][1]["value"])]
            task = _task_of(rec["type"], question)
            if task == "region":
                w, h = pxs[0].shape[1], pxs[0].shape[0]
                x1, y1, x2, y2 = answer
                _check_region(
                    (round(x1 * w / 1000), round(y1 * h / 1000), round(x2 * w / 1000), round(y2 * h / 1000)),
                    pxs,
                    question,
                )
            elif task == "same_shape":
                continue
            else:
                target, box = _expected_box(task, question, pxs)
                assert _grid(box, pxs[target]) == answer, f"{rec['id']}: pixels give {box}"
                if task == "group_grounding":  # the answer names the image the pixels put the target in
                    named = NAMED.fullmatch(rec["conversations"][1]["value"])
                    assert named and ORDINALS.index(named[1]) == target, rec["conversations"][1]["value"]
            checked[task] += 1
    assert set(checked) >= {
        "group_grounding",
        "refer_grounding",
        "object_tracking",
        "common_object",
        "diff",
        "region",
        "reasoning",
    }, checked


def _task_of(rtype: str, question: str) -> str:
    if rtype == "free_form":
        return "reasoning" if "same color" in question else "same_shape"
    return {
        "common_train": "common_object",
        "diff_train": "diff",
        "gg_train": "group_grounding",
        "ot_train": "object_tracking",
        "refer_train": "refer_grounding",
        "region_train": "region",
    }[rtype]


def test_card_style_answers_name_the_right_image(root, suffix):
    """'It's in the third image. <box>' and '<box> in the second image' answers agree with the pixels."""
    located = re.compile(r"It's in the (\w+) image\. " + BOX.pattern)
    listed = re.compile(BOX.pattern + r" in the (\w+) image")
    n = 0
    for rel in (
        "Group_Grounding/gg_train_120k.json",
        "Object_Tracking/ot_train_130k.json",
        "Common_Object/common_train_70k.json",
    ):
        for rec in json.loads((root / "MGrounding-630k" / rel).read_text()):
            if rec["conversations"][0]["value"].endswith(suffix):
                continue
            pxs = [_pixels(root, p) for p in rec["images"]]
            turns = rec["conversations"]
            for human, gpt in zip(turns[::2], turns[1::2], strict=True):
                if rec["type"] == "gg_train":
                    color = re.search(r"<\|object_ref_start\|>the (\w+)", human["value"]).group(1)
                    pairs = [(m[0], m[1:]) for m in located.findall(gpt["value"])]
                elif rec["type"] == "ot_train":
                    left, top, right, bottom = _bbox(_color_mask(pxs[0], MARKER))
                    (color,) = _colors_in(pxs[0][top + 2 : bottom - 2, left + 2 : right - 2])
                    pairs = [(m[4], m[:4]) for m in listed.findall(gpt["value"])]
                else:
                    color = re.search(r"<\|object_ref_start\|>The (\w+)", gpt["value"]).group(1)
                    pairs = [(m[4], m[:4]) for m in listed.findall(gpt["value"])]
                assert pairs, gpt["value"]
                for ordinal, box in pairs:
                    k = ORDINALS.index(ordinal)
                    pixel_box = _cell_of(_bbox(_color_mask(pxs[k], COLORS[color])), pxs[k])
                    assert _grid(pixel_box, pxs[k]) == tuple(map(int, box)), f"{rec['id']}: {gpt['value']}"
                    n += 1
    assert n >= 10


def test_bench_layout_is_mig_data_json(root):
    instances = json.loads((root / "MIG-Bench" / "MIG_data.json").read_text())
    assert isinstance(instances, list) and len(instances) == SMALL["bench"]
    counts = Counter(x["task"] for x in instances)
    assert set(counts) <= MIG_TASKS and len(counts) == 7
    assert max(counts.values()) - min(counts.values()) <= 1
    for i, x in enumerate(instances):
        assert list(x) == ["task", "images", "question", "answer", "additional_info", "need_format"], i
        assert 2 <= len(x["images"]) <= 4, i
        for p in x["images"]:
            assert re.fullmatch(r"\./MIG-Bench/images/[a-z_]+/case\d{3}_\d\.png", p), p
            assert (root / p).is_file(), p
        assert (
            isinstance(x["question"], str) and x["question"].endswith(" ") and "Format:" not in x["question"]
        )
        assert "<image>" not in x["question"]
        assert isinstance(x["additional_info"], str) and x["need_format"] is True
        x1, y1, x2, y2 = x["answer"]
        assert all(isinstance(v, float) for v in x["answer"]), x["answer"]
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, x["answer"]


def test_bench_answers_match_the_pixels(root):
    instances = json.loads((root / "MIG-Bench" / "MIG_data.json").read_text())
    for i, x in enumerate(instances):
        pxs = [_pixels(root, p) for p in x["images"]]
        if x["task"] == "region":
            h, w = pxs[0].shape[:2]
            x1, y1, x2, y2 = x["answer"]
            _check_region((round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h)), pxs, x["question"])
            continue
        target, box = _expected_box(x["task"], x["question"], pxs)
        assert _unit(box, pxs[target]) == x["answer"], f"instance {i} ({x['task']}): pixels give {box}"


def test_chance_level_is_one_cell_in_nine(tmp_path):
    """Every bench answer is one of the 9 grid-cell boxes and every cell is the answer equally often.

    So Acc@0.5 is cell accuracy and a model that ignores the pixels scores 1/9 (the docstring's claim).
    """
    out = tmp_path / "bench"
    synth.generate(out, seed=3, stage1=0, free_form=0, general=0, bench=7 * 27, progress=False)
    instances = json.loads((out / "MIG-Bench" / "MIG_data.json").read_text())
    size = json.loads((out / synth.MANIFEST).read_text())["params"]["image_size"]
    edges = [round(round(i * size / 3) / size, 3) for i in range(4)]
    cells = [[edges[c], edges[r], edges[c + 1], edges[r + 1]] for r in range(3) for c in range(3)]
    per_task: dict[str, Counter] = {}
    for x in instances:
        assert x["answer"] in cells, x
        per_task.setdefault(x["task"], Counter())[cells.index(x["answer"])] += 1
    assert len(per_task) == 7
    for task, counts in per_task.items():
        assert [counts[c] for c in range(9)] == [3] * 9, (task, counts)


def test_bench_layouts_are_unseen_in_training(root, tmp_path):
    """The bench redraws a scene whose layout occurs in training (the `seen` set), then uses a new one."""
    from demo.synth_tasks import BENCH_TASKS

    cells = list(range(9))
    synth._rng(0, "bench-cells", "diff").shuffle(cells)
    first = BENCH_TASKS["diff"](synth._rng(0, "bench", "diff", 0, 0), 112, cells[0])
    synth._bench(tmp_path / "fresh", 0, 7, 112, False, set())
    synth._bench(tmp_path / "seen", 0, 7, 112, False, {(first.task, first.signature)})
    case = "MIG-Bench/images/diff/case000_2.png"
    assert (tmp_path / "fresh" / case).read_bytes() == _png(first.images[1])
    assert (tmp_path / "seen" / case).read_bytes() != _png(first.images[1])
    train_hashes = {
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "MGrounding-630k").rglob("*.png")
    }
    bench_sets = json.loads((root / "MIG-Bench" / "MIG_data.json").read_text())
    for x in bench_sets:
        hashes = {hashlib.sha256((root / p).read_bytes()).hexdigest() for p in x["images"]}
        assert not hashes <= train_hashes, x


def test_refcoco_layout_and_boxes(root):
    instances = json.loads((root / "refcoco" / "instances.json").read_text())
    assert set(instances) >= {"images", "annotations", "categories"}
    images = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    cats = {c["id"]: c["name"] for c in instances["categories"]}
    with open(root / "refcoco" / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    assert len(refs) == SMALL["general"]
    assert Counter(r["split"] for r in refs) == {"train": 27, "val": 3}
    for r in refs:
        assert set(r) >= {"ref_id", "ann_id", "image_id", "split", "sentences", "category_id"}
        ann, im = anns[r["ann_id"]], images[r["image_id"]]
        assert ann["image_id"] == r["image_id"] and ann["category_id"] == r["category_id"]
        px = _pixels(root, f"coco/train2014/{im['file_name']}")
        assert px.shape[:2] == (im["height"], im["width"])
        for s in r["sentences"]:
            assert set(s) >= {"sent", "raw", "tokens"} and s["tokens"] == s["sent"].split()
            color = next(w for w in s["sent"].split() if w in COLORS)
            assert cats[r["category_id"]] in s["sent"]
            # JPEG: colour within a tolerance; the box is the grid cell holding those pixels
            got = _bbox(_color_mask(px, COLORS[color], tol=40))
            x, y, w, h = ann["bbox"]
            assert _cell_of(got, px) == (x, y, x + w, y + h), (
                r["ref_id"],
                got,
                ann["bbox"],
            )


def test_llava_onevision_parquet_has_embedded_images_and_true_answers(root):
    shards = sorted((root / "LLaVA-OneVision-Data").glob("*/*.parquet"))
    assert len(shards) == 2
    rows = [row for s in shards for row in pq.read_table(s).to_pylist()]
    assert len(rows) == SMALL["general"]
    assert pq.read_schema(shards[0]).names == ["id", "image", "conversations", "data_source"]
    for row in rows:
        img = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        px = np.asarray(img, dtype=np.int16)
        conv = row["conversations"]
        assert conv[0]["from"] == "human" and conv[0]["value"].startswith("<image>\n")
        assert "".join(t["value"] for t in conv).count("<image>") == 1
        for q, a in zip(conv[::2], conv[1::2], strict=True):
            if "What color" in q["value"]:
                assert _colors_in(px) == {a["value"].rstrip(".").lower()}, row["id"]


def test_m4_instruct_layout(root):
    base = root / "M4-Instruct-Data"
    records = json.loads((base / "m4_instruct_annotations.json").read_text())
    assert len(records) == SMALL["general"]
    for r in records:
        assert set(r) == {"id", "image", "conversations"}
        assert all((base / p).is_file() for p in r["image"])
        text = "".join(t["value"] for t in r["conversations"])
        assert text.count("<image>") == len(r["image"]) >= 2
        for q, a in zip(r["conversations"][::2], r["conversations"][1::2], strict=True):
            m = re.match(r"(?:<image>\n)*Which image contains a (\w+) shape\?", q["value"])
            if m:
                holders = [i for i, p in enumerate(r["image"]) if m.group(1) in _colors_in(_pixels(base, p))]
                assert a["value"] == f"The {ORDINALS[holders[0]]} image." and len(holders) == 1


def test_existing_output_is_refused_kept_or_replaced(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "user.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        synth.generate(out, stage1=6, free_form=1, general=1, bench=7, progress=False)
    assert [p.name for p in out.iterdir()] == ["user.txt"]

    small = {"stage1": 6, "free_form": 1, "general": 1, "bench": 7}
    fresh = tmp_path / "fresh"
    synth.generate(fresh, progress=False, **small)
    stamp = (fresh / "MIG-Bench" / "MIG_data.json").stat().st_mtime_ns
    assert synth.generate(fresh, progress=False, **small).get("up_to_date")
    assert (fresh / "MIG-Bench" / "MIG_data.json").stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError):
        synth.generate(fresh, progress=False, **{**small, "bench": 14})
    synth.generate(fresh, progress=False, force=True, **{**small, "bench": 14})
    assert len(json.loads((fresh / "MIG-Bench" / "MIG_data.json").read_text())) == 14


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "demo.synth", "--out", str(out), "--seed", "0", "--stage1", "6"]
    args += ["--free-form", "2", "--general", "2", "--bench", "7", "--image-size", "112", "--quiet"]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "MIG-Bench/MIG_data.json" in run.stdout
    assert Image.open(next((out / "MIG-Bench" / "images").rglob("*.png"))).size == (112, 112)
    again = run_main("demo.synth", args[3:])  # the rest in this process (the same main())
    assert again.returncode == 0 and "up to date" in again.stdout
    bad = run_main("demo.synth", [*args[3:-2], "--image-size", "20"])
    assert bad.returncode == 2 and "--image-size" in bad.stderr


def test_plain_suffix_keeps_box_tokens_out_of_questions(tmp_path):
    """--format-suffix plain: the eval script's instruction without its (non-numeric) box tokens."""
    out = tmp_path / "plain"
    synth.generate(out, stage1=12, free_form=4, general=1, bench=7, format_suffix="plain", progress=False)
    plain = synth.FORMAT_SUFFIXES["plain"]
    records = json.loads((out / "MGrounding-630k" / "MGrounding-630k.json").read_text())
    asked = [r for r in records if r["conversations"][0]["value"].endswith(plain)]
    assert asked
    for r in records:
        for turn in r["conversations"][::2]:
            assert "<|box_" not in turn["value"], r["id"]
    with pytest.raises(ValueError, match="format-suffix"):
        synth.generate(tmp_path / "bad", format_suffix="nope", progress=False)


def test_grid_images_carry_a_distinct_tint_per_cell(root):
    """Every grid image shows each cell's own background tint (the model's only absolute position cue)."""
    from demo.synth_draw import tint

    tints = [tint(c) for c in range(9)]
    assert len(set(tints)) == 9 and not set(tints) & set(COLORS.values())
    instances = json.loads((root / "MIG-Bench" / "MIG_data.json").read_text())
    for x in (x for x in instances if x["task"] == "group_grounding"):
        for p in x["images"]:
            px = _pixels(root, p)
            h, w = px.shape[:2]
            for c in range(9):
                row, col = divmod(c, 3)
                corner = px[round(row * h / 3) + 1, round(col * w / 3) + 1]
                assert tuple(int(v) for v in corner) == tints[c], (p, c)
