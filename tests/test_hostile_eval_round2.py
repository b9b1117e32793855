"""Issue #25, eval: metrics.json, benchmark records, run.json and output folders a careless user or a
broken tool hands over; the openai backend against a server that misbehaves.

Each case is a regression test: a one-line error naming the file, or a record skipped and named in the
report while the run goes on.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest

from eval.__main__ import main
from eval.backends.openai_backend import OpenAIBackend
from eval.benchmarks import get_benchmark
from tests.test_datagen_server import StandIn, completion
from tests.test_eval_benchmarks import make_refer_root
from tests.test_eval_choice import make_mibench, make_mmiu
from tests.test_hostile_datagen import _RawServer, _trickle
from tests.test_hostile_eval import pred, write_predictions


def _metrics_dir(tmp_path: Path, name: str, text: str) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.json").write_text(text)
    return run


GOOD = {"tasks": {"diff": {"acc@0.5": 50.0}}, "average": {"acc@0.5": 50.0}}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (json.dumps({**GOOD, "average": {"acc@0.5": [1, 2]}}), "average.acc@0.5 is list"),
        (json.dumps({**GOOD, "average": {"acc@0.5": "high"}}), "average.acc@0.5 is str 'high'"),
        (json.dumps({**GOOD, "tasks": {"diff": {"acc@0.5": {"x": 1}}}}), "tasks.diff.acc@0.5 is dict"),
        ("[" * 100_000 + "]" * 100_000, "cannot be read as JSON: RecursionError"),
        (json.dumps([GOOD]), "holds a JSON list; expected a metrics.json"),
    ],
)
def test_compare_names_the_metrics_file_it_cannot_use(tmp_path, capsys, metrics, message):
    good = _metrics_dir(tmp_path, "good", json.dumps(GOOD))
    bad = _metrics_dir(tmp_path, "bad", metrics)
    assert main(["compare", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad" in err and message in err, err


def test_mmiu_options_past_z_skip_the_record_and_the_run_goes_on(tmp_path):
    root = make_mmiu(tmp_path / "mmiu")
    records = json.loads((root / "all.json").read_text())
    many = "\n".join(f"{chr(65 + k)}: option {k}" for k in range(26)) + "\n[: option 26\n\\: option 27"
    many_lettered = "\n".join(f"{chr(65 + k)}: o{k}" for k in range(26)) + "\nA: again"
    records += [dict(records[0], options=many), dict(records[0], options=many_lettered)]
    (root / "all.json").write_text(json.dumps(records))
    bench = get_benchmark("mmiu").load(root)
    assert len(bench.instances) == 6
    assert sum("is not lettered lines" in p.reason for p in bench.problems) == 3  # the old one and two new


def test_refcoco_ref_whose_ann_id_is_a_list_is_skipped_and_named(tmp_path):
    root = make_refer_root(tmp_path)
    refs_path = root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs[1]["ann_id"] = [10, 20]
    refs[2]["image_id"] = {"id": 2}
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    bench = get_benchmark("refcoco").load(root)
    reasons = [p.reason for p in bench.problems]
    assert any("ann_id [10, 20] is not in instances.json" in r for r in reasons), reasons
    assert any("image_id {'id': 2} is not in instances.json" in r for r in reasons), reasons
    assert bench.instances  # the other refs are asked


@pytest.mark.parametrize("bench_name", ["mmiu", "mibench"])
def test_choice_images_outside_the_data_root_are_image_outside_root(tmp_path, bench_name):
    root = (make_mmiu if bench_name == "mmiu" else make_mibench)(tmp_path / "root")
    secret = tmp_path / "secret.png"
    secret.write_bytes((next(root.rglob("*.png"), None) or next(root.rglob("*.jpg"))).read_bytes())
    name = "all.json" if bench_name == "mmiu" else "multi_image_instruction.json"
    records = json.loads((root / name).read_text())
    key = "input_image_path" if bench_name == "mmiu" else "image"
    first = records[0][key]
    records += [dict(records[0], **{key: [str(secret), *first[1:]]})]
    records += [dict(records[0], **{key: ["x/../../secret.png", *first[1:]]})]
    (root / name).write_text(json.dumps(records))
    bench = get_benchmark(bench_name).load(root)
    outside = [p.reason for p in bench.problems if "image_outside_root" in p.reason]
    assert len(outside) == 2, [p.reason for p in bench.problems]
    assert all(str(secret) not in i.image_paths for i in bench.instances)


def test_suite_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("mine")
    code = main(["suite", "--model", "m", "--output-dir", str(out), "--mig-bench", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1 and f"--output-dir {out} is a file" in err and err.count("\n") == 1, err
    assert out.read_text() == "mine"


def _scored(tmp_path, run_json: str | None):
    path = write_predictions(tmp_path / "run" / "predictions.jsonl", [pred(0)])
    if run_json is not None:
        (path.parent / "run.json").write_text(run_json)
    return main(["score", "--predictions", str(path), "--output-dir", str(tmp_path / "scored")])


def test_score_names_run_json_when_its_benchmark_is_unknown(tmp_path, capsys):
    assert _scored(tmp_path, json.dumps({"protocol": {"benchmark": "nope-bench"}})) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'run.json'} records benchmark 'nope-bench'" in err and err.count("\n") == 1


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000])
def test_score_says_when_run_json_is_unreadable(tmp_path, capsys, text):
    assert _scored(tmp_path, text) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "run" / "run.json") in err and "move it away" in err and err.count("\n") == 1, err
    assert not (tmp_path / "scored").exists()


def test_openai_backend_uses_the_shared_client_deadline_and_finish_checks():
    with _RawServer(_trickle) as s:
        backend = OpenAIBackend("m", api_base=s.base, timeout=0.5, retries=0)
        began = time.monotonic()
        gen = backend._one("where?", [])
        assert time.monotonic() - began < 1.5 and "within --timeout 0.5 s" in gen.error
        backend.close()
    with StandIn(lambda n, body: (200, completion("cut", finish="abort") if n == 1 else None, {})) as s:
        backend = OpenAIBackend("m", api_base=s.base, retries=1)
        backend.client._sleep = lambda seconds: None
        gen = backend._one("Describe this image", [])
        assert gen.error is None and gen.text.startswith("A plain synthetic") and len(s.requests) == 2
        backend.close()
