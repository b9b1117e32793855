"""Issue 16, converters: hostile inputs a careless user (or a bad download) hands the converters.

Each test is one case of the issue: the bad record is skipped and named while the batch goes
on, or the command refuses with a message naming the file; a user's file is never changed.
All runs go through the real command line (`converters.__main__.main`).
"""

from __future__ import annotations

import io
import json
import pickle
import time
from pathlib import Path

import pytest
from PIL import Image

from converters.__main__ import main
from converters.images import CACHE_HEADER
from core.streaming import RecordWriter

BOX = "<|box_start|>(10,10),(200,300)<|box_end|>"


def jpeg(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue())
    return path


def mg_line(rid: str, image: str = "./img/a.jpg", question: str = "Where is it?") -> str:
    return json.dumps(
        {
            "id": rid,
            "images": [image],
            "conversations": [
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": BOX},
            ],
        }
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    """A JSON array with one element per line (element k is on line k + 2)."""
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    return path


def rejects_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


@pytest.fixture
def root(tmp_path) -> Path:
    jpeg(tmp_path / "img" / "a.jpg")
    return tmp_path


def run_mg(root: Path, lines: list[str], *extra: str) -> tuple[int, Path, Path]:
    src = write_lines(root / "in.json", lines)
    out, rej = root / "out" / "o.json", root / "out" / "o.rejects.jsonl"
    code = main(["mgrounding", "--input", str(src), "--image-root", str(root), "--output", str(out), *extra])
    return code, out, rej


# ------------------------------------------------------------------ data lost or a user's file changed


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_report_equal_to_output_is_refused_before_any_work(root, capsys, force):
    src = write_lines(root / "in.json", [mg_line("a")])
    out = root / "o.json"
    code = main(
        ["mgrounding", "--input", str(src), "--image-root", str(root), "--output", str(out)]
        + force
        + ["--report", str(out)]
    )
    assert code == 1
    assert "--output and --report are the same file" in capsys.readouterr().err
    assert not out.exists() and not (root / "o.rejects.jsonl").exists()


@pytest.mark.parametrize(
    ("flag", "same_as"),
    [
        ("--report", "--input"),
        ("--rejects", "--input"),
        ("--image-cache", "--input"),
        ("--image-cache", "--output"),
        ("--report", "--rejects"),
    ],
)
def test_two_paths_of_one_command_must_differ_even_with_force(root, capsys, flag, same_as):
    src = write_lines(root / "in.json", [mg_line("a")])
    before = src.read_bytes()
    paths = {"--input": src, "--output": root / "o.json", "--rejects": root / "r.jsonl"}
    paths[flag] = paths[same_as]
    argv = ["mgrounding", "--image-root", str(root), "--force", "--check-images", "--workers", "0"]
    for name, path in paths.items():
        argv += [name, str(path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "are the same file" in err and flag in err and same_as in err
    assert src.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["img", "in.json"]


def test_a_symlinked_report_pointing_at_the_input_is_refused(root, capsys):
    src = write_lines(root / "in.json", [mg_line("a")])
    (root / "report.json").symlink_to(src)
    code = main(
        ["mgrounding", "--input", str(src), "--image-root", str(root), "--output", str(root / "o.json")]
        + ["--report", str(root / "report.json"), "--force"]
    )
    assert code == 1 and "--input and --report are the same file" in capsys.readouterr().err
    assert json.loads(src.read_text())[0]["id"] == "a"


def test_image_cache_that_is_not_a_cache_is_not_appended_to(root, capsys):
    notes = root / "notes.txt"
    notes.write_text("my own notes\n", encoding="utf-8")
    args = ["--check-images", "--workers", "0", "--image-cache", str(notes)]
    code, out, _ = run_mg(root, [mg_line("a")], *args)
    assert code == 1 and "is not an image-check cache; pass --force" in capsys.readouterr().err
    assert notes.read_text(encoding="utf-8") == "my own notes\n" and not out.exists()
    code, out, _ = run_mg(root, [mg_line("a")], *args, "--force")  # --force: replaced by a fresh cache
    assert code == 0
    lines = notes.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0] == CACHE_HEADER and lines[1].endswith(str(root / "img" / "a.jpg") + "\n")


def test_a_cache_from_before_the_header_is_still_read(root, capsys):
    image = root / "img" / "a.jpg"
    cache = root / "old_cache.tsv"
    cache.write_text(f"{image.stat().st_size}\t{image.stat().st_mtime_ns}\t{image}\n", encoding="utf-8")
    code, out, _ = run_mg(
        root, [mg_line("a")], "--check-images", "--workers", "0", "--image-cache", str(cache)
    )
    assert code == 0 and "0 decoded, 1 known good from the cache" in capsys.readouterr().out


def _sharegpt(path: Path, n: int, kind: str, extra_lines: list[str] = ()) -> Path:
    with RecordWriter(path, force=True) as out:
        for i in range(n):
            out.write(
                {
                    "id": f"{kind}-{i}",
                    "type": kind,
                    "images": [],
                    "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                }
            )
    if extra_lines:  # appended inside the array, one per line, as a corrupted copy would have them
        text = path.read_text(encoding="utf-8").rstrip().rstrip("]").rstrip()
        path.write_text(text + ",\n" + ",\n".join(extra_lines) + "\n]\n", encoding="utf-8")
    return path


def test_mix_whose_stage_2_fails_leaves_nothing_and_the_rerun_needs_no_force(tmp_path, capsys):
    shared = tmp_path / "sharegpt"
    shared.mkdir()
    for name in ("llava_onevision", "refcoco", "m4_instruct", "mg_common"):
        _sharegpt(shared / f"{name}.json", 5, name)
    out = tmp_path / "mixtures"
    argv = ["mix", "--sharegpt-dir", str(shared), "--output-dir", str(out), "--stage1-total", "20"]
    argv += ["--stage2-total", "10"]
    assert main(argv) == 1  # stage 2 needs mg_free_form
    assert "stage2: category m_grounding_free_form has none of its sources" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
    _sharegpt(shared / "mg_free_form.json", 5, "mg_free_form")
    assert main(argv) == 0  # no --force: nothing of the failed run is in the way
    assert sorted(p.name for p in out.iterdir()) == [
        "migician_stage1.json",
        "migician_stage1.report.json",
        "migician_stage2.json",
        "migician_stage2.report.json",
    ]


def test_mix_skips_malformed_lines_names_them_and_keeps_counts_exact(tmp_path, capsys):
    shared = tmp_path / "sharegpt"
    shared.mkdir()
    bad = ['{"id": "torn", "type": oops}', '["not", "a", "record"]', '{"id": "sur", "type": "\\ud800"}']
    _sharegpt(shared / "mg_common.json", 6, "mg_common", bad)
    _sharegpt(shared / "mg_free_form.json", 6, "mg_free_form")
    out = tmp_path / "mixtures"
    argv = ["mix", "--sharegpt-dir", str(shared), "--output-dir", str(out), "--stage1-total", "30"]
    assert main([*argv, "--stage2-total", "20", "--allow-missing-categories"]) == 0
    report = json.loads((out / "migician_stage1.report.json").read_text(encoding="utf-8"))
    assert report["total"] == 30 and report["sources"]["mg_common"]["selected"] == 30
    skipped = {(Path(s["file"]).name, s["line"]): s["reason"] for s in report["skipped_lines"]}
    assert set(skipped) == {("mg_common.json", 8), ("mg_common.json", 9), ("mg_common.json", 10)}
    assert "not a JSON record" in skipped[("mg_common.json", 8)]
    assert "not one whole JSON record" in skipped[("mg_common.json", 9)]
    assert "lone surrogate" in skipped[("mg_common.json", 10)]
    mixture = json.loads((out / "migician_stage1.json").read_text(encoding="utf-8"))
    assert len(mixture) == 30 and {r["id"] for r in mixture} == {f"mg_common-{i}" for i in range(6)}
    assert "skipped 3 unreadable line(s)" in capsys.readouterr().err


# ------------------------------------------------------------------ one bad record must not abort the batch

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (mg_line("sur", question="\ud800 where?"), "bad_record", "turn 0 text holds '\\ud800'"),
        (mg_line("\udcff-id"), "bad_record", "id holds"),
        ('{"id": "big", "n": ' + "7" * 5000 + "}", "bad_record", "line 3 column 1: Exceeds the limit"),
        ('{"id": "deep", "x": ' + DEEP + "}", "bad_record", "line 3 column 1: nested too deeply"),
        (mg_line("nul", image="./img/a\x00.jpg"), "bad_record", "image 0 path contains a NUL byte"),
        (mg_line("sur-path", image="./img/\ud800.jpg"), "bad_record", "image 0 path holds"),
        (mg_line("up", image="./img/../../etc/passwd"), "image_outside_root", "leaves the image root"),
        (mg_line("abs", image="/etc/passwd"), "image_outside_root", "leaves the image root"),
    ],
)
def test_one_hostile_mgrounding_record_is_skipped_and_named(root, bad, reason, detail):
    code, out, rej = run_mg(
        root,
        [mg_line("good1"), bad, mg_line("good2")],
        "--check-images",
        "--workers",
        "1",
        "--max-reject-rate",
        "1",
    )
    assert code == 0
    assert [r["id"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["good1", "good2"]
    (entry,) = rejects_of(rej)
    assert entry["index"] == 1 and entry["reason"] == reason and detail in entry["detail"], entry


def test_nul_and_surrogate_paths_reach_the_image_checker_without_killing_it(tmp_path):
    from converters.images import check_image

    for name in ("a\x00b.jpg", "a\ud800.jpg"):
        path, reason, detail, *_ = check_image(str(tmp_path / name))
        assert reason == "missing_image" and "not a usable file name" in detail


def _groma(root: Path, records: list[dict]) -> tuple[int, Path, Path]:
    jpeg(root / "vg" / "1.jpg")
    src = root / "groma.json"
    src.write_text(json.dumps(records), encoding="utf-8")  # Infinity, \ud800 escapes as json writes them
    out = root / "out" / "g.json"
    code = main(
        ["groma", "--input", str(src), "--image-root", str(root / "vg"), "--output", str(out)]
        + ["--max-reject-rate", "1"]
    )
    return code, out, root / "out" / "g.rejects.jsonl"


def _groma_record(**change) -> dict:
    record = {
        "file_name": "1.jpg",
        "width": 64,
        "height": 48,
        "boxes": [[4, 6, 20, 30]],
        "conversation": [
            {"from": "human", "value": "[grounding]What is there?"},
            {"from": "gpt", "value": "<p>a box</p> <roi><ground_box></roi>.", "box_inds": [0]},
        ],
    }
    record.update(change)
    return record


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"boxes": [[float("inf"), 6, 20, 30]]}, "bad_box", "not finite"),
        ({"boxes": [[1e308, 6, 1e308, 30]]}, "bad_box", "not finite"),
        ({"width": 1e-308}, "bad_box", "record 1"),
        ({"file_name": 7}, "bad_record", "'file_name' 7 is not a non-empty string"),
        ({"file_name": ["1.jpg"]}, "bad_record", "is not a non-empty string"),
        ({"file_name": "../../1.jpg"}, "image_outside_root", "leaves the image root"),
        ({"boxes": {"0": [1, 2, 3, 4]}}, "bad_record", "'boxes' is not a list"),
        (
            {"conversation": [{"from": "human", "value": "\ud800?"}, {"from": "gpt", "value": "no"}]},
            "bad_record",
            "lone surrogate",
        ),
    ],
)
def test_one_hostile_groma_record_is_skipped_and_named(tmp_path, change, reason, detail):
    code, out, rej = _groma(tmp_path, [_groma_record(), _groma_record(**change), _groma_record()])
    assert code == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 2
    (entry,) = rejects_of(rej)
    assert entry["index"] == 1 and entry["reason"] == reason and detail in entry["detail"], entry


@pytest.mark.parametrize(
    ("image", "question", "reason", "detail"),
    [
        (["nlvr2/../../../x.png"], "Compare.", "image_outside_root", "leaves the image root"),
        (["/abs/m1.png"], "Compare.", "image_outside_root", "leaves the image root"),
        (["nlvr2/m1.png"], "Compare \ud83d.", "bad_record", "lone surrogate"),
    ],
)
def test_one_hostile_m4_record_is_skipped_and_named(tmp_path, image, question, reason, detail):
    jpeg(tmp_path / "nlvr2" / "m1.png")
    conv = [{"from": "human", "value": "<image>\nCompare."}, {"from": "gpt", "value": "Same."}]
    good = {"id": "ok", "image": ["nlvr2/m1.png"], "conversations": conv}
    bad = {
        "id": "bad",
        "image": image,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, conv[1]],
    }
    src = tmp_path / "m4.json"
    src.write_text(json.dumps([good, bad, {**good, "id": "ok2"}]), encoding="utf-8")
    out = tmp_path / "out" / "m4.json"
    assert main(["m4-instruct", "--input", str(src), "--output", str(out), "--max-reject-rate", "1"]) == 0
    assert [r["id"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["ok", "ok2"]
    (entry,) = rejects_of(tmp_path / "out" / "m4.rejects.jsonl")
    assert entry["id"] == "bad" and entry["reason"] == reason and detail in entry["detail"], entry


def test_a_parquet_file_with_one_corrupt_page_loses_only_that_row_group(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    conv = [{"from": "human", "value": "What is this? " * 10}, {"from": "gpt", "value": "A thing. " * 10}]
    rows = [{"id": f"p{i}", "conversations": conv} for i in range(6)]
    path = tmp_path / "ov" / "sub" / "train.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3, compression="snappy")
    column = pq.ParquetFile(path).metadata.row_group(0).column(2)
    data = bytearray(path.read_bytes())
    for i in range(column.data_page_offset, column.data_page_offset + 8):
        data[i] ^= 0x5A  # the page header of row group 0's last column
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):  # the precondition: pyarrow cannot read that row group
        list(pq.ParquetFile(path).iter_batches(row_groups=[0]))
    out = tmp_path / "out" / "ov.json"
    argv = ["llava-onevision", "--input", str(path.parent), "--image-dir", str(tmp_path / "imgs")]
    assert main([*argv, "--output", str(out), "--max-reject-rate", "1"]) == 0
    assert [r["id"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["p3", "p4", "p5"]
    rejects = rejects_of(tmp_path / "out" / "ov.rejects.jsonl")
    assert [r["index"] for r in rejects] == [0, 1, 2]
    assert all(str(path) in r["detail"] and "row group 0: unreadable" in r["detail"] for r in rejects)
    assert "6 records read, 3 kept" in capsys.readouterr().out


# ------------------------------------------------------------------ RefCOCO: clear errors, no tracebacks


def _refcoco(tmp_path: Path, refs: list | bytes, instances=None) -> tuple[int, str, Path]:
    jpeg(tmp_path / "coco" / "a.jpg")
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(refs if isinstance(refs, bytes) else pickle.dumps(refs, protocol=2))
    if instances is None:
        instances = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 11, "image_id": 1, "bbox": [4, 6, 20, 30]}],
        }
    inst_path = tmp_path / "instances.json"
    inst_path.write_text(json.dumps(instances), encoding="utf-8")
    out = tmp_path / "out" / "rc.json"
    argv = ["refcoco", "--dataset", "refcoco", "--refs", str(refs_path), "--instances", str(inst_path)]
    return (
        main([*argv, "--image-dir", str(tmp_path / "coco"), "--output", str(out), "--max-reject-rate", "1"]),
        str(refs_path),
        out,
    )


def _ref(ref_id: int, text: str = "red box", **change) -> dict:
    return {
        "ref_id": ref_id,
        "ann_id": 11,
        "image_id": 1,
        "split": "train",
        "sentences": [{"sent": text}],
        **change,
    }


def _instances(image: dict | None = None, ann: dict | None = None, extra_images=()) -> dict:
    img = {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}
    return {
        "images": [
            img,
            *extra_images,
            {"id": 2, "file_name": "a.jpg", "width": 64, "height": 48, **(image or {})},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "bbox": [4, 6, 20, 30]},
            {"id": 12, "image_id": 2, "bbox": [4, 6, 20, 30], **(ann or {})},
        ],
    }


@pytest.mark.parametrize(
    ("instances", "bad_ref", "reason", "detail"),
    [
        (_instances(ann={"bbox": [float("inf"), 0, 5, 5]}), {"ann_id": 12}, "bad_box", "not finite"),
        (_instances(ann={"bbox": [1e308, 0, 1e308, 5]}), {"ann_id": 12}, "bad_box", "not finite"),
        (_instances(image={"file_name": 5}), {"ann_id": 12, "image_id": 2}, "bad_record", "file_name 5"),
        (
            _instances(image={"file_name": None}),
            {"ann_id": 12, "image_id": 2},
            "bad_record",
            "file_name None",
        ),
        (
            _instances(image={"file_name": "../a.jpg"}),
            {"ann_id": 12, "image_id": 2},
            "image_outside_root",
            "leaves",
        ),
        (_instances(), {"ann_id": [11]}, "bad_record", "ann_id [11] is not an id"),
        (_instances(), {"sentences": [{"sent": "\ud800 box"}]}, "bad_record", "lone surrogate"),
    ],
)
def test_one_hostile_refcoco_ref_is_skipped_and_named(tmp_path, instances, bad_ref, reason, detail):
    code, _, out = _refcoco(tmp_path, [_ref(1), _ref(2, **bad_ref), _ref(3, "blue box")], instances)
    assert code == 0
    assert [r["id"] for r in json.loads(out.read_text(encoding="utf-8"))] == ["refcoco-1-0", "refcoco-3-0"]
    (entry,) = rejects_of(tmp_path / "out" / "rc.rejects.jsonl")
    assert entry["id"].startswith("refcoco-2") and entry["reason"] == reason and detail in entry["detail"], (
        entry
    )


def test_refcoco_image_without_id_is_noted_not_fatal(tmp_path, capsys):
    code, _, out = _refcoco(tmp_path, [_ref(1)], _instances(extra_images=[{"file_name": "x.jpg"}]))
    assert code == 0 and len(json.loads(out.read_text(encoding="utf-8"))) == 1
    assert "1 of 3 instances.json images have no usable id and were ignored" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([{"images": []}], "holds a JSON list; expected a COCO object"),
        ({"images": {"id": 1}}, "`images` is a dict"),
    ],
)
def test_refcoco_instances_of_the_wrong_shape_are_refused_by_name(tmp_path, capsys, instances, message):
    code, _, out = _refcoco(tmp_path, [_ref(1)], instances)
    err = capsys.readouterr().err
    assert code == 1 and message in err and "instances.json" in err and not out.exists()


def _deep_pickle(depth: int) -> bytes:
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _shared_pickle(levels: int) -> bytes:
    node: list = []
    for _ in range(levels):
        node = [node, node]
    return pickle.dumps(node, protocol=2)


def _self_pickle() -> bytes:
    node: list = [{"ref_id": 1}]
    node.append(node)
    return pickle.dumps(node, protocol=2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_self_pickle(), "a list contains itself"),
        (_deep_pickle(50_000), "nested more than 32 levels deep"),
        (b"\x80\x02]K\x01K\x02s.", "IndexError"),  # SETITEM on a list
        (b"\x80\x02]U\x01kK\x02s.", "TypeError"),  # SETITEM with a string key on a list
        (b"\x80\x02}K\x01a.", "AttributeError"),  # APPEND on a dict
        (b"\x80\x02X\xff\xff\xff\x7fabc.", "truncated"),  # a 2 GB string in 12 bytes
        (b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"abc.", "not a readable refs pickle"),
        (b"\x80\x02cos\nsystem\n.", "refers to os.system"),
        (b"\x80\x02}.", "expected a list of refs, found dict"),
    ],
)
def test_hostile_refs_pickles_are_refused_by_name(tmp_path, capsys, data, message):
    code, refs_path, out = _refcoco(tmp_path, data)
    err = capsys.readouterr().err
    assert code == 1 and refs_path in err and message in err, err
    assert not out.exists()


def test_a_tiny_pickle_of_shared_references_is_refused_in_linear_time(tmp_path, capsys):
    data = _shared_pickle(24)  # 2**24 lists when copied naively: 31 s and 3 GB before the fix
    assert len(data) < 400
    start = time.perf_counter()
    code, refs_path, _ = _refcoco(tmp_path, data)
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert code == 1 and refs_path in err and "one container referenced many times" in err


# ------------------------------------------------------------------ empty and misshapen input files


def test_an_empty_input_warns_and_says_so_in_the_report(root, capsys):
    src = root / "in.json"
    src.write_text("", encoding="utf-8")
    report = root / "report.json"
    argv = ["mgrounding", "--input", str(src), "--image-root", str(root), "--output", str(root / "o.json")]
    assert main([*argv, "--report", str(report)]) == 0
    assert f"warning: no records read from {src}" in capsys.readouterr().out
    assert any("no records read" in note for note in json.loads(report.read_text())["notes"])


def test_a_json_object_where_a_list_is_expected_is_called_that(root, capsys):
    src = root / "in.json"
    src.write_text(json.dumps({"data": [json.loads(mg_line("a"))]}), encoding="utf-8")
    argv = ["mgrounding", "--input", str(src), "--image-root", str(root), "--output", str(root / "o.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{src}: holds one JSON object where a list of records" in err
    assert "missing or non-string id" not in err and not (root / "o.json").exists()
