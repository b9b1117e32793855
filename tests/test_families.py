"""The family table against the installed transformers and LLaMA-Factory, the training resize, boxes, answers."""

from __future__ import annotations

import json
import math
import time

import pytest
from PIL import Image

import families as F
from families import FAMILIES, UnknownFamilyError

# ---------------------------------------------------------------- the table against the installed stacks


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
@pytest.mark.parametrize("name", F.FAMILY_CHOICES)
def test_model_types_and_classes_are_transformers_own(name):
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    fam = FAMILIES[name]
    for model_type in fam.model_types:
        assert model_type in CONFIG_MAPPING_NAMES, model_type
    assert MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[fam.model_types[0]] == fam.model_class
    config = getattr(transformers, CONFIG_MAPPING_NAMES[fam.model_types[0]])()
    vision = config.vision_config
    if hasattr(vision, "spatial_merge_size"):
        assert (vision.patch_size, vision.spatial_merge_size) == (fam.patch_size, fam.merge_size)
    else:  # InternVL: 448 tiles of 14-pixel patches
        assert (vision.image_size[0], vision.patch_size[0]) == (fam.tile_size, fam.patch_size)


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
def test_every_qwen_vl_model_type_in_transformers_has_a_family():
    """A new Qwen*-VL model_type in transformers (say a MoE variant) must be placed, not silently unknown."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    qwen_vl = {
        t for t in CONFIG_MAPPING_NAMES if t.startswith(("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"))
    }
    qwen_vl = {t for t in qwen_vl if not t.endswith(("_text", "_vision"))}
    assert qwen_vl <= {t for f in FAMILIES.values() for t in f.model_types}


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
@pytest.mark.parametrize("name", F.FAMILY_CHOICES)
def test_template_and_frozen_modules_are_llamafactory_own(name):
    from llamafactory.data.template import TEMPLATES
    from llamafactory.extras.constants import DEFAULT_TEMPLATE
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    fam = FAMILIES[name]
    assert fam.template in TEMPLATES
    for model_type in fam.model_types:
        assert tuple(COMPOSITE_MODELS[model_type].vision_model_keys) == fam.vision_tower_keys, model_type
        assert tuple(COMPOSITE_MODELS[model_type].projector_keys) == fam.projector_keys, model_type
    instruct = {
        "qwen2-vl": "Qwen2-VL-7B-Instruct",
        "qwen2.5-vl": "Qwen2.5-VL-7B-Instruct",
        "qwen3-vl": "Qwen3-VL-8B-Instruct",
        "qwen3.5": "Qwen3.5-9B-Thinking",  # the released Qwen3.5 chat models think by default
    }
    if name in instruct:
        assert DEFAULT_TEMPLATE[instruct[name]] in (fam.template, fam.thinking_template)


def test_qwen2vl_instruction_is_mig_bench_released_suffix():
    from eval.prompts import FORMAT_SUFFIXES

    assert FAMILIES["qwen2-vl"].grounding_suffix == FORMAT_SUFFIXES["released"]
    for fam in FAMILIES.values():
        assert "{ref}" in fam.refer_template and fam.refer_template.format(ref="x") != fam.refer_template
        if fam.answer_form == F.JSON_BBOX:
            assert "JSON" in fam.grounding_suffix and "JSON" in fam.refer_template


def test_stage1_recipe_budget_is_the_qwen2vl_default(repo_root):
    import yaml

    recipe = yaml.safe_load((repo_root / "recipes" / "stage1.yaml").read_text())
    assert recipe["image_max_pixels"] == FAMILIES["qwen2-vl"].image_max_pixels
    assert recipe["image_min_pixels"] == FAMILIES["qwen2-vl"].image_min_pixels


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.boxes_need_canvas or f.factor < 100])
def test_default_budget_keeps_six_images_inside_the_cutoff(name):
    """At the family's default budget an image over it takes 480-540 tokens (aspect ratios up to 8:1), so six
    take at most 3,240 of stage 1's 6,000 tokens; 401408 pixels would give Qwen3-VL only ~392."""
    fam = FAMILIES[name]
    tokens = []
    for w in range(400, 4001, 37):
        for h in range(400, 4001, 53):
            if max(w, h) / min(w, h) <= 8 and w * h > fam.image_max_pixels:
                tokens.append(
                    fam.tokens_for(
                        *F.training_resized_size(w, h, fam.image_max_pixels, fam.image_min_pixels, fam)
                    )
                )
    assert min(tokens) >= 480 and max(tokens) <= 540, (min(tokens), max(tokens))
    assert 6 * max(tokens) <= 3240 < 6000
    if name == "qwen3-vl":
        assert fam.tokens_for(*F.training_resized_size(1024, 768, 401408, 3136, fam)) < 400


def test_get_family_refuses_unknown_names():
    with pytest.raises(UnknownFamilyError, match="qwen2-vl, qwen2.5-vl, qwen3-vl"):
        F.get_family("qwen4-vl")
    with pytest.raises(UnknownFamilyError):
        F.get_family(None)


# ---------------------------------------------------------------- detect_family (tiny models: test_tiny_model.py)


def _config_dir(tmp_path, body: bytes):
    (tmp_path / "config.json").write_bytes(body)
    return tmp_path


@pytest.mark.parametrize(
    "model_type, family",
    [
        ("qwen2_vl", "qwen2-vl"),
        ("qwen2_5_vl", "qwen2.5-vl"),
        ("qwen3_vl", "qwen3-vl"),
        ("qwen3_vl_moe", "qwen3-vl"),
    ],
)
def test_detect_family_reads_model_type(tmp_path, model_type, family):
    folder = _config_dir(tmp_path, json.dumps({"model_type": model_type}).encode())
    assert F.detect_family(folder).name == family


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"model_type": "llava"}', "model_type 'llava' is not a known family"),
        (b'{"architectures": []}', "no string `model_type`"),
        (b'{"model_type": 7}', "no string `model_type`"),
        (b"[1, 2]", "holds a JSON list; expected a model config object"),
        (b'{"model_type": "qwen2_vl"', "invalid JSON"),
        (b"\xff\xfe\x00", "cannot be read as JSON: UnicodeDecodeError"),
        (b"[" * 100_000, "cannot be read as JSON: RecursionError"),
    ],
)
def test_detect_family_names_the_file_and_the_problem(tmp_path, body, message):
    folder = _config_dir(tmp_path, body)
    with pytest.raises(UnknownFamilyError, match=message) as err:
        F.detect_family(folder)
    assert str(folder / "config.json") in str(err.value)


def test_detect_family_without_config(tmp_path):
    with pytest.raises(UnknownFamilyError, match="cannot read .*config.json"):
        F.detect_family(tmp_path)


# ---------------------------------------------------------------- the resized size LLaMA-Factory 0.9.5 trains on

# (width, height, image_max_pixels, image_min_pixels, family) -> resized (width, height), computed by hand:
# pre-shrink sqrt(max / (w*h)) with int(), pre-grow likewise, sides >= 28, aspect <= 200 (else 180),
# then smart_resize with the released processor's min/max.
RESIZE_CASES = [
    # issue 15's example: 731x548 after the pre-shrink, then 548/28 = 19.6 -> 560, 731/28 = 26.1 -> 728
    (1024, 768, 401408, 3136, "qwen2.5-vl", (728, 560)),
    (1920, 1080, 401408, 3136, "qwen2.5-vl", (840, 476)),  # 844x475 -> 840x476
    (4032, 3024, 401408, 3136, "qwen2.5-vl", (728, 560)),  # same 4:3 -> the same 731x548
    # int() truncation matters: 640 x 0.7656 = 489.99 -> 489 -> 17 x 28 = 476 (rounding: 490 -> 17.5 -> 504)
    (640, 1070, 401408, 3136, "qwen2.5-vl", (476, 812)),
    (640, 480, 401408, 3136, "qwen2.5-vl", (644, 476)),  # below the budget: 22.86 -> 23, 17.14 -> 17
    (333, 517, 401408, 3136, "qwen2.5-vl", (336, 504)),  # odd, below: 11.89 -> 12, 18.46 -> 18
    (1001, 999, 401408, 3136, "qwen2.5-vl", (644, 644)),  # odd, above: 634x632 -> 23 x 23 patches of 28
    (5000, 50, 401408, 3136, "qwen2.5-vl", (5012, 56)),  # 100:1 under the budget: 178.6 -> 179, 1.8 -> 2
    (10000, 40, 401408, 3136, "qwen2.5-vl", (7196, 28)),  # 250:1 -> cut to 7200x40, then 257 x 1 patches
    (
        20,
        10,
        401408,
        3136,
        "qwen2.5-vl",
        (84, 56),
    ),  # grown to 79x39; smart_resize's minimum lifts it to 84x56
    (
        3,
        1000,
        401408,
        3136,
        "qwen2-vl",
        (28, 1008),
    ),  # grown to 3x1022, side -> 28; round(36.5) = 36 (half even)
    (1024, 768, 524288, 4096, "qwen3-vl", (832, 640)),  # 836x627 -> 26 x 20 patches of 32
    (1001, 999, 524288, 4096, "qwen3-vl", (736, 736)),  # 724x723 -> 23 x 23
    (200, 100, 524288, 4096, "qwen3-vl", (384, 192)),  # under Qwen3-VL's processor minimum of 65536 px
    (10000, 40, 524288, 4096, "qwen3-vl", (7200, 32)),  # cut to 7200x40 -> 225 x 1
]


@pytest.mark.parametrize("w, h, max_px, min_px, family, expected", RESIZE_CASES)
def test_training_resized_size_by_hand(w, h, max_px, min_px, family, expected):
    assert F.training_resized_size(w, h, max_px, min_px, family) == expected


def _real_resized_size(w, h, max_px, min_px, family):
    """What LLaMA-Factory 0.9.5's own plugin and transformers' own image processor produce."""
    from llamafactory.data.mm_plugin import get_mm_plugin
    from transformers import Qwen2VLImageProcessor

    fam = FAMILIES[family]
    plugin = get_mm_plugin(
        "qwen3_vl" if family == "qwen3-vl" else "qwen2_vl",
        image_token="<|image_pad|>",
        video_token="<|video_pad|>",
    )
    image = plugin._regularize_images(
        [Image.new("RGB", (w, h))], image_max_pixels=max_px, image_min_pixels=min_px
    )
    processor = Qwen2VLImageProcessor(
        size={"shortest_edge": fam.processor_min_pixels, "longest_edge": fam.processor_max_pixels},
        patch_size=fam.patch_size,
        merge_size=fam.merge_size,
    )
    _, grid_h, grid_w = processor(image["images"], return_tensors="pt")["image_grid_thw"][0].tolist()
    return grid_w * fam.patch_size, grid_h * fam.patch_size


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
@pytest.mark.parametrize("w, h, max_px, min_px, family, expected", RESIZE_CASES)
def test_training_resized_size_is_what_llamafactory_and_the_processor_do(
    w, h, max_px, min_px, family, expected
):
    assert _real_resized_size(w, h, max_px, min_px, family) == expected


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
def test_smart_resize_copy_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for factor, lo, hi in ((28, 3136, 401408), (32, 65536, 524288), (28, 3136, 12845056)):
        for h in (28, 29, 41, 97, 333, 560, 731, 1080, 2999, 4100):
            for w in (28, 30, 55, 100, 517, 640, 1024, 1920, 5000):
                if max(w, h) / min(w, h) <= 200:
                    assert F.smart_resize(h, w, factor, lo, hi) == smart_resize(h, w, factor, lo, hi), (
                        h,
                        w,
                        factor,
                    )


@pytest.mark.train  # imports transformers / LLaMA-Factory to check against their own code
def test_a_side_that_truncates_to_zero_is_refused_like_llamafactory():
    from llamafactory.data.mm_plugin import get_mm_plugin

    plugin = get_mm_plugin("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")
    with pytest.raises(ValueError):  # PIL: height and width must be > 0
        plugin._regularize_images(
            [Image.new("RGB", (500_000, 1))], image_max_pixels=401408, image_min_pixels=3136
        )
    with pytest.raises(ValueError, match=r"500000x1 image shrinks to \d+x0 under image_max_pixels=401408"):
        F.training_resized_size(500_000, 1, 401408, 3136, "qwen2.5-vl")


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, None, "640"])
def test_training_resized_size_refuses_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive integer"):
        F.training_resized_size(bad, 480, 401408, 3136, "qwen2.5-vl")


# ---------------------------------------------------------------- boxes in each family's numbers


def test_grid_box_to_resized_pixels_by_hand():
    # x: 100 * 728 / 1000 = 72.8 -> 73, 500 * 0.728 = 364; y: 200 * 0.56 = 112, 999 * 0.56 = 559.44 -> 559
    assert F.box_to_family((100, 200, 500, 999), "qwen2.5-vl", (728, 560)) == (73, 112, 364, 559)
    # exactly half a pixel rounds up on both axes (integer arithmetic, no float error): 5 * 100 / 1000 = 0.5
    assert F.box_to_family((5, 5, 15, 15), "qwen2.5-vl", (100, 100)) == (1, 1, 2, 2)
    assert F.box_to_family((0, 0, 1000, 1000), "qwen2.5-vl", (728, 560)) == (0, 0, 728, 560)


def test_grid_families_keep_grid_boxes_and_round_unit_ones_half_up():
    for name in ("qwen2-vl", "qwen3-vl"):
        assert F.box_to_family((1, 2, 999, 1000), name) == (1, 2, 999, 1000)
        assert F.box_to_family((0.0005, 0.25, 0.9995, 1.0), name, source="unit") == (1, 250, 1000, 1000)


@pytest.mark.parametrize("size", [(728, 560), (840, 476), (28, 1008), (7196, 28)])
def test_unit_box_round_trips_within_half_a_pixel(size):
    w, h = size
    for box in ((0.1, 0.2, 0.3, 0.4), (0.0, 0.0, 1.0, 1.0), (0.12345, 0.5, 0.98765, 0.75)):
        pixels = F.box_to_family(box, "qwen2.5-vl", size, source="unit")
        back = F.family_box_to_unit(pixels, "qwen2.5-vl", size)
        for b, v, side in zip(box, back, (w, h, w, h), strict=True):
            assert abs(b - v) <= 0.5 / side + 1e-12


def test_family_box_to_unit_reads_each_convention():
    assert F.family_box_to_unit((73, 112, 364, 559), "qwen2.5-vl", (728, 560)) == pytest.approx(
        (73 / 728, 0.2, 0.5, 559 / 560)
    )
    assert F.family_box_to_unit((100, 200, 500, 999), "qwen3-vl") == (0.1, 0.2, 0.5, 0.999)
    # the public fork's raw pixels of a 1024x768 image, read as the resized-pixel convention demands
    assert F.family_box_to_unit((0, 79, 1036, 756), "qwen2.5-vl", (1036, 756))[2:] == (1.0, 1.0)


@pytest.mark.parametrize(
    "box, size, source, message",
    [
        ((100, 200, 500, 999), None, "grid", "resized image: its .width, height. is required"),
        ((100, 200, 500, 999), (0, 560), "grid", "two positive integers"),
        ((100, 200, 500, 999), (728.0, 560), "grid", "two positive integers"),
        ((500, 500, 501, 501), (28, 28), "grid", "collapses to"),
        ((500, 200, 100, 999), (728, 560), "grid", "x1 < x2"),
        ((0, 0, 1001, 5), (728, 560), "grid", "within 0..1000"),
        ((0, 0, 1.5, 0.5), (728, 560), "unit", "within 0..1"),
        ((0, 0, math.nan, 5), (728, 560), "grid", "not finite"),
        ((0, 0, True, 5), (728, 560), "grid", "four numbers"),
        ((0, 0, 5), (728, 560), "grid", "four numbers"),
        ("0,0,5,5", (728, 560), "grid", "four numbers"),
        ((0, 0, 5, 5), (728, 560), "pixels", "source must be"),
    ],
)
def test_box_to_family_refuses_bad_boxes(box, size, source, message):
    with pytest.raises(ValueError, match=message):
        F.box_to_family(box, "qwen2.5-vl", size, source=source)


@pytest.mark.parametrize("values", [(1, 2, 3), (1, 2, 3, math.inf), (1, 2, 3, "4"), None, (1, 2, 3, False)])
def test_family_box_to_unit_refuses_non_numbers(values):
    with pytest.raises(ValueError):
        F.family_box_to_unit(values, "qwen3-vl")


# ---------------------------------------------------------------- answers: format and parse

COOKBOOK_ANSWER = '```json\n[\n\t{"bbox_2d": [135, 114, 1016, 672], "label": "boy"}\n]\n```'


def test_format_answer_is_the_cookbook_form_and_parses_back():
    assert F.format_answer("boy", (135, 114, 1016, 672), "qwen2.5-vl") == COOKBOOK_ANSWER
    parsed = F.parse_answer(COOKBOOK_ANSWER, "qwen2.5-vl")
    assert (parsed.box, parsed.label, parsed.n_boxes) == ((135, 114, 1016, 672), "boy", 1)
    qwen2 = F.format_answer("the cat", (1, 2, 3, 4), "qwen2-vl")
    assert qwen2 == "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>"
    assert F.parse_answer(qwen2, "qwen2-vl").box == (1, 2, 3, 4)


def test_several_objects_and_hostile_labels_round_trip():
    objects = [
        ("a `fenced` ```json label", (1, 2, 3, 4)),
        ('quote " and \\ and \n newline', (5, 6, 7, 8)),
        (None, (0, 0, 9, 9)),
    ]
    text = F.format_answers(objects, "qwen3-vl")
    assert text.count("```") == 2  # a backtick in a label cannot end the fence
    parsed = F.parse_answer(text, "qwen3-vl")
    assert (parsed.box, parsed.label, parsed.n_boxes) == ((1, 2, 3, 4), objects[0][0], 3)
    values = json.loads(text.removeprefix("```json").removesuffix("```"))
    assert [v.get("label") for v in values] == [o[0] for o in objects]


@pytest.mark.parametrize(
    "box, family",
    [
        ((0, 0, 1001, 5), "qwen3-vl"),
        ((1.5, 0, 3, 5), "qwen2.5-vl"),
        ((3, 0, 1, 5), "qwen2-vl"),
        ((1, 2, 3), "qwen3-vl"),
    ],
)
def test_format_answer_refuses_bad_boxes(box, family):
    with pytest.raises(ValueError):
        F.format_answer("x", box, family)


@pytest.mark.parametrize(
    "text, box",
    [
        ('{"bbox_2d": [1, 2, 3, 4], "label": "a"}', (1, 2, 3, 4)),  # bare object
        ('[{"bbox_2d": [1.5, 2, 3, 4]}]', (1.5, 2, 3, 4)),  # bare list, floats
        ('It is in the second image: ```json\n[{"bbox_2d": [1, 2, 3, 4]}]\n``` done', (1, 2, 3, 4)),
        ('```JSON\n{"bbox_2d": [1, 2, 3, 4]}', (1, 2, 3, 4)),  # unclosed fence (cut by max tokens)
        ('[{"label": "x"}, {"bbox_2d": [1, 2, 3, 4]}]', (1, 2, 3, 4)),  # first object with a box decides
        ('see [2] and {"a": 1} then [{"bbox_2d": [9, 8, 70, 60]}]', (9, 8, 70, 60)),  # prose brackets first
        ('<think>[1-1] looks right</think>\n{"bbox_2d": [0, 0, 5, 5]}', (0, 0, 5, 5)),
    ],
)
def test_parse_answer_accepts_the_json_forms(text, box):
    for family in ("qwen2.5-vl", "qwen3-vl"):
        assert F.parse_answer(text, family).box == box


HOSTILE = [
    None,
    b'{"bbox_2d": [1, 2, 3, 4]}',
    42,
    "",
    "no json here",
    '{"bbox_2d": [NaN, 1, 2, 3]}',
    '{"bbox_2d": [Infinity, 1, 2, 3]}',
    '{"bbox_2d": [-Infinity, 1, 2, 3]}',
    '{"bbox_2d": [1e999, 1, 2, 3]}',
    '{"bbox_2d": [1, 2, 3, ' + "9" * 5000 + "]}",
    '{"bbox_2d": [1, 2, 3, 1234567]}',  # beyond any image side
    '{"bbox_2d": [-1, 2, 3, 4]}',
    '{"bbox_2d": [true, 2, 3, 4]}',
    '{"bbox_2d": ["1", 2, 3, 4]}',
    '{"bbox_2d": [1, 2, 3]}',
    '{"bbox_2d": [1, 2, 3, 4, 5]}',
    '{"bbox_2d": [[1, 2], [3, 4]]}',
    '{"bbox_2d": "1, 2, 3, 4"}',
    '{"bbox_2d": null}',
    '[{"bbox_2d": [1, 2, 3]}, {"bbox_2d": [1, 2, 3, 4]}]',  # the first box is malformed: no answer
    '{"bbox_2d": [1, 2, 3, 4]',  # unterminated
    "[" * 15_000,
    '{"a":' * 2000 + "1" + "}" * 2000,  # nested past Python's recursion limit
    '{"bbox_2d": [1, 2, 3, 4]}' + " " * F.MAX_ANSWER_CHARS,  # too long to be an answer
    '\ud800 {"bbox_2d": [1, 2, \ud800, 4]}',
    "```json\n```",
    "``````````",
    "[{" * 8000,
    "<|box_start|>(1,2),(3,4)<|box_end|>",  # Qwen2-VL's form is not the JSON families' answer
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_parse_answer_hostile_input_is_none_not_an_exception(text):
    for family in ("qwen2.5-vl", "qwen3-vl"):
        assert F.parse_answer(text, family) is None
    qwen2 = F.parse_answer(text, "qwen2-vl")  # box tokens only: none of these but the last holds a pair
    assert qwen2 is None if text != HOSTILE[-1] else qwen2.box == (1, 2, 3, 4)


def test_parse_answer_stays_fast_on_hostile_text():
    texts = ["[{" * 8000, '{"bbox_2d": [' * 1300, "[" * 16_000, "```json" + "{" * 16_000, "[1," * 5000]
    start = time.perf_counter()
    for text in texts:
        for family in F.FAMILY_CHOICES:
            F.parse_answer(text, family)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- a checkpoint's processor pixel range


PROCESSOR_CONFIGS = [
    ({"min_pixels": 3136, "max_pixels": 12845056}, (3136, 12845056)),  # Qwen2-VL / Qwen2.5-VL as released
    ({"size": {"longest_edge": 16777216, "shortest_edge": 65536}}, (65536, 16777216)),  # Qwen3-VL as released
    ({"min_pixels": 100, "size": {"shortest_edge": 5, "longest_edge": 9000}}, (100, 9000)),  # legacy key wins
    ({"max_pixels": 50176}, (3136, 50176)),  # the other side: the class default
    ({}, (3136, 1003520)),
]


@pytest.mark.parametrize("body, expected", PROCESSOR_CONFIGS)
def test_processor_pixel_range_reads_the_released_layout(tmp_path, body, expected):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(body))
    assert F.processor_pixel_range(tmp_path) == expected


@pytest.mark.train  # imports transformers to check against its own code
@pytest.mark.parametrize("body, expected", PROCESSOR_CONFIGS)
def test_processor_pixel_range_is_what_transformers_loads(tmp_path, monkeypatch, body, expected):
    import inspect

    from transformers import Qwen2VLImageProcessor

    # transformers 5.6's __init__ writes a lone min_pixels/max_pixels into the *class* default `size`,
    # so every later processor in the process inherits it: give each case the pristine default.
    assert 'size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}' in inspect.getsource(
        Qwen2VLImageProcessor
    )
    monkeypatch.setattr(
        Qwen2VLImageProcessor, "size", {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
    )
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(body))
    size = Qwen2VLImageProcessor.from_pretrained(tmp_path).size
    assert (size["shortest_edge"], size["longest_edge"]) == expected


def test_processor_pixel_range_reads_transformers5_layout(tmp_path):
    body = {"image_processor": {"size": {"shortest_edge": 4, "longest_edge": 9}}, "processor_class": "X"}
    (tmp_path / "processor_config.json").write_text(json.dumps(body))
    assert F.processor_pixel_range(tmp_path) == (4, 9)


@pytest.mark.parametrize(
    "body",
    [
        b'{"min_pixels": 0, "max_pixels": 10}',
        b'{"min_pixels": 20, "max_pixels": 10}',
        b'{"min_pixels": true, "max_pixels": 10}',
        b'{"size": {"shortest_edge": "1", "longest_edge": 10}}',
        b'{"min_pixels": 5',
        b"[3136, 12845056]",
    ],
)
def test_processor_pixel_range_refuses_bad_values_naming_the_file(tmp_path, body):
    (tmp_path / "preprocessor_config.json").write_bytes(body)
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        F.processor_pixel_range(tmp_path)


def test_processor_pixel_range_without_a_processor(tmp_path):
    with pytest.raises(ValueError, match="has no image processor settings"):
        F.processor_pixel_range(tmp_path)


@pytest.mark.parametrize(
    "name", ["config.json", "image_budget.json", "preprocessor_config.json", "chat_template.jinja"]
)
def test_a_checkpoint_file_linked_to_dev_zero_is_read_with_a_bound(tmp_path, name):
    """A size looked up first says 0 for /dev/zero: every checkpoint file is read with a bound instead."""
    from families.checkpoint import (
        CheckpointError,
        is_thinking_checkpoint,
        processor_pixel_range,
        read_budget,
        read_config,
    )

    (tmp_path / name).symlink_to("/dev/zero")
    if name == "chat_template.jinja":  # a template only decides a default: skipped with a warning
        assert is_thinking_checkpoint(tmp_path) is None
        return
    read = {"config.json": read_config, "image_budget.json": read_budget}.get(name, processor_pixel_range)
    with pytest.raises(CheckpointError, match=f"{name} is over [0-9]+ bytes"):
        read(tmp_path)
