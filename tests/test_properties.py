"""Property tests (hypothesis): the loaders, parsers and validators take any input a file can hold.

Why: issue 16 found crashes one hand-made input at a time; these generate thousands. The
properties are the pack's promises: only the documented error types escape (Rejected,
ValueError/BenchError for a file that is unusable as a whole), and no record is lost
silently (kept + rejected == read, instances + problems == bench size).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters.groma import iter_groma
from converters.llava import iter_llava_json
from converters.mgrounding import convert_mgrounding
from converters.records import REASONS, Rejected, check_record, make_resolver
from converters.refcoco import iter_refcoco, load_refs, to_qwen_box
from core import grounding
from core.streaming import SourceReject, iter_json_records
from eval.bench import BenchError, load_bench
from eval.parsing import parse_box
from eval.predictions import read_jsonl
from eval.runner import _one_line_per_instance, _validate_prediction
from eval.scoring import score_response

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Text with everything a JSON file can carry: lone surrogates (escaped), NUL, the pack's tokens.
SPECIAL = [
    "<image>",
    "<|box_start|>(1,2),(300,400)<|box_end|>",
    "<|box_start|>(5,5),(1,1)<|box_end|>",
    "<|box_start|>",
    "<|object_ref_start|>a<|object_ref_end|>",
    "<|object_ref_end|>",
    "\ud800",
    "\x00",
    "./img/a.jpg",
    "../x.jpg",
    "/etc/passwd",
    "(x1, y1), (x2, y2)",
    "[1-2]",
    "Image 3",
]
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from(SPECIAL),
    st.lists(st.sampled_from(SPECIAL), max_size=4).map("".join),
)
NUMBER = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 1000, 1e308, -1e308, 1e-308]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
JSONISH = st.recursive(
    SCALAR, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4), max_leaves=20
)
TURN = (
    st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", 3]), "value": TEXT | JSONISH})
    | JSONISH
)
RECORD = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {
            "id": st.one_of(TEXT, st.integers(), JSONISH),
            "images": st.lists(TEXT, max_size=3) | JSONISH,
            "conversations": st.lists(TURN, max_size=4) | JSONISH,
        },
        optional={"type": TEXT | JSONISH},
    ),
)


def _dump(value) -> str:
    """JSON text as a file holds it (surrogates escaped; NaN/Infinity as Python's json writes them)."""
    return json.dumps(value)


@SETTINGS
@given(RECORD)
def test_check_record_keeps_a_writable_record_or_names_a_reason(record):
    resolve = make_resolver("/data/root")
    try:
        clean, fixed = check_record(record, require_images=False, resolve=resolve)
    except Rejected as bad:
        assert bad.reason in REASONS
        return
    json.dumps(clean, ensure_ascii=False).encode("utf-8")  # never fails for a kept record
    assert set(clean) == {"id", "type", "images", "conversations"} and isinstance(fixed, bool)
    assert all(p.startswith("/data/root/") for p in clean["images"])


HOSTILE_ELEMENTS = ["7" * 5000, "[" * 3000 + "]" * 3000, '{"id": "\\ud800"}', '"\\udfff"', "NaN", "-Infinity"]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(RECORD.map(_dump), st.sampled_from(HOSTILE_ELEMENTS)), max_size=12))
def test_a_conversion_loses_no_record_silently(tmp_path_factory, elements):
    root = tmp_path_factory.mktemp("conv")
    src = root / "in.json"
    src.write_text("[\n" + ",\n".join(elements) + "\n]\n", encoding="utf-8")
    out, rej = root / "o.jsonl", root / "r.jsonl"
    report = convert_mgrounding(src, root, out, rej, max_reject_rate=1.0)
    assert report.total == len(elements)
    assert report.kept + report.rejected == report.total
    kept = [json.loads(line) for line in out.read_bytes().decode("utf-8").split("\n") if line]
    rejected = [json.loads(line) for line in rej.read_bytes().decode("utf-8").split("\n") if line]
    assert len(kept) == report.kept and len(rejected) == report.rejected
    assert sorted([r["index"] for r in rejected]) == sorted(set(r["index"] for r in rejected))
    assert all(r["reason"] in REASONS for r in rejected)


@SETTINGS
@given(st.lists(JSONISH, max_size=8), st.sampled_from([1, 2, 7, 64, 1 << 20]))
def test_the_streaming_reader_equals_json_loads(tmp_path_factory, values, chunk):
    path = tmp_path_factory.mktemp("stream") / "x.json"
    text = json.dumps(values)
    path.write_text(text, encoding="utf-8")
    got = list(iter_json_records(path, chunk_chars=chunk))
    assert json.dumps(got) == json.dumps(json.loads(text))


@SETTINGS
@given(st.lists(JSONISH | RECORD, max_size=6), JSONISH)
def test_refcoco_records_are_candidates_or_rejects(refs, instances):
    try:
        records = list(iter_refcoco(refs, instances, Path("/coco"), "refcoco"))
    except ValueError:
        assert not isinstance(instances, dict) or any(
            not isinstance(instances.get(k, []), list) for k in ("images", "annotations")
        )
        return
    for record in records:
        assert isinstance(record, (dict, SourceReject))
        if isinstance(record, dict):
            try:
                check_record(record)
            except Rejected as bad:
                assert bad.reason in REASONS


def _ref_strategy():
    box = st.lists(NUMBER, min_size=0, max_size=5) | JSONISH
    image = st.fixed_dictionaries(
        {
            "id": st.sampled_from([1, 2, "1", None]),
            "file_name": TEXT | JSONISH,
            "width": NUMBER,
            "height": NUMBER,
        }
    )
    ann = st.fixed_dictionaries({"id": st.sampled_from([1, 2, [1]]), "bbox": box})
    ref = st.fixed_dictionaries(
        {
            "ref_id": st.integers(0, 9) | TEXT,
            "ann_id": st.sampled_from([1, 2, [1], None]),
            "image_id": st.sampled_from([1, 2, "1", {}]),
            "split": st.just("train"),
            "sentences": st.lists(st.fixed_dictionaries({"sent": TEXT | JSONISH}) | JSONISH, max_size=3)
            | JSONISH,
        }
    )
    return st.lists(ref, max_size=5), st.fixed_dictionaries(
        {"images": st.lists(image, max_size=3), "annotations": st.lists(ann, max_size=3)}
    )


@SETTINGS
@given(*_ref_strategy())
def test_refcoco_shaped_input_never_escapes_as_an_exception(refs, instances):
    for record in iter_refcoco(refs, instances, Path("/coco"), "refcoco"):
        if isinstance(record, SourceReject):
            assert record.reason in REASONS
        else:
            check_record(record)  # candidates RefCOCO builds are always valid once they exist


@SETTINGS
@given(st.lists(NUMBER, min_size=4, max_size=4), NUMBER, NUMBER)
def test_box_conversion_raises_only_value_or_arithmetic_errors(bbox, width, height):
    try:
        box = to_qwen_box(bbox, width, height)
    except (ValueError, ArithmeticError, TypeError):
        return
    assert all(isinstance(v, int) and 0 <= v <= 1000 for v in box)


@SETTINGS
@given(
    st.binary(max_size=200) | st.sampled_from([pickle.dumps([{"a": b"x"}], protocol=p) for p in (0, 2, 5)])
)
def test_any_refs_bytes_load_or_are_refused_by_name(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("refs") / "refs.p"
    path.write_bytes(data)
    try:
        refs = load_refs(path)
    except ValueError as err:
        assert str(path) in str(err)
        return
    assert isinstance(refs, list)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(RECORD | JSONISH, max_size=6))
def test_groma_and_llava_sources_yield_one_item_per_element(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("src") / "data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    for items in (list(iter_groma(path, Path("/vg"))), list(iter_llava_json(path, Path("/root"), "m4"))):
        assert len(items) == len(records)
        for item in items:
            if isinstance(item, dict):
                try:
                    check_record(item, require_images=False)
                except Rejected as bad:
                    assert bad.reason in REASONS
            else:
                assert isinstance(item, SourceReject) or not isinstance(item, dict)


@SETTINGS
@given(TEXT | st.text(max_size=200) | st.from_regex(r"[\[(<]?[0-9 .,()\[\]<>boxa-z]{0,60}", fullmatch=True))
def test_box_parsing_never_raises_and_scores_stay_finite(text):
    parsed = parse_box(text)
    if parsed is not None:
        assert len(parsed.values) == 4 and parsed.n_matches >= 1
    result = score_response(text, [0.1, 0.2, 0.3, 0.4])
    assert math.isfinite(result["iou"]) and 0.0 <= result["iou"] <= 1.0 + 1e-9
    assert result["box"] is None or all(math.isfinite(v) for v in result["box"])
    pair = grounding.first_pair(text)
    assert pair is None or all(0 <= v < 10**6 for v in pair)
    image = grounding.first_image_index(text)
    assert image is None or 0 <= image < 1000


@SETTINGS
@given(
    st.lists(
        st.one_of(JSONISH.map(_dump), TEXT, st.sampled_from(['{"index": 1, "n": ' + "9" * 5000 + "}"])),
        max_size=8,
    )
)
def test_prediction_lines_are_read_or_reported_never_raised(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("pred") / "predictions.jsonl"
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
    records, problems = read_jsonl(path, line_numbers=True)
    n_lines = sum(1 for line in path.read_bytes().decode("utf-8", "replace").split("\n") if line.strip())
    assert len(records) + len(problems) == n_lines
    notes: list[str] = []
    valid = [(n, r) for n, r in records if _validate_prediction(n, r) is None]
    try:
        kept = _one_line_per_instance(valid, notes)
    except ValueError as err:
        assert "both give instance" in str(err)
        return
    assert len(kept) <= len(valid)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        RECORD
        | st.fixed_dictionaries(
            {
                "task": st.sampled_from(["diff", "region", "common_object", "vqa"]),
                "images": st.lists(TEXT, max_size=3) | JSONISH,
                "question": TEXT | JSONISH,
                "answer": st.lists(NUMBER, min_size=3, max_size=5) | JSONISH,
            }
        ),
        min_size=1,
        max_size=6,
    )
)
def test_every_bench_instance_is_loaded_or_a_named_problem(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("bench") / "MIG_data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    try:
        bench = load_bench(path, check_images=False)
    except BenchError:
        return
    assert bench.total == len(records)
    assert len(bench.instances) + len(bench.problems) == len(records)
    assert sorted([i.index for i in bench.instances] + [p.index for p in bench.problems]) == list(
        range(len(records))
    )


# ---------------------------------------------------------------- issue #25: YAML configs, reward input

YAML_PIECES = [
    "a: 1\n",
    "a: 2\n",
    "b: &x [1, 2, 3]\n",
    "c: *x\n",
    "d: [*x, *x, *x]\n",
    "e: &y {k: *x}\n",
    "<<: *y\n",
    "f: !!python/object/apply:os.system ['true']\n",
    "g: !!binary aGk=\n",
    "h: [\n",
    "i: {j: [[[[1]]]]}\n",
    "k: " + "9" * 5000 + "\n",
    "merge_method: linear\n",
    "models:\n  - model: /nonexistent\n    parameters: {weight: 1}\n",
    "output_dir: o\n",
    "- 1\n",
    "\t\x00\n",
    "'\ud800'\n",
    "z: *undefined\n",
    "[" * 200 + "]" * 200 + "\n",
]


def _safe_dump(value) -> str | None:
    import yaml

    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError, RecursionError):
        return None


@SETTINGS
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=8).map("".join) | TEXT)
def test_any_yaml_text_loads_or_is_one_line_naming_its_source(text):
    from core.yamlfile import YAMLFileError, loads_yaml

    try:
        loads_yaml(text, "cfg.yaml")
    except YAMLFileError as err:
        assert str(err).startswith("cfg.yaml") and "\n" not in str(err)


@SETTINGS
@given(JSONISH)
def test_yaml_without_duplicates_or_bombs_reads_as_safe_load_does(value):
    import yaml

    from core.yamlfile import YAMLFileError, loads_yaml

    text = _safe_dump(value)
    if text is None:
        return
    try:
        expected = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        expected = YAMLFileError
    try:
        got = loads_yaml(text)
    except YAMLFileError:
        got = YAMLFileError
    if expected is not YAMLFileError and isinstance(expected, dict | list) and got is YAMLFileError:
        return  # a dumped mapping with keys equal in YAML (1 and 1.0, "y" and True): refused as duplicate
    assert repr(got) == repr(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=8).map("".join))
def test_merge_configs_and_recipes_raise_only_their_own_errors(tmp_path_factory, text):
    from merge_tool.config import read_config
    from merge_tool.errors import MergeError
    from rl.config import ConfigError, load_recipe

    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        read_config(path)
    except MergeError as err:
        assert "\n" not in str(err)
    try:
        load_recipe(path, [])
    except ConfigError as err:
        assert "\n" not in str(err)


REWARD_LINE = st.fixed_dictionaries(
    {
        "id": TEXT | st.integers() | JSONISH,
        "completion": TEXT | JSONISH,
        "image_index": st.integers(-2, 4) | JSONISH,
        "box": st.lists(NUMBER, min_size=4, max_size=4) | JSONISH,
        "num_images": st.integers(-1, 4) | JSONISH,
    },
    optional={"resized_sizes": JSONISH},
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.one_of(
            REWARD_LINE.map(_dump),
            JSONISH.map(_dump),
            TEXT,
            st.sampled_from(["[" * 100_000 + "]" * 100_000, '{"id": "' + "\\ud800" + '"}', "9" * 5000]),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(["mirg", "univg"]),
)
def test_reward_input_lines_are_scored_or_named_never_raised(tmp_path_factory, lines, profile):
    from rl.__main__ import score_jsonl
    from rl.rewards import resolve_weights

    folder = tmp_path_factory.mktemp("rewards")
    src, dst = folder / "in.jsonl", folder / "out.jsonl"
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    src.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
    n_lines = sum(1 for raw in src.read_bytes().split(b"\n") if raw.strip())
    try:
        scored, problems = score_jsonl(src, dst, profile, resolve_weights(profile, None), force=True)
    except ValueError as err:
        assert "\n" not in str(err) and not dst.exists()  # nothing scored: nothing written
        return
    out = [json.loads(x) for x in dst.read_text(encoding="utf-8").splitlines()]
    assert len(out) == n_lines == scored + len(problems) and scored > 0
    assert all(("error" in r) != ("total" in r) for r in out)
    assert all(math.isfinite(r["total"]) for r in out if "total" in r)
