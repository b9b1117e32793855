"""A request is the training prompt token for token, in every family (families.chat).

The prompt ids LLaMA-Factory trains on (its template and mm_plugin, on a record as the converters write
it) must be the ids eval hands the model (the checkpoint's chat template and processor, backends'
`chat_text`) and the text TRL's GRPOTrainer renders from `rl.data`'s prompt (through `datasets`, as in a
run). Before families.chat, Qwen's prompts lost the newline after each image and InternVL's lost
LLaMA-Factory's system message. One tiny checkpoint per family per session (conftest.tiny_family).
"""

from __future__ import annotations

import pytest
from PIL import Image

import families
from eval.backends import chat_text
from families.chat import PAPER_LAYOUT, TRAINING_LAYOUT

pytestmark = pytest.mark.train  # LLaMA-Factory, transformers and TRL (not in `make test-unit`)

QUESTION = "Which image shows the red square? Answer with its box."
SIZES = [(150, 100), (90, 190)]


def _images():
    return [Image.new("RGB", size, color) for size, color in zip(SIZES, ("red", "navy"), strict=True)]


def _processor(folder, fam):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    # what LLaMA-Factory's loader sets from the recipe (recipe_overrides: budget; InternVL crop_to_patches)
    processor.image_max_pixels, processor.image_min_pixels = fam.image_max_pixels, fam.image_min_pixels
    processor.crop_to_patches = True
    return processor


def _llamafactory_prompt_ids(folder, fam, processor):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    template = get_template_and_fix_tokenizer(
        processor.tokenizer, DataArguments(template=fam.training_template(folder)[0])
    )
    record = "<image>\n" * len(SIZES) + QUESTION  # converters.trajectories / MGrounding's layout
    messages = [{"role": "user", "content": record}, {"role": "assistant", "content": "A"}]
    messages = template.mm_plugin.process_messages(messages, _images(), [], [], processor)
    return template.encode_oneturn(processor.tokenizer, messages)[0]


def _eval_ids(fam, processor, layout):
    images = [fam.preprocess_image(im, fam.image_max_pixels, fam.image_min_pixels) for im in _images()]
    text = chat_text(processor, fam, layout, len(images), QUESTION)
    out = processor(text=[text], images=images, return_tensors="pt", **fam.processor_kwargs())
    return out["input_ids"][0].tolist()


@pytest.mark.parametrize("name", families.FAMILY_CHOICES)
def test_eval_and_grpo_prompts_are_the_training_prompt(name, tiny_family):
    from datasets import Dataset
    from llamafactory.data.template import TEMPLATES
    from trl.data_utils import maybe_apply_chat_template, prepare_multimodal_messages

    fam = families.get_family(name)
    folder = tiny_family(name)
    processor = _processor(folder, fam)
    template_name, thinking = fam.training_template(folder)
    assert fam.system_message == TEMPLATES[template_name].default_system

    trained = _llamafactory_prompt_ids(folder, fam, processor)
    asked = _eval_ids(fam, processor, TRAINING_LAYOUT)
    # a Thinking chat template's generation prompt opens <think> (eval reads the answer after </think>)
    opened = processor.tokenizer.encode("<think>\n", add_special_tokens=False) if thinking else []
    assert asked == trained + opened, processor.tokenizer.decode(asked)[-300:]

    # GRPO: rl.data's prompt through datasets (Arrow fills the parts' missing keys) and TRL's own rendering
    prompt = Dataset.from_list([{"prompt": fam.chat_messages(len(SIZES), QUESTION)}])[0]["prompt"]
    prepare_multimodal_messages(prompt, len(SIZES))
    rendered = maybe_apply_chat_template({"prompt": prompt}, processor)["prompt"]
    assert rendered == chat_text(processor, fam, TRAINING_LAYOUT, len(SIZES), QUESTION)

    # the paper script's layout stays available: the images, then the text, the template's own system
    paper = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "image"}] * len(SIZES) + [{"type": "text", "text": QUESTION}],
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert chat_text(processor, fam, PAPER_LAYOUT, len(SIZES), QUESTION) == paper


@pytest.mark.parametrize("name", families.FAMILY_CHOICES)
def test_decoding_keeps_only_the_answer_tags_a_family_writes(name, tiny_family):
    from transformers import AutoTokenizer

    fam = families.get_family(name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_family(name))
    answer = fam.format_answer("red square", [100, 200, 300, 400])
    ids = tokenizer.encode(answer + "<|im_end|>", add_special_tokens=False)
    plain = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if fam.answer_special_tokens:
        # InternVL's <ref>/<box> are special tokens: skip_special_tokens would drop the answer's own tags
        assert plain != answer
        assert fam.decode(tokenizer, ids) == answer  # whole, and without the end-of-turn token
    else:
        # the paper script's decoding (Qwen2-VL's box tokens are special and go, as its parser expects)
        assert fam.decode(tokenizer, ids) == plain


def test_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown prompt layout 'chat'.*training, paper"):
        families.get_family("qwen2-vl").chat_messages(1, "q", "chat")
