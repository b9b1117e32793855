"""The data's family must be the model's (`families check-data`, run by `make stage1/stage2/traj-sft/grpo`),
and a Qwen3-VL Thinking checkpoint is told from an Instruct one by the chat template it ships.

The data folders are written by the real converters (`converters all` over a small MGrounding-style
root); the checkpoints are config and template files only, which is all the family checks read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import families
from converters.__main__ import main as convert_main
from demo.tiny_families import QWEN3_VL_CHAT_TEMPLATE
from tests.conftest import REPO, run_main

INSTRUCT_PROMPT = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
# Qwen3-VL-*-Thinking's generation prompt: the assistant turn opens its think block.
THINKING_TEMPLATE = QWEN3_VL_CHAT_TEMPLATE.replace(
    INSTRUCT_PROMPT, "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)


def _root(root: Path, n: int = 6) -> Path:
    """A DATA_ROOT with an MGrounding task of `n` two-image records (one box each)."""
    folder = root / "MGrounding-630k" / "imgs"
    folder.mkdir(parents=True)
    records = []
    for i in range(n):
        for j in range(2):
            Image.new("RGB", (112, 84), "white").save(folder / f"{i}_{j}.png")
        question = "<image>\n<image>\nFind the square in the second image."
        answer = "<|object_ref_start|>the square<|object_ref_end|><|box_start|>(0,0),(500,500)<|box_end|>"
        records.append(
            {
                "id": f"r{i}",
                "images": [f"./MGrounding-630k/imgs/{i}_{j}.png" for j in range(2)],
                "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            }
        )
    task = root / "MGrounding-630k" / "Common_Object"
    task.mkdir()
    (task / "common_train_70k.json").write_text(json.dumps(records))
    return root


def _convert(root: Path, out: Path, *fmt: str) -> Path:
    args = ["all", "--data-root", str(root), "--output-dir", str(out), "--allow-missing-categories"]
    args += ["--stage1-total", "12", "--stage2-total", "6"]  # the mixtures' default sizes are the paper's
    code = convert_main([*args, "--traj-sft-size", "3", "--rl-size", "3", *fmt])
    assert code == 0
    assert (out / "reports/mg_common.json").is_file()
    return out


def _model(folder: Path, model_type: str, template: str | None = None, where: str = "tokenizer") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if template is not None and where == "tokenizer":
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    elif template is not None and where == "jinja":
        (folder / "chat_template.jinja").write_text(template)
    elif template is not None:  # a list of named templates (tokenizer_config.json allows it)
        named = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": template}]
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    return folder


def _families(*args: str) -> subprocess.CompletedProcess:
    return run_main("families", args)


@pytest.fixture(scope="module")
def qwen2_data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("qwen2")
    return _convert(_root(tmp / "root"), tmp / "data")


# ---------------------------------------------------------------- check-data


def test_data_of_another_family_is_refused_with_the_command_that_converts_it(qwen2_data, tmp_path):
    model = _model(tmp_path / "Qwen2.5-VL-7B-Instruct", "qwen2_5_vl")
    proc = _families("check-data", str(qwen2_data), "--model", str(model))
    assert proc.returncode == 1 and proc.stdout == ""
    err = proc.stderr
    assert str(qwen2_data) in err and "--box-format qwen2-vl" in err and "reports/mg_common.json" in err
    assert "Qwen2.5-VL model (qwen2.5-vl, from its config.json model_type)" in err
    assert (
        f"make data DATA_ROOT=/path/holding/MGrounding-630k DATA_OUT={qwen2_data} BASE_MODEL={model}" in err
    )
    assert "--box-format qwen2.5-vl" in err

    forced = _families("check-data", str(qwen2_data), "--model", str(model), "--family", "qwen3-vl")
    assert forced.returncode == 1 and "from FAMILY=qwen3-vl" in forced.stderr
    assert f"BASE_MODEL={model} FAMILY=qwen3-vl" in forced.stderr


def test_make_training_targets_refuse_before_training(qwen2_data, tmp_path):
    """`make stage1` (and grpo, whose model is TRAJ_OUT) stop with exit 2 before any trainer starts."""
    model = _model(tmp_path / "qwen25", "qwen2_5_vl")
    for target, extra in (("stage1", f"BASE_MODEL={model}"), ("grpo", f"TRAJ_OUT={model}")):
        if target == "grpo":  # its prerequisite is the trajectory-SFT run's all_results.json
            (model / "all_results.json").write_text("{}")
        made = subprocess.run(
            ["make", "-s", target, "DEVICE=cpu", extra, f"DATA_OUT={qwen2_data}", f"STAGE1_OUT={tmp_path}/s1"]
            + [f"GRPO_OUT={tmp_path}/grpo", "-o", ".venv/.installed-cpu", "-o", ".venv-eval/.installed-cpu"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 2, made.stdout + made.stderr
        assert "--box-format qwen2-vl" in made.stderr and "global batch" not in made.stdout, target
        assert not (tmp_path / "s1").exists() and not (tmp_path / "grpo").exists()


def test_data_of_the_models_family_passes_and_prints_the_family(tmp_path):
    root = _root(tmp_path / "root")
    data = _convert(root, tmp_path / "data", "--box-format", "qwen2.5-vl")
    model = _model(tmp_path / "m", "qwen2_5_vl")
    proc = _families("check-data", str(data), "--model", str(model))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "qwen2.5-vl\n" and "warning" not in proc.stderr
    found = families.data_box_formats(data)
    assert set(found.recorded) == {"qwen2.5-vl"} and not found.unrecorded and not found.unreadable
    assert data / "reports/mg_trajectories.json" in found.recorded["qwen2.5-vl"]
    assert data / "reports/demo_mixtures.json" not in found.recorded["qwen2.5-vl"]


def test_qwen2_data_trains_a_qwen2_model(qwen2_data, tmp_path):
    proc = _families("check-data", str(qwen2_data), "--model", str(_model(tmp_path / "m", "qwen2_vl")))
    assert proc.returncode == 0 and proc.stdout == "qwen2-vl\n" and "warning" not in proc.stderr


def test_data_without_a_record_of_its_format_gets_a_warning_not_a_refusal(qwen2_data, tmp_path):
    """Reports written before --box-format existed have no `box_format`; a hand-made folder has no reports."""
    legacy = tmp_path / "legacy"
    (legacy / "reports").mkdir(parents=True)
    for path in (qwen2_data / "reports").glob("*.json"):
        report = json.loads(path.read_text())
        report.pop("box_format", None)
        (legacy / "reports" / path.name).write_text(json.dumps(report))
    model = _model(tmp_path / "m", "qwen3_vl")
    proc = _families("check-data", str(legacy), "--model", str(model))
    assert proc.returncode == 0 and proc.stdout == "qwen3-vl\n"
    assert "warning:" in proc.stderr and "no record of the box format" in proc.stderr
    assert "reports/mg_common.json" in proc.stderr and "training it as qwen3-vl unchecked" in proc.stderr

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dataset_info.json").write_text("{}")
    proc = _families("check-data", str(bare), "--model", str(model))
    assert proc.returncode == 0 and f"no converter report in {bare}/reports" in proc.stderr


def test_hostile_reports_are_warnings_naming_the_file_and_never_a_crash(tmp_path):
    data = tmp_path / "data"
    (data / "reports").mkdir(parents=True)
    (data / "reports/binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (data / "reports/deep.json").write_text("[" * 100_000)
    (data / "reports/list.json").write_text("[1, 2]")
    (data / "reports/evil.json").write_text(json.dumps({"box_format": {"family": "qwen9-vl"}}))
    (data / "reports/odd.json").write_text(json.dumps({"box_format": "qwen2.5-vl", "output": "x"}))
    (data / "reports/other.json").write_text(json.dumps({"stages": []}))  # not a conversion report
    model = _model(tmp_path / "m", "qwen2_vl")
    proc = _families("check-data", str(data), "--model", str(model))
    assert proc.returncode == 0, proc.stderr
    for name in ("binary", "deep", "evil", "odd"):
        assert f"reports/{name}.json: cannot tell its box format" in proc.stderr, name
    assert "list.json" not in proc.stderr and "other.json" not in proc.stderr
    # A record of the model's family next to one of another family: refused, naming the other.
    (data / "reports/mg_a.json").write_text(json.dumps({"box_format": {"family": "qwen2-vl"}}))
    (data / "reports/mg_b.json").write_text(json.dumps({"box_format": {"family": "qwen3-vl"}}))
    proc = _families("check-data", str(data), "--model", str(model))
    assert proc.returncode == 1 and "--box-format qwen3-vl (reports/mg_b.json)" in proc.stderr
    assert "mg_a.json" not in proc.stderr


def test_check_data_without_a_model_family_says_to_pass_family(qwen2_data, tmp_path):
    proc = _families("check-data", str(qwen2_data), "--model", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and "pass FAMILY=" in proc.stderr


# ---------------------------------------------------------------- Qwen3-VL Thinking vs Instruct


@pytest.mark.parametrize("where", ["tokenizer", "jinja", "named"])
def test_a_thinking_checkpoint_trains_with_the_thinking_template(where, tmp_path):
    thinking = _model(tmp_path / "Qwen3-VL-Thinking", "qwen3_vl", THINKING_TEMPLATE, where)
    instruct = _model(tmp_path / "Qwen3-VL-Instruct", "qwen3_vl", QWEN3_VL_CHAT_TEMPLATE, where)
    assert families.is_thinking_checkpoint(thinking) is not None
    assert families.is_thinking_checkpoint(instruct) is None
    assert families.training_template(thinking, "qwen3-vl")[0] == "qwen3_vl"
    assert families.training_template(instruct, "qwen3-vl") == ("qwen3_vl_nothink", None)

    proc = _families("train-args", "recipes/stage1.yaml", "--model", str(thinking))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "template=qwen3_vl"
    assert "Thinking checkpoint" in proc.stderr and "template qwen3_vl" in proc.stderr
    proc = _families("train-args", "recipes/stage1.yaml", "--model", str(instruct))
    assert proc.stdout.split()[0] == "template=qwen3_vl_nothink" and "Thinking" not in proc.stderr
    detect = _families("detect", str(thinking))
    assert detect.stdout == "qwen3-vl\n" and "Thinking checkpoint" in detect.stderr  # stdout stays the name


def test_thinking_is_only_a_qwen3_vl_matter_and_hostile_templates_are_skipped(tmp_path):
    # A Qwen2.5-VL checkpoint has no thinking template: its own is kept whatever the chat template says.
    other = _model(tmp_path / "q25", "qwen2_5_vl", THINKING_TEMPLATE)
    assert families.training_template(other, "qwen2.5-vl") == ("qwen2_vl", None)
    assert families.training_template(None, "qwen3-vl") == ("qwen3_vl_nothink", None)  # a Hub id
    bad = _model(tmp_path / "bad", "qwen3_vl")
    (bad / "tokenizer_config.json").write_bytes(b"{\xff")
    (bad / "chat_template.json").write_text(json.dumps({"chat_template": ["<think>", 7, None]}))
    (bad / "chat_template.jinja").write_text("<|im_start|>assistant\n<thin" + "k" * 2_000_000)
    assert families.is_thinking_checkpoint(bad) is None
    show = json.loads(_families("show", "qwen3-vl").stdout)
    assert show["qwen3-vl"]["thinking_template"] == "qwen3_vl"


@pytest.mark.train
def test_the_table_templates_are_llamafactorys_reasoning_and_plain_ones():
    """LLaMA-Factory 0.9.5: qwen3_vl adds the think block (ReasoningTemplate), qwen3_vl_nothink does not."""
    from llamafactory.data.template import TEMPLATES, ReasoningTemplate

    fam = families.get_family("qwen3-vl")
    assert isinstance(TEMPLATES[fam.thinking_template], ReasoningTemplate)
    assert not isinstance(TEMPLATES[fam.template], ReasoningTemplate)


# ---------------------------------------------------------------- a Thinking model's answer


DECOY = '{"bbox_2d": [1, 2, 3, 4], "label": "not this"}'
ANSWER = '```json\n[\n\t{"bbox_2d": [100, 200, 300, 400], "label": "the cat"}\n]\n```'


@pytest.mark.parametrize(
    "text, box",
    [
        (f"The first image shows {DECOY}; the cat is larger.\n</think>\n\n{ANSWER}", (100, 200, 300, 400)),
        (f"<think>\nweighing {DECOY}\n</think>\n\n{ANSWER}", (100, 200, 300, 400)),
        (f"</think>{ANSWER}</think>{DECOY}", (100, 200, 300, 400)),  # the first close ends the thinking
        (ANSWER, (100, 200, 300, 400)),  # an Instruct answer is read as before
        (f"<think>\nstill thinking about {DECOY}", None),  # cut off: no answer
        (f"reasoning {DECOY}\n</think>\n\n", None),  # nothing after the think block
    ],
)
def test_json_answers_are_read_after_the_think_block(text, box):
    for family in ("qwen2.5-vl", "qwen3-vl"):
        parsed = families.parse_answer(text, family)
        assert (parsed.box if parsed else None) == box
    from eval.answers import parse_answer as eval_parse  # the evaluator's json format reads the same

    parsed = eval_parse(text, "json")
    assert (tuple(int(v) for v in parsed.values) if parsed else None) == box


def test_box_token_answers_keep_the_official_first_pair_rule():
    text = "<think>(1,2),(3,4)</think><|box_start|>(10,20),(30,40)<|box_end|>"
    assert families.parse_answer(text, "qwen2-vl").box == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("family", "inline"),
    [
        ("internvl", "<ref>the cat</ref><box>[[0, 333, 333, 667]]</box>"),
        ("qwen3-vl", '{"bbox_2d": [0, 333, 333, 667], "label": "the cat"}'),
    ],
)
def test_a_box_inside_a_reasoning_trace_is_written_in_the_familys_inline_form(family, inline):
    """A trajectory's box in prose becomes the family's inline box (InternVL's <ref>/<box>, not JSON: the
    demo's InternVL trained on JSON boxes inside its traces before this), the image id kept before it."""
    from converters.boxformat import make_box_format, rewrite_trajectory_turn

    turn = (
        "<think>Looking at the second image, the target is <bbox_id>[2-1]</bbox_id>"
        "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(0,333),(333,667)<|box_end|>.</think>"
    )
    out = rewrite_trajectory_turn(turn, make_box_format(family), ["a.png", "b.png"])
    assert (
        out == f"<think>Looking at the second image, the target is <bbox_id>[2-1]</bbox_id>{inline}.</think>"
    )
    assert families.get_family(family).parse_answer(inline).box == (0, 333, 333, 667)
