"""`python -m converters trajectories`: MIRG-RL's trajectory-SFT and RL sets from converted MGrounding files.

The inputs are made by the real MGrounding converter from the fixtures (and from the demo's own scene
generators); every expected image and box below was read off the fixture records by hand, so the image
finder, the trajectory format and the parse-back are all checked against independent answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from random import Random

import pytest

from converters.__main__ import main
from converters.mgrounding import TASK_FILES, convert_mgrounding
from converters.trajectories import Item, build_trajectories, locate
from core.grounding import BOX_TOKENS_RE, OBJECT_ID_RE

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "tests" / "fixtures" / "converters" / "data_root"
SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the bounding box in "
    "<answer> </answer> tags."
)
MG_TASKS = {k: v for k, v in TASK_FILES.items()}  # the seven MIRG-RL tasks are all of MGrounding's

# (record id, turn) -> answer targets [(image, box)] and question (context) boxes, read off the fixtures.
EXPECTED = {
    ("coco_17_42", 1): ([(1, (120, 88, 460, 702)), (2, (301, 0, 999, 640))], []),
    ("coco_5_6_7", 1): ([(3, (0, 100, 1000, 900))], []),
    ("coco_no_placeholder", 1): ([(2, (10, 20, 30, 40))], []),
    ("std_0001", 1): ([(2, (412, 300, 588, 511))], []),
    ("std_0002", 1): ([(1, (0, 0, 250, 250))], []),
    ("std_0002", 2): ([(2, (5, 6, 260, 270))], []),
    ("ff_000001", 1): ([(3, (420, 510, 780, 930))], []),
    ("ff_000002", 1): ([(2, (50, 400, 310, 990))], []),
    ("ff_000003", 1): ([(1, (10, 10, 90, 200)), (2, (600, 30, 700, 260))], []),
    ("1_2_3_4", 1): ([(3, (316, 58, 764, 999))], []),
    ("1_2_3_4", 2): ([(1, (408, 656, 578, 997))], []),
    ("4_3", 1): ([(2, (100, 100, 200, 200))], []),
    ("got10k_0001", 1): ([(3, (140, 210, 350, 420))], [(1, (100, 200, 300, 400))]),
    ("got10k_0002", 1): ([(2, (20, 30, 520, 530))], [(1, (0, 0, 500, 500))]),
    ("imagenet_ref_1", 1): ([(2, (250, 300, 700, 800))], []),
    ("imagenet_ref_2", 1): ([(2, (1, 1, 999, 999))], []),
    ("o365_region_1", 1): ([(1, (333, 120, 666, 480))], []),
    ("o365_region_2", 1): ([(1, (0, 500, 500, 1000))], []),
}
NAMES = {
    ("coco_5_6_7", 1): "a red bus",
    ("ff_000001", 1): "the stove",
    ("1_2_3_4", 2): "a woman wearing an orange shirt",
}


def fixture_turns():
    for rel in TASK_FILES.values():
        for record in json.loads((ROOT / "MGrounding-630k" / rel).read_text(encoding="utf-8")):
            turns = record["conversations"]
            for k in range(0, len(turns), 2):
                yield (
                    record["id"],
                    k // 2 + 1,
                    turns[k]["value"],
                    turns[k + 1]["value"],
                    len(record["images"]),
                )


def expected_samples() -> dict[str, tuple[tuple[int, tuple], list]]:
    """`<id>#<k>` -> (target, context) in the order the builder numbers a record's samples."""
    out, counts = {}, {}
    for (rid, _turn), (targets, context) in EXPECTED.items():
        for target in targets:
            counts[rid] = counts.get(rid, 0) + 1
            out[f"{rid}#{counts[rid]}"] = (target, context)
    return out


@pytest.mark.parametrize("rid,turn,question,answer,n", list(fixture_turns()), ids=lambda v: str(v)[:24])
def test_locate_finds_each_fixture_shapes_images(rid, turn, question, answer, n):
    found = locate(question, answer, n)
    targets, context = EXPECTED[(rid, turn)]
    assert [(b.image, b.box) for b in found.targets] == targets
    assert [(b.image, b.box) for b in found.context] == context


B1, B2, B3 = (
    "<|box_start|>(1,2),(30,40)<|box_end|>",
    "<|box_start|>(5,6),(70,80)<|box_end|>",
    "<|box_start|>(9,9),(99,99)<|box_end|>",
)


@pytest.mark.parametrize(
    "question,answer,n,want",
    [
        # the demo's card answers (demo/synth_tasks.py) and its bench-style questions
        (
            "Give its box in each of the following frames.",
            f"It's at {B1} in the second image, {B2} in the third image.",
            3,
            [2, 3],
        ),
        (
            "Ground it in every image.",
            f"<|object_ref_start|>The red X<|object_ref_end|> appears in all of them: {B1} in the first image, {B2} in the second image, {B3} in the 3rd image.",
            3,
            [1, 2, 3],
        ),
        (
            "Give the bounding box of each region in the first image.",
            f"In the first image, the second image: {B1}; the third image: {B2}.",
            3,
            [1, 1],
        ),
        (
            "Can you find a shape of the same color in Image-3?",
            f"Yes. In Image-3, the red X has the same color. It is located at {B1}.",
            4,
            [3],
        ),
        (
            "In Image-2, which shape has the same color as the X in Image-1? Give its bounding box.",
            f"The red X. It is located at {B1}.",
            2,
            [2],
        ),
        (
            "Please find <|object_ref_start|>the object in the first image<|object_ref_end|> in the second image.",
            B1,
            2,
            [2],
        ),
        (
            "Find the object shown in the first image and locate it in the second image. Format:(x1,y1),(x2,y2). Don't generate addtional words.",
            B1,
            2,
            [2],
        ),
        (
            "The object marked with a red box in the first image moves across these frames. Locate it in the fourth image.",
            B1,
            4,
            [4],
        ),
        (
            "Find the red circle in these images and locate it.",
            B1,
            3,
            [None],
        ),  # no image named: undeterminable
        ("Find the red circle and locate it.", B1, 1, [1]),  # one image: that one
        ("Where is it?", f"Picture 2: {B1} picture-1: {B2}", 2, [2, 1]),
    ],
)
def test_locate_demo_and_other_shapes(question, answer, n, want):
    assert [b.image for b in locate(question, answer, n).targets] == want


def convert_fixtures(folder: Path) -> Path:
    """The real MGrounding converter on the fixtures: the builder's input, as `converters all` writes it."""
    sharegpt = folder / "sharegpt"
    for name, rel in MG_TASKS.items():
        convert_mgrounding(
            ROOT / "MGrounding-630k" / rel,
            ROOT,
            sharegpt / f"{name}.json",
            folder / "rej" / f"{name}.jsonl",
            name=name,
            max_reject_rate=1.0,
        )
    return sharegpt


@pytest.fixture(scope="module")
def sharegpt(tmp_path_factory) -> Path:
    return convert_fixtures(tmp_path_factory.mktemp("traj"))


def run(sharegpt: Path, out: Path, *extra: str) -> int:
    return main(["trajectories", "--sharegpt-dir", str(sharegpt), "--output-dir", str(out), *extra])


def read(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


FULL = re.compile(
    r"<bbox_id>(\[\d+-\d+\])</bbox_id><\|object_ref_start\|>([^<]+)<\|object_ref_end\|>("
    + BOX_TOKENS_RE.pattern
    + ")"
)


def parse_answer(text: str) -> tuple[tuple[int, int], tuple[int, ...]]:
    m = re.fullmatch(
        r"<answer><bbox_id>(\[\d+-\d+\])</bbox_id>(" + BOX_TOKENS_RE.pattern + r")</answer>", text
    )
    assert m, text
    oid = OBJECT_ID_RE.fullmatch(m.group(1))
    return (int(oid.group(1)), int(oid.group(2))), tuple(int(v) for v in m.groups()[2:6])


def check_trajectory_against(think: str, answer: str, target, context, num_images: int) -> None:
    """Every [N-M] and box in the trajectory is one of the sample's annotated objects, numbered as specified."""
    (n, m), box = parse_answer(answer)
    assert (n, box) == target
    annotated = {target, *context}
    fulls = {}
    for f in FULL.finditer(think):
        oid = OBJECT_ID_RE.fullmatch(f.group(1))
        key = (int(oid.group(1)), int(oid.group(2)))
        fbox = tuple(int(v) for v in BOX_TOKENS_RE.fullmatch(f.group(3)).groups())
        assert key not in fulls, f"{key} written in full twice: {think}"
        assert (key[0], fbox) in annotated, f"{key} {fbox} is not an annotation: {think}"
        assert 1 <= key[0] <= num_images
        fulls[key] = (f.start(), fbox)
    assert len(BOX_TOKENS_RE.findall(think)) == len(fulls) == think.count("<bbox_id>")
    first_seen: dict[int, list[int]] = {}
    for oid in OBJECT_ID_RE.finditer(think):
        key = (int(oid.group(1)), int(oid.group(2)))
        assert key in fulls, f"{key} is not declared: {think}"
        if key[1] not in first_seen.setdefault(key[0], []):
            assert fulls[key][0] == oid.start() - len("<bbox_id>"), f"first mention of {key} is bare: {think}"
            first_seen[key[0]].append(key[1])
    assert all(ks == list(range(1, len(ks) + 1)) for ks in first_seen.values()), think
    assert fulls[(n, m)][1] == box, "the answer's [N-M] names another object than the answer's box"
    assert len(re.findall(r"[.!?](?:\s|$)", think)) <= 2, f"more than two sentences: {think}"


def test_every_sample_matches_its_records_annotations(sharegpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(sharegpt, out, "--sft-size", "12", "--rl-size", "100") == 0
    printed = capsys.readouterr().out
    want = expected_samples()
    sft, rl = read(out / "mg_traj_sft.json"), read(out / "mg_rl.json")
    assert len(sft) == 12 and f"rl: {len(rl)} of 100 samples (capped" in printed  # capped, and said so
    # Every record is used whole, except that the one filling the SFT set is cut at its size.
    by_source: dict[str, list[str]] = {}
    for r in sft + rl:
        by_source.setdefault(r["id"].rsplit("#", 1)[0], []).append(r["id"])
    assert set(by_source) == {k.rsplit("#", 1)[0] for k in want}
    cut = [s for s, ids in by_source.items() if len(ids) < sum(k.startswith(s + "#") for k in want)]
    assert len(sft) + len(rl) == len(want) - (1 if cut else 0) and len(cut) <= 1
    for record in sft + rl:
        target, context = want[record["id"]]
        assert set(record) >= {"id", "type", "images", "conversations"}
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].endswith(SUFFIX) and "Format:" not in human["value"]
        assert human["value"].count("<image>") == len(record["images"])
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in record["images"])
        if record["id"].startswith(("coco_17_42", "ff_000003")):  # one sample per image of the answer
            assert human["value"].endswith(
                f" Locate it in the {['first', 'second'][target[0] - 1]} image." + SUFFIX
            )
        if record in rl:
            assert set(record) == {
                "id",
                "type",
                "images",
                "conversations",
                "task",
                "image_index",
                "box",
                "num_images",
            }
            assert (record["image_index"], tuple(record["box"])) == target
            assert record["num_images"] == len(record["images"])
            (n, m), box = parse_answer(gpt["value"])
            assert (n, box) == target and m == 1 + sum(c[0] == n for c in context)
        else:
            assert set(record) == {"id", "type", "images", "conversations"}
            think, answer = re.fullmatch(r"<think>(.+?)</think>(<answer>.+</answer>)", gpt["value"]).groups()
            check_trajectory_against(think, answer, target, context, len(record["images"]))
            key = (record["id"].split("#")[0], 1 if record["id"] != "1_2_3_4#2" else 2)
            if key in NAMES:
                assert f"<|object_ref_start|>{NAMES[key]}<|object_ref_end|>" in think
    tasks = {r["task"] for r in rl}
    assert tasks <= {
        "common_object",
        "diff",
        "reasoning",
        "group_grounding",
        "object_tracking",
        "refer_grounding",
        "region",
    }
    report = read(out / "mg_trajectories.report.json")
    assert report["written"] == {"sft": 12, "rl": len(rl)} and report["rejected"] == 0


def test_sets_are_disjoint_by_source_and_two_runs_are_byte_identical(sharegpt, tmp_path):
    sizes = ("--sft-size", "9", "--rl-size", "9")
    assert run(sharegpt, tmp_path / "a", *sizes) == 0
    assert run(sharegpt, tmp_path / "b", *sizes) == 0
    for name in ("mg_traj_sft.json", "mg_rl.json", "mg_trajectories.rejects.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    sources = {
        k: {r["id"].rsplit("#", 1)[0] for r in read(tmp_path / "a" / f"{k}.json")}
        for k in ("mg_traj_sft", "mg_rl")
    }
    assert sources["mg_traj_sft"] and sources["mg_rl"]
    assert not sources["mg_traj_sft"] & sources["mg_rl"]
    assert run(sharegpt, tmp_path / "c", *sizes, "--seed", "1") == 0
    assert (tmp_path / "c" / "mg_traj_sft.json").read_bytes() != (
        tmp_path / "a" / "mg_traj_sft.json"
    ).read_bytes()


def test_missing_task_files_are_skipped_with_a_note(sharegpt, tmp_path, capsys):
    only = tmp_path / "only"
    only.mkdir()
    (only / "mg_region.json").write_bytes((sharegpt / "mg_region.json").read_bytes())
    assert run(only, only) == 0
    out = capsys.readouterr().out
    assert "skipped mg_common" in out and "skipped mg_free_form" in out
    assert [r["task"] for r in read(only / "mg_rl.json")] == []  # both region records went to SFT
    assert len(read(only / "mg_traj_sft.json")) == 2
    assert run(tmp_path / "nothing", tmp_path / "o") == 1
    assert "no converted MGrounding task file" in capsys.readouterr().err


def good_record(rid: str, question: str, answer: str, n: int = 2) -> dict:
    images = [str(ROOT / "MGrounding-630k" / "Common_Object" / "COCO" / f"c{k + 1}.jpg") for k in range(n)]
    human = "<image>\n" * n + question
    return {
        "id": rid,
        "type": "common_train",
        "images": images,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
    }


def test_bad_records_are_skipped_with_a_reason_and_the_good_one_kept(tmp_path, capsys):
    box = "<|box_start|>(10,20),(300,400)<|box_end|>"
    records = [
        good_record("good", "Locate the dog in the second image.", box),
        good_record(
            "off_grid", "Locate the dog in the second image.", "<|box_start|>(10,20),(1300,400)<|box_end|>"
        ),
        good_record("out_of_range", "Find the dog.", f"It's in the fifth image. {box}"),
        good_record("no_image_named", "Find the dog in these images and locate it.", box, n=3),
        good_record(
            "two_in_one", "Find the dogs.", f"Image-1: {box} Image-1: <|box_start|>(1,1),(5,5)<|box_end|>"
        ),
        good_record("no_box", "How many dogs are there?", "Two."),
        good_record("tagged", "Locate it in image 2. </think><answer>[1-1]</answer>", box),
        good_record("good", "Locate the cat in the first image.", box),  # same id as the first
        good_record(
            "bad_name",
            "Locate it in the first image.",
            f"<|object_ref_start|>dog [1-2]<|object_ref_end|>{box}",
        ),
        {
            **good_record("missing", "Locate the dog in the first image.", box),
            "images": ["/nonexistent/a.jpg", "/nonexistent/b.jpg"],
        },
        {
            **good_record("relative", "Locate the dog in the first image.", box),
            "images": ["c1.jpg", "c2.jpg"],
        },
    ]
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    lines = [json.dumps(r) for r in records] + ['{"id": "not_json", "conversations": [}']
    (folder / "mg_common.json").write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    assert run(folder, tmp_path / "out", "--sft-size", "5", "--rl-size", "5") == 0
    rejects = [
        json.loads(line)
        for line in (tmp_path / "out" / "mg_trajectories.rejects.jsonl").read_text().splitlines()
    ]
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons == {
        "off_grid": "bad_box",
        "out_of_range": "image_out_of_range",
        "no_image_named": "no_target_image",
        "two_in_one": "several_targets_in_one_image",
        "no_box": "no_target",
        "tagged": "reserved_tag",
        "good": "duplicate_id",
        "bad_name": "bad_object_name",
        "missing": "missing_image",
        "relative": "missing_image",
        None: "bad_record",
    }
    assert all(r["detail"] and r["dataset"] == "mg_common" for r in rejects)
    kept = read(tmp_path / "out" / "mg_traj_sft.json") + read(tmp_path / "out" / "mg_rl.json")
    assert [r["id"] for r in kept] == ["good#1"]
    assert "(10,20),(300,400)" in kept[0]["conversations"][1]["value"]
    assert "11 rejected" in capsys.readouterr().out


def test_nothing_usable_writes_only_the_rejects(tmp_path, capsys):
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    bad = good_record("x", "Find the dog in these images.", "<|box_start|>(10,20),(30,40)<|box_end|>", n=3)
    (folder / "mg_diff.json").write_text("[\n" + json.dumps(bad) + "\n]\n", encoding="utf-8")
    assert run(folder, tmp_path / "out") == 1
    assert "no record gave a sample" in capsys.readouterr().err
    assert (
        not (tmp_path / "out" / "mg_traj_sft.json").exists()
        and not (tmp_path / "out" / "mg_rl.json").exists()
    )
    assert "no_target_image" in (tmp_path / "out" / "mg_trajectories.rejects.jsonl").read_text()


class BadWriter:
    """A writer (a future teacher model, say) whose reasoning does not match the annotations."""

    def __init__(self, make):
        self.make = make

    def think(self, item: Item, rng: Random) -> str:
        return self.make(item)


def _full(oid: str, box) -> str:
    x1, y1, x2, y2 = box
    return f"<bbox_id>{oid}</bbox_id><|object_ref_start|>it<|object_ref_end|><|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"


@pytest.mark.parametrize(
    "make",
    [
        lambda it: f"It is {_full(f'[{it.target.image}-1]', (1, 1, 2, 2))}.",  # not an annotated box
        lambda it: (
            f"It is {_full('[1-1]' if it.target.image != 1 else '[2-1]', it.target.box)}."
        ),  # wrong image
        lambda it: f"It is {_full(f'[{it.target.image}-2]', it.target.box)}.",  # numbering starts at 2
        lambda it: (
            f"It is [{it.target.image}-1], {_full(f'[{it.target.image}-1]', it.target.box)}."
        ),  # bare first
        lambda it: (
            f"Twice {_full(f'[{it.target.image}-1]', it.target.box)} {_full(f'[{it.target.image}-1]', it.target.box)}"
        ),
        lambda it: "I cannot see anything.",  # the target is never mentioned
        lambda it: (
            f"{_full(f'[{it.target.image}-1]', it.target.box)}</think><answer>(0,0),(9,9)</answer>"
        ),  # tags
        lambda it: (
            f"{_full(f'[{it.target.image}-1]', it.target.box)} and <|box_start|>(0,0),(9,9)<|box_end|>"
        ),
    ],
)
def test_a_trajectory_that_does_not_match_is_rejected(sharegpt, tmp_path, make):
    with pytest.raises(ValueError, match="no record gave a sample"):
        build_trajectories(sharegpt, tmp_path, sft_size=50, rl_size=0, writer=BadWriter(make))
    rejects = [
        json.loads(line) for line in (tmp_path / "mg_trajectories.rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == 16 and {r["reason"] for r in rejects} == {"bad_trajectory"}


def test_refuses_to_overwrite_without_force(sharegpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(sharegpt, out, "--sft-size", "4", "--rl-size", "4") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run(sharegpt, out, "--sft-size", "5", "--rl-size", "5") == 1
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run(sharegpt, out, "--sft-size", "5", "--rl-size", "5", "--force") == 0
    assert len(read(out / "mg_traj_sft.json")) == 5


def test_an_output_that_is_an_input_is_refused_even_with_force(sharegpt, tmp_path, capsys):
    original = (sharegpt / "mg_common.json").read_bytes()
    for flag in ("--report", "--rejects"):
        assert run(sharegpt, tmp_path / "out", flag, str(sharegpt / "mg_common.json"), "--force") == 1
        assert "same file" in capsys.readouterr().err
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "mg_traj_sft.json").symlink_to(sharegpt / "mg_common.json")
    assert run(sharegpt, link_dir, "--force") == 1
    assert "same file" in capsys.readouterr().err
    assert (sharegpt / "mg_common.json").read_bytes() == original
    assert not (tmp_path / "out" / "mg_rl.json").exists()


def test_the_demos_synthetic_records_give_their_known_targets(tmp_path):
    """demo/synth_tasks.py's dataset-card and bench-style records (the demo's RL branch runs on them)."""
    from demo.synth import FORMAT_SUFFIXES, _conversation
    from demo.synth_draw import png_bytes, to_grid
    from demo.synth_tasks import BENCH_TASKS, color_link, only_shape, same_shape

    generators = {**BENCH_TASKS, "same_shape": same_shape, "color_link": color_link, "only_shape": only_shape}
    dataset = {
        "common_object": "mg_common",
        "diff": "mg_diff",
        "group_grounding": "mg_group_grounding",
        "object_tracking": "mg_object_tracking",
        "refer_grounding": "mg_referring",
        "region": "mg_region",
    }
    files: dict[str, list] = {}
    truth = {}
    for name, gen in generators.items():
        for i in range(6):
            sample = gen(Random(f"traj-test|{name}|{i}"), 84, None)
            paths = []
            for k, image in enumerate(sample.images):
                path = tmp_path / "img" / f"{name}_{i}_{k}.png"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(png_bytes(image))
                paths.append(str(path))
            styles = {"card": sample.card}
            if sample.question is not None:
                styles["bench"] = [(sample.question + FORMAT_SUFFIXES["plain"], sample.bench_answer())]
            for style, turns in styles.items():
                rid = f"{name}_{i}_{style}"
                record = {
                    "id": rid,
                    "type": name,
                    "images": paths,
                    "conversations": _conversation(turns, len(paths)),
                }
                files.setdefault(dataset.get(name, "mg_free_form"), []).append(record)
                truth[rid] = (
                    sample.target + 1,
                    to_grid(sample.box, *sample.images[sample.target].size),
                    turns,
                )
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    for ds, records in files.items():
        (folder / f"{ds}.json").write_text(
            "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n", encoding="utf-8"
        )
    report = build_trajectories(folder, sft_size=10_000, rl_size=0)
    rejects = {
        json.loads(x)["id"]: json.loads(x)["reason"]
        for x in (folder / "mg_trajectories.rejects.jsonl").read_text().splitlines()
    }
    for rid, reason in rejects.items():  # only region's several targets in one image are refused
        assert rid.startswith("region") and reason == "several_targets_in_one_image", (
            rid,
            reason,
            truth[rid],
        )
    assert any(rid.startswith("group_grounding") and rid.endswith("bench") for rid in truth)
    got: dict[str, list] = {}
    for record in read(folder / "mg_traj_sft.json"):
        assert "Format:" not in record["conversations"][0]["value"]  # MIG-Bench's answer-format instruction
        assert "Don't generate" not in record["conversations"][0]["value"]
        (n, _m), box = parse_answer(
            re.search(r"<answer>.*</answer>", record["conversations"][1]["value"]).group(0)
        )
        got.setdefault(record["id"].rsplit("#", 1)[0], []).append((n, box))
    assert set(got) | set(rejects) == set(truth) and not set(got) & set(rejects)
    for rid, samples in got.items():
        image, box, turns = truth[rid]
        assert (image, box) in samples, (rid, samples, turns)
    assert report.written["sft"] >= len(got)


def test_objects_in_one_image_are_numbered_in_order_of_mention(tmp_path):
    marked, target = (100, 100, 200, 200), (300, 300, 400, 450)
    question = "The first image marks a dog at <|box_start|>(100,100),(200,200)<|box_end|>. Find its owner in the first image."
    record = good_record(
        "same_image",
        question,
        "<|object_ref_start|>the owner<|object_ref_end|><|box_start|>(300,300),(400,450)<|box_end|>",
    )
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    (folder / "mg_object_tracking.json").write_text("[\n" + json.dumps(record) + "\n]\n", encoding="utf-8")
    build_trajectories(folder, sft_size=1, rl_size=0)
    (sample,) = read(folder / "mg_traj_sft.json")
    think, answer = re.fullmatch(
        r"<think>(.+?)</think>(<answer>.+</answer>)", sample["conversations"][1]["value"]
    ).groups()
    check_trajectory_against(think, answer, (1, target), [(1, marked)], 2)
    assert think.index("[1-1]") < think.index("[1-2]") and parse_answer(answer)[0] == (1, 2)
    build_trajectories(folder, tmp_path / "rl", sft_size=0, rl_size=1)
    (rl,) = read(tmp_path / "rl" / "mg_rl.json")
    assert parse_answer(rl["conversations"][1]["value"]) == ((1, 2), target)
    assert (rl["task"], rl["image_index"], rl["box"], rl["num_images"]) == (
        "object_tracking",
        1,
        list(target),
        2,
    )


def test_a_torn_line_is_skipped_and_named_like_converters_mix(tmp_path, capsys):
    """Issue #25: a torn line (a crash in the middle of a write) used to stop the command with exit 1
    and a message about "the mixture"; now it is skipped, named in the rejects and the report."""
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    box = "<|box_start|>(10,20),(300,400)<|box_end|>"
    good = json.dumps(good_record("good", "Locate the dog in the second image.", box))
    lone = json.dumps(good_record("lone", "Locate the cat \ud800 in the second image.", box))
    (folder / "mg_common.json").write_text(f"[\n{good},\n{good[:40]}\n{lone}\n]\n", encoding="utf-8")
    assert run(folder, tmp_path / "out", "--rl-size", "0") == 0
    err = capsys.readouterr().err
    assert "mg_common.json line 3: not one whole JSON record on its line" in err
    rejects = [
        json.loads(x) for x in (tmp_path / "out" / "mg_trajectories.rejects.jsonl").read_text().splitlines()
    ]
    assert {"dataset": "mg_common", "line": 3, "id": None, "reason": "bad_record"}.items() <= rejects[
        0
    ].items()
    assert any("lone surrogate" in r["detail"] for r in rejects[1:])  # a whole line no UTF-8 file can hold
    assert len(read(tmp_path / "out" / "mg_traj_sft.json")) == 1
    report = json.loads((tmp_path / "out" / "mg_trajectories.report.json").read_text())
    assert report["reasons"]["bad_record"] == 2


def test_many_torn_lines_mean_not_a_converters_file(tmp_path, capsys):
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    (folder / "mg_common.json").write_text("[\n" + "{torn\n" * 101 + "]\n", encoding="utf-8")
    assert run(folder, tmp_path / "out") == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "error: " in last and "101 lines are not one whole JSON record" in last and "mixture" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_empty_inputs_are_named_as_empty_not_as_the_wrong_box_format(tmp_path, capsys):
    folder = tmp_path / "sharegpt"
    folder.mkdir()
    (folder / "mg_common.json").write_text("[\n]\n", encoding="utf-8")
    assert run(folder, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "hold no readable records" in err and "box-token" not in err, err
